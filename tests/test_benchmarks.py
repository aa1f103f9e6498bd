"""``make bench`` works: every benchmark module runs at its tiny size and returns well-formed
measurements (never judged on their values: times on a shared machine are noise), the runner
writes the JSON and the README table, and the README's table is the committed
``benchmarks.json``'s."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from tests.benchmarks import __main__ as runner
from tests.benchmarks._report import (
    Measurement,
    Skip,
    compare,
    markdown_table,
    readme_table,
    with_table,
)

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(runner.BENCHMARKS))
def test_benchmark_runs_at_tiny_size(name, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # recipes are read from configs/
    module = importlib.import_module(f"tests.benchmarks.{name}")
    try:
        measurements = module.run("tiny")
    except Skip as reason:  # no GPU; faster-coco-eval is `make bench`'s, not the suite's
        missing = {
            "gpu_speed": not torch.cuda.is_available(),
            "map_backends": importlib.util.find_spec("faster_coco_eval") is None,
        }
        assert missing.get(name), reason
        return
    assert measurements and all(isinstance(m, Measurement) for m in measurements)
    for m in measurements:
        record = m.as_dict()
        assert m.group == runner.BENCHMARKS[name], m.group
        assert m.trials and all(math.isfinite(t) for t in m.trials), m
        assert record["trials"]["min"] <= record["value"] <= record["trials"]["max"]
        json.dumps(record)  # plain data only


def test_compare_alternates_and_pairs_the_trials():
    calls = []

    def side(name, seconds):
        def timed():
            calls.append(name)
            return seconds

        return timed

    ratios, ours, theirs = compare(side("zoo", 2.0), side("plain", 1.0), trials=3)
    assert calls == ["zoo", "plain", "zoo", "plain", "plain", "zoo", "zoo", "plain"]
    assert ratios == [0.5] * 3 and ours == [2.0] * 3 and theirs == [1.0] * 3


def test_measurement_reads_its_goal():
    assert Measurement("g", "n", "c", [0.9, 1.0, 1.2], goal=">= 0.98").met is True
    assert Measurement("g", "n", "c", [0.9, 0.95, 1.2], goal=">= 0.98").met is False
    assert Measurement("g", "n", "c", [70.0], unit="MiB", goal="<= 50").met is False
    assert Measurement("g", "n", "c", [1.0]).met is None


def test_runner_writes_json_and_readme_and_records_skips_and_failures(monkeypatch, tmp_path):
    def broken(size):
        raise RuntimeError("out of cheese")

    monkeypatch.setattr(importlib.import_module("tests.benchmarks.multibox"), "run", broken)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- benchmarks:begin -->\nold\n<!-- benchmarks:end -->\ntail\n")
    output = tmp_path / "benchmarks.json"
    argv = ["--size", "tiny", "--threads", "1", "--only", "map_memory", "multibox", "gpu_speed"]
    status = runner.main([*argv, "--output", str(output), "--readme", str(readme)])
    assert status == 1  # multibox failed; the others still ran
    report = json.loads(output.read_text())
    assert [m["module"] for m in report["measurements"]] == ["map_memory"]
    assert report["failed"] == [{"module": "multibox", "error": "RuntimeError: out of cheese"}]
    if not torch.cuda.is_available():
        assert [s["module"] for s in report["skipped"]] == ["gpu_speed"]
    assert report["machine"]["cores"] >= 1 and report["machine"]["torch"] == torch.__version__
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- benchmarks:end -->\ntail\n")
    assert readme_table(text) == markdown_table(report)
    assert "**failed**: RuntimeError: out of cheese" in text
    # The table alone, rewritten from a report without measuring anything.
    readme.write_text("<!-- benchmarks:begin -->\n<!-- benchmarks:end -->\n")
    assert runner.main(["--table-from", str(output), "--readme", str(readme)]) == 0
    assert readme_table(readme.read_text()) == markdown_table(report)


def test_readme_table_is_the_committed_benchmarks_json():
    report = json.loads((ROOT / "benchmarks.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert readme_table(readme) == markdown_table(report), "run `make bench`"
    assert report["size"] == "full" and not report["failed"]
    assert with_table(readme, markdown_table(report)) == readme
