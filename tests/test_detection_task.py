"""ObjectDetector: real training steps on COCO, VOC and DigitScenes batches, mAP that COCOeval
confirms from ``zoo predict``'s results file, drawn boxes in the logs, and checkpoints that
``zoo.load`` turns back into a detector whose ``predict`` answers in the caller's pixels."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from pycocotools.coco import COCO as COCOApi
from pycocotools.cocoeval import COCOeval
from torch import nn

import datamodules
import zoo
from datamodules.digit_scenes import DIGIT_CLASSES
from tasks import COCOResultsWriter, ObjectDetector
from tests._detection_files import FAST, write_coco, write_voc
from tests._trainers import cpu_trainer

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*__array__ implementation.*:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """A tiny DigitScenes tree, written once for the module."""
    root = tmp_path_factory.mktemp("scenes") / "digit_scenes"
    datamodules.DigitScenes(root=str(root), num_train=24, num_val=12, scene_size=80).prepare_data()
    return root


def _digit_scenes(root: Path, **kwargs) -> datamodules.DigitScenes:
    # image_size 64 < the written 80: boxes are rescaled on the way in and out.
    return datamodules.DigitScenes(
        root=str(root),
        num_train=24,
        num_val=12,
        scene_size=80,
        image_size=64,
        batch_size=6,
        **kwargs,
    )


def _data(kind: str, root: Path, masks: bool = False) -> datamodules.DetectionDataModule:
    if kind == "coco":
        for split in ("train", "val"):
            write_coco(root / "coco", split, seed=len(split))
        return datamodules.COCO(
            str(root / "coco"),
            "train",
            "val",
            image_size=64,
            batch_size=7,
            train_transforms="crop_flip",
            masks=masks,
        )
    voc = write_voc(root)
    return datamodules.VOCDetection(str(voc), classes="found", image_size=64, batch_size=7)


@pytest.mark.parametrize("kind", ["coco", "voc"])
def test_trains_and_validates_on_real_format_batches(kind, tmp_path):
    """A batch of 7 with an image without objects, crowd/difficult objects and fixed-up boxes."""
    data = _data(kind, tmp_path)
    task = ObjectDetector("tinyssd", data.num_classes, class_names=data.classes, log_images=2)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    logger = TensorBoardLogger(tmp_path, name="logs")
    trainer = cpu_trainer(tmp_path, max_epochs=1, logger=logger, num_sanity_val_steps=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*(dropped|clamped).*")  # the bad annotations
        trainer.fit(task, datamodule=data)
    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/loss_cls", "train/loss_bbox", "val/map", "val/map_50",
                "val/map_75", "val/mar_100"):  # fmt: skip
        assert key in metrics and torch.isfinite(metrics[key]), key
    assert f"val/ap/{data.classes[0]}" in metrics
    changed = [k for k, v in task.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "a training step must change the weights"
    drawn = Path(logger.log_dir) / "val_detections.png"
    assert drawn.is_file() and Image.open(drawn).size[0] > 200


# One model of each family beside TinySSD (above), at their FAST arguments; Mask R-CNN trains on
# COCO's instance masks (VOC's detection annotations have none).
FAMILY_MODELS = [
    (name, kind)
    for name in ("ssd300_resnet50", "fasterrcnn_resnet50", "maskrcnn_resnet50_fpn", "yolo_resnet18")
    for kind in (("coco",) if name.startswith("maskrcnn") else ("coco", "voc"))
]


@pytest.mark.parametrize("name,kind", FAMILY_MODELS)
def test_every_family_trains_validates_and_reloads(name, kind, tmp_path):
    """The same task and data for every family: a training step that changes the weights, COCO
    mAP (and mask mAP from Mask R-CNN), and a checkpoint that zoo.load rebuilds exactly."""
    torch.manual_seed(0)
    masks = name.startswith("maskrcnn")
    data = _data(kind, tmp_path, masks=masks)
    task = ObjectDetector(
        name, data.num_classes, model_kwargs=FAST.get(name), class_names=data.classes, log_images=0
    )
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    trainer = cpu_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0, default_root_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*(dropped|clamped).*")
        trainer.fit(task, datamodule=data)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and "val/map_50" in metrics
    assert ("val/segm_map" in metrics) == masks
    changed = [k for k, v in task.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "a training step must change the weights"

    model = zoo.load(trainer.checkpoint_callback.best_model_path)
    assert model.pretrained_cfg.class_names == data.classes
    for key, value in task.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    images, _ = next(iter(data.val_dataloader()))
    task.model.eval()
    with torch.no_grad():
        expected, found = task.model(images), model(images)
    for mine, theirs in zip(found, expected, strict=True):
        torch.testing.assert_close(mine["boxes"], theirs["boxes"])


class OracleDetector(nn.Module):
    """Keeps the detector contract in eval mode, answering with detections fixed in advance
    (one list entry per validation image, in loader order): a stand-in for a trained detector
    that scores neither 0 nor 1, so that two evaluations of it can be compared."""

    def __init__(self, answers: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.answers = answers
        self.position = 0
        self.weight = nn.Parameter(torch.zeros(()))  # something for the optimizer

    def forward(self, images, targets=None):
        count = len(images)
        out = self.answers[self.position : self.position + count]
        self.position = (self.position + count) % len(self.answers)
        return [{k: v.clone() for k, v in answer.items()} for answer in out]


def _noisy_answers(data: datamodules.DetectionDataModule, seed: int = 0) -> list[dict]:
    """True boxes jittered, some dropped, some relabelled, plus false positives: mAP in (0, 1)."""
    rng = torch.Generator().manual_seed(seed)
    answers = []
    for _, targets in data.val_dataloader():
        for target in targets:
            boxes = target["boxes"] + torch.randn(target["boxes"].shape, generator=rng) * 2.0
            # Valid boxes (x1 < x2, y1 < y2), as detectors give: pycocotools and torchmetrics
            # disagree on inverted ones.
            boxes = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:] - 1), boxes[:, 2:]], dim=1)
            labels = target["labels"].clone()
            flip = torch.rand(len(labels), generator=rng) < 0.2
            labels[flip] = labels[flip] % data.num_classes + 1
            keep = torch.rand(len(labels), generator=rng) > 0.15
            extra = torch.rand(2, 4, generator=rng).sort(dim=1).values * 60
            boxes = torch.cat([boxes[keep], extra[:, [0, 1, 2, 3]]])
            labels = torch.cat([labels[keep], torch.tensor([1, 2])])
            scores = torch.rand(len(labels), generator=rng)
            answers.append({"boxes": boxes.clamp(0, 64), "scores": scores, "labels": labels})
    return answers


def test_zoo_predict_results_score_the_same_in_cocoeval(scenes, tmp_path):
    """The task's val/map, map_50 and map_75 (torchmetrics) equal COCOeval's on the results file
    that ``predict`` writes, in the pixels of the 80 px files while the model sees 64 px."""
    data = _digit_scenes(scenes)
    data.setup("validate")
    oracle = OracleDetector(_noisy_answers(data))
    task = ObjectDetector(oracle, data.num_classes, class_names=data.classes, log_images=0)
    out = tmp_path / "predictions.json"
    trainer = cpu_trainer(tmp_path, callbacks=[COCOResultsWriter(str(out))])
    (scores,) = trainer.validate(task, datamodule=data)
    assert 0.2 < scores["val/map_50"] < 0.95

    oracle.position = 0
    trainer.predict(task, datamodule=data, return_predictions=False)
    results = json.loads(out.read_text())
    assert results and {"image_id", "category_id", "bbox", "score"} == set(results[0])
    truth_file = scenes / "coco" / "annotations" / "instances_val.json"
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCOApi(str(truth_file))
        evaluation = COCOeval(truth, truth.loadRes(str(out)), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = evaluation.stats
    assert scores["val/map"] == pytest.approx(stats[0], abs=1e-6)
    assert scores["val/map_50"] == pytest.approx(stats[1], abs=1e-6)
    assert scores["val/map_75"] == pytest.approx(stats[2], abs=1e-6)


def test_checkpoint_round_trip_through_zoo_load(scenes, tmp_path):
    """fit -> best.ckpt -> zoo.load: the same network, the digits' names, the data module's
    preprocessing, and predict() answering in the pixels of the image it was given; a pretrained
    backbone's weights live in the checkpoint and are not fetched again."""
    torch.manual_seed(0)
    backbone_file = tmp_path / "resnet18.pth"
    torch.save(zoo.create_model("resnet18").state_dict(), backbone_file)
    data = _digit_scenes(scenes)
    task = ObjectDetector(
        "tinyssd",
        data.num_classes,
        model_kwargs={"backbone": "resnet18", "backbone_weights": str(backbone_file)},
        log_images=0,
    )
    trainer = cpu_trainer(tmp_path, max_epochs=1, limit_train_batches=2, default_root_dir=tmp_path)
    trainer.fit(task, datamodule=data)
    checkpoint = Path(trainer.checkpoint_callback.best_model_path)
    backbone_file.unlink()  # the checkpoint must not need it

    model = zoo.load(checkpoint)
    cfg = model.pretrained_cfg
    assert cfg.class_names == DIGIT_CLASSES and cfg.extra["task"] == "detection"
    assert cfg.image_size == 64 and cfg.mean == pytest.approx(list(data.mean))
    assert cfg.model_kwargs["backbone_weights"] is None
    for key, value in task.model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    reloaded = ObjectDetector.load_from_checkpoint(checkpoint)
    assert reloaded.hparams.model_kwargs["backbone_weights"] is None

    image = Image.open(sorted((scenes / "coco" / "val").glob("*.jpg"))[0])
    (found,) = model.predict(image)
    with torch.no_grad():
        (direct,) = model(cfg.transforms()(image)[None])
    torch.testing.assert_close(found["boxes"], direct["boxes"] * 80 / 64)
    assert set(found) == {"boxes", "scores", "labels"}


def test_class_names_must_match_the_classes():
    with pytest.raises(ValueError, match="one name per class"):
        ObjectDetector("tinyssd", num_classes=3, class_names=["a", "b"])


def test_digit_scenes_images_decode_like_the_files(scenes):
    """The embedded data module reads what write_digit_scenes wrote, through the COCO reader."""
    data = _digit_scenes(scenes)
    data.setup("fit")
    assert data.classes == DIGIT_CLASSES and data.category_ids == list(range(1, 11))
    images, targets = next(iter(data.val_dataloader()))
    assert images.shape == (6, 3, 64, 64)
    truth = json.loads((scenes / "coco" / "annotations" / "instances_val.json").read_text())
    first = [a for a in truth["annotations"] if a["image_id"] == int(targets[0]["image_id"])]
    boxes = np.array([a["bbox"] for a in first], dtype=np.float32)
    boxes[:, 2:] += boxes[:, :2]
    torch.testing.assert_close(
        targets[0]["boxes"], torch.from_numpy(boxes) * 64 / 80, atol=1e-4, rtol=0
    )
    assert targets[0]["labels"].tolist() == [a["category_id"] for a in first]
