"""The `Splits` container every data set factory returns, and the seeded split helper."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset

# What a label means, and so which head, loss and metrics fit it. Datasets return
# `label` as an int64 scalar tensor for binary / multiclass / ordinal (a grade 0..K-1) and as
# a float32 0/1 vector of length K for multilabel; their `labels` array ([N] or [N, K]) holds
# all of them at once (class weights, samplers, split stratification).
LABEL_TYPES = ("binary", "multiclass", "multilabel", "ordinal")


@dataclass
class Splits:
    """Train / val / test data sets of one classification problem.

    `test` is None when the source has no test split; the DataModule then tests on `val`.
    `label_type` is one of LABEL_TYPES; None means the source does not say (plain
    single-label classification: multiclass).
    """

    train: Dataset
    val: Dataset
    test: Dataset | None
    class_names: list[str]
    label_type: str | None = None

    def __post_init__(self) -> None:
        if self.label_type is not None and self.label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {LABEL_TYPES}, got {self.label_type!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# Arguments every split factory takes from the DataModule, never from the config.
_TRANSFORM_ARGS = ("train_transform", "eval_transform")


def factory_name(factory: Callable) -> str:
    func = getattr(factory, "func", factory)  # functools.partial from `_partial_: true`
    return f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}"


def split_options(factory: Callable, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options a split factory takes (all of them when ``options`` is None), or
    ``options`` checked against them: an unknown key is a ValueError that names it as
    ``data.<key>``, suggests the closest option and lists the valid ones."""
    func = getattr(factory, "func", factory)
    params = {n: p for n, p in inspect.signature(func).parameters.items()
              if n not in _TRANSFORM_ARGS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    if options is None:
        return params
    unknown = [k for k in options if k not in params]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(params), n=1)
        hint = f"; did you mean data.{close[0]}?" if close else ""
        raise ValueError(
            f"data.{unknown[0]} is not an option of this data set ({factory_name(factory)}){hint} "
            f"Its options: {', '.join(sorted(params))}"
        )
    return dict(options)


def describe_source(factory: Callable, options: Mapping[str, Any]) -> dict[str, Any]:
    """What a data source says about its images before any data set is built (``img_size``,
    ``in_chans``), from the factory's ``describe`` function when it has one (a MedMNIST
    file's arrays), else nothing: the config's values then hold."""
    func = getattr(factory, "func", factory)
    describe = getattr(func, "describe", None)
    if describe is None:
        return {}
    accepted = inspect.signature(describe).parameters
    return dict(describe(**{k: v for k, v in options.items() if k in accepted}))


def dataset_labels(dataset: Dataset, name: str = "train") -> np.ndarray:
    """A dataset's `labels` array ([N] int64 or [N, K] 0/1), read without loading images."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise ValueError(
            f"the {name} data set ({type(dataset).__name__}) exposes no `labels` array, which class "
            "weights and the weighted sampler need"
        )
    return np.asarray(labels)


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Samples per class ([N] labels) or positives per label ([N, K] 0/1 labels), as float64."""
    if labels.ndim == 2:
        return labels.sum(axis=0).astype(np.float64)
    return np.bincount(labels.astype(np.int64), minlength=num_classes).astype(np.float64)


def check_fractions(val_fraction: float, test_fraction: float = 0.0) -> None:
    """Raise ValueError unless both fractions are in [0, 1) and leave something to train on."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 so that train is not empty, "
            f"got {val_fraction} + {test_fraction}"
        )


def _split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) of n items: a positive fraction gets at least one item, and train keeps
    one when possible (taken from test before val)."""
    n_val = max(round(n * val_fraction), 1) if val_fraction > 0 else 0
    n_test = max(round(n * test_fraction), 1) if test_fraction > 0 else 0
    n_test = max(0, min(n_test, n - 1 - n_val))
    n_val = max(0, min(n_val, n - 1))
    return n_val, n_test


def stratified_split(
    labels: Sequence[int], val_fraction: float, test_fraction: float = 0.0, seed: int = 0
) -> tuple[list[int], list[int], list[int]]:
    """Split positions 0..len(labels)-1 into (train, val, test) index lists, per class.

    Each class is shuffled with its own generator keyed on (seed, class) so that adding a
    class does not reshuffle the others. A positive fraction gets at least one sample of a
    class as long as train keeps one; a class with too few samples fills train first, then
    val, then test. Index lists come back sorted, so datasets read files in a stable order.
    """
    check_fractions(val_fraction, test_fraction)
    labels_arr = np.asarray(labels, dtype=np.int64)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for cls in np.unique(labels_arr):
        positions = np.flatnonzero(labels_arr == cls)
        positions = np.random.default_rng([seed, int(cls)]).permutation(positions)
        n_val, n_test = _split_sizes(len(positions), val_fraction, test_fraction)
        val.extend(positions[:n_val].tolist())
        test.extend(positions[n_val : n_val + n_test].tolist())
        train.extend(positions[n_val + n_test :].tolist())
    return sorted(train), sorted(val), sorted(test)


def stratified_folds(labels: np.ndarray | Sequence[int], folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0..folds-1) of each position, for k-fold cross-validation: per stratum (a
    class, or a distinct row of a multi-label ``[N, K]`` matrix) the positions are shuffled by
    a generator keyed on (seed, stratum) and dealt to the folds in turn, the deal continuing
    from one stratum to the next, so fold sizes differ by at most one and every fold holds
    its share of each stratum."""
    if not isinstance(folds, int) or folds < 2:
        raise ValueError(f"cross-validation needs folds >= 2, got {folds!r}")
    labels_arr = np.asarray(labels)
    if len(labels_arr) < folds:
        raise ValueError(f"{len(labels_arr)} samples cannot fill {folds} folds")
    rows = labels_arr.reshape(len(labels_arr), -1)
    _, strata = np.unique(rows, axis=0, return_inverse=True)
    strata = strata.reshape(-1)
    out = np.empty(len(labels_arr), dtype=np.int64)
    dealt = 0
    for stratum in range(int(strata.max()) + 1):
        positions = np.random.default_rng([seed, stratum]).permutation(np.flatnonzero(strata == stratum))
        out[positions] = (dealt + np.arange(len(positions))) % folds
        dealt += len(positions)
    return out


def group_split(
    groups: Sequence[Hashable], val_fraction: float, test_fraction: float = 0.0, seed: int = 0
) -> tuple[list[int], list[int], list[int]]:
    """Split positions 0..len(groups)-1 so that all positions of a group land in one split.

    The sorted unique groups are shuffled by np.random.default_rng(seed), so the split does
    not depend on the row order; fractions count groups, with stratified_split's rule (a
    positive fraction gets at least one group while train keeps one). Lists come back sorted.
    """
    check_fractions(val_fraction, test_fraction)
    groups = list(groups)
    unique = sorted(set(groups))
    n_val, n_test = _split_sizes(len(unique), val_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(len(unique))
    where = {unique[g]: 1 for g in order[:n_val]}
    where.update({unique[g]: 2 for g in order[n_val : n_val + n_test]})
    splits: tuple[list[int], list[int], list[int]] = ([], [], [])
    for position, group in enumerate(groups):
        splits[where.get(group, 0)].append(position)
    return splits
