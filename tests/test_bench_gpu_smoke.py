"""benchmarks/bench_gpu.py starts and prints its table on a tiny config without a GPU
(benchmarks are never timed in tests; this only guards the script against rot)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_gpu_runs_on_cpu_tiny(tmp_path: Path):
    cmd = [sys.executable, "benchmarks/bench_gpu.py", "--device", "cpu", "--tiny", "--batch", "4", "--repeats", "2",
           "--warmup", "1", "--decode-batch", "2", "--decode-tokens", "4", "--json", str(tmp_path / "gpu.json")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert any(line.startswith("ours ") for line in lines) and any(line.startswith("timm ") for line in lines)
    assert "tokens/s" in out.stdout and lines[-1].startswith("RATIO bench_gpu ")
    numbers = json.loads((tmp_path / "gpu.json").read_text())  # --json: what it printed, for results/
    assert f"RATIO bench_gpu {numbers['bench_gpu']:.3f}" == lines[-1]
    assert numbers["ours_images_per_s"] > 0 and numbers["bench_gpu_mfu_ours"] is None  # no peak on a CPU
