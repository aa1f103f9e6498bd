"""Neural style transfer (Section 14.12; Gatys et al., 2016): an image is optimised until a frozen
VGG sees the content image's layout in its deep features and the style image's textures in the
Gram matrices of several layers, and ``zoo style`` runs it from the command line.

:class:`StyleTransfer` is a plain ``LightningModule``, not a :class:`tasks.ZooTask`: what ZooTask
shares (a trainable registry network, its parameter groups and fine-tuning, the
``checkpoint["zoo"]`` record :func:`zoo.load` rebuilds) has no object here, where the network is
frozen and the only parameter is the image. Lightning still brings the loop, devices, precision,
logging and the progress bar.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer, seed_everything
from matplotlib.figure import Figure
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision.ops.misc import Conv2dNormActivation
from torchvision.transforms.v2 import functional as TF

import zoo
from tasks._figures import log_png
from tasks.recipes import resolve_configs

__all__ = [
    "PACKAGED_PHOTOS",
    "StyleTransfer",
    "gram_matrix",
    "read_photo",
    "run_style",
    "total_variation",
]

# torchvision's ImageNet statistics: the course's rgb_mean / rgb_std, used when the weights do not
# record their own.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _matplotlib(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from matplotlib.cbook import get_sample_data

        with Image.open(get_sample_data(filename, asfileobj=False)) as image:
            return np.asarray(image.convert("RGB"))

    return load


# Colour photos that ship inside the installed packages: runs and tests need no download.
PACKAGED_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    **{
        f"skimage:{name}": _skimage(name)
        for name in (
            "astronaut",
            "chelsea",
            "coffee",
            "rocket",
            "hubble_deep_field",
            "immunohistochemistry",
        )  # fmt: skip
    },
    "matplotlib:grace_hopper": _matplotlib("grace_hopper.jpg"),
}
_IMAGE_FORMS = f"a path to an image file or one of {', '.join(PACKAGED_PHOTOS)}"


def read_photo(source: str | os.PathLike[str], role: str = "image") -> torch.Tensor:
    """An image file, or a photo named in :data:`PACKAGED_PHOTOS`, as ``[3, H, W]`` uint8.

    Raises:
        ValueError: an unknown packaged name, no file at the path, or a file that does not decode;
            ``role`` ("content", "style") says which image in the message.
    """
    name = str(source)
    if name.split(":", 1)[0] in ("skimage", "matplotlib"):
        if name not in PACKAGED_PHOTOS:
            raise ValueError(f"unknown packaged photo {name!r} for the {role}; use {_IMAGE_FORMS}")
        pixels = PACKAGED_PHOTOS[name]()
    else:
        from datamodules._files import load_image  # the data room's decoder, used here only

        if not Path(name).expanduser().is_file():
            raise ValueError(f"no {role} image file at {name}; the {role} must be {_IMAGE_FORMS}")
        try:
            pixels = load_image(Path(name).expanduser())
        except ValueError as error:
            raise ValueError(
                f"cannot decode the {role} image {name} ({error.__cause__}); "
                f"the {role} must be {_IMAGE_FORMS}"
            ) from error
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Channel correlations of ``[B, C, H, W]`` features, ``[B, C, C]``, divided by ``C*H*W``.

    The course's ``gram`` (Section 14.12.5): the division keeps the style loss of a layer
    independent of its size, so large early layers do not outweigh small deep ones.
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Half the sum of the mean absolute differences between vertical and horizontal neighbours
    of ``[B, C, H, W]`` pixels: the course's ``tv_loss`` (Section 14.12.5.3), which smooths the
    synthesised image's high-frequency noise."""
    vertical = (image[:, :, 1:, :] - image[:, :, :-1, :]).abs().mean()
    horizontal = (image[:, :, :, 1:] - image[:, :, :, :-1]).abs().mean()
    return 0.5 * (vertical + horizontal)


def _vgg_layers(network: nn.Module, backbone: str) -> OrderedDict[str, nn.Module]:
    """A zoo VGG's feature layers by the paper's names: ``conv{b}_{r}`` is the ``r``-th unit
    (convolution, [batch norm,] ReLU) of block ``b``, ``pool{b}`` the block's max-pool."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    blocks, b = getattr(network, "features", None), 1
    while isinstance(block := getattr(blocks, f"block{b}", None), nn.Sequential):
        *units, pool = block
        if not units or not isinstance(pool, nn.MaxPool2d):
            break
        for r, unit in enumerate(units, start=1):
            if not isinstance(unit, Conv2dNormActivation):
                break
            layers[f"conv{b}_{r}"] = unit
        layers[f"pool{b}"] = pool
        b += 1
    if not layers or len(layers) != sum(len(block) for block in blocks.children()):
        raise ValueError(
            f"backbone {backbone!r} is not a zoo VGG (blocks of conv-ReLU units, each closed by a "
            f"max-pool: zoo.layers.vgg_block); choose one of {zoo.list_models('vgg*')}"
        )
    if layers["conv1_1"][0].in_channels != 3:
        raise ValueError(
            f"backbone {backbone!r} takes {layers['conv1_1'][0].in_channels}-channel images; "
            "style transfer needs one trained on colour images (in_channels 3)"
        )
    return layers


class _LayerTaps(nn.Module):
    """The VGG's layers up to the deepest one asked for, returning the named layers' outputs."""

    def __init__(self, layers: OrderedDict[str, nn.Module], deepest: str) -> None:
        super().__init__()
        kept = list(layers)[: list(layers).index(deepest) + 1]
        self.layers = nn.Sequential(OrderedDict((name, layers[name]) for name in kept))

    def forward(self, x: torch.Tensor, names: set[str]) -> dict[str, torch.Tensor]:
        outputs = {}
        for name, layer in self.layers.named_children():
            x = layer(x)
            if name in names:
                outputs[name] = x
                if len(outputs) == len(names):  # no need to run deeper layers
                    break
        return outputs


def _offline_torchvision(backbone: str, error: OSError) -> RuntimeError:
    return RuntimeError(
        f"torchvision's ImageNet weights for {backbone} are not in the torch hub cache "
        f"({torch.hub.get_dir()}/checkpoints) and could not be downloaded "
        f"({type(error).__name__}: {error}). Either download them once with network access: "
        f"python -c \"import zoo; zoo.create_model('{backbone}', weights='torchvision')\" "
        "(or copy that cache folder here), or pass a zoo VGG checkpoint with --weights PATH "
        "(weights= in Python; a .ckpt, .pth or .safetensors file)"
    )


class StyleTransfer(LightningModule):
    """Neural style transfer as in Section 14.12 and Gatys et al. (2016).

    The synthesised image, ``[1, 3, H, W]`` in the network's standardised space, is the only
    parameter; a frozen VGG (eval mode, no gradients, run only to the deepest layer used)
    measures it. Its loss, each term multiplied by its weight and summed over layers:

    - content: mean squared error between its features and the content image's;
    - style: mean squared error between its Gram matrices (:func:`gram_matrix`) and the style
      image's;
    - total variation (:func:`total_variation`) of the image itself.

    The targets' features are computed once. There is no dataset: each step of the
    ``train_dataloader`` (``steps`` dummy items) is one optimisation step, so
    ``Trainer(max_steps=steps)`` runs the course's ``train`` with a progress bar.

    Layers are named as in the paper: ``conv{b}_{r}`` is the output of the ``r``-th convolution
    of block ``b`` after its ReLU (after batch norm and ReLU in the ``_bn`` variants). The course
    records the outputs of torchvision's convolutions (``features`` indices 0, 5, 10, 19, 28 for
    style, 25 for content), but torchvision's ReLU works in place and overwrites each recorded
    tensor, so the course too measures post-ReLU activations, as the paper's Caffe model did,
    except at conv5_1, where its network stops before the ReLU. Its content layer, index 25, is
    conv4_4 ("the last convolutional layer of the fourth block"); the paper used conv4_2.

    Args:
        content: the content image: a file path, or a photo shipped in a package
            (``skimage:chelsea``, ``matplotlib:grace_hopper``; :data:`PACKAGED_PHOTOS`).
        style: the style image, in the same forms.
        backbone: a zoo VGG (``zoo models 'vgg*'``); the course and the paper use VGG-19.
        weights: ``"torchvision"`` for torchvision's ImageNet weights (from the torch hub cache,
            downloaded if absent), a path to a zoo VGG checkpoint (``.ckpt``, ``.pth``,
            ``.safetensors``), or ``None`` for random weights (tests only: they make no art).
        content_layers: layers whose features the synthesised image must match.
        style_layers: layers whose Gram matrices it must match.
        content_weight, style_weight, tv_weight: the loss terms' weights (the course's 1, 1e4
            and 10).
        image_size: ``(height, width)`` both images are resized to, and the result's size.
        init: start from the content image (the course) or from uniform noise (the paper).
        lr: Adam's learning rate on the pixels (the course's 0.3).
        lr_decay: the learning rate is multiplied by this every ``lr_decay_steps`` steps.
        lr_decay_steps: the course's ``lr_decay_epoch``: one "epoch" there is one step.
        steps: optimisation steps per epoch of the train dataloader (the course's 500).

    Raises:
        ValueError: an unknown or unreadable image, a backbone that is not a zoo VGG, an unknown
            layer (the message lists the valid ones), or an image too small for the layers.
        RuntimeError: torchvision's weights asked for but neither cached nor downloadable.
    """

    def __init__(
        self,
        content: str,
        style: str,
        backbone: str = "vgg19",
        weights: str | None = "torchvision",
        content_layers: Sequence[str] = ("conv4_4",),
        style_layers: Sequence[str] = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"),
        content_weight: float = 1.0,
        style_weight: float = 1e4,
        tv_weight: float = 10.0,
        image_size: tuple[int, int] = (300, 450),
        init: Literal["content", "noise"] = "content",
        lr: float = 0.3,
        lr_decay: float = 0.8,
        lr_decay_steps: int = 50,
        steps: int = 500,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (height, width) > 0, got {image_size}")
        if init not in ("content", "noise"):
            raise ValueError(f"init must be 'content' or 'noise', got {init!r}")
        if steps < 1 or lr_decay_steps < 1:
            raise ValueError(
                f"steps and lr_decay_steps must be >= 1, got {steps}, {lr_decay_steps}"
            )
        if not content_layers and not style_layers:
            raise ValueError("content_layers and style_layers are both empty: nothing to match")
        content_pixels = read_photo(content, "content")
        style_pixels = read_photo(style, "style")

        network = self._network(backbone, weights)
        layers = _vgg_layers(network, backbone)
        convs = [name for name in layers if name.startswith("conv")]
        for name in (*content_layers, *style_layers):
            if name not in convs:
                raise ValueError(
                    f"unknown layer {name!r} for {backbone}; its layers are {', '.join(convs)}"
                )
        self.content_layers = list(content_layers)
        self.style_layers = list(style_layers)
        deepest = max(self.content_layers + self.style_layers, key=convs.index)
        # Each pool before the deepest layer halves the image; VGG's pool needs 2x2 to work on.
        pools = int(deepest.removeprefix("conv").split("_")[0]) - 1
        if min(image_size) < 2**pools:
            raise ValueError(
                f"image_size {tuple(image_size)} is too small for {deepest} ({pools} 2x2 pools "
                f"before it): use at least {2**pools} pixels per side"
            )
        self.vgg = _LayerTaps(layers, deepest).requires_grad_(False).eval()

        cfg = getattr(network, "pretrained_cfg", None)
        mean = getattr(cfg, "mean", None) or IMAGENET_MEAN
        std = getattr(cfg, "std", None) or IMAGENET_STD
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.register_buffer("content_image", self._standardise(content_pixels), persistent=False)
        self.register_buffer("style_image", self._standardise(style_pixels), persistent=False)
        start = self.content_image.clone()
        if init == "noise":
            start = (torch.rand_like(start) - self.mean) / self.std
        self.image = nn.Parameter(start)

        self.content_weight = content_weight
        self.style_weight = style_weight
        self.tv_weight = tv_weight
        self.lr = lr
        self.lr_decay = lr_decay
        self.lr_decay_steps = lr_decay_steps
        self.steps = steps
        self._targets: tuple[torch.device, dict, dict] | None = None

    @staticmethod
    def _network(backbone: str, weights: str | None) -> nn.Module:
        try:
            return zoo.create_model(backbone, weights=weights)
        except FileNotFoundError:  # a weights path that is not there: zoo's message names it
            raise
        except OSError as error:  # urllib's URLError and socket errors: no network
            if weights is not None and str(weights).startswith("torchvision"):
                raise _offline_torchvision(backbone, error) from error
            raise

    def _standardise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[3, H, W]`` -> ``[1, 3, *image_size]`` standardised, as the course's
        ``preprocess`` (an antialiased resize, then the weights' mean and std)."""
        resized = TF.resize(pixels, list(self.image_size), antialias=True)
        return (resized[None].float() / 255 - self.mean) / self.std

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()  # frozen: batch-norm statistics of the _bn variants must not move
        return self

    def synthesised_image(self) -> torch.Tensor:
        """The current image, ``[3, H, W]`` float in [0, 1] on the CPU (the course's
        ``postprocess``: un-standardised, then clamped)."""
        return (self.image.detach() * self.std + self.mean).clamp(0, 1)[0].cpu()

    def save_image(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`synthesised_image` to ``path`` (PNG, or the format its extension names)
        and return the path; its folder is created."""
        path = Path(path)
        _check_image_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = (self.synthesised_image() * 255).round().to(torch.uint8)
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(path)
        return path

    def _target_features(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The content image's features and the style image's Gram matrices, computed once (and
        again only if the module moved to another device)."""
        device = self.image.device
        if self._targets is None or self._targets[0] != device:
            with torch.no_grad():
                contents = self.vgg(self.content_image, set(self.content_layers))
                styles = self.vgg(self.style_image, set(self.style_layers))
            grams = {name: gram_matrix(styles[name]) for name in self.style_layers}
            self._targets = (device, contents, grams)
        return self._targets[1], self._targets[2]

    def losses(self) -> dict[str, torch.Tensor]:
        """The weighted loss terms of the current image and their sum: ``content_loss``,
        ``style_loss``, ``tv_loss`` and ``loss`` (the course's ``compute_loss``)."""
        contents, grams = self._target_features()
        features = self.vgg(self.image, set(self.content_layers + self.style_layers))
        zero = self.image.new_zeros(())
        content = sum(
            (F.mse_loss(features[name], contents[name]) for name in self.content_layers), zero
        )
        style = sum(
            (F.mse_loss(gram_matrix(features[name]), grams[name]) for name in self.style_layers),
            zero,
        )
        terms = {
            "content_loss": self.content_weight * content,
            "style_loss": self.style_weight * style,
            "tv_loss": self.tv_weight * total_variation(self.image),
        }
        return terms | {"loss": sum(terms.values(), zero)}

    def training_step(self, batch: int, batch_idx: int) -> torch.Tensor:
        terms = self.losses()
        loss = terms.pop("loss")
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=1)
        return loss

    def train_dataloader(self) -> DataLoader:
        # One dummy item per optimisation step: the data is the parameter itself.
        return DataLoader(range(self.steps), batch_size=None)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam([self.image], lr=self.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, self.lr_decay_steps, self.lr_decay)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_train_end(self) -> None:
        if self.trainer.logger is None:
            return
        figure = Figure(figsize=(9.6, 3.2), dpi=100, layout="constrained")
        panels = {
            "content": self.content_image,
            "style": self.style_image,
            f"synthesised ({self.global_step} steps)": self.image.detach(),
        }
        for i, (title, image) in enumerate(panels.items(), start=1):
            ax = figure.add_subplot(1, 3, i)
            pixels = (image * self.std + self.mean).clamp(0, 1)[0].permute(1, 2, 0)
            ax.imshow(pixels.float().cpu().numpy())
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        log_png(self, "style/result", figure)


def _check_image_path(path: Path) -> None:
    if path.suffix.lower() not in Image.registered_extensions():
        raise ValueError(
            f"cannot write an image to {path}: its extension {path.suffix!r} is no image format "
            "PIL knows; end the name in .png"
        )


def run_style(argv: list[str]) -> Path:
    """``zoo style --content A --style B --out C.png [--steps 500] [--image-size H W]
    [--content-weight W] [--style-weight W] [--tv-weight W] [--lr LR] [--accelerator auto|cpu|gpu]
    [--weights torchvision|PATH|none] [--seed N]``, or ``--config YAML`` holding the same options
    (underscores in its keys; flags after it override it): neural style transfer (Section 14.12)
    with a progress bar, writing the synthesised image. ``--help`` lists every option."""
    from jsonargparse import ActionConfigFile, ArgumentParser  # installed with LightningCLI

    # Defaults come from StyleTransfer's signature: one place states them.
    default = {n: p.default for n, p in inspect.signature(StyleTransfer).parameters.items()}
    parser = ArgumentParser(prog="zoo style", description=run_style.__doc__)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML of these options")
    parser.add_argument(
        "--content", type=str, required=True, help=f"the content image: {_IMAGE_FORMS}"
    )
    parser.add_argument("--style", type=str, required=True, help="the style image, same forms")
    parser.add_argument("--out", type=str, required=True, help="image to write (.png)")
    parser.add_argument("--steps", type=int, default=default["steps"])
    size = list(default["image_size"])
    parser.add_argument("--image-size", type=int, nargs=2, default=size, metavar=("H", "W"))
    for name in ("content_weight", "style_weight", "tv_weight", "lr", "lr_decay"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=default[name])
    parser.add_argument("--lr-decay-steps", type=int, default=default["lr_decay_steps"])
    parser.add_argument(
        "--weights",
        type=str | None,
        default=default["weights"],
        help="torchvision (ImageNet), a zoo VGG checkpoint, or none (random: tests)",
    )
    parser.add_argument("--backbone", type=str, default=default["backbone"], help="a zoo VGG")
    for name in ("content_layers", "style_layers"):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=str, nargs="+", default=list(default[name])
        )
    parser.add_argument("--init", type=str, choices=["content", "noise"], default=default["init"])
    parser.add_argument("--accelerator", type=str, default="auto", help="auto, cpu, gpu...")
    parser.add_argument("--seed", type=int, default=0)
    try:
        argv = resolve_configs(argv)  # --config style/chelsea_coffee: the installed recipe
    except ValueError as error:
        raise SystemExit(f"zoo style: {error}") from error
    args = parser.parse_args(argv)
    weights = None if str(args.weights).lower() in ("none", "null") else args.weights
    out = Path(args.out)
    try:
        _check_image_path(out)
        seed_everything(args.seed, verbose=False)
        # Every argument of StyleTransfer has its flag (a new one without a flag fails here).
        options = {name: getattr(args, name) for name in default}
        model = StyleTransfer(
            **options | {"weights": weights, "image_size": tuple(args.image_size)}
        )
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        raise SystemExit(f"zoo style: {error}") from error
    trainer = Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        # One dummy item per step: workers would only cost. The VGG is in eval mode on purpose.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
        trainer.fit(model)
    with torch.no_grad():
        terms = {k: float(v) for k, v in model.losses().items()}
    path = model.save_image(out)
    height, width = model.image_size
    print(f"wrote {path} ({width}x{height}, {trainer.global_step} steps)")
    print("losses: " + ", ".join(f"{k} {v:.4g}" for k, v in terms.items()))
    return path
