"""Rebuild a trained model from a checkpoint file alone (no original YAML needed), or from a
folder written by ``mmtrans-export`` (safetensors + JSON: nothing is unpickled).

Reading the files: ``tasks/checkpoint_files.py``; the config a checkpoint carries:
``tasks/checkpoint_config.py``. Their public names are importable from here too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from torch import nn

from mmtrans.models.heads import head_outputs
from tasks.checkpoint_config import checkpoint_config
from tasks.checkpoint_files import (
    CONFIG_FILE,
    EXPORT_FILES,
    EXPORT_FORMAT_VERSION,
    LIGHTNING_CKPT_ALIASES,
    TOKENIZER_FILES,
    WEIGHTS_FILE,
    check_checkpoint_fits,
    read_checkpoint,
    read_export_info,
)

__all__ = ["CONFIG_FILE", "EXPORT_FILES", "EXPORT_FORMAT_VERSION", "LIGHTNING_CKPT_ALIASES", "TOKENIZER_FILES",
           "WEIGHTS_FILE", "check_checkpoint_fits", "checkpoint_config", "load_model", "read_checkpoint"]


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model of a task checkpoint (or of an exported folder), in eval mode, plus its
    ``hparams`` (``class_names``, ``config`` with ``model`` and ``data``, ``generation``, ...)
    and, for captioning, ``tokenizer``. Checkpoints are read weights-only: data, never code."""
    if Path(path).is_dir():
        return _load_exported(Path(path), map_location)
    ckpt = read_checkpoint(path, map_location)
    info = dict(ckpt.get("hyper_parameters") or {})
    if "tokenizer" in ckpt:
        from mmtrans.text import CaptionTokenizer

        info["tokenizer"] = CaptionTokenizer.from_json(ckpt["tokenizer"])
    model = _build_model(info, path)
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), info


def _build_model(info: dict[str, Any], source: str | Path) -> nn.Module:
    """The model described by ``info["config"]["model"]``, sized by what the data taught the
    task (classes, tokenizer), with random weights for the caller to overwrite."""
    model_cfg = (info.get("config") or {}).get("model")
    if model_cfg is None:
        raise ValueError(f"checkpoint {source} carries no model config (hyper_parameters.config.model)")
    # The weights come from the checkpoint: never fetch pretrained weights again (an
    # architecture they implied is in the config: checkpoint_config).
    overrides: dict[str, Any] = {k: None for k in model_cfg if k.endswith("pretrained")}
    if info.get("num_classes") is not None:  # the head's size: one logit for binary labels
        overrides["num_classes"] = head_outputs(info.get("label_type") or "multiclass", info["num_classes"])
    if info.get("tokenizer") is not None:
        overrides["vocab_size"] = info["tokenizer"].vocab_size
    return instantiate({**model_cfg, **overrides})


def _load_exported(folder: Path, map_location: str) -> tuple[nn.Module, dict[str, Any]]:
    """``load_model`` for a folder written by ``mmtrans-export``: the same ``info`` shape, read
    from JSON and safetensors only."""
    from safetensors.torch import load_model as load_safetensors

    info = read_export_info(folder)
    model = _build_model(info, folder)
    try:  # restores tied weights (a captioner's LM head = its token embedding), stored once
        load_safetensors(model, folder / WEIGHTS_FILE, device=map_location)
    except Exception as e:  # missing file, corrupt header, keys or shapes that do not fit
        raise ValueError(f"cannot load {folder / WEIGHTS_FILE} into the model of {folder / CONFIG_FILE}: {e}") from e
    return model.eval(), info
