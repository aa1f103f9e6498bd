"""A subset of ImageNet's classes from the ILSVRC-2012 files, e.g. the 10 of Imagenette.

Reads the layout of Kaggle's "ImageNet Object Localization Challenge"::

    root/LOC_synset_mapping.txt        n01440764 tench, Tinca tinca   (one line per class)
    root/LOC_val_solution.csv          ImageId,PredictionString
                                       ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...
    root/ILSVRC/Data/CLS-LOC/train/<wnid>/*.JPEG
    root/ILSVRC/Data/CLS-LOC/val/*.JPEG      (or val/<wnid>/*.JPEG)

or a plain tree ``root/train/<wnid>/...`` and ``root/val/<wnid>/...`` (or a flat ``val/``
with ``LOC_val_solution.csv`` in ``root``), such as fastai's Imagenette download.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from ._paths import data_root
from .folder import IMAGE_EXTENSIONS, FileClassificationDataModule, list_folders, list_images

__all__ = ["SUBSET_PRESETS", "ImageNetSubset"]

# fastai's Imagenette and Imagewoof (github.com/fastai/imagenette): wnid -> the first name
# of its LOC_synset_mapping.txt line, used when the data comes without that file. fastai's
# README swaps the names of n02093754 and n02096294; these are ImageNet's.
SUBSET_PRESETS: dict[str, dict[str, str]] = {
    "imagenette": {
        "n01440764": "tench",
        "n02102040": "English springer",
        "n02979186": "cassette player",
        "n03000684": "chain saw",
        "n03028079": "church",
        "n03394916": "French horn",
        "n03417042": "garbage truck",
        "n03425413": "gas pump",
        "n03445777": "golf ball",
        "n03888605": "parachute",
    },
    "imagewoof": {
        "n02086240": "Shih-Tzu",
        "n02087394": "Rhodesian ridgeback",
        "n02088364": "beagle",
        "n02089973": "English foxhound",
        "n02093754": "Border terrier",
        "n02096294": "Australian terrier",
        "n02099601": "golden retriever",
        "n02105641": "Old English sheepdog",
        "n02111889": "Samoyed",
        "n02115641": "dingo",
    },
}
_MAPPING_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")  # Kaggle's; Caffe's, same format
_VAL_SOLUTION = "LOC_val_solution.csv"


def _read_text(path: Path, what: str) -> str:
    # A binary or otherwise non-UTF-8 file would raise a bare UnicodeDecodeError.
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path} is not a UTF-8 text file ({error}); expected {what}: replace the file "
            "with the one from the ImageNet download"
        ) from error


def read_synset_mapping(path: Path) -> dict[str, str]:
    """``{wnid: first name}`` from lines like ``n01440764 tench, Tinca tinca``."""
    mapping = {}
    for number, line in enumerate(_read_text(path, "the synset mapping").splitlines(), 1):
        if not line.strip():
            continue
        wnid, _, names = line.strip().partition(" ")
        if not names.strip():
            raise ValueError(
                f"{path}, line {number}: {line!r} is not '<wnid> <name>, <name>...', e.g. "
                "'n01440764 tench, Tinca tinca'; is this the synset mapping file?"
            )
        mapping[wnid] = names.split(",")[0].strip()
    return mapping


def read_val_solution(path: Path) -> dict[str, str]:
    """``{image id: wnid}`` from Kaggle's ``LOC_val_solution.csv``: the label of an image is
    the first wnid of its ``PredictionString`` (its boxes all carry the same class)."""
    with io.StringIO(_read_text(path, "Kaggle's LOC_val_solution.csv"), newline="") as file:
        rows = csv.reader(file)
        header = [column.strip() for column in next(rows, [])]
        if "ImageId" not in header or "PredictionString" not in header:
            raise ValueError(
                f"{path}: header {header} lacks ImageId and PredictionString; expected "
                "Kaggle's LOC_val_solution.csv ('ImageId,PredictionString')"
            )
        image_column, prediction_column = header.index("ImageId"), header.index("PredictionString")
        labels = {}
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue
            try:
                labels[row[image_column].strip()] = row[prediction_column].split()[0]
            except IndexError:
                raise ValueError(
                    f"{path}, line {rows.line_num}: {','.join(row)!r} has no "
                    "'<ImageId>,<wnid> <box>...' pair"
                ) from None
    return labels


def _find_upwards(start: Path, names: tuple[str, ...], levels: int = 3) -> Path | None:
    # root may be Kaggle's top folder or its ILSVRC/Data/CLS-LOC, three levels down.
    for folder in [start, *start.parents][: levels + 1]:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


class ImageNetSubset(FileClassificationDataModule):
    """ImageNet (ILSVRC-2012) restricted to some of its 1,000 classes.

    Labelled ImageNet test images are not public, so the official validation split (50
    images per class) is the test set, and the validation set is held out of the official
    training split (``val_fraction`` or K-fold, seeded and stratified).

    Classes are picked by ``subset``: a preset name (``"imagenette"``, ``"imagewoof"``:
    fastai's ten easy and ten dog classes), a number ``N`` (the first N wnids in sorted
    order), or a list of wnids. Label ``i`` is the ``i``-th wnid of the subset, and
    ``classes`` holds their names from ``LOC_synset_mapping.txt`` (the first name of each
    line, e.g. ``"tench"``; a name shared by two chosen classes, such as ``"crane"``, gets
    its wnid appended). Without a mapping file the presets use their own names, and other
    wnids name themselves.

    Args:
        root: Kaggle's "ImageNet Object Localization Challenge" folder (holding
            ``ILSVRC/`` and ``LOC_synset_mapping.txt``), its ``ILSVRC/Data/CLS-LOC``
            folder, or any folder with ``train/<wnid>/`` and ``val/`` (wnid folders, or
            flat with ``LOC_val_solution.csv``); None: ``$ZOO_DATA/imagenet`` (``data/imagenet``
            without ``ZOO_DATA``).
        subset: the classes: a preset name, a number of classes or a list of wnids.
        max_images_per_class: use at most this many images of each class in each split
            (the first in file-name order); None uses all.
        **kwargs: image size, augmentation, normalisation, channels, bad files, batch
            size and splits; see :class:`~datamodules.FileClassificationDataModule`.

    Attributes:
        wnids: the WordNet ids of the classes, in label order.
        data_dir: the folder holding ``train/`` and ``val/``.
    """

    def __init__(
        self,
        root: str | None = None,
        subset: list[str] | int | str = "imagenette",
        max_images_per_class: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        if max_images_per_class is not None and max_images_per_class < 1:
            raise ValueError(
                f"{name}: max_images_per_class={max_images_per_class} must be positive, "
                "or None for all images"
            )
        self.root = Path(root) if root is not None else data_root("imagenet")
        self.max_images_per_class = max_images_per_class
        kaggle = self.root / "ILSVRC" / "Data" / "CLS-LOC"
        self.data_dir = kaggle if kaggle.is_dir() else self.root
        train_dir = self.data_dir / "train"
        available = list_folders(train_dir)
        if not available:
            raise FileNotFoundError(
                f"{name}: found no class folders in {kaggle / 'train'} or {self.root / 'train'}; "
                "point data.root at the folder of Kaggle's ImageNet Object Localization "
                "Challenge (holding ILSVRC/ and LOC_synset_mapping.txt) or at a folder with "
                "train/<wnid>/ and val/ sub-folders"
            )
        self.wnids = self._resolve_subset(subset, available, train_dir)
        mapping_file = _find_upwards(self.data_dir, _MAPPING_FILES)
        names = read_synset_mapping(mapping_file) if mapping_file else {}
        if isinstance(subset, str):
            names = SUBSET_PRESETS[subset.lower()] | names
        plain = [names.get(wnid, wnid) for wnid in self.wnids]
        # ImageNet has two cranes (bird, machine) and two maillots: the wnid tells them apart.
        self.classes = [
            f"{class_name} ({wnid})" if plain.count(class_name) > 1 else class_name
            for class_name, wnid in zip(plain, self.wnids, strict=True)
        ]

    def _resolve_subset(
        self, subset: list[str] | int | str, available: list[str], train_dir: Path
    ) -> list[str]:
        name = type(self).__name__
        if isinstance(subset, bool):  # a bool is an int to Python, never a class count here
            raise ValueError(f"{name}: subset={subset} is not a preset, count or wnid list")
        if isinstance(subset, int):
            if not 1 <= subset <= len(available):
                raise ValueError(
                    f"{name}: subset={subset} classes, but {train_dir} has {len(available)} "
                    f"class folders; choose 1 to {len(available)}"
                )
            return available[:subset]
        if isinstance(subset, str):
            if subset.lower() not in SUBSET_PRESETS:
                raise ValueError(
                    f"{name}: subset={subset!r} is not a preset ({', '.join(SUBSET_PRESETS)}); "
                    "give a preset name, a number of classes, or a list of wnids such as "
                    "[n01440764, n02102040]"
                )
            wnids = list(SUBSET_PRESETS[subset.lower()])
        else:
            wnids = [str(wnid) for wnid in subset]
            repeated = sorted({wnid for wnid in wnids if wnids.count(wnid) > 1})
            if not wnids or repeated:
                raise ValueError(
                    f"{name}: subset={wnids} must list distinct wnids"
                    + (f"; {repeated} repeat" if repeated else "")
                )
        missing = [wnid for wnid in wnids if wnid not in set(available)]
        if missing:
            raise FileNotFoundError(
                f"{name}: {train_dir} has no class folder for {', '.join(missing)} (of "
                f"subset={subset!r}); copy those classes' images there or choose other classes"
            )
        return wnids

    def _capped(self, images: list[Path]) -> list[Path]:
        return images[: self.max_images_per_class] if self.max_images_per_class else images

    def _list_samples(self, split: str) -> list[tuple[Path, int]] | None:
        if split == "val":
            return None  # held out of train: ImageNet's own val split is the test set
        directory = self.data_dir / ("train" if split == "train" else "val")
        if split == "test" and not directory.is_dir():
            return None
        if split == "train" or list_folders(directory):
            return [
                (path, label)
                for label, wnid in enumerate(self.wnids)
                for path in self._capped(self._images_of_class(directory / wnid))
            ]
        return self._flat_val_samples(directory)

    def _flat_val_samples(self, directory: Path) -> list[tuple[Path, int]]:
        name = type(self).__name__
        solution = _find_upwards(self.data_dir, (_VAL_SOLUTION,))
        if solution is None:
            raise FileNotFoundError(
                f"{name}: {directory} holds no wnid folders, so its labels must come from "
                f"{_VAL_SOLUTION}, which is not in {self.root} or its parents; put Kaggle's "
                f"{_VAL_SOLUTION} next to LOC_synset_mapping.txt, or sort the val images into "
                "val/<wnid>/ folders"
            )
        files = {path.stem: path for path in list_images(directory) if path.parent == directory}
        label_of = {wnid: label for label, wnid in enumerate(self.wnids)}
        by_class: list[list[Path]] = [[] for _ in self.wnids]
        for image_id, wnid in sorted(read_val_solution(solution).items()):
            if wnid not in label_of:
                continue
            if image_id not in files:
                raise FileNotFoundError(
                    f"{name}: {solution} labels {image_id} as {wnid}, but {directory} has no "
                    f"{image_id} image ({', '.join(IMAGE_EXTENSIONS)}); is the val folder "
                    "complete?"
                )
            by_class[label_of[wnid]].append(files[image_id])
        return [
            (path, label) for label, paths in enumerate(by_class) for path in self._capped(paths)
        ]

    def _missing_test_split(self) -> str:
        return f"{self.data_dir} has no val/ folder, which holds ImageNet's labelled test images"
