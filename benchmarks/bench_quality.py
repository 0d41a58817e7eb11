"""Quality on real data, in one run: our recipes against the baseline a user would train instead.

    python benchmarks/bench_quality.py                     # BreastMNIST: ViT recipe vs ResNet-18, 3 seeds
    python benchmarks/bench_quality.py --jobs 2 --json results/bench_quality/metrics.json
    python benchmarks/bench_quality.py --cv-folds 3 --jobs 2        # 3 folds of train + val x 3 seeds, val AUC
    python benchmarks/bench_quality.py --cv-folds 3 --models vit --vit-overrides "model.depth=8"  # 3 x 3 runs
    python benchmarks/bench_quality.py --part captioning   # Flickr8k 1k: with vs without MAE pretraining
    python benchmarks/bench_quality.py --part contrastive  # Flickr8k 1k: retrieval R@K; CoCa vs captioning

**medmnist** (default): `python train.py task=medical data=medmnist data.path=FILE seed=S` (the
documented recipe, conf/specialize/medical_vit_tiny_medmnist.yaml) and the same command with
`model=resnet18` (MedMNIST v2's ResNet-18 at 28 px: 3x3 stem, no max-pool, 100 epochs,
conf/specialize/medical_resnet18_medmnist.yaml), each its own recipe (--epochs sets both) with the
same seeds (wall times printed: the ViT's runs fit the 15-minute budget on a 2-core CPU; ResNet-18's 100
epochs took 2-3 times as long beside another run, results/bench_quality_breastmnist). Models are chosen on val AUC
(the best checkpoint), tested once. Prints each run, mean ± std of test AUC / ACC per model and,
last, `RATIO auc_vit_over_resnet18 <mean ViT AUC / mean ResNet-18 AUC>`. `--cv-folds K` instead runs
each model on the K folds of train + val (`data.cv_folds`; test left unread) with each seed and prints
best val AUC per fold, the mean over all runs and `CV_RATIO val_auc_vit_over_resnet18`: where to choose between recipes, since
a few dozen official val images cannot separate recipes a few hundredths apart. `--vit-overrides`
adds train.py overrides to the ViT's runs (a candidate change to the recipe).

**captioning**: Flickr8k 1k (`data=caption_table`) from scratch for --caption-epochs, against MAE
pretraining on the same training images (--pretrain-epochs) followed by captioning with that
encoder for the captioning epochs that the pretraining's time leaves (at the scratch run's cost
per epoch), so that both spend about the same CPU time (wall times printed beside the scores). Prints BLEU-4 / CIDEr-D of both and
`RATIO cider_mae_over_scratch`.

**contrastive**: Flickr8k 1k (`data=caption_table`): `task=retrieval` (CLIP-tiny, --retrieval-epochs;
an epoch reads each training image once, where a captioning epoch reads it once per caption),
its test image->text / text->image R@1/5/10; and the default captioner against CoCa (the same
command with `task.contrastive_weight=1`: text-only first decoder blocks and a contrastive loss
beside the caption loss), both for --caption-epochs, run side by side (--jobs) so that their wall
times compare. Prints BLEU-4 / CIDEr-D and the time of both and `RATIO cider_coca_over_captioning`.

Each run is `train.py` in a subprocess with its own run folder under --out; `--jobs 2` runs two
at once (each with half the cores' threads). Never run by pytest beyond `--tiny` (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TINY = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1", "task.bootstrap_samples=0"]
# Caption tasks have no bootstrap CIs; batches of 8 fit a tiny caption table.
TINY_CAPTIONS = [*TINY[:-1], "data.batch_size=8"]


def run(name: str, overrides: list[str], out: Path, threads: int) -> dict:
    """One train.py run; its metrics.json plus the wall time of the whole process. A run whose
    folder already holds a finished run (its metrics.json, e.g. of an interrupted benchmark given
    the same --out) is read back, not run again; refused when that run's .hydra/overrides.yaml
    shows other overrides (another --vit-overrides, say)."""
    run_dir = out / name
    done = run_dir / "process.json"
    extra = ["logger=csv", "callbacks.progress_bar.refresh_rate=0"]
    if (run_dir / "metrics.json").is_file():
        ran = run_dir / ".hydra" / "overrides.yaml"
        ran_with = list(OmegaConf.load(ran)) if ran.is_file() else None
        if ran_with is not None and sorted(ran_with) != sorted([*overrides, *extra]):
            raise RuntimeError(f"{run_dir} holds a finished run of other overrides ({ran}: "
                               f"{ran_with}); asked for {[*overrides, *extra]}: give another --out")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        took = json.loads(done.read_text())["process_s"] if done.is_file() else metrics["wall_time_s"]
        print(f"  {name}: finished earlier in {run_dir} ({took:.0f} s), read back", flush=True)
        return {**metrics, "process_s": took}
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    done.write_text(json.dumps({"process_s": took, "command": cmd}) + "\n")
    print(f"  {name}: {took:.0f} s, " + ", ".join(
        f"{k} {metrics[k]:.4f}" for k in ("val/auc_best", "test/auc", "test/acc", "val/cider_best", "test/bleu4",
                                          "test/cider") if k in metrics), flush=True)
    return {**metrics, "process_s": took}


def run_all(jobs: dict[str, list[str]], out: Path, parallel: int, threads: int | None = None) -> dict[str, dict]:
    threads = threads or max(1, (os.cpu_count() or 1) // parallel)
    with ThreadPoolExecutor(parallel) as pool:
        futures = {name: pool.submit(run, name, overrides, out, threads) for name, overrides in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def medmnist(args: argparse.Namespace) -> dict[str, float]:
    data = ["task=medical", "data=medmnist", f"data.path={args.data}", "task.num_heatmaps=0"]
    epochs = [f"trainer.max_epochs={args.epochs}"] if args.epochs else []
    models = {m: extra for m, extra in {"vit": args.vit_overrides, "resnet18": ["model=resnet18"]}.items()
              if m in args.models}
    tiny = TINY if args.tiny else []
    if args.cv_folds:
        return medmnist_cv(args, models, [*data, *epochs, *tiny])
    jobs = {f"{m}_seed{s}": [*data, *extra, *epochs, f"seed={s}", *tiny]
            for s in args.seeds for m, extra in models.items()}
    print(f"BreastMNIST-style quality run: {args.data}, seeds {args.seeds}, {args.jobs} at a time")
    results = run_all(jobs, args.out, args.jobs, args.threads)
    summary: dict[str, float] = {}
    for m in models:
        for key in ("test/auc", "test/acc", "process_s"):
            mean, std = mean_std([results[f"{m}_seed{s}"][key] for s in args.seeds])
            summary[f"{m}/{key.split('/')[-1]}_mean"], summary[f"{m}/{key.split('/')[-1]}_std"] = mean, std
        print(f"{m:>9}: test AUC {summary[f'{m}/auc_mean']:.3f} ± {summary[f'{m}/auc_std']:.3f}, "
              f"ACC {summary[f'{m}/acc_mean']:.3f} ± {summary[f'{m}/acc_std']:.3f} "
              f"({len(args.seeds)} seeds, {summary[f'{m}/process_s_mean']:.0f} s per run)")
    for name, metrics in results.items():
        summary.update({f"{name}/{k}": v for k, v in metrics.items() if isinstance(v, float)})
    if len(models) == 2:
        summary["auc_vit_over_resnet18"] = summary["vit/auc_mean"] / summary["resnet18/auc_mean"]
        print(f"RATIO auc_vit_over_resnet18 {summary['auc_vit_over_resnet18']:.3f}")
    return summary


def medmnist_cv(args: argparse.Namespace, models: dict[str, list[str]], common: list[str]) -> dict[str, float]:
    """--cv-folds K: each model once per fold of train + val (`data.cv_folds`) and seed, scored on
    the fold's val images only (best val AUC, the number the checkpoint is chosen by): a way to
    choose between recipes on every labelled image, with the test split left unread. Every seed
    counts: one run per fold moves by a few hundredths with the run (README, Results, BreastMNIST)."""
    k = args.cv_folds
    runs = [(s, f) for s in args.seeds for f in range(k)]
    jobs = {f"{m}_seed{s}_fold{f}": [*common, *extra, f"seed={s}", f"data.cv_folds={k}", f"data.cv_fold={f}"]
            for s, f in runs for m, extra in models.items()}
    print(f"BreastMNIST-style cross-validation: {args.data}, {k} folds of train + val, seeds {args.seeds}, "
          f"{args.jobs} at a time")
    results = run_all(jobs, args.out, args.jobs, args.threads)
    summary: dict[str, float] = {}
    for m in models:
        auc = {(s, f): results[f"{m}_seed{s}_fold{f}"]["val/auc_best"] for s, f in runs}
        for s, f in runs:
            summary[f"{m}_seed{s}_fold{f}/val/auc_best"] = auc[s, f]
            summary[f"{m}_seed{s}_fold{f}/process_s"] = results[f"{m}_seed{s}_fold{f}"]["process_s"]
        per_fold = [statistics.fmean(auc[s, f] for s in args.seeds) for f in range(k)]
        summary[f"{m}/cv_val_auc_mean"], summary[f"{m}/cv_val_auc_std"] = mean_std(list(auc.values()))
        print(f"{m:>9}: best val AUC per fold (mean of {len(args.seeds)} seeds) "
              + " / ".join(f"{a:.3f}" for a in per_fold)
              + f"; all {len(runs)} runs {summary[f'{m}/cv_val_auc_mean']:.3f} ± {summary[f'{m}/cv_val_auc_std']:.3f}")
    if len(models) == 2:
        summary["cv_val_auc_vit_over_resnet18"] = summary["vit/cv_val_auc_mean"] / summary["resnet18/cv_val_auc_mean"]
        print(f"CV_RATIO val_auc_vit_over_resnet18 {summary['cv_val_auc_vit_over_resnet18']:.3f}")
    return summary


def flickr_data(args: argparse.Namespace) -> tuple[Path, list[str]]:
    """The Flickr8k caption table (--flickr: images/ + captions.txt) as train.py overrides."""
    flickr = Path(args.flickr)
    return flickr, ["data=caption_table", f"data.root={flickr / 'images'}",
                    f"data.annotations={flickr / 'captions.txt'}"]


def captioning(args: argparse.Namespace) -> dict[str, float]:
    flickr, data = flickr_data(args)
    tiny = TINY_CAPTIONS if args.tiny else []
    total, pre = args.caption_epochs, args.pretrain_epochs
    scratch = run("caption_scratch", ["task=captioning", *data, f"trainer.max_epochs={total}", *tiny], args.out, args.threads or 2)
    pretrain = run("mae_pretrain", ["task=pretrain", *data, f"trainer.max_epochs={pre}", *tiny], args.out, args.threads or 2)
    ckpt = args.out / "mae_pretrain" / "checkpoints" / "last.ckpt"
    # The same total time: the pretraining's time is taken out of the captioning's epochs, at
    # the scratch run's cost per epoch.
    per_epoch = scratch["process_s"] / total
    rest = 1 if args.tiny else max(1, total - round(pretrain["process_s"] / per_epoch))
    tuned = run("caption_mae", ["task=captioning", *data, f"model.encoder_pretrained={ckpt}",
                                f"trainer.max_epochs={rest}", *tiny], args.out, args.threads or 2)
    summary = {f"scratch/{k}": v for k, v in scratch.items() if isinstance(v, float)}
    summary.update({f"mae/{k}": v for k, v in tuned.items() if isinstance(v, float)})
    summary["mae/pretrain_process_s"] = pretrain["process_s"]
    summary["mae/caption_epochs"] = float(rest)
    summary["mae/total_process_s"] = pretrain["process_s"] + tuned["process_s"]
    for name, m, took in (("scratch", scratch, scratch["process_s"]), ("mae", tuned, summary["mae/total_process_s"])):
        print(f"{name:>8}: test BLEU-4 {m['test/bleu4']:.3f}, CIDEr-D {m['test/cider']:.3f} ({took:.0f} s in all)")
    summary["cider_mae_over_scratch"] = tuned["test/cider"] / max(scratch["test/cider"], 1e-9)
    print(f"RATIO cider_mae_over_scratch {summary['cider_mae_over_scratch']:.3f}")
    return summary


def contrastive(args: argparse.Namespace) -> dict[str, float]:
    flickr, data = flickr_data(args)
    tiny = TINY_CAPTIONS if args.tiny else []
    caption = ["task=captioning", *data, f"trainer.max_epochs={args.caption_epochs}", *tiny]
    jobs = {"captioning": caption, "coca": [*caption, "task.contrastive_weight=1"],
            "retrieval": ["task=retrieval", *data, f"trainer.max_epochs={args.retrieval_epochs}", *tiny]}
    print(f"Flickr8k 1k contrastive run: {flickr}, {args.jobs} at a time")
    results = run_all(jobs, args.out, args.jobs, args.threads)
    summary = {f"{name}/{k}": v for name, m in results.items() for k, v in m.items() if isinstance(v, float)}
    r = results["retrieval"]
    print("retrieval: test i2t R@1/5/10 " + " / ".join(f"{r[f'test/i2t_r{k}']:.3f}" for k in (1, 5, 10))
          + ", t2i R@1/5/10 " + " / ".join(f"{r[f'test/t2i_r{k}']:.3f}" for k in (1, 5, 10))
          + f" ({r['process_s']:.0f} s)")
    for name in ("captioning", "coca"):
        m = results[name]
        print(f"{name:>10}: test BLEU-4 {m['test/bleu4']:.3f}, CIDEr-D {m['test/cider']:.3f} ({m['process_s']:.0f} s)")
    summary["cider_coca_over_captioning"] = results["coca"]["test/cider"] / max(results["captioning"]["test/cider"],
                                                                                1e-9)
    print(f"RATIO cider_coca_over_captioning {summary['cider_coca_over_captioning']:.3f}")
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("medmnist", "captioning", "contrastive"), default="medmnist")
    ap.add_argument("--data", default=str(SHARED / "breastmnist" / "breastmnist.npz"), help="a MedMNIST .npz")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=None,
                    help="both models; default: each model's recipe (conf/specialize/medical_*_medmnist.yaml)")
    ap.add_argument("--flickr", default=str(SHARED / "flickr8k_1k"), help="images/ + captions.txt")
    ap.add_argument("--caption-epochs", type=int, default=12, help="captioning from scratch")
    ap.add_argument("--retrieval-epochs", type=int, default=30, help="contrastive: task=retrieval's epochs")
    ap.add_argument("--pretrain-epochs", type=int, default=30, help="MAE epochs; their time comes out of the captioning's")
    ap.add_argument("--models", type=lambda s: s.split(","), default=["vit", "resnet18"], help="medmnist: vit,resnet18")
    ap.add_argument("--vit-overrides", type=str.split, default=[],
                    help="medmnist: train.py overrides added to the ViT recipe's runs, e.g. 'model.depth=8'")
    ap.add_argument("--cv-folds", type=int, default=None,
                    help="medmnist: k-fold cross-validation on train + val, each fold with each seed (val AUC only)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at once")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_quality" / time.strftime("%Y-%m-%d_%H-%M-%S"))
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--tiny", action="store_true", help="a few batches per run: checks the script, measures nothing")
    args = ap.parse_args(argv)
    summary = {"medmnist": medmnist, "captioning": captioning, "contrastive": contrastive}[args.part](args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
