"""A compact multi-scale YOLO (Redmon & Farhadi, 2018), trained and decoded as YOLOv5 does.

Section 14.7's multiscale idea, the one-stage way: a zoo classifier's stages at strides 8, 16 and
32 are merged by a neck (FPN's top-down path, then PANet's bottom-up one), and at every scale each
grid cell predicts, for each of 3 anchors, a box, an objectness and the classes with a decoupled
head (YOLOX: separate class and box branches). The anchors are YOLOv3's nine shapes as fractions
of its 416-pixel input, so any input size works: an image's anchors are those fractions of its
longer side (a 416-pixel VOC image gets them as published, a 64-pixel one a sixth of them), or of
a fixed ``anchor_side`` (416: YOLOv3's anchors in pixels at any size).

Boxes decode like YOLOv5's: centre ``(2 sigmoid(t_xy) - 0.5 + cell) * stride`` (a cell reaches
half a cell past its edges, so neighbouring cells can predict a box too) and size
``(2 sigmoid(t_wh))^2 * anchor`` (up to 4 times the anchor). The score of a class is objectness
times the class probability (sigmoids, so classes are not exclusive); detections are every
(box, class) pair above ``score_threshold``, class-wise NMS, the best ``detections_per_image``.

Images of any size, or a list of different sizes, are padded bottom/right with zeros (the mean
colour, as the data is normalised) to a common multiple of 32 and never resized: boxes stay in
each image's pixels and detections are clipped to each image's own size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import (
    Conv2dNormActivation,
    batched_nms,
    box_convert,
    complete_box_iou_loss,
    remove_small_boxes,
)

from zoo._registry import register_model
from zoo.backbones import feature_extractor
from zoo.detection._base import Detections, Detector, Targets

__all__ = [
    "STRIDES",
    "YOLO",
    "YOLOV3_ANCHORS",
    "DecoupledHead",
    "PathAggregationNeck",
    "assign_targets",
    "decode_boxes",
    "encode_boxes",
    "yolo_resnet18",
]

STRIDES = (8, 16, 32)
# YOLOv3's nine anchors (k-means on COCO, pixels of a 416 x 416 input), three per scale, as
# fractions of that side: what an image's longer side is multiplied by.
YOLOV3_ANCHORS = tuple(
    tuple((w / 416, h / 416) for w, h in scale)
    for scale in (
        ((10, 13), (16, 30), (33, 23)),
        ((30, 61), (62, 45), (59, 119)),
        ((116, 90), (156, 198), (373, 326)),
    )
)
# YOLOv5's objectness weight of P3 / P4 / P5 (a fine scale has more cells, so its mean objectness
# loss is smaller per object) and the prior of its objectness bias (8 objects per 640 x 640 image).
_BALANCE = (4.0, 1.0, 0.4)
_PRIOR_OBJECTS, _PRIOR_SIDE = 8, 640


def decode_boxes(raw: Tensor, cells: Tensor, anchors: Tensor, stride: float) -> Tensor:
    """Boxes ``[..., 4]`` (cx, cy, w, h pixels) from raw predictions ``[..., 4]`` (YOLOv5's decoding).

    Args:
        raw: ``(t_x, t_y, t_w, t_h)`` as the head predicts them.
        cells: ``(x, y)`` index of each prediction's grid cell, broadcastable to ``[..., 2]``.
        anchors: ``(w, h)`` in pixels of each prediction's anchor, broadcastable to ``[..., 2]``.
        stride: pixels per cell.
    """
    centre = (raw[..., :2].sigmoid() * 2 - 0.5 + cells) * stride
    size = (raw[..., 2:4].sigmoid() * 2) ** 2 * anchors
    return torch.cat([centre, size], dim=-1)


def encode_boxes(boxes: Tensor, cells: Tensor, anchors: Tensor, stride: float) -> Tensor:
    """The raw predictions that :func:`decode_boxes` turns into ``boxes`` (cx, cy, w, h pixels):
    its inverse, finite where :func:`assign_targets` puts a box (centre within half a cell of
    the cell, size within 4 times the anchor)."""
    offset = boxes[..., :2] / stride - cells  # in (-0.5, 1.5)
    ratio = boxes[..., 2:4] / anchors  # in (0, 4)
    return torch.cat([((offset + 0.5) / 2).logit(), (ratio.sqrt() / 2).logit()], dim=-1)


def assign_targets(
    boxes: Tensor,
    image_index: Tensor,
    anchors: Tensor,
    stride: int,
    grid_sizes: Tensor,
    anchor_threshold: float = 4.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """YOLOv5's target assignment at one scale, for a whole batch at once.

    A ground truth goes to every anchor whose width and height are both within a factor
    ``anchor_threshold`` of its own, in the cell holding its centre and in the two neighbouring
    cells nearest to the centre (left or right, above or below: the centre is within half a
    cell of them, which :func:`decode_boxes` can reach), when those cells are inside its image.
    A box of zero or negative width or height goes nowhere.

    Args:
        boxes: ``[N, 4]`` ground truths (cx, cy, w, h pixels) of the whole batch.
        image_index: ``[N]`` the image each belongs to.
        anchors: ``[B, A, 2]`` anchor (w, h) in pixels for each image.
        stride: pixels per cell.
        grid_sizes: ``[B, 2]`` cells (x, y) covering each image's own (unpadded) size, so the
            assignment does not depend on what an image is batched with.
        anchor_threshold: YOLOv5's ``anchor_t``.

    Returns:
        ``(target, image, anchor, cell)``: for each of the M assignments, the index of the
        ground truth, its image, the anchor and the ``[M, 2]`` cell (x, y).
    """
    ratio = boxes[:, None, 2:] / anchors[image_index]  # [N, A, 2]
    # A box without a positive width and height is nobody's: an inverted one's negative
    # ratios would pass the threshold test below and make a meaningless CIoU target.
    sized = (boxes[:, None, 2:] > 0).all(dim=-1)
    matched = sized & (torch.maximum(ratio, 1 / ratio).amax(dim=-1) < anchor_threshold)
    target, anchor = matched.nonzero(as_tuple=True)
    image = image_index[target]
    centre = boxes[target, :2] / stride  # grid units
    from_far_edge = grid_sizes[image] - centre
    # Neighbour on the low side (left / above) when the centre is in the cell's first half and
    # that cell exists; on the high side (right / below) likewise.
    low = (centre % 1 < 0.5) & (centre > 1)
    high = (from_far_edge % 1 < 0.5) & (from_far_edge > 1)
    keep = torch.cat([torch.ones_like(low[:, :1]), low, high], dim=1).T  # [5, M]
    steps = centre.new_tensor([[0, 0], [-1, 0], [0, -1], [1, 0], [0, 1]]).long()
    cells = (centre.floor().long()[None] + steps[:, None])[keep]  # row-major, as nonzero()
    which = keep.nonzero(as_tuple=True)[1]
    # A centre on an image's far edge floors into the cell past it: keep it in the last one.
    cells = torch.minimum(cells.clamp(min=0), grid_sizes[image[which]] - 1)
    return target[which], image[which], anchor[which], cells


def _conv(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> nn.Module:
    """Conv-BN-SiLU, YOLOv5's building unit."""
    return Conv2dNormActivation(
        in_channels, out_channels, kernel_size, stride, activation_layer=nn.SiLU
    )


def _merge(width: int) -> nn.Sequential:
    """Two concatenated maps back to ``width`` channels: a 1x1 then a 3x3 conv."""
    return nn.Sequential(_conv(2 * width, width), _conv(width, width, 3))


class PathAggregationNeck(nn.Module):
    """FPN's top-down path (1x1 laterals, nearest upsampling, concatenation, convolution), then
    optionally PANet's bottom-up one (a stride-2 conv, concatenation, convolution): every output
    scale sees the deep semantics and the fine localisation (Lin et al., 2017; Liu et al., 2018).

    Args:
        in_channels: channels of the backbone maps, shallow to deep.
        width: channels of every output map.
        bottom_up: add PANet's bottom-up path.
    """

    def __init__(self, in_channels: Sequence[int], width: int, bottom_up: bool = True) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(_conv(c, width) for c in in_channels)
        self.top_down = nn.ModuleList(_merge(width) for _ in in_channels[1:])
        scales = len(in_channels) - 1 if bottom_up else 0
        self.downsamples = nn.ModuleList(_conv(width, width, 3, stride=2) for _ in range(scales))
        self.bottom_up = nn.ModuleList(_merge(width) for _ in range(scales))

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        laterals = [lateral(m) for lateral, m in zip(self.laterals, maps, strict=True)]
        outs = [laterals[-1]]
        for i in range(len(laterals) - 2, -1, -1):
            up = F.interpolate(outs[0], size=laterals[i].shape[-2:], mode="nearest")
            outs.insert(0, self.top_down[i](torch.cat([up, laterals[i]], dim=1)))
        for i, (down, merge) in enumerate(zip(self.downsamples, self.bottom_up, strict=True)):
            outs[i + 1] = merge(torch.cat([down(outs[i]), outs[i + 1]], dim=1))
        return outs


class DecoupledHead(nn.Module):
    """Per scale, a 1x1 stem, then a class branch and a box branch of ``depth`` 3x3 convs each
    (YOLOX's decoupled head, Ge et al., 2021); 1x1 predictors give, per anchor, the class
    logits (``cls_preds``), the box ``(t_x, t_y, t_w, t_h)`` and the objectness logit.

    Args:
        width: channels of the neck's maps.
        num_anchors: anchors per cell.
        num_classes: object classes.
        strides: the scales' strides (one set of layers each; they set the objectness prior).
        depth: 3x3 convs per branch.
    """

    def __init__(
        self,
        width: int,
        num_anchors: int,
        num_classes: int,
        strides: Sequence[int] = STRIDES,
        depth: int = 2,
    ) -> None:
        super().__init__()
        self.width = width
        self.num_anchors = num_anchors
        self.num_classes = num_classes

        def branch() -> nn.Sequential:
            return nn.Sequential(*(_conv(width, width, 3) for _ in range(depth)))

        self.stems = nn.ModuleList(_conv(width, width) for _ in strides)
        self.cls_convs = nn.ModuleList(branch() for _ in strides)
        self.box_convs = nn.ModuleList(branch() for _ in strides)
        self.cls_preds = self.class_predictors(num_classes)
        self.box_preds = nn.ModuleList(nn.Conv2d(width, num_anchors * 4, 1) for _ in strides)
        self.obj_preds = nn.ModuleList(nn.Conv2d(width, num_anchors, 1) for _ in strides)
        # YOLOv5's bias init: an objectness prior of 8 objects per 640 x 640 image, so the first
        # steps are not swamped by the loss of confident negatives.
        with torch.no_grad():
            for pred, stride in zip(self.obj_preds, strides, strict=True):
                pred.bias.fill_(math.log(_PRIOR_OBJECTS / (_PRIOR_SIDE / stride) ** 2))

    def class_predictors(self, num_classes: int) -> nn.ModuleList:
        """Fresh class predictors (1x1 convs), biased to YOLOv5's class prior 0.6 / num_classes."""
        preds = nn.ModuleList(
            nn.Conv2d(self.width, self.num_anchors * num_classes, 1) for _ in self.stems
        )
        with torch.no_grad():
            for pred in preds:
                pred.bias.fill_(math.log(0.6 / max(num_classes - 0.99, 0.01)))
        return preds

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        """Per scale, ``[B, A, H, W, 5 + K]``: box (4), objectness (1), class logits (K)."""
        outs = []
        for stem, cls_convs, box_convs, cls_pred, box_pred, obj_pred, x in zip(
            self.stems, self.cls_convs, self.box_convs, self.cls_preds, self.box_preds,
            self.obj_preds, maps, strict=True,
        ):  # fmt: skip
            x = stem(x)
            box_features = box_convs(x)
            parts = (box_pred(box_features), obj_pred(box_features), cls_pred(cls_convs(x)))
            batch, _, height, width = x.shape
            parts = [p.view(batch, self.num_anchors, -1, height, width) for p in parts]
            outs.append(torch.cat(parts, dim=2).permute(0, 1, 3, 4, 2))
        return outs


class YOLO(Detector):
    """A multi-scale, anchor-based one-stage detector (Redmon & Farhadi, 2018) with YOLOv5's box
    decoding, target assignment and loss (Jocher et al., ultralytics/yolov5 v7.0).

    Training returns ``{"loss_box", "loss_obj", "loss_cls"}``, YOLOv5's terms with its gains
    (hyp.scratch-low: box 0.05, objectness 1.0, classes 0.5) and its objectness balance across
    P3 / P4 / P5 (4.0, 1.0, 0.4): ``loss_box`` is 1 - CIoU of the boxes decoded at the assigned
    (cell, anchor) pairs (:func:`assign_targets`), averaged over them; ``loss_obj`` the binary
    cross-entropy of every (cell, anchor)'s objectness against the CIoU of its prediction with
    its ground truth (0 where nothing is assigned), averaged per scale; ``loss_cls`` the binary
    cross-entropy of the assigned pairs' class logits against one-hot targets. Unlike YOLOv5 the
    terms are means over the batch, not multiplied by the batch size, and the gains are not
    rescaled for image size or class count (YOLOv5's defaults at 640 px and 80 classes).

    Args:
        num_classes: object classes, background excluded (labels ``1..num_classes``).
        in_channels: image channels.
        backbone: registry name of a zoo classifier with stages at strides 8, 16 and 32.
        backbone_weights: the backbone's weights (``"torchvision"``, a file, a URL), or ``None``.
        trainable_backbone_layers: backbone stages, counted from the deepest, that train
            (torchvision's meaning); ``None`` trains all of them.
        frozen_bn: freeze the backbone's batch norm (what small batches of large images need).
        anchors: per scale, the anchors' (w, h) as fractions of ``anchor_side``.
        anchor_side: the side, in pixels, that the anchor fractions are fractions of; ``None``
            takes each image's longer side. ``416`` gives YOLOv3's anchors in pixels whatever
            the image size: what small images whose objects fill much of them need, so that the
            objects go to the fine grid rather than share the few cells of the coarse one.
        neck_channels: channels of the neck and head.
        head_depth: 3x3 convs in each head branch.
        bottom_up: add PANet's bottom-up path to the FPN neck.
        anchor_threshold: largest width or height ratio between a ground truth and an anchor it
            is assigned to (YOLOv5's ``anchor_t``).
        box_gain, obj_gain, cls_gain: the loss terms' weights.
        score_threshold: smallest objectness and score of a detection.
        nms_threshold: IoU above which class-wise NMS drops the lower-scored box.
        detections_per_image: the most detections returned per image.
        pre_nms_top_k: the best-scored (box, class) pairs per image that go into NMS.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "resnet18",
        backbone_weights: str | None = None,
        trainable_backbone_layers: int | None = None,
        frozen_bn: bool = False,
        anchors: Sequence[Sequence[Sequence[float]]] = YOLOV3_ANCHORS,
        anchor_side: float | None = None,
        neck_channels: int = 128,
        head_depth: int = 2,
        bottom_up: bool = True,
        anchor_threshold: float = 4.0,
        box_gain: float = 0.05,
        obj_gain: float = 1.0,
        cls_gain: float = 0.5,
        score_threshold: float = 0.001,
        nms_threshold: float = 0.6,
        detections_per_image: int = 100,
        pre_nms_top_k: int = 1000,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"YOLO: num_classes={num_classes} must be at least 1")
        sizes = {len(scale) for scale in anchors}
        if len(anchors) != len(STRIDES) or len(sizes) != 1:
            raise ValueError(
                f"YOLO: anchors has {[len(s) for s in anchors]} anchors per scale; give "
                f"{len(STRIDES)} scales (strides {STRIDES}) with the same number of anchors each"
            )
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.anchor_side = anchor_side
        self.anchor_threshold = anchor_threshold
        self.gains = {"loss_box": box_gain, "loss_obj": obj_gain, "loss_cls": cls_gain}
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.detections_per_image = detections_per_image
        self.pre_nms_top_k = pre_nms_top_k
        # Registered first, so zoo.adapt's first convolution is the backbone's.
        self.backbone = feature_extractor(
            backbone,
            STRIDES,
            in_channels=in_channels,
            weights=backbone_weights,
            frozen_bn=frozen_bn,
            trainable_stages=trainable_backbone_layers,
            owner="YOLO",
        )
        self.neck = PathAggregationNeck(self.backbone.out_channels, neck_channels, bottom_up)
        self.num_anchors = sizes.pop()
        self.head = DecoupledHead(
            neck_channels, self.num_anchors, num_classes, STRIDES, depth=head_depth
        )
        # [scales, A, 2]; a buffer, so it follows the model to its device and into checkpoints.
        self.register_buffer("anchor_fractions", torch.tensor(anchors, dtype=torch.float32))

    def get_classifier(self) -> nn.ModuleList:
        """The class predictors of every scale: what a new set of classes replaces."""
        return self.head.cls_preds

    def reset_classifier(self, num_classes: int) -> None:
        """Fresh class predictors for ``num_classes`` classes (fine-tuning, e.g. through
        :func:`zoo.adapt`); backbone, neck, the rest of the head and the anchors stay."""
        if num_classes < 1:
            raise ValueError(f"YOLO: num_classes={num_classes} must be at least 1")
        device = self.anchor_fractions.device
        self.num_classes = self.head.num_classes = num_classes
        self.head.cls_preds = self.head.class_predictors(num_classes).to(device)

    def num_classes_in(self, state) -> int:
        return state["head.cls_preds.0.weight"].shape[0] // self.num_anchors

    def batch_images(self, images: Tensor | Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """``([B, C, H, W]`` padded bottom/right with zeros to a multiple of 32,
        ``[B, 2]`` each image's own (H, W)``)."""
        shapes = (
            [tuple(images.shape)]
            if isinstance(images, Tensor)
            else [tuple(i.shape) for i in images]
        )
        wanted = 4 if isinstance(images, Tensor) else 3
        if not shapes or any(len(s) != wanted or s[-3] != self.in_channels for s in shapes):
            raise ValueError(
                f"YOLO built for {self.in_channels}-channel images got shapes {sorted(set(shapes))}:"
                f" pass a [B, C, H, W] tensor or a list of [C, H, W] tensors with "
                f"C={self.in_channels}, or zoo.adapt(model, in_channels=...) first"
            )
        multiple = STRIDES[-1]
        if isinstance(images, Tensor):  # one size: one pad, no copy per image
            height, width = images.shape[-2:]
            sizes = torch.tensor([[height, width]], device=images.device).expand(len(images), 2)
            return F.pad(images, (0, -width % multiple, 0, -height % multiple)), sizes
        sizes = torch.tensor([image.shape[-2:] for image in images], device=images[0].device)
        height, width = (-(-int(side) // multiple) * multiple for side in sizes.amax(0))
        batch = images[0].new_zeros(len(images), self.in_channels, height, width)
        for canvas, image in zip(batch, images, strict=True):
            canvas[:, : image.shape[-2], : image.shape[-1]].copy_(image)
        return batch, sizes

    def forward_head(self, x: Tensor) -> list[Tensor]:
        """Raw predictions per scale, ``[B, A, H / stride, W / stride, 5 + K]`` (box, objectness,
        class logits), for a batch whose sides are multiples of 32."""
        maps = list(self.backbone(x).values())
        for stride, m in zip(STRIDES, maps, strict=True):
            if tuple(m.shape[-2:]) != (x.shape[-2] // stride, x.shape[-1] // stride):
                raise ValueError(
                    f"YOLO: the backbone's stride-{stride} map of a {tuple(x.shape[-2:])} input "
                    f"is {tuple(m.shape[-2:])}, not the input's size / {stride}; choose a "
                    "backbone whose stages halve their input exactly (resnet*, vgg*)"
                )
        return self.head(self.neck(maps))

    def anchors_for(self, sizes: Tensor) -> Tensor:
        """``[B, scales, A, 2]`` anchor (w, h) in pixels for images of ``sizes`` (``[B, 2]``):
        the fractions times ``anchor_side``, or times each image's longer side."""
        if self.anchor_side is not None:
            sides = sizes.new_full((len(sizes),), self.anchor_side, dtype=torch.float32)
        else:
            sides = sizes.amax(dim=1).float()
        return self.anchor_fractions[None] * sides[:, None, None, None]

    def forward(
        self, images: Tensor | Sequence[Tensor], targets: Targets | None = None
    ) -> dict[str, Tensor] | Detections:
        if self.training:
            targets = self.check_targets(targets)
        x, sizes = self.batch_images(images)
        # Boxes decode and losses compute in float32 whatever the autocast dtype (bf16 would move
        # box edges by several pixels at 416).
        raw = [p.float() for p in self.forward_head(x)]
        anchors = self.anchors_for(sizes)
        if self.training:
            return self.loss(raw, anchors, sizes, targets)
        return self.postprocess(raw, anchors, sizes)

    def loss(
        self, raw: Sequence[Tensor], anchors: Tensor, sizes: Tensor, targets: Targets
    ) -> dict[str, Tensor]:
        """YOLOv5's loss (see the class docstring) for raw predictions of every scale."""
        boxes = torch.cat([t["boxes"] for t in targets]).to(raw[0])
        labels = torch.cat([t["labels"] for t in targets]).to(raw[0].device) - 1
        counts = torch.tensor([len(t["boxes"]) for t in targets], device=boxes.device)
        image_index = torch.repeat_interleave(
            torch.arange(len(targets), device=boxes.device), counts
        )
        centres = box_convert(boxes, "xyxy", "cxcywh")
        zero = raw[0].new_zeros(())
        losses = {"loss_box": zero, "loss_obj": zero, "loss_cls": zero}
        for scale, (pred, stride) in enumerate(zip(raw, STRIDES, strict=True)):
            grid_sizes = torch.flip(-(-sizes // stride), dims=[1])  # (x, y) cells
            target, image, anchor, cells = assign_targets(
                centres, image_index, anchors[:, scale], stride, grid_sizes, self.anchor_threshold
            )
            # Indexing with empty index tensors still links every output to the loss, so each
            # parameter gets a (zero) gradient even in a batch without objects.
            assigned = pred[image, anchor, cells[:, 1], cells[:, 0]]  # [M, 5 + K]
            count = max(len(target), 1)
            decoded = decode_boxes(assigned[:, :4], cells, anchors[image, scale, anchor], stride)
            box_loss = complete_box_iou_loss(
                box_convert(decoded, "cxcywh", "xyxy"), boxes[target], reduction="none"
            )
            losses["loss_box"] = losses["loss_box"] + box_loss.sum() / count
            # Objectness target: the CIoU the prediction reached (at least 0); where two ground
            # truths share a (cell, anchor), the larger.
            quality = (1 - box_loss).detach().clamp(min=0)
            objectness = torch.zeros_like(pred[..., 4])
            step = objectness.stride()
            flat = image * step[0] + anchor * step[1] + cells[:, 1] * step[2] + cells[:, 0]
            objectness.view(-1).scatter_reduce_(0, flat, quality, reduce="amax")
            obj_loss = F.binary_cross_entropy_with_logits(pred[..., 4], objectness)
            losses["loss_obj"] = losses["loss_obj"] + _BALANCE[scale] * obj_loss
            one_hot = F.one_hot(labels[target], self.num_classes).to(assigned)
            cls_loss = F.binary_cross_entropy_with_logits(assigned[:, 5:], one_hot, reduction="sum")
            losses["loss_cls"] = losses["loss_cls"] + cls_loss / (count * self.num_classes)
        return {name: self.gains[name] * value for name, value in losses.items()}

    def postprocess(self, raw: Sequence[Tensor], anchors: Tensor, sizes: Tensor) -> Detections:
        """Decoded, scored and class-wise NMS-ed detections of every image (module docstring)."""
        boxes, objectness, classes = [], [], []
        for scale, (pred, stride) in enumerate(zip(raw, STRIDES, strict=True)):
            batch, _, height, width, _ = pred.shape
            ys, xs = torch.meshgrid(
                torch.arange(height, device=pred.device),
                torch.arange(width, device=pred.device),
                indexing="ij",
            )
            cells = torch.stack([xs, ys], dim=-1)  # [H, W, 2]
            scale_anchors = anchors[:, scale, :, None, None]  # [B, A, 1, 1, 2]
            boxes.append(decode_boxes(pred[..., :4], cells, scale_anchors, stride).flatten(1, 3))
            objectness.append(pred[..., 4].sigmoid().flatten(1))
            classes.append(pred[..., 5:].sigmoid().flatten(1, 3))
        detections = []
        for image_boxes, image_obj, image_cls, (height, width) in zip(
            torch.cat(boxes, 1), torch.cat(objectness, 1), torch.cat(classes, 1), sizes.tolist(),
            strict=True,
        ):  # fmt: skip
            candidates = image_obj > self.score_threshold
            scores = image_obj[candidates, None] * image_cls[candidates]
            # Every (box, class) pair above the threshold, as YOLOv5's multi-label NMS.
            box_index, label = (scores > self.score_threshold).nonzero(as_tuple=True)
            scores = scores[box_index, label]
            if len(scores) > self.pre_nms_top_k:
                scores, best = scores.topk(self.pre_nms_top_k)
                box_index, label = box_index[best], label[best]
            xyxy = box_convert(image_boxes[candidates][box_index], "cxcywh", "xyxy")
            xyxy = torch.minimum(xyxy.clamp(min=0), xyxy.new_tensor([width, height] * 2))
            keep = remove_small_boxes(xyxy, 1e-2)
            keep = keep[batched_nms(xyxy[keep], scores[keep], label[keep], self.nms_threshold)]
            keep = keep[: self.detections_per_image]
            detections.append(
                {"boxes": xyxy[keep], "scores": scores[keep], "labels": label[keep] + 1}
            )
        return detections


@register_model(task="detection", input_size=(3, 416, 416))
def yolo_resnet18(
    *,
    num_classes: int = 20,
    in_channels: int = 3,
    backbone: str = "resnet18",
    backbone_weights: str | None = None,
    trainable_backbone_layers: int | None = None,
    frozen_bn: bool = False,
    **kwargs,
) -> YOLO:
    """YOLO on a ResNet-18 (Section 14.7's multiscale detection; Redmon & Farhadi, 2018): its
    layer2-layer4 through an FPN + PAN neck of 128 channels, YOLOv3's anchors, YOLOv5's
    decoding and loss; ``backbone=`` takes any zoo classifier with stages at strides 8, 16, 32.
    See :class:`YOLO` for the other arguments."""
    return YOLO(
        num_classes,
        in_channels,
        backbone,
        backbone_weights,
        trainable_backbone_layers,
        frozen_bn,
        **kwargs,
    )
