"""Check a composed config against the constructors it names, before anything runs.

Hydra already refuses an override of a key that does not exist (``task.lrr=1``), but a typo
inside a YAML file, or a value of the wrong type (``task.lr=abc``, ``trainer.max_epochs=1.5``),
would only fail when that object is built: after the data set is read, a tokenizer trained,
maybe minutes in. ``check_config`` walks every node with a ``_target_``, and for each key
that is not an argument of the target (with a close match suggested) or whose value does
not fit a simple annotation (bool, int, float, str, optionally None), raises one ValueError
that names the config key, the target and what it expected.

The constructors' signatures are the schema: no second list of fields to keep in sync.
"""

from __future__ import annotations

import difflib
import inspect
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig

from tasks.task_fit import check_task_fits

__all__ = ["check_config"]

_SIMPLE = (bool, int, float, str)
# Keys of a target's node that train.py handles itself (not constructor arguments), with
# their allowed values: the trainer group's torch.set_float32_matmul_precision.
_HANDLED_KEYS = {
    "pytorch_lightning.Trainer": {"matmul_precision": (None, "highest", "high", "medium")},
    "lightning.pytorch.Trainer": {"matmul_precision": (None, "highest", "high", "medium")},
}


def check_config(cfg: DictConfig) -> None:
    """Raise ValueError listing every unknown key or mistyped value under a ``_target_``."""
    # task=captioning model=resnet18: named now, not as a bad keyword later. First: a task's
    # settings for its own data (task=retrieval's data.train_mode) are unknown keys to data that
    # does not fit it, and the misfit is what to report.
    check_task_fits(cfg)
    problems = [p for path, node in _target_nodes(cfg, "") for p in _check_node(path, node)]
    if problems:
        raise ValueError("invalid config:\n  " + "\n  ".join(problems))


def _target_nodes(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node:
            if str(key) == "hydra":
                continue
            child = node._get_node(key)
            if child is not None and not child._is_missing() and not child._is_interpolation():
                yield from _target_nodes(node[key], f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            yield from _target_nodes(item, f"{path}[{i}]")


def _parameters(target: Callable) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """(named parameters, their type hints, whether any **kwargs is unresolved).

    A class whose __init__ forwards **kwargs to its base (MedicalTask to ClassificationTask)
    takes the base's arguments too: follow the MRO until an __init__ without **kwargs.
    """
    chain = [c.__init__ for c in target.__mro__ if "__init__" in vars(c)] if inspect.isclass(target) else [target]
    if len(chain) > 1 and not _forwards_kwargs(chain[0]):
        chain = chain[:1]
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    for func in chain:
        try:
            signature = inspect.signature(func)
        except (TypeError, ValueError) as err:
            _skipped(func, f"its signature cannot be read ({err}): its keys are not checked")
            return params, hints, True
        try:
            hints = {**typing.get_type_hints(func), **hints}
        except Exception as err:  # noqa: BLE001 - a forward reference to a name not importable here, ...
            _skipped(func, f"its type hints do not resolve ({type(err).__name__}: {err}): only key names are checked")
        kinds = {p.kind for p in signature.parameters.values()}
        params = {**{n: p for n, p in signature.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)},
                  **params}
        if inspect.Parameter.VAR_KEYWORD not in kinds:
            return params, hints, False
    return params, hints, True


def _forwards_kwargs(init: Callable) -> bool:
    """Whether an __init__ hands its **kwargs to ``super().__init__`` (then the base's
    arguments are its arguments too), rather than using them itself (DataModule's source
    keys, checked by the DataModule against its split builder)."""
    try:
        source = inspect.getsource(init)
    except (OSError, TypeError) as err:
        _skipped(init, f"its source cannot be read ({err}): its base classes' arguments are not checked")
        return False
    return "super().__init__(" in source and "**kwargs)" in source


_WARNED: set[str] = set()


def _skipped(func: Callable, why: str) -> None:
    """Say once per constructor which part of the check cannot run, and why."""
    name = getattr(func, "__qualname__", repr(func))
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(f"config check of {name}: {why}", stacklevel=3)


def _check_node(path: str, node: DictConfig) -> list[str]:
    where = path or "<root>"
    try:
        target = get_method(node._target_) if not isinstance(node._target_, type) else node._target_
    except Exception as err:  # noqa: BLE001 - hydra wraps import errors in several types
        return [f"{where}._target_={node._target_!r} cannot be imported: {str(err).splitlines()[0]}"]
    params, hints, open_kwargs = _parameters(target)
    name = getattr(target, "__qualname__", str(target))
    forwarded = _forwarded_options(node)
    if forwarded is not None:  # the DataModule: its other keys are its split factory's options
        factory_name, options = forwarded
        params = {**options, **params}
        open_kwargs = False
        name = f"{name} (data set options: {factory_name})"
    problems = [] if forwarded is None else _options_under_splits(where, node)
    handled = _HANDLED_KEYS.get(str(node._target_), {})
    for key in node:
        key = str(key)
        if key.startswith("_") and key.endswith("_"):
            continue
        full = f"{where}.{key}" if path else key
        if key in handled:
            if node[key] not in handled[key]:
                problems.append(f"{full}={node[key]!r}: expected one of {', '.join(map(str, handled[key]))}")
            continue
        if key not in params:
            if not open_kwargs:
                close = difflib.get_close_matches(key, list(params), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                if forwarded is not None:
                    hint += f"; valid keys: {', '.join(sorted(k for k in params if k != 'self'))}"
                problems.append(f"{full}: {name} has no argument {key!r}{hint}")
            continue
        if key not in hints:
            continue
        child = node._get_node(key)
        if child is None or child._is_missing():
            continue
        try:
            value = node[key]
        except Exception:  # noqa: BLE001 - interpolation resolvable only later (hydra:...)
            continue
        if isinstance(value, DictConfig | ListConfig):
            continue
        expected = _simple_types(hints[key])
        if expected is not None and not _fits(value, expected):
            names = " | ".join("None" if t is type(None) else t.__name__ for t in expected)
            problems.append(f"{full}={value!r}: {name}({key}: {names}) expects {names}")
    return problems


def _options_under_splits(where: str, node: DictConfig) -> list[str]:
    """``data.splits.num_train``: the DataModule passes data.num_train (its shipped default) at
    call time, which beats a value bound in the partial, so this one would be silently ignored."""
    return [
        f"{where}.splits.{key}: data set options sit at {where}.*: set {where}.{key} instead"
        for key in node.splits if not (str(key).startswith("_") and str(key).endswith("_"))
    ]


def _forwarded_options(node: DictConfig) -> tuple[str, dict[str, inspect.Parameter]] | None:
    """A data config hands every key its DataModule does not take to the split factory named
    in ``splits``: those keys are that factory's arguments (``mmtrans.data.splits.split_options``)."""
    splits = node.get("splits") if "splits" in node else None
    if not isinstance(splits, DictConfig) or "_target_" not in splits:
        return None
    from mmtrans.data.splits import split_options

    try:
        factory = get_method(splits._target_)
    except Exception:  # noqa: BLE001 - reported for the splits node itself
        return None
    return factory.__qualname__, split_options(factory)


def _simple_types(hint: Any) -> tuple[type, ...] | None:
    """The types of a simple annotation (int, float | None, ...), else None (not checked)."""
    if hint in _SIMPLE:
        return (hint,)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(hint)
        if all(m in _SIMPLE or m is type(None) for m in members):
            return members
    return None


def _fits(value: Any, expected: tuple[type, ...]) -> bool:
    if value is None:  # in these configs null means "filled in later" (model.num_classes) or "off"
        return True
    if isinstance(value, bool):  # bool is an int in Python; YAML true/false is only a bool
        return bool in expected
    if isinstance(value, int) and float in expected:
        return True
    return isinstance(value, tuple(t for t in expected if t is not type(None)))

