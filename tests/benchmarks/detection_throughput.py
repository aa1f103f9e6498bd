"""Training throughput of the zoo's composed detectors against the torchvision models they wrap.

Each pair runs the same training step (forward with targets, summed losses, backward, SGD step)
on the same images and targets from the same weights: torchvision's model gets pixels in
[0, 1] and normalises inside; the zoo's gets them normalised by the caller, as its data modules
do. Steps alternate between the two (seeded alike, so the R-CNNs sample the same proposals), so a
slow spell of the machine hits both; the ratio is torchvision's median step time over the zoo's
(1.0 = as fast, above 1 = faster). Both wall and process CPU time are reported. Never a CI gate:
run it by hand.

    python -m tests.benchmarks.detection_throughput [--steps 6] [--batch 2] [--size 320]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision
from torch import nn

import zoo

# zoo registry name -> the torchvision builder it composes.
PAIRS = {
    "ssd300_vgg16": "ssd300_vgg16",
    "fasterrcnn_resnet50_fpn": "fasterrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn": "maskrcnn_resnet50_fpn",
}


def _pair(name: str, size: int) -> tuple[nn.Module, nn.Module]:
    """torchvision's model with random weights, and the zoo's loaded from its state dict."""
    torch.manual_seed(0)
    sizes = {} if name.startswith("ssd") else {"min_size": size, "max_size": size}
    theirs = torchvision.models.get_model(
        PAIRS[name], weights=None, weights_backbone=None, num_classes=91, **sizes
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.pth"
        torch.save(theirs.state_dict(), path)
        ours = zoo.create_model(name, weights=str(path), **sizes)
    return theirs.train(), ours.train()


def _batch(batch: int, size: int, masks: bool) -> tuple[list[torch.Tensor], list[dict]]:
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(3, size, size, generator=generator) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        corners = torch.rand(3, 2, 2, generator=generator).sort(dim=1).values * size
        boxes = torch.cat([corners[:, 0], corners[:, 1] + 8], dim=1).clamp(max=size)
        target = {"boxes": boxes, "labels": torch.randint(1, 91, (3,), generator=generator)}
        if masks:
            target["masks"] = torch.zeros(3, size, size, dtype=torch.uint8)
            for mask, (x1, y1, x2, y2) in zip(target["masks"], boxes.long().tolist(), strict=True):
                mask[y1:y2, x1:x2] = 1
        targets.append(target)
    return images, targets


def _step(model: nn.Module, images, targets, optimizer) -> tuple[float, float]:
    torch.manual_seed(2)  # the same proposal and anchor sampling for both models
    wall, cpu = time.perf_counter(), time.process_time()
    optimizer.zero_grad(set_to_none=True)
    loss = sum(model(images, targets).values())
    loss.backward()
    optimizer.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(name: str, steps: int, batch: int, size: int) -> dict[str, float]:
    """Median seconds per step of each model and the ratios torchvision / zoo."""
    theirs, ours = _pair(name, size)
    mean, std = zoo.model_info(name).torchvision_mean_std
    mean, std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    images, targets = _batch(batch, size, masks=name.startswith("maskrcnn"))
    normalised = [(image - mean) / std for image in images]
    optimizers = [torch.optim.SGD(m.parameters(), lr=1e-5) for m in (theirs, ours)]
    _step(theirs, images, targets, optimizers[0])  # warm-up: allocator, kernels
    _step(ours, normalised, targets, optimizers[1])
    times: dict[str, list[tuple[float, float]]] = {"torchvision": [], "zoo": []}
    for _ in range(steps):
        times["torchvision"].append(_step(theirs, images, targets, optimizers[0]))
        times["zoo"].append(_step(ours, normalised, targets, optimizers[1]))
    result = {}
    for key, values in times.items():
        result[f"{key}_wall"] = statistics.median(v[0] for v in values)
        result[f"{key}_cpu"] = statistics.median(v[1] for v in values)
    for kind in ("wall", "cpu"):
        result[f"ratio_{kind}"] = result[f"torchvision_{kind}"] / result[f"zoo_{kind}"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=320, help="R-CNN min/max size (SSD: 300)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"fwd+bwd+SGD step, batch {args.batch}, median of {args.steps}; seconds wall / CPU")
    for name in args.models:
        r = measure(name, args.steps, args.batch, args.size)
        print(
            f"  {name:24s} torchvision {r['torchvision_wall']:6.3f} / {r['torchvision_cpu']:6.3f}"
            f"   zoo {r['zoo_wall']:6.3f} / {r['zoo_cpu']:6.3f}"
            f"   ratio {r['ratio_wall']:.3f} / {r['ratio_cpu']:.3f}"
        )


if __name__ == "__main__":
    main()
