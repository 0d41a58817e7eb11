"""benchmarks/bench_quality.py runs end to end on tiny settings and prints its RATIO line last
(benchmarks are never timed in tests; this only guards the script against rot)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quality_medmnist_tiny(tmp_path: Path) -> None:
    labels = np.arange(24) % 2
    images = np.random.default_rng(0).integers(0, 256, (24, 28, 28), dtype=np.uint8)
    data = tmp_path / "breastmnist.npz"
    np.savez(data, **{f"{s}_images": images for s in ("train", "val", "test")},
             **{f"{s}_labels": labels for s in ("train", "val", "test")})
    cmd = [sys.executable, "benchmarks/bench_quality.py", "--tiny", "--seeds", "0,1", "--jobs", "2",
           "--data", str(data), "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "q.json")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    numbers = json.loads((tmp_path / "q.json").read_text())
    assert lines[-1] == f"RATIO auc_vit_over_resnet18 {numbers['auc_vit_over_resnet18']:.3f}"
    assert "vit: test AUC" in out.stdout and "resnet18: test AUC" in out.stdout
    for m in ("vit", "resnet18"):  # mean of the two seeds' test AUC
        runs = [numbers[f"{m}_seed{s}/test/auc"] for s in (0, 1)]
        assert numbers[f"{m}/auc_mean"] == sum(runs) / 2
