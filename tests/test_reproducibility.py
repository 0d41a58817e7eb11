"""Same config and seed, same numbers: two CPU runs write the same metrics.json (but for wall
time and folder), another seed does not, and run_info.json records what a rerun must match."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from train import train

ROOT = Path(__file__).resolve().parents[1]
# Dropout, shuffling and random crops on: each draws from the seeded generators.
TINY = [
    "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=8", "model.drop_rate=0.1",
    "data.img_size=32", "data.batch_size=16", "data.num_train=48", "data.num_val=16",
    "data.num_test=16", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.deterministic=true",
    "trainer.max_epochs=2", "callbacks.progress_bar.refresh_rate=0",
]


def run(run_dir: Path, seed: int) -> dict[str, Any]:
    """metrics.json of a run, less what differs between two runs of the same thing."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        train(compose("config", overrides=[*TINY, f"seed={seed}", f"paths.output_dir={run_dir}"]))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {**metrics, "wall_time_s": None, "best_ckpt": Path(metrics["best_ckpt"]).relative_to(run_dir).as_posix()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    out = {}
    for name, seed in (("a", 7), ("again", 7), ("other_seed", 8)):
        run_dir = tmp_path_factory.mktemp(name)
        out[name] = run_dir, run(run_dir, seed)
    return out


def test_same_seed_same_metrics(runs) -> None:
    (_, a), (_, again) = runs["a"], runs["again"]
    assert {"val/loss", "val/acc", "test/loss", "test/acc"} <= a.keys()
    assert a == again


def test_other_seed_other_metrics(runs) -> None:
    (_, a), (_, other) = runs["a"], runs["other_seed"]
    assert a["val/loss"] != other["val/loss"] and a["test/loss"] != other["test/loss"]


def test_run_info_records_seed_versions_and_code(runs) -> None:
    run_dir, _ = runs["a"]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["seed"] == 7
    assert {"python", "torch", "torchvision", "timm", "transformers", "tokenizers", "pytorch_lightning", "hydra",
            "numpy", "pillow"} <= info["versions"].keys()
    assert info["versions"]["torch"] and info["versions"]["python"]
    assert "commit" in info["git"] and info["platform"] and info["device"]["accelerator"] == "cpu"
