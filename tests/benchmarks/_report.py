"""What every benchmark returns, and how trials are timed: the one format ``make bench`` writes.

A benchmark module defines ``run(size: str) -> list[Measurement]``, ``size`` one of ``SIZES``:
``"tiny"`` (the suite's smoke run: seconds, numbers meaningless), ``"quick"`` (``make
bench-quick``: the whole set in about 3 minutes on 2 cores) and ``"full"`` (``make bench``:
about 20 minutes). A measurement is a ratio of two things timed in the same process, trials
alternating between them so that a slow spell of a shared machine hits both (``compare``), or a
plain value (an accuracy, a speed-up of one variant over another); either way the trials are
kept, and the median is the number reported. A module that cannot measure here raises ``Skip``.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SIZES = ("tiny", "quick", "full")


class Skip(Exception):
    """Raised by ``run`` when this machine cannot take the measurement (no GPU, an optional
    package missing): the runner records the reason instead of a number."""


def summary(values: Sequence[float]) -> dict[str, float]:
    """min / median / max and the number of trials."""
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "n": len(values),
    }


@dataclass
class Measurement:
    """One row of ``benchmarks.json`` and of the README's table.

    Args:
        group: the issue's heading it belongs to ("framework overhead", "architecture
            parity", "data pipeline", "quality", "detection internals", "gpu").
        name: what was measured, e.g. ``"LeNet, 1x28x28, batch 256"``.
        compared: what against what, e.g. ``"zoo fit / plain PyTorch loop"``; the value is the
            first over the second (a ratio) or the first alone.
        trials: one value per trial (per-trial ratios for a ratio).
        unit: ``"x"`` for a ratio, else the value's unit (``"acc"``, ``"mAP@50"``, ``"s"``...).
        goal: the bar the issue sets, e.g. ``">= 0.95"``, or ``""``.
        higher_is_better: how to read the value against the goal.
        details: anything else worth keeping (the two medians, steps, settings).
    """

    group: str
    name: str
    compared: str
    trials: list[float]
    unit: str = "x"
    goal: str = ""
    higher_is_better: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return statistics.median(self.trials)

    @property
    def met(self) -> bool | None:
        """Whether the median meets ``goal`` (``">= x"`` or ``"<= x"``); None without one."""
        if not self.goal:
            return None
        sign, bound = self.goal.split()
        return self.value >= float(bound) if sign == ">=" else self.value <= float(bound)

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["value"] = self.value
        record["trials"] = summary(self.trials) | {"values": list(self.trials)}
        record["met"] = self.met
        return record


def seconds(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(
    candidate: Callable[[], float],
    baseline: Callable[[], float],
    trials: int,
    warmup: bool = True,
) -> tuple[list[float], list[float], list[float]]:
    """Alternate ``trials`` calls of two timed functions (each returns its own seconds, so it can
    leave its set-up out), after one untimed call of each. Returns the per-trial ratios
    ``baseline / candidate`` (above 1: the candidate is faster) and both lists of seconds."""
    if warmup:
        candidate(), baseline()
    ours, theirs = [], []
    for trial in range(trials):
        # Who goes first alternates too: the second of a pair can find warmer caches.
        pair = (candidate, baseline) if trial % 2 == 0 else (baseline, candidate)
        first, second = pair[0](), pair[1]()
        ours.append(first if trial % 2 == 0 else second)
        theirs.append(second if trial % 2 == 0 else first)
    return [t / o for o, t in zip(ours, theirs, strict=True)], ours, theirs


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU model and cores, torch threads, load, versions,
    the GPU when there is one."""
    import lightning
    import torch
    import torchvision

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "platform": platform.platform(),
    }


def _number(value: float, unit: str, difference: bool) -> str:
    if unit == "x":
        return f"{value:.2f}x" if value < 10 else f"{value:,.0f}x"
    return f"{value:+.3f}" if difference else f"{value:.3g}"


def markdown_table(report: dict[str, Any]) -> str:
    """The README's table of a ``benchmarks.json`` report: one row per measurement, with the
    machine and the run's date under it."""
    lines = [
        "| group | measurement | compared | median | trials (min to max, n) | goal | met |",
        "| --- | --- | --- | ---: | --- | --- | --- |",
    ]
    for m in report["measurements"]:
        trials, unit = m["trials"], m["unit"]
        difference = " - " in m["compared"]  # a margin: signed
        low, high = (_number(trials[k], unit, difference) for k in ("min", "max"))
        spread = f"{low} to {high}, {trials['n']}"
        met = {True: "yes", False: "**no**", None: ""}[m["met"]]
        value = _number(m["value"], unit, difference) + ("" if unit == "x" else f" {unit}")
        lines.append(
            f"| {m['group']} | {m['name']} | {m['compared']} | {value} | {spread} "
            f"| {m['goal']} | {met} |"
        )
    for s in report.get("skipped", []):
        lines.append(f"| {s['group']} | {s['module']} | skipped: {s['reason']} | | | | |")
    for f in report.get("failed", []):
        lines.append(f"| | {f['module']} | **failed**: {f['error'][:120]} | | | | |")
    box = report["machine"]
    gpu = f", GPU {box['gpu']}" if box.get("gpu") else ", no GPU"
    lines.append("")
    lines.append(
        f"Measured {report['date']} by `make bench` ({report['size']}, {report['seconds']:.0f} s) "
        f"on {box['cpu']}, {box['cores']} cores, {box['torch_threads']} torch threads{gpu}; "
        f"torch {box['torch']}, torchvision {box['torchvision']}, Lightning {box['lightning']}."
    )
    return "\n".join(lines)


README_BEGIN, README_END = "<!-- benchmarks:begin", "<!-- benchmarks:end -->"


def readme_table(readme: str) -> str:
    """The benchmark table currently in the README's text (between the markers)."""
    begin = readme.index(README_BEGIN)
    return readme[readme.index("\n", begin) + 1 : readme.index(README_END)].strip()


def with_table(readme: str, table: str) -> str:
    """The README's text with ``table`` between the markers."""
    begin = readme.index("\n", readme.index(README_BEGIN)) + 1
    return readme[:begin] + table + "\n" + readme[readme.index(README_END) :]
