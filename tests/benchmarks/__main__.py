"""``make bench``: every benchmark of this folder in one process, one JSON file, one table.

    python -m tests.benchmarks [--size full|quick|tiny] [--only throughput parity ...]
        [--output benchmarks.json] [--readme README.md] [--threads N]
    python -m tests.benchmarks --table-from benchmarks.json --readme README.md

Each module's ``run(size)`` returns its measurements (see ``_report``); they are written, with
the machine they were taken on, to ``--output`` as JSON, and as a markdown table into the README
between its ``benchmarks`` markers when ``--readme`` is given (``make bench`` does, with the full
size: the committed ``benchmarks.json`` is the source of the README's table). A module that
cannot measure on this machine (no GPU) is recorded as skipped; one that fails is recorded with
its error, the others still run, and the command exits with status 1. Timings are only as
quiet as the machine: the load average is recorded, and a warning printed when something else
is running.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

from tests.benchmarks._report import SIZES, Skip, machine, markdown_table, with_table

# Module, and its group for the table when it is skipped or fails: the order.
BENCHMARKS = {
    "throughput": "framework overhead",
    "parity": "architecture parity",
    "loader": "data pipeline",
    "detection_loader": "data pipeline",
    "quality": "quality",
    "multibox": "detection internals",
    "map_backends": "detection internals",
    "map_memory": "detection internals",
    "gpu_speed": "gpu",
}


def run_all(size: str, only: list[str]) -> dict:
    """Run the chosen modules; the report ``benchmarks.json`` holds."""
    start = time.perf_counter()
    report: dict = {
        "date": datetime.date.today().isoformat(),
        "size": size,
        "machine": machine(),
        "measurements": [],
        "skipped": [],
        "failed": [],
    }
    for name in only:
        began = time.perf_counter()
        print(f"== {name} ({size})", flush=True)
        try:
            module = importlib.import_module(f"tests.benchmarks.{name}")
            measurements = module.run(size)
        except Skip as reason:
            report["skipped"].append({"module": name, "group": BENCHMARKS[name], "reason": str(reason)})  # fmt: skip
            print(f"   skipped: {reason}", flush=True)
            continue
        except Exception as error:  # a broken benchmark must not cost the others' numbers
            traceback.print_exc()
            report["failed"].append({"module": name, "error": f"{type(error).__name__}: {error}"})
            continue
        for m in measurements:
            record = m.as_dict() | {"module": name}
            report["measurements"].append(record)
            goal = f" (goal {m.goal}: {'met' if m.met else 'MISSED'})" if m.goal else ""
            print(f"   {m.name}: {m.value:.4g} {m.unit}{goal}", flush=True)
        print(f"   {time.perf_counter() - began:.0f} s", flush=True)
    report["seconds"] = time.perf_counter() - start
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=SIZES)
    parser.add_argument("--only", nargs="+", default=list(BENCHMARKS), choices=list(BENCHMARKS))
    parser.add_argument("--output", default="benchmarks.json", type=Path)
    parser.add_argument("--readme", default=None, type=Path, help="write the table into it")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (default: every core there is)"
    )
    parser.add_argument(
        "--table-from", type=Path, help="measure nothing: write this report's table (--readme)"
    )
    args = parser.parse_args(argv)
    if args.table_from is not None:
        table = markdown_table(json.loads(args.table_from.read_text()))
        if args.readme is not None:
            args.readme.write_text(with_table(args.readme.read_text(), table))
        print(table)
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(args.threads or cores or 1)
    warnings.filterwarnings("ignore")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5 * (cores or 1):
        print(
            f"warning: load average {load:.1f} on {cores} cores: something else is running, and "
            "the timings will be noisy (the ratios less so: their trials alternate)",
            flush=True,
        )
    report = run_all(args.size, args.only)
    args.output.write_text(json.dumps(report, indent=1) + "\n")
    table = markdown_table(report)
    print("\n" + table)
    if args.readme is not None:
        args.readme.write_text(with_table(args.readme.read_text(), table))
    for failure in report["failed"]:
        print(f"FAILED {failure['module']}: {failure['error']}", file=sys.stderr)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
