"""Clinical classification metrics: AUC, ACC, sensitivity / specificity, ECE, MAE / QWK, bootstrap CIs.

``auc`` and ``acc`` follow MedMNIST v2's official evaluator (``medmnist/evaluator.py``, ``getAUC`` /
``getACC``) so numbers compare with the MedMNIST benchmark tables:

- binary: ROC AUC of the positive-class probability; ACC = mean((p > threshold) == y).
- multiclass / ordinal: AUC = mean over classes of one-vs-rest ROC AUC; ACC = argmax accuracy.
- multilabel: AUC / ACC = mean over labels of the per-label ROC AUC / accuracy at ``threshold``.

A class with no positive or no negative sample has an undefined AUC (MedMNIST's sum would turn nan,
or raise with older sklearn): it is reported as nan and left out of the macro mean.

Inputs (``label_type`` is one of ``LABEL_TYPES``): binary ``probs [N]`` = P(positive), ``target [N]``
in {0, 1}; multiclass / ordinal ``probs [N, K]`` softmax rows, ``target [N]`` in 0..K-1; multilabel
``probs [N, K]`` independent sigmoids, ``target [N, K]`` in {0, 1}.

Everything but ROC AUC is torchmetrics' functional API. ROC AUC is the tie-aware Mann-Whitney form
(P(score_pos > score_neg) + P(tie) / 2, the trapezoidal area sklearn and torchmetrics report) over
sample weights: a bootstrap resample is the data weighted by how often each row was drawn, so one sort
serves all resamples. torchmetrics draws one ROC curve per column per Python call (~1 ms: 1000
resamples x 4 labels took ~4 s on 2 cores vs ~0.2 s here), and the point estimate must use the same
definition as the bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics.functional import mean_absolute_error
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_calibration_error,
    binary_stat_scores,
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_cohen_kappa,
    multiclass_stat_scores,
    multilabel_accuracy,
    multilabel_stat_scores,
)

from mmtrans.data.splits import LABEL_TYPES

ECE_BINS = 15  # the usual equal-width binning (Guo et al. 2017; torchmetrics' default)
_BOOTSTRAP_CHUNK = 1 << 22  # elements of [B, N, K] per bootstrap chunk (~32 MB of float64)


def _check_inputs(probs: Tensor, target: Tensor, label_type: str) -> tuple[Tensor, Tensor]:
    """Validated (float probs, int64 target); ValueError naming the expected and actual shapes."""
    if label_type not in LABEL_TYPES:
        raise ValueError(f"label_type must be one of {LABEL_TYPES}, got {label_type!r}")
    probs, target = torch.as_tensor(probs), torch.as_tensor(target)
    probs_dims, target_dims = {"binary": (1, 1), "multilabel": (2, 2)}.get(label_type, (2, 1))
    ok = (probs.ndim, target.ndim) == (probs_dims, target_dims) and len(probs) == len(target) > 0
    if not ok or (label_type == "multilabel" and probs.shape != target.shape):
        shape = {1: "[N]", 2: "[N, K]"}
        raise ValueError(
            f"{label_type}: expected probs {shape[probs_dims]} and target {shape[target_dims]} with N > 0, "
            f"got probs {list(probs.shape)} and target {list(target.shape)}"
        )
    if not probs.is_floating_point() or probs.isnan().any() or probs.min() < 0 or probs.max() > 1:
        # torchmetrics would silently apply a sigmoid / softmax to values outside [0, 1]
        raise ValueError(
            f"{label_type}: probs must be probabilities in [0, 1] (apply sigmoid / softmax first)"
        )
    num_values = 2 if label_type in ("binary", "multilabel") else probs.shape[1]
    not_integer = target.is_floating_point() and bool((target != target.round()).any())
    if not_integer or target.min() < 0 or target.max() >= num_values:
        raise ValueError(f"{label_type}: target values must be integers in 0..{num_values - 1}")
    # half / bfloat16 (autocast outputs) up to float32, which every torchmetrics kernel takes
    return (probs.float() if probs.itemsize < 4 else probs), target.long()


def _auc_columns(probs: Tensor, target: Tensor, label_type: str) -> tuple[Tensor, Tensor]:
    """(scores [N, C], positive [N, C]): one binary ROC problem per column, as MedMNIST sets them up."""
    if label_type == "binary":
        return probs[:, None], (target == 1)[:, None]
    if label_type == "multilabel":
        return probs, target == 1
    return probs, target[:, None] == torch.arange(probs.shape[1])  # one-vs-rest


def _roc_auc(scores: Tensor, positive: Tensor, weights: Tensor | None = None) -> Tensor:
    """ROC AUC [B, C] of each column of ``scores [N, C]`` under each row of sample ``weights [B, N]``.

    ``weights=None`` is one row of ones (the plain data set). nan where a column has no positive or no
    negative weight. Ties between a positive and a negative count one half, as in sklearn.
    """
    weights = torch.ones(1, len(scores)) if weights is None else weights
    weights = weights.to(torch.float64)  # counts, and the win sums below, stay exact integers / halves
    aucs = []
    for col, pos in zip(scores.T, positive.T):
        # Tied scores share a rank (sorted unique values); sum each resample's positive and negative
        # weight per rank in one pass: ranks 0..G-1 for positives, G..2G-1 for negatives.
        values, rank = torch.unique(col, return_inverse=True)
        g = len(values)
        per_rank = weights.new_zeros(len(weights), 2 * g).index_add_(1, rank + g * (~pos), weights)
        pos_w, neg_w = per_rank[:, :g], per_rank[:, g:]
        neg_below = neg_w.cumsum(1) - neg_w  # negatives scored strictly lower
        wins = (pos_w * (neg_below + 0.5 * neg_w)).sum(1)
        n_pos, n_neg = pos_w.sum(1), neg_w.sum(1)
        aucs.append(torch.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), math.nan))
    return torch.stack(aucs, 1)


# The metric functions below take a batch of resamples: probs [B, N] (binary) or [B, N, K], target
# [B, N] or [B, N, K], and return one value per resample ([B] or [B, C]). medical_metrics passes B = 1,
# bootstrap_ci whole chunks, so both use the same definitions. Where torchmetrics has no per-sample
# reduction ("samplewise"), _per_resample loops.
_Metric = Callable[[Tensor, Tensor, str, float, bool], Tensor]


def _per_resample(metric: _Metric) -> _Metric:
    """Lift a metric of one sample (probs [N(, K)] -> scalar tensor) to a batch of resamples."""

    def batched(probs: Tensor, target: Tensor, label_type: str, threshold: float, check: bool) -> Tensor:
        return torch.stack([metric(p, t, label_type, threshold, check) for p, t in zip(probs, target)])

    return batched


def _samplewise(probs: Tensor, check: bool) -> dict[str, object]:
    """torchmetrics arguments for one value per resample.

    Its binary "samplewise" path fails for a batch of one (it squeezes the batch dim away before
    stacking); for B = 1, "global" is the same number. Callers reshape, as results come back squeezed.
    """
    return {"multidim_average": "samplewise" if len(probs) > 1 else "global", "validate_args": check}


def _accuracy(probs: Tensor, target: Tensor, label_type: str, threshold: float, check: bool) -> Tensor:
    kwargs = _samplewise(probs, check)
    if label_type == "binary":
        acc = binary_accuracy(probs, target, threshold=threshold, **kwargs)
    elif label_type == "multilabel":  # macro over labels = MedMNIST's mean of per-label accuracies
        k, probs, target = probs.shape[-1], probs.movedim(-1, 1), target.movedim(-1, 1)  # [B, K, N]
        acc = multilabel_accuracy(probs, target, k, threshold=threshold, average="macro", **kwargs)
    else:
        acc = multiclass_accuracy(probs.movedim(-1, 1), target, probs.shape[-1], average="micro", **kwargs)
    return acc.reshape(len(target))


def _sensitivity_specificity(
    probs: Tensor, target: Tensor, label_type: str, threshold: float, check: bool
) -> tuple[Tensor, Tensor]:
    """Per-class sensitivity and specificity [B, C] (C = 1 for binary); nan where undefined (0 / 0)."""
    b, kwargs = len(target), _samplewise(probs, check)
    if label_type == "binary":
        stats = binary_stat_scores(probs, target, threshold=threshold, **kwargs)
    elif label_type == "multilabel":
        k, probs, target = probs.shape[-1], probs.movedim(-1, 1), target.movedim(-1, 1)  # [B, K, N]
        stats = multilabel_stat_scores(probs, target, k, threshold=threshold, average=None, **kwargs)
    else:  # one-vs-rest on the argmax prediction
        stats = multiclass_stat_scores(probs.movedim(-1, 1), target, probs.shape[-1], average=None, **kwargs)
    tp, fp, tn, fn = stats.reshape(b, -1, 5)[..., :4].double().unbind(-1)
    return tp / (tp + fn), tn / (tn + fp)  # float 0 / 0 = nan: a class without positives has no sensitivity


@_per_resample
def _ece(probs: Tensor, target: Tensor, label_type: str, threshold: float, check: bool) -> Tensor:
    if label_type == "binary":
        return binary_calibration_error(probs, target, ECE_BINS, "l1", validate_args=check)
    if label_type == "multilabel":  # columns made contiguous: bucketize warns on strided input
        cols = zip(probs.T.contiguous(), target.T.contiguous())
        return torch.stack(
            [binary_calibration_error(p, t, ECE_BINS, "l1", validate_args=check) for p, t in cols]
        ).mean()
    k = probs.shape[1]  # top-1 confidence vs top-1 correctness
    return multiclass_calibration_error(probs, target, k, ECE_BINS, "l1", validate_args=check)


@_per_resample
def _mae(probs: Tensor, target: Tensor, label_type: str, threshold: float, check: bool) -> Tensor:
    return mean_absolute_error(probs.argmax(1).double(), target.double())


@_per_resample
def _qwk(probs: Tensor, target: Tensor, label_type: str, threshold: float, check: bool) -> Tensor:
    k = probs.shape[1]  # all K grades weigh in, also grades absent from this sample
    return multiclass_cohen_kappa(probs, target, k, weights="quadratic", validate_args=check)


# What bootstrap_ci recomputes per resample besides AUC (which is vectorised over weights instead).
_SCALARS: dict[str, _Metric] = {
    "acc": _accuracy,
    "sensitivity": lambda *args: _sensitivity_specificity(*args)[0].nanmean(-1),
    "specificity": lambda *args: _sensitivity_specificity(*args)[1].nanmean(-1),
    "ece": _ece,
    "mae": _mae,
    "qwk": _qwk,
}


def medical_metrics(
    probs: Tensor,
    target: Tensor,
    label_type: str,
    threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """AUC / ACC (MedMNIST definitions), per-class AUC and sensitivity / specificity, ECE, ordinal MAE / QWK.

    Keys: ``auc``, ``acc``, ``sensitivity``, ``specificity``, ``ece``; for non-binary types also
    ``auc_<name>``, ``sensitivity_<name>``, ``specificity_<name>`` per class (the unsuffixed keys are
    their means over the classes where defined); for ordinal also ``mae`` and ``qwk``. Binary reports the positive class only and
    ignores ``class_names``. ``threshold`` applies to binary / multilabel (multiclass uses the argmax).
    """
    probs, target = _check_inputs(probs, target, label_type)
    batch = (probs[None], target[None], label_type, threshold, True)  # one "resample": the data itself
    auc = _roc_auc(*_auc_columns(probs, target, label_type))[0]
    sens, spec = (x[0] for x in _sensitivity_specificity(*batch))
    out = {"auc": auc.nanmean().item(), "acc": _accuracy(*batch).item()}
    if label_type == "binary":
        out |= {"sensitivity": sens.item(), "specificity": spec.item()}
    else:
        k = probs.shape[1]
        names = [str(i) for i in range(k)] if class_names is None else [str(n) for n in class_names]
        if len(names) != k:
            raise ValueError(f"{label_type}: {len(names)} class_names for K={k} classes")
        out |= {f"auc_{n}": a for n, a in zip(names, auc.tolist())}
        out |= {"sensitivity": sens.nanmean().item(), "specificity": spec.nanmean().item()}
        for n, se, sp in zip(names, sens.tolist(), spec.tolist()):
            out |= {f"sensitivity_{n}": se, f"specificity_{n}": sp}
    out["ece"] = _ece(*batch).item()
    if label_type == "ordinal":
        out |= {"mae": _mae(*batch).item(), "qwk": _qwk(*batch).item()}
    return out


def _canonical_order(probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Rows sorted by (target, probs) lexicographically: a permutation of the input rows."""
    keys = torch.cat([target.reshape(len(target), -1).double(), probs.reshape(len(probs), -1).double()], 1)
    order = torch.arange(len(keys))
    for col in reversed(range(keys.shape[1])):  # stable sorts, last key first = lexicographic
        order = order[torch.sort(keys[order, col], stable=True).indices]
    return probs[order], target[order]


def bootstrap_ci(
    probs: Tensor,
    target: Tensor,
    label_type: str,
    metrics: Sequence[str] = ("auc", "acc"),
    num_samples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs ``{name: (low, high)}`` of headline metrics of :func:`medical_metrics`.

    Each resample draws N rows with replacement (``torch.Generator`` seeded with ``seed``). A resample
    counts for a metric only where the metric is defined: for ``auc``, every class whose AUC is defined
    on the full data must be defined in the resample (so the macro mean is over the same classes);
    ``sensitivity`` / ``specificity`` average the classes defined in each resample, as medical_metrics
    does. With fewer than half the resamples usable the interval is (nan, nan). Rows are put in a
    canonical order first, so the interval does not depend on the order predictions arrive in (one
    process, or several whose shards are gathered rank by rank).
    """
    probs, target = _check_inputs(probs, target, label_type)
    allowed = ["auc", "acc", "sensitivity", "specificity", "ece"]
    allowed += ["mae", "qwk"] if label_type == "ordinal" else []
    unknown = [m for m in metrics if m not in allowed]
    if unknown:
        raise ValueError(f"{label_type}: bootstrap_ci supports {allowed}, got {unknown}")
    if not 0 < level < 1 or num_samples < 1:
        raise ValueError(
            f"need 0 < level < 1 and num_samples >= 1, got level={level}, num_samples={num_samples}"
        )
    probs, target = _canonical_order(probs, target)
    n = len(target)
    scores, positive = _auc_columns(probs, target, label_type)
    defined = ~_roc_auc(scores, positive)[0].isnan()
    values: dict[str, list[Tensor]] = {m: [] for m in metrics}
    generator = torch.Generator().manual_seed(seed)
    chunk = max(1, _BOOTSTRAP_CHUNK // (n * scores.shape[1]))
    for start in range(0, num_samples, chunk):
        rows = torch.randint(0, n, (min(chunk, num_samples - start), n), generator=generator)
        if "auc" in values:
            # how often each row was drawn: the resample as sample weights
            counts = torch.zeros(rows.shape, dtype=torch.float64)
            counts.scatter_add_(1, rows, torch.ones(rows.shape, dtype=torch.float64))
            # nan (unusable) if a class defined on the full data is undefined here; nan if none is defined
            values["auc"].append(_roc_auc(scores, positive, counts)[:, defined].mean(1))
        others = [m for m in metrics if m != "auc"]
        if others:
            batch = (probs[rows], target[rows], label_type, threshold, False)  # validated once above
            for name in others:
                values[name].append(_SCALARS[name](*batch))
    alpha = (1 - level) / 2
    out = {}
    for name, chunks in values.items():
        v = torch.cat(chunks).double()
        v = v[~v.isnan()]
        if len(v) < num_samples / 2:
            out[name] = (math.nan, math.nan)
        else:  # linear interpolation between order statistics, like numpy.percentile
            low, high = torch.quantile(v, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
            out[name] = (low, high)
    return out


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def format_report(
    metrics: dict[str, float], ci: dict[str, tuple[float, float]] | None, title: str, *, level: float = 0.95
) -> str:
    """A short Markdown report: AUC / ACC with CIs, a per-class table, then ECE (and MAE / QWK)."""
    ci = ci or {}

    def with_ci(name: str) -> str:
        text = _fmt(metrics.get(name))
        if name in ci:
            text += f" [{level:.0%} CI {_fmt(ci[name][0])}, {_fmt(ci[name][1])}]"
        return text

    lines = [f"### {title}", "", f"- **AUC** {with_ci('auc')}", f"- **ACC** {with_ci('acc')}", ""]
    lines += ["| class | AUC | sensitivity | specificity |", "| --- | ---: | ---: | ---: |"]
    classes = [k.removeprefix("sensitivity_") for k in metrics if k.startswith("sensitivity_")]
    for c in classes:
        row = (metrics.get(f"auc_{c}"), metrics.get(f"sensitivity_{c}"), metrics.get(f"specificity_{c}"))
        lines.append(f"| {c} | " + " | ".join(_fmt(v) for v in row) + " |")
    summary = (metrics.get("auc"), metrics.get("sensitivity"), metrics.get("specificity"))
    lines += [f"| {'macro' if classes else 'positive'} | " + " | ".join(_fmt(v) for v in summary) + " |", ""]
    lines.append(f"- **ECE** ({ECE_BINS} bins) {with_ci('ece')}")
    lines += [f"- **{name.upper()}** {with_ci(name)}" for name in ("mae", "qwk") if name in metrics]
    return "\n".join(lines) + "\n"
