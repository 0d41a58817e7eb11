"""Real kills, not exceptions: `python train.py` SIGKILLed in the middle of an epoch resumes with
`resume_from=<run dir>` to the same metrics and weights as a run never stopped, and a SIGKILL in
the middle of a checkpoint save leaves the previous checkpoint whole.

SIGKILL runs no `finally`, no `except BaseException` and no Lightning teardown, which is what
test_resume.py's in-process exception cannot show. The callbacks that kill are in
tests/fault_injection.py, imported by the subprocesses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_resume import TINY, comparable, weights

ROOT = Path(__file__).resolve().parents[1]
KILL_MID_EPOCH = "+callbacks.killer._target_=tests.fault_injection.KillMidEpoch"  # epoch 1, after batch 2 of 4
# One thread each: two runs share the 2 cores of a small machine without slowing each other down.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}


def start_train(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """`python train.py` with the tiny config of test_resume.py, its run folder (and Hydra's) at
    `run_dir`; its output goes to `run_dir`.log."""
    cmd = [sys.executable, "train.py", *TINY, f"hydra.run.dir={run_dir}", *overrides]
    with open(run_dir.with_suffix(".log"), "w") as log:  # the child keeps its own handle
        return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen) -> int:
    return proc.wait(timeout=300)


def log_of(run_dir: Path) -> str:
    return run_dir.with_suffix(".log").read_text()[-3000:]


# Two loader workers, persistent as data.persistent_workers has them: their generators run on
# from one epoch to the next and are in no checkpoint, so exactness must not depend on them.
WORKERS = ["data.num_workers=2", "data.persistent_workers=true"]


@pytest.mark.parametrize("loader", [[], WORKERS], ids=["no-workers", "two-persistent-workers"])
def test_sigkilled_mid_epoch_run_resumes_as_if_never_stopped(tmp_path: Path, loader: list[str]) -> None:
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    ref, killed = start_train(ref_dir, *loader), start_train(run_dir, *loader, KILL_MID_EPOCH)  # in parallel
    assert finish(ref) == 0, log_of(ref_dir)
    assert finish(killed) == -signal.SIGKILL, log_of(run_dir)

    # What the kill left: epoch 0's last.ckpt (4 steps), readable without unpickling code; no
    # temporary file (the kill came between saves); no metrics.json.
    ckpt_dir = run_dir / "checkpoints"
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (0, 4)
    assert not list(ckpt_dir.glob(".*.tmp")), sorted(p.name for p in ckpt_dir.iterdir())
    assert not (run_dir / "metrics.json").exists()

    # What a kill in the middle of a save leaves (see the next test) does not disturb a resume.
    leftover = ckpt_dir / ".last.ckpt.0123abcd.tmp"
    leftover.write_bytes((ckpt_dir / "last.ckpt").read_bytes()[:4096])
    resumed = start_train(tmp_path / "resume", *loader, f"resume_from={run_dir}")
    assert finish(resumed) == 0, log_of(tmp_path / "resume")
    ref_metrics = json.loads((ref_dir / "metrics.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert comparable(metrics) == comparable(ref_metrics)
    assert Path(metrics["best_ckpt"]).parent == ckpt_dir
    ref_w, w = weights(ref_dir), weights(run_dir)
    assert ref_w.keys() == w.keys() and all(torch.equal(ref_w[k], w[k]) for k in ref_w)
    assert not leftover.exists()  # the resumed run's first save of last.ckpt cleared it


def test_sigkill_during_a_checkpoint_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    script = f"from tests.fault_injection import die_while_saving; die_while_saving({str(path)!r}, after_bytes=4096)"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]

    loaded = torch.load(path, weights_only=True)  # the previous checkpoint, whole
    assert loaded["epoch"] == 1 and torch.equal(loaded["w"], torch.zeros(1000))
    # The kill skips the clean-up, so the half-written temporary file stays. Harmless: a hidden
    # name that no `*.ckpt` pattern, ModelCheckpoint or resume_from reads (the test above resumes
    # next to one); it only takes disk space until removed.
    (tmp,) = [p for p in tmp_path.iterdir() if p != path]
    assert tmp.name.startswith(".last.ckpt.") and tmp.suffix == ".tmp"
    assert tmp.stat().st_size == 4096
