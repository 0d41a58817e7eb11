"""Do the chosen model and data presets fit the chosen task? Said at compose time, before any data is read.

Each task class names the model factories it builds with (``MODEL_TARGETS``: a classifier
for classification / medical, a captioner for captioning, a CLIP model for retrieval, an MAE
for pretrain; None: no model group, as task=zeroshot's) and the data it needs
(``DATA_YIELDS``: "labels", "captions" or None for any), and a split factory says
what it yields (its ``yields`` attribute, "labels" when absent). Without this check
``task=captioning model=resnet18`` would fail deep inside the build with an unexpected keyword,
and ``task=classification data=scenes`` with "num_classes must be >= 1", after the data is
read. The message names the task, the presets given and the presets that fit (``conf/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import get_class, get_method
from omegaconf import DictConfig, OmegaConf

__all__ = ["check_task_fits"]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def check_task_fits(cfg: DictConfig) -> None:
    """Raise ValueError when ``cfg.model._target_`` is not a factory ``cfg.task`` builds with, or
    ``cfg.data`` does not yield what it trains on (labels, captions)."""
    task_target = cfg.get("task", {}).get("_target_") if isinstance(cfg.get("task"), DictConfig) else None
    if not task_target:
        return
    try:
        task_cls = get_class(task_target)
    except Exception:  # noqa: BLE001 - an unimportable target is reported by check_config itself
        return
    _check_data(cfg, task_cls, task_target)
    # No model group (task=zeroshot takes its model from ckpt_path): nothing more to check.
    model = cfg.get("model")
    accepted = getattr(task_cls, "MODEL_TARGETS", None)
    if accepted is None or not isinstance(model, DictConfig) or "_target_" not in model:
        return
    try:
        model_fn = get_method(model._target_)
    except Exception:  # noqa: BLE001 - an unimportable target is reported by check_config itself
        return
    if any(_same(model_fn, t) for t in accepted):
        return
    task_names = _presets("task", ("task", "_target_"), lambda t: _same(task_cls, t, get_class))
    model_names = _presets("model", ("_target_",), lambda t: _same(model_fn, t))
    fitting = _presets("model", ("_target_",), lambda t: any(_same(get_method(t), a) for a in accepted))
    task = f"task={'|'.join(task_names)}" if task_names else f"task._target_={task_target}"
    given = f"model={'|'.join(model_names)} ({model._target_})" if model_names else f"model._target_={model._target_}"
    choose = " or ".join(f"model={n}" for n in fitting) or f"a model whose _target_ is {' or '.join(accepted)}"
    raise ValueError(
        f"{task} does not take {given}: it builds its model with {' or '.join(accepted)}; choose {choose}"
    )


def _check_data(cfg: DictConfig, task_cls: type, task_target: str) -> None:
    needs = getattr(task_cls, "DATA_YIELDS", None)
    splits = cfg.get("data", {}).get("splits") if isinstance(cfg.get("data"), DictConfig) else None
    if needs is None or not isinstance(splits, DictConfig) or "_target_" not in splits:
        return
    try:
        factory = get_method(splits._target_)
    except Exception:  # noqa: BLE001 - an unimportable target is reported by check_config itself
        return
    if _yields(factory) in (needs, "any"):
        return
    task_names = _presets("task", ("task", "_target_"), lambda t: _same(task_cls, t, get_class))
    given = _presets("data", ("splits", "_target_"), lambda t: _same(factory, t))
    fitting = _presets("data", ("splits", "_target_"), lambda t: _yields(get_method(t)) in (needs, "any"))
    task = f"task={'|'.join(task_names)}" if task_names else f"task._target_={task_target}"
    data = f"data={'|'.join(given)}" if given else f"data.splits._target_={splits._target_}"
    raise ValueError(
        f"{task} needs data with {needs}; {data} ({splits._target_}) yields {_yields(factory)}: "
        f"choose {' or '.join(f'data={n}' for n in fitting)}"
    )


def _yields(factory: Any) -> str:
    return getattr(getattr(factory, "func", factory), "yields", "labels")


def _same(obj: Any, target: str, load: Any = get_method) -> bool:
    try:
        return load(target) is obj
    except Exception:  # noqa: BLE001 - a preset that does not import is not a match
        return False


def _presets(group: str, key: tuple[str, ...], match: Any) -> list[str]:
    """Names of the conf/<group> files whose value at `key` (following their defaults) matches."""
    folder = CONF_DIR / group
    if not folder.is_dir():  # an installed copy without the config tree: name targets only
        return []
    names = []
    for path in sorted(folder.glob("*.yaml")):
        value = _lookup(folder, path.stem, key, depth=0)
        if isinstance(value, str) and match(value):
            names.append(path.stem)
    return names


def _lookup(folder: Path, name: str, key: tuple[str, ...], depth: int) -> Any:
    """`key` in conf/<group>/<name>.yaml, else in the files of the same group its defaults list."""
    node: Any = OmegaConf.load(folder / f"{name}.yaml")
    value = node
    for k in key:
        value = value.get(k) if isinstance(value, DictConfig) else None
    if value is not None or depth > 5:
        return value
    for entry in node.get("defaults") or []:
        if isinstance(entry, str) and entry != "_self_" and (folder / f"{entry}.yaml").is_file():
            found = _lookup(folder, entry, key, depth + 1)
            if found is not None:
                return found
    return None
