"""Pretrained weights: read local files safely, fetch timm weights when online, load strictly.

``source`` is a path (``.safetensors``, ``.pth``, ``.pt``, ``.bin``, ``.ckpt``) or a timm model
name (``vit_tiny_patch16_224`` or ``vit_tiny_patch16_224.augreg_in21k``). Pickled files are
read with ``weights_only=True``: a checkpoint that would run code is refused.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .convert_timm import convert_timm_vit, is_timm_vit_state_dict
from .mae import is_mae_state_dict, mae_encoder_state_dict

__all__ = ["WEIGHT_SUFFIXES", "UnsafeCheckpointError", "check_state_dict", "create_timm_model", "is_weights_path",
           "load_pretrained", "load_state_dict_checked", "load_weights_only", "pretrained_preprocessing", "read_state_dict",
           "recorded_encoder_architecture",
           "timm_model_name"]

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def is_weights_path(source: str) -> bool:
    return str(source).endswith(WEIGHT_SUFFIXES) or "/" in str(source) or Path(source).exists()


class UnsafeCheckpointError(ValueError, pickle.UnpicklingError):
    """A pickled checkpoint that holds code (or objects other than tensors and plain
    containers). Both a ValueError (what the CLIs report) and an UnpicklingError (what
    ``torch.load`` raises), so callers catching either keep working."""


def load_weights_only(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``, the one place that reads pickled checkpoints, with
    errors that name the file. torch's own refusal suggests ``weights_only=False``, which
    would run the code; ours says the file was refused and why."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # code refused, truncated file, not a torch file at all
        text = str(e)
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in text:
            marker = "WeightsUnpickler error:"
            detail = text.split(marker, 1)[1].split(". ")[0].strip() if marker in text else "see the cause below"
            raise UnsafeCheckpointError(
                f"{path} refused: it is not weights-only, it holds pickled code or objects ({detail}) that "
                "loading would run. Load only checkpoints whose source you trust; share weights with "
                "mmtrans-export (safetensors, no code)."
            ) from e
        first = text.splitlines()[0][:200] if text else ""
        raise ValueError(
            f"cannot read {path}: not a checkpoint, or a truncated/corrupt one ({type(e).__name__}: {first})"
        ) from e


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a weights file; unwraps Lightning (``state_dict`` + ``model.``) and timm
    training checkpoints (``model`` / ``state_dict_ema``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (expected one of {', '.join(WEIGHT_SUFFIXES)})")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"cannot read safetensors file {path}: {e}") from e
    obj = load_weights_only(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd = obj["state_dict"]
        if all(k.startswith("model.") for k in sd):  # a Lightning checkpoint of one of our tasks
            sd = {k[len("model."):]: v for k, v in sd.items()}
        return sd
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (name -> tensor)")
    return obj


def check_state_dict(
    model: nn.Module, state_dict: dict[str, Tensor], source: str, allow_missing: tuple[str, ...] = ()
) -> None:
    """Raise one readable ``ValueError`` naming ``source`` and every missing, unexpected and
    misshaped key, before anything is loaded (so a bad file leaves the model untouched)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.startswith(allow_missing)]
    unexpected = [k for k in state_dict if k not in own]
    misshaped = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in state_dict if k in own and state_dict[k].shape != own[k].shape
    ]
    problems = [
        (label, items) for label, items in
        (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", misshaped)) if items
    ]
    if problems:
        lines = [f"weights from {source} do not fit {type(model).__name__}:"]
        for label, items in problems:
            more = f" ... (+{len(items) - 8} more)" if len(items) > 8 else ""
            lines.append(f"  {label}: {', '.join(items[:8])}{more}")
        raise ValueError("\n".join(lines))


def load_state_dict_checked(
    model: nn.Module, state_dict: dict[str, Tensor], source: str, allow_missing: tuple[str, ...] = ()
) -> None:
    """``load_state_dict`` after ``check_state_dict``."""
    check_state_dict(model, state_dict, source, allow_missing)
    model.load_state_dict(state_dict, strict=False)


def create_timm_model(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """A timm model by name; with ``pretrained`` the weights come from the Hugging Face hub."""
    import timm

    if not timm.is_model(name.split(".")[0]):
        raise ValueError(f"{name!r} is neither a weights file nor a timm model name")
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as e:  # offline, hub down, missing auth: all end the same way for the user
        raise RuntimeError(
            f"could not fetch pretrained weights {name!r} through timm ({type(e).__name__}: {str(e)[:200]}). "
            "Without network access, download the weights elsewhere (e.g. model.safetensors from the "
            f"Hugging Face hub page timm/{name}) and pass model.pretrained=/path/to/model.safetensors"
        ) from e


def timm_model_name(source: str) -> str | None:
    """The timm model a weights source is an instance of: `source` itself when it is a name,
    else the "architecture" of a hub-style ``config.json`` beside the weights file (timm's
    hub repos ship one), else None."""
    if not is_weights_path(source):
        return source
    cfg_file = Path(source).parent / "config.json"
    if not cfg_file.is_file():
        return None
    try:
        name = json.loads(cfg_file.read_text()).get("architecture")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        warnings.warn(f"{cfg_file} does not parse ({e}); the architecture it would name is not used", stacklevel=2)
        return None
    return name if isinstance(name, str) and name else None


# What weights say about their input: read from timm's pretrained config.
PREPROCESSING_KEYS = ("mean", "std", "interpolation", "crop_pct")


def _normalization_next_to(path: Path) -> dict[str, Any]:
    """Input statistics from a ``config.json`` beside the weights (or in an export folder):
    timm's hub format (``pretrained_cfg``) or an mmtrans-export folder's (``preprocessing``)."""
    cfg_file = (path if path.is_dir() else path.parent) / "config.json"
    if not cfg_file.is_file():
        return {}
    try:
        full = json.loads(cfg_file.read_text())
        cfg = full.get("pretrained_cfg") or full.get("preprocessing") or {}
    except (json.JSONDecodeError, AttributeError) as e:
        warnings.warn(f"{cfg_file} does not parse ({e}); its normalisation is not used", stacklevel=2)
        return {}
    return {k: tuple(cfg[k]) if k in ("mean", "std") else cfg[k] for k in PREPROCESSING_KEYS if k in cfg}


def pretrained_preprocessing(source: str | None) -> dict[str, Any]:
    """What the weights ``source`` expect as input (``mean``, ``std``, ``interpolation``,
    ``crop_pct``), known without loading them: timm's registry for a model name (offline), a
    ``config.json`` beside a weights file, or the ``preprocessing`` a task checkpoint recorded.
    Empty when nothing is known (random init, a bare weights file)."""
    if not source:
        return {}
    if not is_weights_path(source):
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(source)
        if cfg is None:
            return {}
        return {k: tuple(getattr(cfg, k)) if k in ("mean", "std") else getattr(cfg, k) for k in PREPROCESSING_KEYS}
    path = Path(source)
    if path.suffix == ".ckpt" and path.is_file():
        recorded = ((load_weights_only(path).get("hyper_parameters") or {}).get("preprocessing")) or {}
        return {k: recorded[k] for k in PREPROCESSING_KEYS if k in recorded}
    return _normalization_next_to(path)


# Encoder architecture keys a task checkpoint records in hyper_parameters.config.model.
RECORDED_ARCH_KEYS = ("patch_size", "embed_dim", "depth", "num_heads", "stem", "stem_depth")


def recorded_encoder_architecture(source: str | None) -> dict[str, Any]:
    """The encoder architecture (patch size, width, depth, heads, stem and its depth) that one of our task
    checkpoints (``.ckpt``) recorded, so that a model built from its weights (an MAE
    pretraining's, say) fits them without repeating each key; empty for any other source."""
    path = Path(source) if source else None
    if path is None or path.suffix != ".ckpt" or not path.is_file():
        return {}
    model_cfg = ((load_weights_only(path).get("hyper_parameters") or {}).get("config") or {}).get("model") or {}
    return {k: model_cfg[k] for k in RECORDED_ARCH_KEYS if model_cfg.get(k) is not None}


def load_pretrained(model: nn.Module, source: str) -> nn.Module:
    """Load ``source`` into ``model`` (our ``VisionTransformer`` or ``ImageClassifier``).

    A classifier head whose size differs from the checkpoint's stays freshly initialised.
    A masked autoencoder's checkpoint (``task=pretrain``, or its mmtrans-export folder)
    gives its encoder only. The encoder's ``pretrained_cfg`` records the source and its
    normalisation.
    """
    encoder = getattr(model, "encoder", model)
    if Path(source).is_dir() and (Path(source) / "model.safetensors").is_file():  # an mmtrans-export folder
        source = str(Path(source) / "model.safetensors")
    if is_weights_path(source):
        state_dict = read_state_dict(source)
        extra = _normalization_next_to(Path(source))
    else:
        timm_model = create_timm_model(source, pretrained=True)
        state_dict = timm_model.state_dict()
        extra = {k: tuple(timm_model.pretrained_cfg[k]) for k in ("mean", "std") if k in timm_model.pretrained_cfg}
    if is_mae_state_dict(state_dict):  # ViT key names: the timm converter fits it to the model
        state_dict = mae_encoder_state_dict(state_dict, encoder, str(source))
    if is_timm_vit_state_dict(state_dict):
        state_dict = convert_timm_vit(state_dict, model)
    elif hasattr(model, "head") and state_dict.get("head.fc.weight") is not None:
        if state_dict["head.fc.weight"].shape != model.head.fc.weight.shape:  # new label set: fresh head
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.fc.")}
    load_state_dict_checked(model, state_dict, str(source), allow_missing=("head.fc.",))
    encoder.pretrained_cfg = {**encoder.pretrained_cfg, **extra, "source": str(source)}
    return model
