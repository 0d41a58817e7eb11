"""Medical image analysis: the classification task plus clinical metrics, CIs and heat maps.

Training, losses, class weights and the optimiser are ``ClassificationTask``'s. What this
adds is evaluation as medical papers report it:
- val / test ACC and AUC by MedMNIST's evaluator definitions, per-class AUROC, sensitivity
  and specificity at ``threshold``, expected calibration error (``mmtrans.metrics.medical``);
- at test time a bootstrap CI for AUC and ACC (``test/auc_ci_low`` ...), a Markdown report
  (``report.md``) and attention heat maps (class activation maps for CNNs) of the first test
  images (``heatmaps.png``).
Predictions are gathered across processes (torchmetrics cat states), so a DDP run reports
the metrics of the whole split, not of one shard.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from mmtrans.data.preprocessing import unnormalize
from mmtrans.metrics.medical import bootstrap_ci, format_report, medical_metrics
from mmtrans.viz import attention_maps, class_activation_maps, heatmap_grid
from tasks.classification import ClassificationTask

__all__ = ["MedicalTask", "PredictionStore"]


class PredictionStore(Metric):
    """All (probabilities, targets) of an epoch, concatenated across processes on compute()."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("probs", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self._shapes: tuple[torch.Size, torch.Size] | None = None

    def update(self, probs: Tensor, target: Tensor) -> None:
        self.probs.append(probs.detach().float())
        self.target.append(target.detach())
        self._shapes = (probs.shape[1:], target.shape[1:])

    def compute(self) -> tuple[Tensor, Tensor]:
        # A list of batches, or one tensor once synced across processes.
        def cat(state: list[Tensor] | Tensor) -> Tensor:
            return (state if isinstance(state, Tensor) else torch.cat(state)).cpu()

        return cat(self.probs), cat(self.target)

    def predictions(self) -> tuple[Tensor, Tensor]:
        """(probs, target) of everything seen since the last reset, from all processes.
        torchmetrics squeezes one-element results: a single-sample epoch is reshaped back."""
        if self._shapes is None:
            raise RuntimeError("no predictions to evaluate: the evaluation loader gave no batch")
        probs, target = self.compute()
        return probs.reshape(-1, *self._shapes[0]), target.reshape(-1, *self._shapes[1])


class MedicalTask(ClassificationTask):
    def __init__(
        self,
        *args: Any,
        threshold: float = 0.5,
        bootstrap_samples: int = 1000,
        ci_level: float = 0.95,
        num_heatmaps: int = 16,
        heatmap_methods: tuple[str, ...] = ("rollout", "cls"),
        **kwargs: Any,
    ) -> None:
        """``threshold``: on the positive probability (binary, multilabel) for ACC,
        sensitivity and specificity. ``bootstrap_samples``: resamples of the test set for
        the CIs (0: none). ``num_heatmaps``: test images explained in heatmaps.png."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"task.threshold must be in (0, 1), got {threshold}")
        if not 0.0 < ci_level < 1.0:
            raise ValueError(f"task.ci_level must be in (0, 1), got {ci_level}")
        # ClassificationTask.save_hyperparameters records these arguments too (Lightning
        # collects the whole __init__ chain), so they land in every checkpoint.
        super().__init__(*args, **kwargs)
        # Metric keys name classes: keep them to letters, digits and underscores.
        names = self.hparams.class_names or [str(i) for i in range(self.hparams.num_classes)]
        self.metric_names = [re.sub(r"\W+", "_", n.strip().lower()).strip("_") or str(i) for i, n in enumerate(names)]
        self._heatmap_batch: dict[str, list[Tensor]] = {}

    def _metrics(self, prefix: str) -> PredictionStore:  # type: ignore[override]
        store = PredictionStore()
        store.prefix = prefix
        return store

    def _eval_step(self, batch: dict[str, Any], store: PredictionStore) -> Tensor:  # type: ignore[override]
        target = self._targets(batch)
        logits = self.eval_logits(batch["image"])
        loss = self.loss(logits, target)
        self.log(f"{store.prefix}loss", loss, on_epoch=True, sync_dist=True, batch_size=len(target), prog_bar=True)
        probs = self.probs(logits)
        store.update(probs, target)
        if store is self.test_metrics:
            self._keep_for_heatmaps(batch["image"], target, probs)
        return loss

    def _epoch_metrics(self, store: PredictionStore) -> tuple[dict[str, float], Tensor, Tensor]:
        probs, target = store.predictions()
        store.reset()
        values = medical_metrics(
            probs, target, self.hparams.label_type, threshold=self.hparams.threshold, class_names=self.metric_names
        )
        return values, probs, target

    def on_validation_epoch_end(self) -> None:
        values, _, _ = self._epoch_metrics(self.val_metrics)
        self._log_values("val/", values)

    def on_test_epoch_end(self) -> None:
        values, probs, target = self._epoch_metrics(self.test_metrics)
        hp = self.hparams
        ci = {}
        if hp.bootstrap_samples > 0:
            ci = bootstrap_ci(
                probs, target, hp.label_type, metrics=("auc", "acc"), num_samples=hp.bootstrap_samples,
                level=hp.ci_level, seed=0, threshold=hp.threshold,
            )
        for name, (low, high) in ci.items():
            values[f"{name}_ci_low"], values[f"{name}_ci_high"] = low, high
        self._log_values("test/", values)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._write_outputs(values, ci, n=len(target))
        self._heatmap_batch = {}

    def _log_values(self, prefix: str, values: dict[str, float]) -> None:
        headline = {"acc", "auc"}
        for name, value in values.items():
            # Already gathered across processes by the store: no further sync.
            self.log(f"{prefix}{name}", float(value), prog_bar=name in headline, rank_zero_only=False)

    # -- outputs ----------------------------------------------------------------------------

    def _write_outputs(self, values: dict[str, float], ci: dict[str, tuple[float, float]], n: int) -> None:
        out = Path(self.trainer.default_root_dir)
        out.mkdir(parents=True, exist_ok=True)
        title = f"{self.hparams.label_type} classification, {n} test samples, threshold {self.hparams.threshold}"
        if self.hparams.label_type == "binary" and self.hparams.class_names:
            title += f", positive class: {self.hparams.class_names[1]}"
        (out / "report.md").write_text(format_report(values, ci or None, title, level=self.hparams.ci_level) + "\n")
        (out / "test_metrics.json").write_text(json.dumps(values, indent=2, allow_nan=True) + "\n")
        if self._heatmap_batch and self.hparams.num_heatmaps > 0:
            self.render_heatmaps().save(out / "heatmaps.png")

    def _keep_for_heatmaps(self, images: Tensor, target: Tensor, probs: Tensor) -> None:
        kept = self._heatmap_batch
        have = len(kept["images"]) if kept else 0
        take = self.hparams.num_heatmaps - have
        if take <= 0:
            return
        for key, value in (("images", images), ("target", target), ("probs", probs)):
            kept.setdefault(key, []).extend(value[:take].detach().cpu())

    def render_heatmaps(self) -> Any:
        """A PIL grid: each kept test image, then one overlay per ``heatmap_methods`` (ViT), or
        the class activation map of the predicted class (CNN encoders, which have no attention)."""
        kept = self._heatmap_batch
        images = torch.stack(kept["images"])
        encoder = self.model.encoder
        if hasattr(encoder, "forward_feature_map"):  # a CNN: no attention to read, class activation maps
            heats = {"cam": class_activation_maps(self.model, images.to(self.device)).cpu()}
        else:
            heats = {m: attention_maps(encoder, images.to(self.device), method=m).cpu()
                     for m in self.hparams.heatmap_methods}
        titles = [self._caption(t, p) for t, p in zip(kept["target"], kept["probs"])]
        return heatmap_grid(self._unnormalize(images), heats, titles)

    def _unnormalize(self, images: Tensor) -> Tensor:
        """Back to [0, 1] pixels with the preprocessing the task was built with."""
        return unnormalize(images, self.hparams.get("preprocessing"))

    def _caption(self, target: Tensor, probs: Tensor) -> str:
        names = self.hparams.class_names or self.metric_names
        label_type, thr = self.hparams.label_type, self.hparams.threshold
        if label_type == "binary":
            return f"true: {names[int(target)]} | p({names[1]}) {float(probs):.2f}"
        if label_type == "multilabel":
            true = ", ".join(n for n, t in zip(names, target) if t > 0.5) or "none"
            pred = ", ".join(f"{n} {float(p):.2f}" for n, p in zip(names, probs) if p > thr) or "none"
            return f"true: {true} | pred: {pred}"
        k = int(probs.argmax())
        return f"true: {names[int(target)]} | pred: {names[k]} {float(probs[k]):.2f}"
