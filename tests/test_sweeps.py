"""Multirun sweeps through the real command line: the leaderboard (tasks/leaderboard.py) of a
grid with a failing job, and an Optuna search (conf/hparams_search/optuna.yaml) that survives
a failed trial. Both sweeps start together (each spends most of its time importing torch)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from PIL import Image

from tasks.leaderboard import LeaderboardCallback, rebuild

ROOT = Path(__file__).resolve().parents[1]
HAS_OPTUNA = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None
# One block of width 32 on 8 px patches of 32 px shapes, 64 training images, one epoch.
TINY = [
    "task=classification",
    "model.embed_dim=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.patch_size=8",
    "data.img_size=32",
    "data.num_val=32",
    "data.num_test=32",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "callbacks.progress_bar.refresh_rate=0",
]
# 2x2 grid; num_train=16 with batch_size=32 (drop_last) fails in the DataModule: job 3.
GRID = ["-m", *TINY, "data.num_train=64,16", "data.batch_size=16,32"]
# TPE with seed 1 draws batch sizes 16, 128, 16: trial 1 fails (128 > 64 training images).
OPTUNA = [
    "hparams_search=optuna",
    *TINY,
    "data.num_train=64",
    "data.batch_size=choice(16,128)",
    "hydra.sweeper.n_trials=3",
    "hydra.sweeper.sampler.seed=1",
]
TOO_BIG = "larger than the train split"


class Sweep:
    def __init__(self, sweep_dir: Path, args: list[str]) -> None:
        self.dir = sweep_dir
        self.log = sweep_dir.with_suffix(".log")
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "train.py", *args, f"hydra.sweep.dir={sweep_dir}"],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait(self) -> tuple[int, str]:
        rc = self.process.wait(timeout=600)
        return rc, self.log.read_text()


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sweeps")
    started = {"grid": Sweep(root / "grid", GRID)}
    if HAS_OPTUNA:
        started["optuna"] = Sweep(root / "optuna", OPTUNA)
    yield started
    for sweep in started.values():
        if sweep.process.poll() is None:
            sweep.process.kill()
            sweep.process.wait()


def read_board(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "leaderboard.csv", newline="") as f:
        return list(csv.DictReader(f))


def job_metrics(sweep_dir: Path) -> dict[int, dict]:
    return {int(p.parent.name): json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def test_grid_leaderboard_ranks_jobs_and_lists_the_failure(sweeps) -> None:
    rc, output = sweeps["grid"].wait()
    sweep_dir = sweeps["grid"].dir
    # Hydra's BasicSweeper runs the whole batch, then raises for the failed job.
    assert rc != 0 and TOO_BIG in output, output[-3000:]

    rows = read_board(sweep_dir)
    assert [r["num"] for r in rows][-1] == "3" and len(rows) == 4
    assert [r["status"] for r in rows] == ["COMPLETED"] * 3 + ["FAILED"]
    assert rows[-1]["error"].startswith("ValueError: data.batch_size=32") and TOO_BIG in rows[-1]["error"]
    assert rows[-1]["val/acc_best"] == "" and rows[-1]["rank"] == ""
    assert (
        "data.num_train=16" in rows[-1]["overrides"] and "data.batch_size=32" in rows[-1]["overrides"]
    )

    # The finished jobs keep their results; the best row is the best metrics.json.
    metrics = job_metrics(sweep_dir)
    assert sorted(metrics) == [0, 1, 2]
    assert all(Path(m["best_ckpt"]).is_file() for m in metrics.values())
    best = max(m["val/acc_best"] for m in metrics.values())
    assert [r["best"] for r in rows] == ["*", "", "", ""] and rows[0]["rank"] == "1"
    assert float(rows[0]["val/acc_best"]) == best == metrics[int(rows[0]["num"])]["val/acc_best"]
    values = [float(r["val/acc_best"]) for r in rows[:3]]
    assert values == sorted(values, reverse=True)
    for row in rows[:3]:
        assert float(row["test/acc"]) == metrics[int(row["num"])]["test/acc"]
        assert (row["best_epoch"], row["best_epoch_from"]) == ("0", "checkpoint")

    status = json.loads((sweep_dir / "3" / "job_status.json").read_text())
    assert status["status"] == "FAILED" and status["num"] == 3 and status["error_type"] == "ValueError"
    assert "data.batch_size=32" in status["overrides"] and "_check_train_batch" in status["traceback"]
    md = (sweep_dir / "leaderboard.md").read_text()
    assert f"**Best: job {rows[0]['num']}**" in md and "FAILED" in md and TOO_BIG in md
    with Image.open(sweep_dir / "leaderboard.png") as image:
        assert image.format == "PNG" and 400 < image.width < 1200 and 80 < image.height < 400
    assert not list(sweep_dir.rglob("*.tmp"))


@pytest.mark.skipif(
    not HAS_OPTUNA, reason='hydra-optuna-sweeper is not installed (pip install -e ".[sweep]")'
)
def test_optuna_search_survives_a_failed_trial(sweeps) -> None:
    rc, output = sweeps["optuna"].wait()
    sweep_dir = sweeps["optuna"].dir
    assert rc == 0, output[-3000:]

    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    metrics = job_metrics(sweep_dir)
    assert sorted(metrics) == [0, 2]  # trial 1 (batch size 128) failed; trial 2 still ran
    assert results["best_value"] == max(m["val/acc_best"] for m in metrics.values())
    assert results["best_params"]["data.batch_size"] == 16
    assert set(results["best_params"]) == {
        "task.lr",
        "task.weight_decay",
        "model.drop_path_rate",
        "data.batch_size",
    }

    rows = read_board(sweep_dir)
    assert [r["status"] for r in rows] == ["COMPLETED", "COMPLETED", "FAILED"]
    assert rows[-1]["num"] == "1" and TOO_BIG in rows[-1]["error"]
    assert float(rows[0]["val/acc_best"]) == results["best_value"]
    assert (sweep_dir / "leaderboard.md").is_file() and (sweep_dir / "leaderboard.png").is_file()


def test_single_runs_write_nothing(tmp_path: Path) -> None:
    config = OmegaConf.create(
        {
            "hydra": {
                "mode": "RUN",
                "runtime": {"output_dir": str(tmp_path / "run")},
                "sweep": {"dir": str(tmp_path)},
            }
        }
    )
    callback = LeaderboardCallback()
    callback.on_job_start(config)
    callback.on_job_end(config, job_return=None)
    assert not list(tmp_path.iterdir())


def test_rebuild_ranks_from_the_job_folders(tmp_path: Path) -> None:
    """NaN metrics are unranked, running jobs sit before failed ones, the CSV log gives the epoch."""

    def job(num: int, status: str, metrics: dict | None = None, **extra) -> Path:
        folder = tmp_path / str(num)
        folder.mkdir()
        record = {"num": num, "status": status, "overrides": [f"task.lr={num}", "seed=1"], **extra}
        record |= {"optimized_metric": "val/acc", "mode": "max"}
        (folder / "job_status.json").write_text(json.dumps(record))
        if metrics is not None:
            (folder / "metrics.json").write_text(json.dumps(metrics))
        return folder

    job(0, "COMPLETED", {"val/acc": math.nan, "best_ckpt": None, "wall_time_s": 1.0})
    job(1, "FAILED", error_type="RuntimeError", error="CUDA out of memory.\nTried to allocate")
    job(2, "RUNNING")
    folder = job(3, "COMPLETED", {"val/acc": 0.5, "best_ckpt": None, "wall_time_s": 2.0})
    (folder / "csv").mkdir()
    (folder / "csv" / "metrics.csv").write_text("epoch,step,val/acc\n0,9,0.25\n1,19,0.75\n2,29,0.5\n")
    job(4, "COMPLETED", {"val/acc": 0.6, "val/acc_best": 0.7, "best_ckpt": "x/epoch_004.ckpt"})

    board = rebuild(tmp_path)
    rows = read_board(tmp_path)
    assert [r["num"] for r in rows] == ["4", "3", "0", "2", "1"]
    assert [r["rank"] for r in rows] == ["1", "2", "", "", ""] and rows[0]["best"] == "*"
    # Ranked by val/acc_best where a job has it, else val/acc (what train.py's main returns).
    assert rows[0]["val/acc_best"] == "0.7" and rows[1]["val/acc"] == "0.5"
    assert (rows[0]["best_epoch"], rows[0]["best_epoch_from"]) == ("4", "checkpoint")
    assert (rows[1]["best_epoch"], rows[1]["best_epoch_from"]) == ("1", "csv log")
    assert rows[-1]["error"] == "RuntimeError: CUDA out of memory. Tried to allocate"
    assert board["summary"] == "5 jobs: 3 completed, 1 failed, 1 running"
    md = (tmp_path / "leaderboard.md").read_text()
    assert "Overrides of every job: `seed=1`" in md and "**Best: job 4** `task.lr=4`" in md
    assert (tmp_path / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
