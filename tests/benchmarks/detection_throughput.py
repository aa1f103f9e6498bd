"""Training throughput of the zoo's composed detectors against the torchvision models they wrap.

Each pair runs the same training step (forward with targets, summed losses, backward, SGD step)
on the same images and targets from the same weights: torchvision's model gets pixels in
[0, 1] and normalises inside; the zoo's gets them normalised by the caller, as its data modules
do. Steps alternate between the two (seeded alike, so the R-CNNs sample the same proposals, and
checked to give the same losses), so a slow spell of the machine hits both; the ratio is
torchvision's median step time over the zoo's (1.0 = as fast, above 1 = faster). Both wall and
process CPU time are reported. The steps and pairs are :mod:`tests.benchmarks.parity`'s, whose
``run`` reports these detectors with the rest of the architecture-parity group; this is the
same measurement with its own knobs. Never a CI gate: run it by hand.

    python -m tests.benchmarks.detection_throughput [--steps 6] [--batch 2] [--size 320]
"""

from __future__ import annotations

import argparse
import warnings

import torch

from tests.benchmarks.parity import DETECTORS, Settings, measure_detector


def measure(name: str, steps: int, batch: int, size: int) -> dict[str, float]:
    """Median seconds per step of each model and the ratios torchvision / zoo."""
    settings = Settings((name,), trials=steps, detection_size=size, detection_batch=batch)
    details = measure_detector(name, settings).details
    result = {
        "torchvision_wall": details["torchvision_s"],
        "zoo_wall": details["zoo_s"],
        "torchvision_cpu": details["torchvision_cpu_s"],
        "zoo_cpu": details["zoo_cpu_s"],
    }
    for kind in ("wall", "cpu"):
        result[f"ratio_{kind}"] = result[f"torchvision_{kind}"] / result[f"zoo_{kind}"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DETECTORS), choices=DETECTORS)
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
