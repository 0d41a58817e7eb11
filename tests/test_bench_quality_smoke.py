"""benchmarks/bench_quality.py runs end to end on tiny settings and prints its RATIO line last
(benchmarks are never timed in tests; this only guards the script against rot)."""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def tiny_medmnist(tmp_path: Path) -> Path:
    labels = np.arange(24) % 2
    images = np.random.default_rng(0).integers(0, 256, (24, 28, 28), dtype=np.uint8)
    data = tmp_path / "breastmnist.npz"
    np.savez(data, **{f"{s}_images": images for s in ("train", "val", "test")},
             **{f"{s}_labels": labels for s in ("train", "val", "test")})
    return data


def test_bench_quality_medmnist_tiny(tmp_path: Path) -> None:
    data = tiny_medmnist(tmp_path)
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


def test_bench_quality_medmnist_cv_tiny(tmp_path: Path) -> None:
    """--cv-folds: one run per seed and fold, each on its fold (folds, seeds and --vit-overrides reach
    train.py), means of best val AUC over all runs; a reused --out reads finished runs back, but
    not as the runs of other overrides. (The ViT only: the two-model summary is checked below.)"""
    cmd = [sys.executable, "benchmarks/bench_quality.py", "--tiny", "--cv-folds", "2", "--seeds", "0,1", "--jobs", "2",
           "--models", "vit", "--vit-overrides", "model.depth=1 model.global_pool=avg",
           "--data", str(tiny_medmnist(tmp_path)), "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "q.json")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    numbers = json.loads((tmp_path / "q.json").read_text())
    runs = [(s, f) for s in (0, 1) for f in (0, 1)]
    aucs = [numbers[f"vit_seed{s}_fold{f}/val/auc_best"] for s, f in runs]
    assert numbers["vit/cv_val_auc_mean"] == pytest.approx(sum(aucs) / 4)
    for s, f in runs:
        cfg = (tmp_path / "runs" / f"vit_seed{s}_fold{f}" / ".hydra" / "config.yaml").read_text()
        assert "cv_folds: 2" in cfg and f"cv_fold: {f}" in cfg and f"seed: {s}" in cfg and "depth: 1" in cfg
    assert not any(k.startswith("test/") or "/test/" in k for k in numbers)  # the test split stays unread
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("read back") == 4, again.stderr[-3000:]
    cmd[cmd.index("--vit-overrides") + 1] = "model.depth=2"
    other = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert other.returncode != 0 and "holds a finished run of other overrides" in other.stderr


def test_bench_quality_cv_summary_of_both_models(monkeypatch, capsys) -> None:
    """The --cv-folds summary of both models, from given runs: per-fold means over seeds, the mean
    and std over all runs, and CV_RATIO (ViT mean / ResNet-18 mean) printed last."""
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "bench_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    auc = {("vit", 0, 0): 0.8, ("vit", 0, 1): 0.9, ("vit", 1, 0): 0.7, ("vit", 1, 1): 1.0,
           ("resnet18", 0, 0): 0.9, ("resnet18", 0, 1): 0.9, ("resnet18", 1, 0): 0.8, ("resnet18", 1, 1): 0.8}
    seen = {}

    def fake_run_all(jobs, out, parallel, threads=None):
        seen.update(jobs)
        return {name: {"val/auc_best": auc[(m, int(s[4:]), int(f[4:]))], "process_s": 1.0}
                for name in jobs for m, s, f in [name.rsplit("_", 2)]}

    monkeypatch.setattr(bench, "run_all", fake_run_all)
    args = argparse.Namespace(cv_folds=2, seeds=[0, 1], data="x.npz", jobs=2, out=Path("unused"), threads=None)
    summary = bench.medmnist_cv(args, {"vit": ["model.depth=1"], "resnet18": ["model=resnet18"]}, ["task=medical"])
    assert seen["vit_seed1_fold0"] == ["task=medical", "model.depth=1", "seed=1", "data.cv_folds=2", "data.cv_fold=0"]
    assert summary["vit/cv_val_auc_mean"] == pytest.approx(0.85) and summary["resnet18/cv_val_auc_mean"] == pytest.approx(0.85)
    assert summary["vit/cv_val_auc_std"] == pytest.approx(statistics.stdev([0.8, 0.9, 0.7, 1.0]))
    assert summary["cv_val_auc_vit_over_resnet18"] == pytest.approx(1.0)
    printed = capsys.readouterr().out.strip().splitlines()
    assert "per fold (mean of 2 seeds) 0.750 / 0.950" in printed[1]  # ViT: folds 0 and 1 over seeds
    assert printed[-1] == "CV_RATIO val_auc_vit_over_resnet18 1.000"


def caption_table(tmp_path: Path) -> Path:
    """A tiny Flickr8k-style folder: images/ + captions.txt, two captions per image."""
    from PIL import Image

    flickr = tmp_path / "flickr"
    (flickr / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["image,caption"]
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(flickr / "images" / f"{i}.jpg")
        rows += [f"{i}.jpg,a {c} dog runs on the grass number {i % 3}" for c in ("black", "brown")]
    (flickr / "captions.txt").write_text("\n".join(rows) + "\n")
    return flickr


def test_bench_quality_captioning_tiny(tmp_path: Path) -> None:
    cmd = [sys.executable, "benchmarks/bench_quality.py", "--part", "captioning", "--tiny", "--flickr",
           str(caption_table(tmp_path)), "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "m.json")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    numbers = json.loads((tmp_path / "m.json").read_text())
    assert out.stdout.strip().splitlines()[-1] == f"RATIO cider_mae_over_scratch {numbers['cider_mae_over_scratch']:.3f}"
    assert (tmp_path / "runs" / "mae_pretrain" / "checkpoints" / "last.ckpt").is_file()


def test_bench_quality_contrastive_tiny(tmp_path: Path) -> None:
    flickr = caption_table(tmp_path)
    cmd = [sys.executable, "benchmarks/bench_quality.py", "--part", "contrastive", "--tiny", "--jobs", "2",
           "--flickr", str(flickr), "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "c.json")]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    numbers = json.loads((tmp_path / "c.json").read_text())
    assert out.stdout.strip().splitlines()[-1] == (
        f"RATIO cider_coca_over_captioning {numbers['cider_coca_over_captioning']:.3f}")
    assert numbers["cider_coca_over_captioning"] == numbers["coca/test/cider"] / max(numbers["captioning/test/cider"], 1e-9)
    assert "retrieval: test i2t R@1/5/10" in out.stdout and 0 <= numbers["retrieval/test/t2i_r10"] <= 1
    assert "task.contrastive_weight=1" in json.loads((tmp_path / "runs" / "coca" / "process.json").read_text())[
        "command"]
