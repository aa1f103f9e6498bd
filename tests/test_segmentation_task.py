"""SemanticSegmenter (Sections 14.9-14.11): the loss with ignored pixels, mIoU and pixel accuracy
against a hand-computed confusion matrix, and real training steps on VOC and DigitScenes files."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import zoo
from datamodules import DigitScenesSegmentation, VOCSegmentation
from tasks import SemanticSegmenter, segmentation_loss
from tests._segmentation_files import write_voc_segmentation

FAST_TRAINER = dict(
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
)


@pytest.fixture(autouse=True)
def _quiet():
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*log_every_n_steps.*")


def test_loss_is_the_mean_over_labelled_pixels():
    torch.manual_seed(0)
    logits, masks = torch.randn(2, 4, 5, 6), torch.randint(0, 4, (2, 5, 6))
    masks[0, :2] = 255
    expected = F.cross_entropy(logits, masks, ignore_index=255)
    torch.testing.assert_close(segmentation_loss(logits, masks), expected)


def test_all_ignored_mask_gives_a_finite_loss_and_no_update():
    torch.manual_seed(0)
    task = SemanticSegmenter(
        "fcn_resnet18", num_classes=3, optimizer=lambda p: torch.optim.SGD(p, lr=0.1)
    )
    before = {k: v.clone() for k, v in task.model.named_parameters()}
    images = torch.randn(4, 3, 32, 32)
    masks = torch.full((4, 32, 32), 255)
    loss = segmentation_loss(task.model(images)["out"], masks)
    assert torch.isfinite(loss) and loss.item() == 0
    trainer = L.Trainer(max_steps=2, **FAST_TRAINER)
    trainer.fit(task, DataLoader(TensorDataset(images, masks), batch_size=2))
    assert trainer.global_step == 2
    for name, value in task.model.named_parameters():
        assert torch.equal(value, before[name]), name


class _Fixed(nn.Module):
    """A 'segmenter' that predicts given class maps, to check the metrics."""

    def __init__(self, predictions: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(F.one_hot(predictions, num_classes).permute(0, 3, 1, 2).float())
        self.calls = 0

    def forward(self, images):
        start = self.calls * len(images)
        self.calls += 1
        return {"out": self.logits[start : start + len(images)]}


def test_miou_and_pixel_accuracy_are_the_confusion_matrix_s():
    rng = np.random.default_rng(0)
    truth = torch.from_numpy(rng.integers(0, 3, (4, 6, 7)))
    predicted = torch.from_numpy(rng.integers(0, 4, (4, 6, 7)))
    predicted[truth == 2] = 2  # class 2 well found; class 3 predicted but never true
    truth[:, 0] = 255  # ignored: whatever is predicted there counts nowhere
    task = SemanticSegmenter(_Fixed(predicted, 5), num_classes=5, class_names=list("abcde"))
    trainer = L.Trainer(**FAST_TRAINER)
    (scores,) = trainer.validate(
        task, DataLoader(TensorDataset(torch.zeros(4, 3, 6, 7), truth), batch_size=2)
    )
    labelled = truth != 255
    t, p = truth[labelled], predicted[labelled]
    confusion = torch.zeros(5, 5, dtype=torch.float64)
    confusion.index_put_((t, p), torch.ones(len(t), dtype=torch.float64), accumulate=True)
    inter = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - inter
    present = union > 0  # class 4 is neither true nor predicted: out of the mean
    assert not present[4] and present[3]
    assert scores["val/miou"] == pytest.approx((inter[present] / union[present]).mean().item())
    assert scores["val/pixel_acc"] == pytest.approx((inter.sum() / confusion.sum()).item())
    assert scores["val/iou/d"] == 0.0 and "val/iou/e" not in scores


def _fit_validate_reload(task: SemanticSegmenter, data, tmp_path: Path) -> dict[str, float]:
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        **{**FAST_TRAINER, "logger": True},
    )
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    trainer.fit(task, datamodule=data)
    aux = getattr(task.model, "aux_classifier", None) is not None
    assert ("train/loss_aux" in trainer.callback_metrics) == aux  # the auxiliary loss trains
    changed = [k for k, v in task.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("backbone.stem" in k for k in changed) and any("classifier" in k for k in changed)
    (scores,) = trainer.validate(task, datamodule=data)
    assert 0 <= scores["val/miou"] <= 1 and 0 <= scores["val/pixel_acc"] <= 1
    # The validation drawing of the first batch is written next to the logs.
    assert list(Path(tmp_path).rglob("val_segmentation.png"))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    model, images = zoo.load(path).eval(), next(iter(data.val_dataloader()))[0]
    task.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images)["out"], task.model(images)["out"])
    assert model.pretrained_cfg.class_names == list(data.classes)
    assert model.pretrained_cfg.extra["task"] == "segmentation"
    return scores


def test_fcn_trains_validates_and_reloads_on_voc_files(tmp_path):
    root = write_voc_segmentation(tmp_path / "voc")
    data = VOCSegmentation(root=str(root), crop_size=(32, 40), batch_size=3)
    torch.manual_seed(0)
    task = SemanticSegmenter(
        "fcn_resnet50",
        num_classes=data.num_classes,
        model_kwargs={"backbone": "resnet18", "aux_loss": True},
        class_names=data.classes,
        log_images=2,
    )
    _fit_validate_reload(task, data, tmp_path)


def test_course_fcn_on_digit_scenes(tmp_path):
    data = DigitScenesSegmentation(
        root=str(tmp_path / "scenes"), num_train=12, num_val=4, batch_size=4, seed=0
    )
    torch.manual_seed(0)
    task = SemanticSegmenter(
        "fcn_resnet18_os8", num_classes=data.num_classes, class_names=data.classes
    )
    _fit_validate_reload(task, data, tmp_path)
    masks = next(iter(data.val_dataloader()))[1]
    predicted = L.Trainer(**FAST_TRAINER).predict(task, data.val_dataloader())[0]
    assert predicted.shape == masks.shape and predicted.dtype == torch.int64


def test_bad_arguments():
    with pytest.raises(ValueError, match="ignore_index=2 is a class index"):
        SemanticSegmenter("fcn_resnet18", num_classes=3, ignore_index=2)
    task = SemanticSegmenter("fcn_resnet18", num_classes=3)
    with pytest.raises(ValueError, match="masks of size"):
        task._shared_step(
            (torch.zeros(1, 3, 32, 32), torch.zeros(1, 16, 16, dtype=torch.long)), "val"
        )
