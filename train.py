"""The one entry point: compose the config, build data, model and task, fit, test, summarise.

    python train.py task=classification
    python train.py task=classification data=imagefolder data.root=DIR model=vit_small
    python train.py task=classification train=false ckpt_path=outputs/.../checkpoints/last.ckpt
    python train.py -m task.lr=1e-3,3e-4          # a sweep; each run returns cfg.optimized_metric

`train(cfg)` does the work and can be called with a config from `hydra.compose` (tests do);
it reads the run folder from `cfg.paths.output_dir` and nothing else from Hydra.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as L
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from tasks.checkpoint import check_checkpoint_fits
from tasks.checkpoint_io import AtomicCheckpointIO


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
    if not cfg.train and not cfg.ckpt_path:
        raise ValueError("train=false evaluates a trained model: give its checkpoint as ckpt_path=...")
    output_dir = Path(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)

    # Each task builds its model from the data (class count, tokenizer) and then itself;
    # the resolved config and what the data taught it go into every checkpoint.
    datamodule = instantiate(cfg.data, _convert_="all")
    task = get_class(cfg.task._target_).build(cfg, datamodule)
    model = task.model
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=_instantiate_each(cfg.get("callbacks")),
        logger=_instantiate_each(cfg.get("logger")) or False,
        plugins=[AtomicCheckpointIO()],
        _convert_="all",
    )

    if cfg.ckpt_path:
        check_checkpoint_fits(task, cfg.ckpt_path)  # a clear error now, not a size mismatch later
    metrics: dict[str, Any] = {}
    if cfg.train:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        metrics.update(trainer.callback_metrics)
    checkpoint = trainer.checkpoint_callback
    best_ckpt = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
    if cfg.test:
        # Test the best checkpoint of this fit; in test-only runs the given one; else the
        # weights as they are (no checkpoint callback, or fast_dev_run, which saves none).
        test_ckpt = (best_ckpt or None) if cfg.train else cfg.ckpt_path
        trainer.test(task, datamodule=datamodule, ckpt_path=test_ckpt)
        metrics.update(trainer.callback_metrics)

    metrics = {name: float(value) for name, value in metrics.items()}
    if best_ckpt and checkpoint.best_model_score is not None:
        metrics[f"{checkpoint.monitor}_best"] = float(checkpoint.best_model_score)
    metrics["best_ckpt"] = best_ckpt or None
    metrics["wall_time_s"] = round(time.perf_counter() - start, 1)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(_summary(cfg, metrics, output_dir))
    objects = {"cfg": cfg, "datamodule": datamodule, "model": model, "task": task, "trainer": trainer}
    return metrics, objects


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
    # What a sweeper (e.g. Optuna) maximises: the best value seen, else the last one.
    value = metrics.get(f"{cfg.optimized_metric}_best", metrics.get(cfg.optimized_metric))
    return None if value is None or math.isnan(value) else value


if __name__ == "__main__":
    main()
