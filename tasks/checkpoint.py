"""Rebuild a trained model from a checkpoint file alone (no original YAML needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from mmtrans.models.heads import head_outputs
from mmtrans.models.pretrained import check_state_dict

__all__ = ["check_checkpoint_fits", "load_model"]

# ckpt_path values that Lightning resolves itself (no file to check up front).
LIGHTNING_CKPT_ALIASES = ("last", "best", "hpc", "registry")


def check_checkpoint_fits(module: nn.Module, path: str | Path) -> None:
    """Fail before training/testing, naming the file and the keys, when a checkpoint does not
    match ``module`` (a different model size, another task): Lightning would fail later with
    a bare ``size mismatch`` that names neither."""
    if str(path) in LIGHTNING_CKPT_ALIASES:
        return
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} (ckpt_path) does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict'); "
                         "to start from plain weights use model.pretrained=PATH")
    check_state_dict(module, ckpt["state_dict"], f"checkpoint {path}")


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model of a task checkpoint, in eval mode, plus its ``hparams`` (``class_names``,
    ``config``, ...) and, for captioning checkpoints, ``tokenizer``. Loads with
    ``weights_only=True``: checkpoints are data, never code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a checkpoint, pickle with code
        raise ValueError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from e
    info = dict(ckpt.get("hyper_parameters") or {})
    model_cfg = (info.get("config") or {}).get("model")
    if model_cfg is None:
        raise ValueError(f"checkpoint {path} carries no model config (hyper_parameters.config.model)")
    # The weights come from the checkpoint: never fetch pretrained weights again.
    overrides = {k: None for k in model_cfg if k.endswith("pretrained")}
    if "num_classes" in info:  # the head's size: one logit for binary labels
        overrides["num_classes"] = head_outputs(info.get("label_type") or "multiclass", info["num_classes"])
    if "tokenizer" in ckpt:
        from mmtrans.text import CaptionTokenizer

        info["tokenizer"] = CaptionTokenizer.from_json(ckpt["tokenizer"])
        overrides["vocab_size"] = info["tokenizer"].vocab_size
    model = instantiate({**model_cfg, **overrides})
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), info
