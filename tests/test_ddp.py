"""Two CPU processes (DDP over gloo) through the real command line: the run completes, and its
metrics, gathered across processes, equal one process's on the same data and weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "task=medical", "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=8",
    "data.batch_size=16", "data.splits.num_train=64", "data.splits.num_val=32", "data.splits.num_test=48",
    "task.bootstrap_samples=100", "task.num_heatmaps=2", "callbacks.progress_bar.refresh_rate=0",
]


def run(run_dir: Path, *overrides: str) -> dict:
    cmd = [sys.executable, "train.py", *TINY, f"hydra.run.dir={run_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def test_ddp_cpu_metrics_equal_single_process(tmp_path: Path) -> None:
    ddp = run(tmp_path / "ddp", "trainer=ddp_cpu", "trainer.max_epochs=1")
    assert ddp["best_ckpt"] and Path(ddp["best_ckpt"]).is_file()
    # The same checkpoint and test data in one process: AUC, ACC and their CIs are computed
    # on all 48 test scans in both cases (24 per process under DDP, gathered).
    single = run(tmp_path / "single", "trainer=cpu", "train=false", f"ckpt_path={ddp['best_ckpt']}")
    for key in ("test/auc", "test/acc", "test/auc_ci_low", "test/auc_ci_high", "test/ece", "test/loss"):
        assert single[key] == pytest.approx(ddp[key], abs=1e-6), key
