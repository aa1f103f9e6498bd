"""Data parallelism (d2l Sections 12.5-12.7) on 2 CPU processes with gloo: synchronous SGD equals
one process on the summed batch, evaluation scores every sample exactly once, a simulated
two-node run keeps its nodes in step, and a process that fails ends the whole job.

Lightning's "ddp" strategy launches the other processes by re-running the launching command, so
the runs are subprocesses (tests/ddp_*.py, or the ``zoo`` CLI); four launches in all. Each runs in
its own session, killed whole on a timeout so that no rank outlives the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

from tests._trainers import cpu_trainer
from tests.ddp_train import (
    EVAL_KINDS,
    NUM_VAL,
    SCENES,
    SEED,
    SGD_BATCH,
    SGD_EPOCHS,
    SGD_SAMPLES,
    eval_data,
    eval_task,
    quiet,
    sgd_data,
    sgd_task,
)

ROOT = Path(__file__).resolve().parents[1]
# The variables by which a launcher tells Lightning it made the processes; an outer launcher's
# must not leak into ours.
_LAUNCHER_VARIABLES = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "RANK")
_LAUNCHER_VARIABLES += ("MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED")
# Scores of each task, one of which at least must lie strictly between 0 and 1 for the test to
# see a sample scored twice (an accuracy of 0 or 1 would not move).
SCORES = {
    "classifier": ("val/acc", "val/acc_top5"),
    "detector": ("val/map", "val/map_50", "val/mar_100"),
    "segmenter": ("val/miou", "val/pixel_acc"),
}


@pytest.fixture(autouse=True)
def _quiet():
    quiet()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    env |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    return env | {"MASTER_PORT": str(_free_port())} | extra


def _launch(commands: list[list[str]], envs: list[dict[str, str]], logs: Path, timeout: float):
    """Start every command at once, each in a session of its own, and wait for all of them.

    Returns their exit codes, the wall time and the processes of their sessions (the ranks they
    launched) still running 10 s after they exited. A run past ``timeout`` fails the test; either
    way every process of the sessions is killed at the end, so no rank outlives the test."""
    logs.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    processes = []
    for index, (command, env) in enumerate(zip(commands, envs, strict=True)):
        with open(logs / f"launch{index}.log", "w") as log:
            processes.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )  # fmt: skip
    sessions = {process.pid for process in processes}
    try:
        codes = [p.wait(timeout=max(timeout - (time.perf_counter() - start), 1)) for p in processes]
        seconds = time.perf_counter() - start
        left = _live_processes(sessions, wait=10.0)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the launch ran past {timeout} s (a hang?):\n{_tail(logs)}")
    finally:
        for session in sessions:
            try:
                os.killpg(session, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return codes, seconds, left


def _live_processes(sessions: set[int], wait: float) -> list[int]:
    """The processes of ``sessions`` that are still alive (zombies, which exited but were not
    reaped, are not) after up to ``wait`` seconds; Linux's /proc."""
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            state, session = fields[0], int(fields[3])
            if session in sessions and state not in ("Z", "X"):
                alive.append(int(stat.parent.name))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _tail(logs: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(logs.glob("launch*.log")))


# -- evaluation sets are split without repeats (no processes needed) --------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    """The DigitScenes tree of tests/ddp_train.py, written once."""
    import datamodules

    root = tmp_path_factory.mktemp("ddp") / "scenes"
    datamodules.DigitScenes(root=str(root), **SCENES).prepare_data()
    return root


def _as_rank(data, rank: int, world_size: int = 2):
    data.trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
    return data


@pytest.mark.parametrize("kind", EVAL_KINDS)
def test_evaluation_sets_are_split_without_repeats(kind, scenes):
    """Each process's validation indices, together, are every sample exactly once, in batches of
    different counts (Lightning's own sampler would score sample 0 twice: 5 -> 3 + 3); training
    shares are one seeded shuffle, strided; one process keeps a plain evaluation loader."""
    shares, train_shares = [], []
    for rank in (0, 1):
        data = _as_rank(eval_data(kind, scenes), rank)
        data.setup("fit")
        loader = data.val_dataloader()
        shares.append(list(loader.sampler))
        assert len(loader) == (2, 1)[rank]  # batch size 2: 3 samples, then 2
        train_shares.append(list(data.train_dataloader().sampler))
    assert sorted(shares[0] + shares[1]) == list(range(NUM_VAL))
    assert set(train_shares[0] + train_shares[1]) == set(range(len(data.train_dataset)))
    single = _as_rank(eval_data(kind, scenes), 0, world_size=1)
    single.setup("fit")
    assert isinstance(single.val_dataloader().sampler, SequentialSampler)


def test_training_shuffle_depends_on_the_seed_and_epoch_alone(monkeypatch):
    """What makes a resumed run draw the uninterrupted run's order: the same seed and epoch give
    the same shuffle whatever the global generator's state, another epoch another one; and the
    loader's workers take their base seed from the loader's own generator."""
    import datamodules

    monkeypatch.setenv("PL_GLOBAL_SEED", "3")
    orders = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        data = _as_rank(datamodules.Digits(batch_size=64), 0, world_size=1)
        data.setup("fit")
        loader = data.train_dataloader()
        loader.sampler.set_epoch(4)
        orders.append(list(loader.sampler))
        assert loader.generator.initial_seed() == 3
    assert orders[0] == orders[1] and orders[0] != sorted(orders[0])
    loader.sampler.set_epoch(5)
    assert list(loader.sampler) != orders[0]
    outside_a_trainer = datamodules.Digits(batch_size=64)
    outside_a_trainer.setup("fit")
    assert isinstance(outside_a_trainer.train_dataloader().sampler, RandomSampler)


def test_test_set_is_split_without_repeats():
    """The official test split too: 360 images on 7 processes are 52 or 51 each, none twice
    (Lightning's sampler would make it 7 x 52 = 364)."""
    import datamodules

    shares = []
    for rank in range(7):
        data = _as_rank(datamodules.Digits(batch_size=64), rank, world_size=7)
        data.setup("test")
        shares.append(list(data.test_dataloader().sampler))
    assert sorted(len(share) for share in shares) == [51] * 4 + [52] * 3
    assert sorted(i for share in shares for i in share) == list(range(360))


def test_evaluation_set_smaller_than_the_processes_is_refused():
    """A process without a sample would skip its evaluation loop (Lightning) and never join the
    others in the metrics' sync, which would then wait forever: refused up front."""
    import datamodules

    data = _as_rank(datamodules.Digits(batch_size=2, val_fraction=0.5 / 1437), 1)
    data.setup("fit")
    assert len(data.val_dataset) == 1
    with pytest.raises(ValueError, match="of 1 samples cannot be shared by 2 processes"):
        data.val_dataloader()


# -- a: synchronous SGD; b: metrics over the whole set, once (one launch) ---------------------


def _sgd_batches() -> list[list[int]]:
    """The union of the two processes' batches, step by step: Lightning's DistributedSampler
    shuffles with torch.randperm seeded with seed + epoch, and process r takes every second
    index from r."""
    batches = []
    for epoch in range(SGD_EPOCHS):
        generator = torch.Generator().manual_seed(SEED + epoch)
        order = torch.randperm(SGD_SAMPLES, generator=generator).tolist()
        shares = [order[rank::2] for rank in (0, 1)]
        for start in range(0, SGD_SAMPLES // 2, SGD_BATCH):
            batches.append([i for share in shares for i in share[start : start + SGD_BATCH]])
    return batches


def _check_synchronous_sgd(out: Path, tmp_path: Path) -> None:
    initial = torch.load(out / "sgd_initial.pt", weights_only=True)
    ranks = [torch.load(out / f"sgd_rank{r}.pt", weights_only=True)["state_dict"] for r in (0, 1)]
    for key in initial:  # the same averaged gradient on both: the same weights, to the bit
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    assert max((ranks[0][k] - initial[k]).abs().max() for k in initial) > 1e-2  # it trained
    task = sgd_task()
    task.load_state_dict(initial)
    batches = _sgd_batches()
    assert len(batches) >= 4 and all(len(batch) == 2 * SGD_BATCH for batch in batches)
    trainer = cpu_trainer(tmp_path / "sgd", max_epochs=1, enable_checkpointing=False)
    trainer.fit(task, DataLoader(sgd_data(), batch_sampler=batches))
    assert trainer.global_step == len(batches)
    for key, value in task.state_dict().items():
        gap = (value - ranks[0][key]).abs().max().item()
        assert gap <= 1e-6, f"{key}: one process ends {gap:g} away from two"


def _check_metrics(kind: str, out: Path, scenes: Path, tmp_path: Path) -> None:
    saved = [torch.load(out / f"{kind}_rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [s["val_batches"] for s in saved] == [[2], [1]]  # the ranks ran unequal batch counts
    # Every epoch metric is the job's, not a process's own: the ranks log the same values.
    epoch = [{k: v for k, v in s["metrics"].items() if not k.endswith("_step")} for s in saved]
    assert epoch[0] == epoch[1]
    ddp = {k: v for k, v in epoch[0].items() if k.startswith("val/")}
    assert any(0 < ddp[name] < 1 for name in SCORES[kind]), ddp
    task = eval_task(kind)
    task.load_state_dict(saved[0]["state_dict"])
    trainer = cpu_trainer(tmp_path / kind, enable_checkpointing=False)
    single = trainer.validate(task, datamodule=eval_data(kind, scenes), verbose=False)[0]
    assert set(single) == set(ddp)
    for name, value in single.items():
        assert value == pytest.approx(ddp[name], rel=1e-6, abs=1e-6), (kind, name)


def test_ddp_trains_like_one_process_and_scores_each_sample_once(scenes, tmp_path):
    """One launch of tests/ddp_train.py. (a) Two processes with batch b, gradients averaged (DDP),
    end on bit-identical weights, equal to one process with batch 2b on the same samples, after 8
    SGD-with-momentum steps (d2l Section 12.5). (b) A classifier, a detector and a segmenter,
    trained a few steps on 2 processes and validated on 5 samples (3 + 2 per process), log the
    validation metrics one process computes from the same weights; a sample scored twice or
    lost would move them."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "tests.ddp_train", str(out), str(scenes)]
    (code,), seconds, _ = _launch([command], [_env()], tmp_path / "logs", timeout=300)
    assert code == 0, _tail(tmp_path / "logs")
    print(f"ddp_train: {seconds:.1f} s")
    _check_synchronous_sgd(out, tmp_path)
    for kind in EVAL_KINDS:
        _check_metrics(kind, out, scenes, tmp_path)


# -- c: two nodes on one machine, through the zoo CLI ------------------------------------------

_RECIPE = """\
seed_everything: 0
trainer:
  max_epochs: 1
  limit_train_batches: 4
  default_root_dir: {root}
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
model:
  class_path: tasks.ImageClassifier
  init_args:
    model: lenet
    optimizer:
      class_path: torch.optim.SGD
      init_args:
        lr: 0.1
        momentum: 0.9
data:
  class_path: datamodules.Digits
  init_args:
    batch_size: 8
    val_fraction: 0.01
"""


def test_two_nodes_on_one_machine_stay_in_step(tmp_path):
    """``zoo fit`` launched twice with ``num_nodes=2, devices=1`` and NODE_RANK 0 and 1 (what a
    cluster's launcher does on each node; Lightning's default environment needs only MASTER_ADDR,
    MASTER_PORT and NODE_RANK): both finish and hold the same weights, which moved."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(_RECIPE.format(root=tmp_path / "run"))
    zoo = str(Path(sys.executable).with_name("zoo"))
    command = [
        zoo, "fit", "--config", str(recipe), "--trainer.accelerator", "cpu",
        "--trainer.devices", "1", "--trainer.num_nodes", "2", "--trainer.strategy", "ddp",
        "--trainer.callbacks+=tests.ddp_callbacks.SaveWeights",
        "--trainer.callbacks.out_dir", str(tmp_path / "weights"),
    ]  # fmt: skip
    env = _env()
    envs = [env | {"NODE_RANK": str(node)} for node in (0, 1)]
    codes, seconds, _ = _launch([command, command], envs, tmp_path / "logs", timeout=180)
    assert codes == [0, 0], _tail(tmp_path / "logs")
    print(f"two nodes: {seconds:.1f} s")
    initial = torch.load(tmp_path / "weights" / "initial.pt", weights_only=True)
    ranks = [torch.load(tmp_path / "weights" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key in initial:
        assert torch.equal(ranks[0]["state_dict"][key], ranks[1]["state_dict"][key]), key
    assert not all(torch.equal(initial[k], ranks[0]["state_dict"][k]) for k in initial)
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()  # rank 0 checkpointed


# -- d: a failing process ends the job ---------------------------------------------------------


@pytest.mark.parametrize("failing_rank", [1, 0])
def test_a_failing_process_ends_the_whole_job(failing_rank, tmp_path):
    """A process raising at step 2 (tests/ddp_fault.py): the launching process exits non-zero
    well within the time limit, and no process of the job is left running. The survivor is
    waiting in the gradient all-reduce of its backward pass; gloo reports the closed connection
    there ("Connection closed by peer") and the survivor raises too, before Lightning's
    _ChildProcessObserver (which polls the launched ranks every 5 s) has to step in."""
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "tests.ddp_fault", str(out), str(failing_rank)]
    (code,), seconds, left = _launch([command], [_env()], tmp_path / "logs", timeout=60)
    log = (tmp_path / "logs" / "launch0.log").read_text()
    assert code != 0, log[-3000:]
    assert f"planned failure on rank {failing_rank}" in log
    assert left == [], f"processes {left} outlived the job"
    after_raise = time.time() - float((out / "raised").read_text())
    print(
        f"rank {failing_rank} raised: exit {code} after {seconds:.1f} s, {after_raise:.1f} s later"
    )
