"""benchmarks/gpu_check.sh --cpu-smoke: every step of the prepared GPU check (tests/test_gpu.py,
bench_gpu.py's table, the three default runs) runs tiny on the CPU and lands under $OUT
(benchmarks are never timed in tests; this only guards the scripts against rot)."""

import json
import os
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


def test_gpu_check_cpu_smoke(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--cpu-smoke"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    bench = (tmp_path / "bench_gpu.log").read_text().splitlines()
    assert any(line.startswith("ours ") for line in bench) and any(line.startswith("timm ") for line in bench)
    assert "tokens/s" in "\n".join(bench) and bench[-1].startswith("RATIO bench_gpu ")
    for task in ("classification", "captioning", "medical"):
        metrics = json.loads((tmp_path / "runs" / task / "metrics.json").read_text())
        assert metrics["wall_time_s"] > 0 and any(k.startswith("test/") for k in metrics), task
    summary = (tmp_path / "summary.txt").read_text()
    assert summary.count("exit 0") == 5 and "RATIO bench_gpu " in summary and "captioning: wall" in summary
