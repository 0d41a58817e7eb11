"""Rebuild a trained model from a checkpoint file alone (no original YAML needed), or from a
folder written by ``mmtrans-export`` (safetensors + JSON: nothing is unpickled)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from torch import nn

from mmtrans.data.preprocessing import Preprocessing
from mmtrans.models.factory import encoder_kwargs
from mmtrans.models.heads import head_outputs
from mmtrans.models.pretrained import check_state_dict, load_weights_only, timm_model_name

__all__ = ["EXPORT_FILES", "EXPORT_FORMAT_VERSION", "check_checkpoint_fits", "checkpoint_config", "load_model",
           "read_checkpoint"]

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


def checkpoint_config(cfg: Any, preprocessing: Preprocessing, model: nn.Module | None = None) -> dict[str, Any]:
    """The run's config as tasks keep it in checkpoints, so that the checkpoint alone rebuilds
    the model (`load_model` drops every `*pretrained` source: no weights are fetched again).

    Resolved, plus what the data and the sources implied: the image size and channels the
    model was built for (`preprocessing`), the patch size it got when the config left it to
    the image size or the weights (from `model`), and, for an encoder whose preset is null, the
    architecture of the timm model it came from, as constructor arguments in `model`
    (`encoder_kwargs`)."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(cfg, resolve=True)
    model_cfg = config["model"]
    model_cfg.update(img_size=preprocessing.img_size, in_chans=preprocessing.in_chans)
    patch_embed = getattr(getattr(model, "encoder", model), "patch_embed", None)
    if "patch_size" in model_cfg and model_cfg["patch_size"] is None and patch_embed is not None:
        model_cfg["patch_size"] = int(patch_embed.patch_size[0])
    for preset_key, source_key in (("preset", "pretrained"), ("encoder_preset", "encoder_pretrained")):
        source = model_cfg.get(source_key)
        if preset_key in model_cfg and model_cfg[preset_key] is None and source and timm_model_name(source):
            arch = encoder_kwargs(None, source, {})
            model_cfg.update({k: v for k, v in arch.items() if model_cfg.get(k) is None})
    return config


def check_checkpoint_fits(module: nn.Module, path: str | Path) -> None:
    """Fail before training/testing, naming the file and the keys, when a checkpoint does not
    match ``module`` (a different model size, another task): Lightning would fail later with
    a bare ``size mismatch`` that names neither."""
    if str(path) in LIGHTNING_CKPT_ALIASES:
        return
    check_state_dict(module, read_checkpoint(path)["state_dict"], f"checkpoint {path}")


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
    model = _build_model(info, folder)
    try:  # restores tied weights (a captioner's LM head = its token embedding), stored once
        load_safetensors(model, folder / WEIGHTS_FILE, device=map_location)
    except Exception as e:  # missing file, corrupt header, keys or shapes that do not fit
        raise ValueError(f"cannot load {folder / WEIGHTS_FILE} into the model of {folder / CONFIG_FILE}: {e}") from e
    return model.eval(), info
