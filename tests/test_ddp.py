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
    "data.batch_size=16", "data.num_train=64", "data.num_val=32", "data.num_test=48",
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


def test_ddp_cpu_skips_bad_images_and_counts_them_over_both_processes(tmp_path: Path) -> None:
    """data.on_bad_image=skip under DDP: every process steps together (the bad training
    sample is replaced, not dropped), counts are summed, bad_images.json lists all processes'."""
    import numpy as np
    from PIL import Image

    root = tmp_path / "images"
    for c, cls in enumerate("ab"):
        for split, n in (("train", 8), ("val", 3)):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = np.random.default_rng(10 * c + i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    (root / "train" / "a" / "empty.png").write_bytes(b"")
    (root / "val" / "b" / "zz.png").write_bytes(b"")
    cmd = [sys.executable, "train.py", "task=classification", "data=imagefolder", f"data.root={root}",
           "model=vit_tiny", *TINY[1:5], "data.img_size=32", "data.batch_size=4", "trainer=ddp_cpu",
           "trainer.max_epochs=2", "data.on_bad_image=skip", "callbacks.progress_bar.refresh_rate=0",
           f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # Per epoch the bad train image is drawn once in all (by one process or the other).
    assert metrics["train/skipped_images"] == 1 and metrics["val/skipped_images"] == 1
    entries = json.loads((tmp_path / "run" / "bad_images.json").read_text())["skipped_while_loading"]
    assert metrics["data/skipped_images"] == len(entries) == 2 + 2 + 1  # train and val twice, test once
    assert sorted({e["split"] for e in entries}) == ["test", "train", "val"]


def test_ddp_cpu_captioning_metrics_equal_single_process(tmp_path: Path) -> None:
    """Captioning under DDP: every process builds the same tokenizer (checked in setup; only
    rank 0 writes it), tokenises in its loader, and the gathered test scores equal one process's."""
    from tests.test_captioning_run import TINY as CAPTION_TINY
    from tests.test_captioning_run import TINY_SCENES

    common = [*CAPTION_TINY[:8], *CAPTION_TINY[10:], *TINY_SCENES, "task.generation.num_beams=1"]

    def caption_run(run_dir: Path, *overrides: str) -> dict:
        cmd = [sys.executable, "train.py", *common, f"hydra.run.dir={run_dir}", *overrides]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads((run_dir / "metrics.json").read_text())

    ddp = caption_run(tmp_path / "ddp", "trainer=ddp_cpu", "trainer.max_epochs=1")
    assert (tmp_path / "ddp" / "tokenizer" / "tokenizer.json").is_file()
    single = caption_run(tmp_path / "single", "trainer=cpu", "train=false", f"ckpt_path={ddp['best_ckpt']}")
    for key in ("test/bleu4", "test/cider", "test/rouge_l"):
        assert single[key] == pytest.approx(ddp[key], abs=1e-9), key
