"""What a checkpoint file or an ``mmtrans-export`` folder holds, read as data: a Lightning
``.ckpt`` weights-only (nothing is unpickled but tensors and containers), an exported folder's
``config.json`` and tokenizer (JSON only). Building the model from it: ``tasks/checkpoint.py``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from mmtrans.models.pretrained import check_state_dict, load_weights_only

__all__ = ["CONFIG_FILE", "EXPORT_FILES", "EXPORT_FORMAT_VERSION", "LIGHTNING_CKPT_ALIASES", "TOKENIZER_FILES",
           "WEIGHTS_FILE", "check_checkpoint_fits", "read_checkpoint", "read_export_info"]

# ckpt_path values that Lightning resolves itself (no file to check up front).
LIGHTNING_CKPT_ALIASES = ("last", "best", "hpc", "registry")

# The folder mmtrans-export writes (tasks/export.py). Bump the version when a reader of an
# older folder would misread a newer one.
EXPORT_FORMAT_VERSION = 2  # 2: "preprocessing" (one record) replaces "data"
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"
TOKENIZER_FILES = ("tokenizer.json", "special_tokens.json")  # CaptionTokenizer.save
EXPORT_FILES = (WEIGHTS_FILE, CONFIG_FILE, *TOKENIZER_FILES)


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A Lightning checkpoint, read weights-only. Every reader of ``.ckpt`` files goes through
    here, so a file that holds code is refused with the same message (naming it) everywhere."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    ckpt = load_weights_only(path, map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict'); "
                         "to start from plain weights use model.pretrained=PATH")
    return ckpt


def check_checkpoint_fits(module: nn.Module, path: str | Path) -> None:
    """Fail before training/testing, naming the file and the keys, when a checkpoint does not
    match ``module`` (a different model size, another task): Lightning would fail later with
    a bare ``size mismatch`` that names neither."""
    if str(path) in LIGHTNING_CKPT_ALIASES:
        return
    check_state_dict(module, read_checkpoint(path)["state_dict"], f"checkpoint {path}")


def read_export_info(folder: Path) -> dict[str, Any]:
    """The ``info`` of an exported folder, shaped as a checkpoint's ``hyper_parameters`` (with
    ``config`` holding ``task_name`` and ``model``), plus its ``tokenizer`` when it has one."""
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} is a folder without {CONFIG_FILE}, not one written by mmtrans-export; "
                                "give a .ckpt file or an exported folder")
    exported = json.loads((folder / CONFIG_FILE).read_text())
    version = exported.get("format_version")
    if version != EXPORT_FORMAT_VERSION:
        raise ValueError(f"{folder / CONFIG_FILE}: export format version {version!r}, this mmtrans reads "
                         f"version {EXPORT_FORMAT_VERSION}")
    info = {k: v for k, v in exported.items() if k not in ("format_version", "task", "model")}
    info["config"] = {"task_name": exported["task"], "model": exported["model"]}
    if (folder / TOKENIZER_FILES[0]).is_file():
        from mmtrans.text import CaptionTokenizer

        info["tokenizer"] = CaptionTokenizer.load(folder)
    return info
