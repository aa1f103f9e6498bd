"""Trained weights, in pure PyTorch: torchvision's ImageNet weights, state dicts, safetensors files,
checkpoints a zoo task wrote, and files behind a URL.

Everything is read without running pickled code (``torch.load(weights_only=True)``, or
safetensors: :mod:`zoo._weight_files`), and files fetched from a URL are checked against the
SHA-256 prefix in their name before they enter the cache. Every loaded model carries a
:class:`PretrainedConfig`: class names and the preprocessing its weights expect.
"""

from __future__ import annotations

import re
import urllib.error
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from zoo._registry import ModelInfo, create_model, list_models
from zoo._weight_files import read_torch_file, read_weights_file

__all__ = [
    "PretrainedConfig",
    "WeightsMismatch",
    "WeightsUnavailable",
    "load",
    "load_weights",
    "read_torch_file",
]


@dataclass
class PretrainedConfig:
    """What a trained model needs beside its weights: class names and preprocessing.

    Attributes:
        class_names: one name per output, or ``None`` when the weights do not record them.
        mean, std: per-channel normalisation the model was trained with.
        image_size: side of the model's input, ``None`` for the native size.
        in_channels: 1 for grey-scale models, 3 for colour.
        resize_size: when set, images are resized so that their shorter side is this long and
            then centre-cropped to ``image_size`` (torchvision's evaluation preset, e.g. 256 then
            224); when ``None``, they are resized to ``image_size`` x ``image_size`` directly.
        source: where the weights came from: ``"torchvision:ResNet18_Weights.IMAGENET1K_V1"``, a
            path or a URL. Passing it back as ``weights=`` loads the same weights.
        model: the registry name the model was built from.
        model_kwargs: every builder argument the network was built with, including those the
            weights imply (GoogLeNet's ``transform_input``): ``create_model(model, **model_kwargs)``
            builds the same network.
        extra: the rest of the checkpoint's record, e.g. ``{"task": "classification"}``.
    """

    class_names: list[str] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    image_size: int | None = None
    in_channels: int = 3
    resize_size: int | None = None
    source: str | None = None
    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The plain-data ``"zoo"`` record this config was read from (or would be written as)."""
        return {
            **self.extra,
            "model": self.model,
            "model_kwargs": dict(self.model_kwargs),
            "class_names": self.class_names,
            "mean": self.mean,
            "std": self.std,
            "image_size": self.image_size,
            "in_channels": self.in_channels,
            "resize_size": self.resize_size,
            "source": self.source,
        }

    def transforms(self):
        """A torchvision ``v2`` pipeline from a PIL image or uint8 tensor to a model input."""
        from torchvision.transforms import v2

        steps: list[Any] = [v2.ToImage()]
        if self.in_channels == 1:
            steps.append(v2.Grayscale(num_output_channels=1))
        if self.resize_size is not None:
            steps.append(v2.Resize(self.resize_size, antialias=True))  # the shorter side
            if self.image_size is not None:
                steps.append(v2.CenterCrop(self.image_size))
        elif self.image_size is not None:
            steps.append(v2.Resize((self.image_size, self.image_size), antialias=True))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if self.mean is not None and self.std is not None:
            steps.append(v2.Normalize(self.mean, self.std))
        return v2.Compose(steps)


class WeightsMismatch(ValueError):
    """A state dict whose keys or shapes do not fit the network it is loaded into."""


class WeightsUnavailable(OSError):
    """Pretrained weights that could not be fetched: no network, a proxy or a firewall.

    The message names what was fetched (a torchvision enum entry, or a URL), the file in the
    torch hub cache that would have served it offline, and the two offline fixes: copy the file
    there, or pass its path as ``argument`` (``weights``, or ``model_kwargs.backbone_weights``
    for a detector's or segmenter's backbone). An ``OSError``, as urllib's errors are.
    """

    def __init__(self, what: str, url: str, reason: BaseException, argument: str = "weights"):
        self.what, self.url, self.reason, self.argument = what, url, reason, argument
        super().__init__(str(self))

    @property
    def cache_file(self) -> Path:
        """Where ``torch.hub`` looks before it downloads: ``$TORCH_HOME/hub/checkpoints/<name>``."""
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(self.url).path).name

    def for_argument(self, argument: str) -> WeightsUnavailable:
        """The same error, naming another argument as the offline fix."""
        return WeightsUnavailable(self.what, self.url, self.reason, argument)

    def __str__(self) -> str:
        name = self.cache_file.name
        return (
            f"cannot download {self.what} from {self.url} ({type(self.reason).__name__}: "
            f"{self.reason}): this machine looks offline or a proxy blocks it. torch looks for the "
            f"file in its cache first, at {self.cache_file} ($TORCH_HOME/hub/checkpoints/{name}; "
            "TORCH_HOME defaults to ~/.cache/torch), and it is not there. Two offline fixes: copy "
            f"{name} (fetched on a machine that is online) into {self.cache_file.parent}, or pass "
            f"the file itself: --model.init_args.{self.argument} PATH on the zoo command line, "
            f"{self.argument.rpartition('.')[2]}=PATH in Python."
        )

    def __reduce__(self):  # picklable (DataLoader workers, DDP), despite the custom __init__
        return type(self), (self.what, self.url, self.reason, self.argument)


# Keys of the checkpoint's "zoo" record that PretrainedConfig or the builder already holds.
_RECORD_FIELDS = {
    "model",
    "model_kwargs",
    "class_names",
    "mean",
    "std",
    "image_size",
    "in_channels",
    "resize_size",
    "source",
}
# What a classifier's shape is made of; weights fix both, zoo.adapt changes them afterwards.
_SHAPE_KWARGS = ("num_classes", "in_channels")
# torchvision's convention (torch.hub.load_state_dict_from_url(check_hash=True)): the file name
# ends in the first 8 or more hex digits of its SHA-256, e.g. resnet18-f37072fd.pth.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.\w+$")
# What a download that cannot reach its server raises: urllib's URLError (no route, a name
# not resolved, a proxy's HTTP refusal), socket timeouts, connections reset. Other OSErrors (a
# cache folder without write permission, a full disk) are not "offline" and keep their own.
_NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError)
_URL_SCHEMES = ("http://", "https://", "file://")
_WEIGHTS_FORMS = (
    "None, 'torchvision', 'torchvision:<Enum>.<ENTRY>', a path to a .pth/.pt/.ckpt/.safetensors "
    "file, or an http(s):// or file:// URL"
)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from a checkpoint written by a zoo task, in eval mode.

    Reads a task's ``.ckpt`` or a ``.safetensors`` file written by ``zoo export``, from a path or
    from a URL whose file name carries its SHA-256 prefix (as ``weights=`` URLs). The returned
    module has a ``pretrained_cfg`` (:class:`PretrainedConfig`) attribute, so::

        model = zoo.load("runs/lenet_digits/checkpoints/best.ckpt")
        probs = model(model.pretrained_cfg.transforms()(image)[None]).softmax(-1)

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a zoo checkpoint (no ``"zoo"`` record).
    """
    if str(path).startswith(_URL_SCHEMES):  # fetched once, hash-checked, then read as a file
        source, path = str(path), _download(str(path))
    else:
        path = Path(path)
        source = str(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; training writes them under runs/<name>/checkpoints/"
        )
    state, record = read_weights_file(path, map_location)
    if record is None or record.get("model") is None:
        raise ValueError(
            f"{path} has no 'zoo' record: it was not written by a zoo task trained from a registry "
            "name. Build the model yourself and load checkpoint['state_dict'] into it, or use "
            "zoo.create_model(name, weights=path)."
        )
    model = create_model(record["model"], **(record.get("model_kwargs") or {}))
    _load_exactly(model, state, path)
    model.pretrained_cfg = _config_from_record(record, model, source)
    return model.eval()


def load_weights(
    info: ModelInfo,
    weights: str | Path,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build ``info``'s model with trained weights: what ``create_model(name, weights=...)`` does.

    The model is built at the weights' own ``num_classes`` and ``in_channels``, loaded exactly
    (every key, every shape), and only then fitted to the ``num_classes`` / ``in_channels`` in
    ``kwargs`` with :func:`zoo.adapt`.

    Args:
        info: the registry entry of the model to build.
        weights: one of

            - ``"torchvision"``: the torchvision weights the family registered for this variant,
              through torchvision's own API (its cache under ``$TORCH_HOME``, its hash check);
              ``"torchvision:ResNet50_Weights.IMAGENET1K_V1"`` picks another entry of the same
              enum. Class names and preprocessing come from the weights' metadata and transforms.
            - a path: a state dict (``.pth``/``.pt``) with the zoo's keys or torchvision's keys
              of the family; a ``.safetensors`` file, bare or written by ``zoo export`` (its
              ``"zoo"`` metadata supplies builder arguments, class names and preprocessing); or
              a checkpoint a zoo task wrote.
            - an ``http://``, ``https://`` or ``file://`` URL of such a file, whose name carries
              the first 8 or more hex digits of its SHA-256 (``name-<sha256>.ext``, torchvision's
              convention). It is downloaded to ``torch.hub.get_dir()/checkpoints`` and kept only
              when its hash matches; a file already cached under that name is reused.

        pretrained_cfg_overlay: fields of :class:`PretrainedConfig` that describe the weights
            (``{"mean": [...], "std": [...], "class_names": [...]}``), over what the file
            records: for a bare state dict, which records nothing. A bare state dict in
            torchvision's layout takes the preprocessing and class names of torchvision's
            weights of the family; another bare state dict warns that it has none.
        **kwargs: builder arguments.

    Raises:
        WeightsUnavailable: the weights could not be downloaded (offline, a proxy); the message
            says where the cache looks and how to pass the file instead.
        ValueError: the model has no torchvision weights, the weights are unknown, the file was
            written for another model or does not fit (missing, unexpected or mis-shaped keys),
            or a URL has no hash in its name or its file does not match it.
        FileNotFoundError: no file at the path.
    """
    source = str(weights)
    overlay = dict(pretrained_cfg_overlay or {})
    if source == "torchvision" or source.startswith("torchvision:"):
        return _load_torchvision(info, source.partition(":")[2] or None, kwargs, overlay)
    if source.startswith(_URL_SCHEMES):
        return _load_file(info, _download(source), source, kwargs, overlay)
    path = Path(weights).expanduser()
    if path.is_file():
        return _load_file(info, path, source, kwargs, overlay)
    if path.suffix or len(path.parts) > 1:
        raise FileNotFoundError(f"no weights file at {source}; weights must be {_WEIGHTS_FORMS}")
    raise ValueError(f"unknown weights {source!r}; weights must be {_WEIGHTS_FORMS}")


def _load_torchvision(
    info: ModelInfo, entry: str | None, kwargs: dict[str, Any], overlay: dict[str, Any]
) -> nn.Module:
    from torchvision.models import get_weight

    if info.torchvision_weights is None:
        raise ValueError(
            f"torchvision has no weights for {info.name!r}; these models have them: "
            f"{list_models(pretrained=True)}. For other weights pass a file or URL as weights="
        )
    enum_name = info.torchvision_weights.split(".")[0]
    entry = entry or info.torchvision_weights
    try:
        tv_weights = get_weight(entry)
    except (KeyError, ValueError):
        tv_weights = None
    if tv_weights is None or type(tv_weights).__name__ != enum_name:
        entries = [f"{enum_name}.{w.name}" for w in type(get_weight(info.torchvision_weights))]
        raise ValueError(
            f"unknown torchvision weights {entry!r} for {info.name!r}; choose one of {entries} "
            f"(weights='torchvision' loads {info.torchvision_weights})"
        )
    try:
        state = tv_weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
    except _NETWORK_ERRORS as error:
        what = f"torchvision's weights {entry} for {info.name!r}"
        raise WeightsUnavailable(what, tv_weights.url, error) from error
    cfg, native = _torchvision_config(info, tv_weights)
    cfg.source = f"torchvision:{entry}"
    build_kwargs = {**info.torchvision_kwargs, **kwargs}
    return _build_and_load(info, state, build_kwargs, native, cfg, cfg.source, overlay)


def _torchvision_config(info: ModelInfo, tv_weights: Any) -> tuple[PretrainedConfig, dict | None]:
    """Class names and preprocessing of a torchvision weights entry (no download: they are its
    metadata and transforms), and the ``num_classes`` / ``in_channels`` the weights have."""
    preset = tv_weights.transforms()
    categories = list(tv_weights.meta.get("categories") or [])
    if categories[:1] == ["__background__"] and info.task == "detection":
        # Detection weights: class 0 is background, which zoo detectors do not count (zoo
        # segmenters do: it is a class of every pixel).
        categories = categories[1:]
    if hasattr(preset, "crop_size"):  # ImageClassification: resize, crop, normalise
        sizes = {"image_size": preset.crop_size[0], "resize_size": preset.resize_size[0]}
        mean, std = list(preset.mean), list(preset.std)
    elif hasattr(preset, "mean"):  # SemanticSegmentation: shorter side resized, normalise
        sizes = {"resize_size": preset.resize_size[0]} if preset.resize_size else {}
        mean, std = list(preset.mean), list(preset.std)
    else:
        # Detection presets only scale to [0, 1]: torchvision's detectors normalise inside
        # (with the constants the family registers) and resize inside, as zoo's do.
        sizes = {}
        mean, std = info.torchvision_mean_std or (None, None)
    cfg = PretrainedConfig(
        class_names=categories or None,
        mean=list(mean) if mean is not None else None,
        std=list(std) if std is not None else None,
        in_channels=3,
        **sizes,
    )
    native = {"num_classes": len(categories), "in_channels": 3} if categories else None
    return cfg, native


def _torchvision_entry_of_file(info: ModelInfo, path: Path) -> Any:
    """The torchvision weights entry a file of torchvision's layout came from: the entry whose
    download has the file's name (``resnet50-11ad3fa6.pth`` is ``IMAGENET1K_V2``, whose
    preprocessing differs from V1's), else the entry the family registered."""
    from torchvision.models import get_weight

    registered = get_weight(info.torchvision_weights)
    by_name = {Path(urlparse(entry.url).path).name: entry for entry in type(registered)}
    return by_name.get(path.name, registered)


def _load_file(
    info: ModelInfo, path: Path, source: str, kwargs: dict[str, Any], overlay: dict[str, Any]
) -> nn.Module:
    state, record = read_weights_file(path)
    if record is None:  # a bare state dict: preprocessing from torchvision, the overlay, or none
        return _load_bare(info, path, state, source, kwargs, overlay)
    if record.get("model") not in (None, info.name):
        raise ValueError(
            f"{source} holds weights of {record['model']!r} (its zoo record), not {info.name!r}: "
            f"call zoo.create_model({record['model']!r}, weights=...) or zoo.load({source!r})"
        )
    trained_with = dict(record.get("model_kwargs") or {})
    native = {k: trained_with.pop(k) for k in _SHAPE_KWARGS if k in trained_with}
    cfg = _config_from_record(record, None, source)
    return _build_and_load(info, state, {**trained_with, **kwargs}, native, cfg, source, overlay)


def _load_bare(
    info: ModelInfo,
    path: Path,
    state: dict[str, Tensor],
    source: str,
    kwargs: dict[str, Any],
    overlay: dict[str, Any],
) -> nn.Module:
    """A state dict without a record, built as asked, or as torchvision's weights need (frozen
    BN, the auxiliary head, GoogLeNet's input transform): torchvision's own file, e.g.
    ``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``, loads with no argument given. Its file name
    puts torchvision's arguments first."""
    attempts = [dict(kwargs)]
    if info.torchvision_kwargs:
        as_torchvision = {**info.torchvision_kwargs, **kwargs}
        named = path.name == Path(urlparse(_torchvision_entry_of_file(info, path).url).path).name
        attempts.insert(0 if named else 1, as_torchvision)
    first_error = None
    for build_kwargs in attempts:
        try:
            cfg = PretrainedConfig(source=source)
            return _build_and_load(
                info, state, build_kwargs, None, cfg, source, overlay, bare_file=path
            )
        except WeightsMismatch as error:  # keys or shapes that do not fit: try the next way
            first_error = first_error or error
    raise first_error


def _build_and_load(
    info: ModelInfo,
    state: dict[str, Tensor],
    kwargs: dict[str, Any],
    native: dict[str, int] | None,
    cfg: PretrainedConfig,
    source: str,
    overlay: dict[str, Any] | None = None,
    bare_file: Path | None = None,
) -> nn.Module:
    """Build at the weights' shape (``native``; inferred from ``state`` when ``None``), load
    exactly, attach ``cfg`` (with ``overlay``'s fields), then adapt to the ``num_classes`` /
    ``in_channels`` asked for. ``bare_file``: the state came from a file without a record."""
    from zoo._adapt import adapt  # zoo.adapt builds on models and configs: import on use

    requested = {k: kwargs.pop(k) for k in _SHAPE_KWARGS if k in kwargs}
    model = info.builder(**kwargs, **(requested if native is None else native))
    state, torchvision_layout = _zoo_layout(state, model, info)
    if native is None and hasattr(model, "num_classes") and hasattr(model, "in_channels"):
        native = _native_shape(model, state)
        if native != {"num_classes": model.num_classes, "in_channels": model.in_channels}:
            model = info.builder(**kwargs, **native)
    _load_exactly(model, state, source)
    if bare_file is not None:
        cfg = _bare_file_config(info, bare_file, source, model, torchvision_layout, overlay or {})
    cfg = _overlaid(cfg, overlay or {})
    cfg.in_channels = getattr(model, "in_channels", cfg.in_channels)
    cfg.model = info.name
    cfg.model_kwargs = {**kwargs, **(requested if native is None else native)}
    model.pretrained_cfg = cfg
    return adapt(model, **requested) if requested else model


def _bare_file_config(
    info: ModelInfo,
    path: Path,
    source: str,
    model: nn.Module,
    torchvision_layout: bool,
    overlay: dict,
) -> PretrainedConfig:
    """What a state dict without a record is known to need. A file in torchvision's layout of a
    family torchvision ships (its own ``resnet18-f37072fd.pth``, the usual offline route) takes
    the preprocessing of torchvision's weights, and their class names when it has as many
    classes: fed raw pixels, a network trained on normalised ones gives silently worse answers."""
    cfg = PretrainedConfig(source=source)
    if torchvision_layout:
        entry = _torchvision_entry_of_file(info, path)
        cfg, native = _torchvision_config(info, entry)
        cfg.source = source
        cfg.extra["preprocessing"] = f"torchvision:{type(entry).__name__}.{entry.name}"
        shape = {k: getattr(model, k, None) for k in _SHAPE_KWARGS}
        if native is not None and shape != native:  # another head: torchvision's names don't fit
            cfg.class_names = None
    elif not {"mean", "std"} <= overlay.keys():
        warnings.warn(
            f"{source} is a bare state dict: it records no preprocessing (mean/std, input size) "
            "and no class names, so the model's pretrained_cfg has none, and predict() and "
            "pretrained_cfg.transforms() feed pixels in [0, 1] unnormalised. Supply them with "
            "zoo.create_model(..., pretrained_cfg_overlay={'mean': [...], 'std': [...], "
            "'class_names': [...]}), or share weights as `zoo export --format safetensors` "
            "files, which record them.",
            UserWarning,
            stacklevel=7,  # the caller of zoo.create_model
        )
    return cfg


def scratch_config(
    name: str, model: nn.Module, kwargs: dict[str, Any], overlay: dict[str, Any]
) -> PretrainedConfig:
    """The :class:`PretrainedConfig` of ``model``, built from scratch, with ``overlay``'s
    fields (its input channels are the network's, so ``transforms()`` turns grey for 1)."""
    cfg = PretrainedConfig(model=name, model_kwargs=dict(kwargs))
    cfg.in_channels = getattr(model, "in_channels", cfg.in_channels)
    return _overlaid(cfg, overlay)


def _overlaid(cfg: PretrainedConfig, overlay: dict[str, Any]) -> PretrainedConfig:
    """``cfg`` with the fields the caller supplied (``pretrained_cfg_overlay``, as timm's)."""
    known = {f.name for f in fields(PretrainedConfig)} - {"model", "model_kwargs", "source"}
    unknown = sorted(set(overlay) - known)
    if unknown:
        raise ValueError(
            f"pretrained_cfg_overlay: unknown fields {unknown}; PretrainedConfig has {sorted(known)}"
        )
    return replace(cfg, **overlay) if overlay else cfg


def _zoo_layout(
    state: dict[str, Tensor], model: nn.Module, info: ModelInfo
) -> tuple[dict[str, Tensor], bool]:
    """``state`` as is when it has the zoo's keys, else mapped from torchvision's layout when
    that fits the model better; and whether it is torchvision's layout (always, for a family
    registered without a key map: its keys are torchvision's)."""
    if info.torchvision_weights is None:
        return state, False
    if info.torchvision_key_map is None:
        return state, True
    mapped = {
        new: value
        for key, value in state.items()
        if (new := info.torchvision_key_map(key)) is not None
    }
    expected = set(model.state_dict())
    if len(expected & mapped.keys()) > len(expected & state.keys()):
        return mapped, True
    return state, False


def _native_shape(model: nn.Module, state: dict[str, Tensor]) -> dict[str, int]:
    """The ``num_classes`` and ``in_channels`` a classifier state dict (zoo keys) was trained with,
    read from the first layer's weight and the last weight of the head (``fc``, the contract)."""
    in_channels = model.in_channels
    for name, layer in model.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):  # the layer zoo.adapt adapts
            weight = state.get(f"{name}.weight")
            if weight is not None and isinstance(layer, nn.Conv2d):
                in_channels = weight.shape[1]
            elif weight is not None:  # flattened pixels: in_features = channels x pixels
                in_channels = weight.shape[1] * model.in_channels // layer.in_features
            break
    if hasattr(model, "num_classes_in"):  # detectors and segmenters read their class layers
        return {"num_classes": model.num_classes_in(state), "in_channels": in_channels}
    head = [
        value for key, value in state.items() if key.startswith("fc.") and key.endswith("weight")
    ]
    return {"num_classes": head[-1].shape[0] if head else 0, "in_channels": in_channels}


def _load_exactly(model: nn.Module, state: dict[str, Tensor], source: str | Path) -> None:
    """``load_state_dict(strict=True)``, with an error that names the file and what is wrong."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key}: file {list(value.shape)}, model {list(expected[key].shape)}"
        for key, value in state.items()
        if key in expected and value.shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_summary(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_summary(unexpected)})")
    if mismatched:
        problems.append(f"{len(mismatched)} shapes differ ({_summary(mismatched)})")
    if problems:
        raise WeightsMismatch(
            f"weights {source} do not fit {type(model).__name__} "
            f"({sum(v.numel() for v in expected.values()):,} values): " + "; ".join(problems) + ". "
            "Expected the model's state_dict (zoo keys, or torchvision's for families torchvision "
            "ships) built with the same arguments the weights were trained with."
        )
    model.load_state_dict(state)


def _summary(items: list[str], limit: int = 4) -> str:
    more = f", ... {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _config_from_record(
    record: dict[str, Any], model: nn.Module | None, source: str
) -> PretrainedConfig:
    trained_with = record.get("model_kwargs") or {}
    in_channels = record.get("in_channels", trained_with.get("in_channels", 3))
    return PretrainedConfig(
        class_names=record.get("class_names"),
        mean=record.get("mean"),
        std=record.get("std"),
        image_size=record.get("image_size"),
        in_channels=getattr(model, "in_channels", in_channels),
        resize_size=record.get("resize_size"),
        source=source,
        model=record.get("model"),
        model_kwargs=dict(trained_with),
        extra={k: v for k, v in record.items() if k not in _RECORD_FIELDS},
    )


def _download(url: str) -> Path:
    """The cached copy of ``url`` under ``torch.hub.get_dir()/checkpoints``, fetched if absent.

    ``torch.hub.download_url_to_file`` writes to a ``.partial`` file, checks the hash, and only
    then moves it into place (deleting it otherwise), so a bad download never enters the cache.
    """
    filename = Path(urlparse(url).path).name
    match = _HASH_IN_NAME.search(filename)
    if match is None:
        raise ValueError(
            f"{url} has no SHA-256 prefix in its file name, so its download cannot be checked: "
            "publish it as name-<first 8+ hex digits of `sha256sum FILE`>.ext (torchvision's "
            "convention, e.g. resnet18-f37072fd.pth), or download it yourself and pass the path"
        )
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not cached.is_file():
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=match.group(1))
        except _NETWORK_ERRORS as error:  # say where the file would be read from
            if url.startswith("file://"):
                raise FileNotFoundError(f"cannot read {url} ({error})") from error
            raise WeightsUnavailable(f"the weights {filename}", url, error) from error
        except RuntimeError as error:
            if "invalid hash value" not in str(error):
                raise
            raise ValueError(
                f"{url} does not match the SHA-256 prefix {match.group(1)!r} in its name ({error}); "
                "the download was discarded. Check the URL, or the hash it was published with."
            ) from error
    return cached
