"""The one entry point: compose the config, build data, model and task, fit, test, summarise.

    python train.py task=classification
    python train.py task=classification data=imagefolder data.root=DIR model=vit_small
    python train.py task=classification train=false ckpt_path=outputs/.../checkpoints/last.ckpt
    python train.py task=classification resume_from=outputs/classification/runs/<run>  # a killed run
    python train.py -m task.lr=1e-3,3e-4          # a sweep; each run returns cfg.optimized_metric

`train(cfg)` does the work and can be called with a config from `hydra.compose` (tests do);
it reads the run folder from `cfg.paths.output_dir` and nothing else from Hydra.
"""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as L
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from mmtrans.models.pretrained import pretrained_preprocessing
from tasks.callbacks import BadImageReport
from tasks.checkpoint import check_checkpoint_fits
from tasks.checkpoint_io import AtomicCheckpointIO
from tasks.config_check import check_config
from tasks.run_dir import check_writable
from tasks.speed import apply_speed_options


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit and/or test as `cfg` says; returns (metrics as written to metrics.json, built objects)."""
    start = time.perf_counter()
    # `???` values (data.root, ...): name them here rather than let a partial
    # constructor fail later with "missing 1 required positional argument".
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(
            f"no value given for {', '.join(missing)}: set it on the command line ({missing[0]}=...)"
        )
    check_config(cfg)  # unknown keys, wrong types: now, not after the data is read
    _check_accelerator(cfg.trainer)  # trainer=gpu without CUDA: one line now, not a traceback later
    if cfg.resume_from:
        cfg = _continue_run(cfg)
    if not cfg.train and not cfg.ckpt_path:
        raise ValueError("train=false evaluates a trained model: give its checkpoint as ckpt_path=...")
    if not (cfg.train or cfg.test or cfg.get("validate")):
        raise ValueError("train=false test=false does nothing: set test=true or validate=true to evaluate ckpt_path")
    output_dir = Path(cfg.paths.output_dir)
    check_writable(output_dir)  # unwritable or full: say so now, before the data is read
    L.seed_everything(cfg.seed, workers=True)
    if cfg.trainer.get("matmul_precision") and torch.cuda.is_available():
        torch.set_float32_matmul_precision(cfg.trainer.matmul_precision)  # "high": TF32 tensor cores

    # One way: config + the encoder's pretrained config -> preprocessing (resolved in the
    # DataModule, once) -> data sets -> model (each task builds it from the data: size,
    # channels, classes, tokenizer) -> task. The resolved config, the preprocessing and what
    # the data taught the task go into every checkpoint.
    model_cfg = cfg.get("model") or {}  # task=zeroshot takes its model from ckpt_path
    weights = model_cfg.get("pretrained") or model_cfg.get("encoder_pretrained")
    datamodule = instantiate(cfg.data, pretrained_cfg=pretrained_preprocessing(weights), _convert_="all")
    task = get_class(cfg.task._target_).build(cfg, datamodule)
    model = task.model
    apply_speed_options(model, cfg.compile, cfg.channels_last, cfg.grad_checkpointing)
    loggers = _instantiate_each(cfg.get("logger"))
    callbacks = _instantiate_each(cfg.get("callbacks"))
    if not loggers and any(isinstance(cb, LearningRateMonitor) for cb in callbacks):
        # Lightning refuses a LearningRateMonitor without a logger (logger=none): it has nowhere to write.
        print("logger=none: the learning-rate monitor is left out (it needs a logger)")
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    if getattr(datamodule, "on_bad_image", "raise") == "skip":
        callbacks.append(BadImageReport())  # counts and lists what the policy leaves out
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_args.pop("matmul_precision", None)  # applied above; not a Trainer argument
    trainer: L.Trainer = instantiate(
        trainer_args,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        _convert_="all",
    )
    if cfg.resume_from and trainer.is_global_zero:
        # Keep what the run wrote before: CSVLogger would delete its metrics.csv, and the
        # metrics.json of a finished run (resumed to train longer) would be overwritten.
        csv_files = [Path(lg.log_dir) / "metrics.csv" for lg in loggers if isinstance(lg, CSVLogger)]
        for path in (output_dir / "metrics.json", *csv_files):
            _set_aside(path)

    if trainer.is_global_zero:
        _write_run_info(cfg, output_dir)
    if cfg.ckpt_path:
        check_checkpoint_fits(task, cfg.ckpt_path)  # a clear error now, not a size mismatch later
    metrics: dict[str, Any] = {}
    if cfg.train:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics.update(trainer.callback_metrics)
    checkpoint = trainer.checkpoint_callback
    best_ckpt = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    # Evaluate the best checkpoint of this fit; in evaluation-only runs the given one; else the
    # weights as they are (no checkpoint callback, or fast_dev_run, which saves none).
    eval_ckpt = (best_ckpt or None) if cfg.train else cfg.ckpt_path
    if cfg.get("validate"):
        trainer.validate(task, datamodule=datamodule, ckpt_path=eval_ckpt)
        metrics.update(trainer.callback_metrics)
    if cfg.test:
        trainer.test(task, datamodule=datamodule, ckpt_path=eval_ckpt)
        metrics.update(trainer.callback_metrics)

    metrics = {name: float(value) for name, value in metrics.items()}
    if best_ckpt and checkpoint.best_model_score is not None:
        metrics[f"{checkpoint.monitor}_best"] = float(checkpoint.best_model_score)
    metrics["best_ckpt"] = best_ckpt or None
    metrics.update(_write_bad_images(datamodule, callbacks, output_dir, trainer.is_global_zero))
    metrics["wall_time_s"] = round(time.perf_counter() - start, 1)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(_summary(cfg, metrics, output_dir))
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "task": task, "trainer": trainer}
    return metrics, objects


def _check_accelerator(trainer_cfg: DictConfig) -> None:
    """A GPU asked for (trainer=gpu|ddp|fsdp) where torch sees none: say so in one line."""
    accelerator = str(trainer_cfg.get("accelerator", "auto")).lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"trainer.accelerator={accelerator} but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'none'}): use trainer=cpu (or trainer=ddp_cpu) on this machine"
        )


def _continue_run(cfg: DictConfig) -> DictConfig:
    """`resume_from=<run dir>`: the config that continues that run from its checkpoints/last.ckpt,
    writing into that run's folder rather than into a new one.

    Its own folder because ModelCheckpoint reloads its bookkeeping (best score, top-k files)
    only when its dirpath is unchanged: elsewhere the best checkpoint, `val/acc_best` and the
    test on the best weights would cover only the epochs after the resume.
    """
    run_dir = Path(cfg.resume_from)
    last = run_dir / "checkpoints" / "last.ckpt"
    if cfg.ckpt_path:
        raise ValueError(
            f"set resume_from or ckpt_path, not both: resume_from={run_dir} resumes from {last}, "
            f"ckpt_path={cfg.ckpt_path} starts a new run folder from that checkpoint"
        )
    if not cfg.train:
        raise ValueError("resume_from continues training; to evaluate a checkpoint use train=false ckpt_path=...")
    if not last.is_file():
        raise FileNotFoundError(
            f"resume_from={run_dir}: no checkpoint to resume from at {last} (a run writes it after each epoch)"
        )
    cfg = copy.deepcopy(cfg)
    cfg.paths.output_dir = str(run_dir)
    cfg.ckpt_path = str(last)
    return cfg


def _write_run_info(cfg: DictConfig, output_dir: Path) -> None:
    """The resolved config (every interpolation filled in, unlike .hydra/config.yaml) and what
    else a rerun needs to match: the code version (`git` commit and whether the tree had
    uncommitted changes, when available), the command, the seed, the library versions and the
    machine (numerics differ across torch versions and devices)."""
    import platform
    from importlib import metadata

    import torch

    output_dir.mkdir(parents=True, exist_ok=True)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    (output_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(resolved))
    root = Path(__file__).resolve().parent
    git = {"commit": None, "dirty": None}
    try:
        run = partial(subprocess.run, cwd=root, capture_output=True, text=True, timeout=10, check=True)
        git["commit"] = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        git["dirty"] = bool(run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an installed copy), or no git
    versions = {"python": platform.python_version()}
    for name, dist in (("torch", "torch"), ("torchvision", "torchvision"), ("timm", "timm"),
                       ("transformers", "transformers"), ("tokenizers", "tokenizers"),
                       ("pytorch_lightning", "pytorch-lightning"), ("torchmetrics", "torchmetrics"),
                       ("hydra", "hydra-core"), ("numpy", "numpy"), ("pillow", "pillow")):
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = {
        "accelerator": cfg.trainer.get("accelerator"),  # as configured ("auto": a GPU when cuda lists one)
        "cpu": platform.processor() or platform.machine(),
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cuda_version": torch.version.cuda,
    }
    info = {"git": git, "command": sys.argv, "seed": cfg.seed, "versions": versions,
            "platform": platform.platform(), "device": device}
    (output_dir / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")


def _write_bad_images(datamodule: Any, callbacks: list[Any], output_dir: Path, write: bool) -> dict[str, int]:
    """With `data.on_bad_image=skip`: every image file left out (found by `data.validate`, or
    skipped by the loaders of any process) in `bad_images.json`, and their counts for
    metrics.json. Called on every process: the lists are gathered from all of them."""
    if getattr(datamodule, "on_bad_image", "raise") != "skip":
        return {}
    invalid = getattr(datamodule, "invalid_images", [])  # the same on every process
    skipped = [e for cb in callbacks if isinstance(cb, BadImageReport) for e in cb.skipped]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        per_process: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(per_process, skipped)
        skipped = [e for entries in per_process for e in entries]
    if write and (invalid or skipped):
        output_dir.mkdir(parents=True, exist_ok=True)
        report = {"found_by_validate": invalid, "skipped_while_loading": skipped}
        (output_dir / "bad_images.json").write_text(json.dumps(report, indent=1) + "\n")
    return {"data/invalid_images": len(invalid), "data/skipped_images": len(skipped)}


def _set_aside(path: Path) -> None:
    """Rename `path` to the first free `<stem>.<n><suffix>` (metrics.1.json, ...), if it exists."""
    if not path.is_file():
        return
    n = 1
    while (aside := path.with_name(f"{path.stem}.{n}{path.suffix}")).exists():
        n += 1
    path.rename(aside)
    print(f"resume_from: kept the earlier {path.name} as {aside}")


def _instantiate_each(group: DictConfig | None) -> list[Any]:
    """One object per entry with a `_target_` (callbacks, loggers); other entries are skipped."""
    if not group:
        return []
    return [instantiate(node, _convert_="all") for node in group.values() if "_target_" in node]


def _summary(cfg: DictConfig, metrics: dict[str, Any], output_dir: Path) -> str:
    name = cfg.optimized_metric
    keys = (f"{name}_best", name, "test/" + name.split("/")[-1], "test/acc", "test/bleu4", "test/cider", "test/loss")
    shown = [f"{k} {metrics[k]:.4f}" for k in dict.fromkeys(keys) if k in metrics]
    return (
        f"\n{cfg.task_name} finished in {metrics['wall_time_s']:.0f} s: {', '.join(shown) or 'no metrics'}. "
        f"Best checkpoint: {metrics['best_ckpt'] or 'none'}. Run folder: {output_dir} (metrics.json)."
    )


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    # What a sweeper (e.g. Optuna) optimises (optimized_metric_mode): the best value seen, else the last one.
    value = metrics.get(f"{cfg.optimized_metric}_best", metrics.get(cfg.optimized_metric))
    return None if value is None or math.isnan(value) else value


if __name__ == "__main__":
    main()
