"""open_clip's ``CLIP`` (ViT image tower, OpenAI text tower) -> mmtrans ``ContrastiveModel``.

open_clip keeps OpenAI's layout: ``visual.conv1`` (no bias), ``visual.class_embedding``,
``visual.positional_embedding``, ``visual.ln_pre``, ``visual.transformer.resblocks.N``
(``nn.MultiheadAttention``: ``in_proj_weight`` is q, k, v stacked as our ``qkv``),
``visual.ln_post`` (on every token, then the class token is taken: our ViT's final norm),
``visual.proj`` (``[width, embed]``: our projection's weight transposed); the text tower at the
top level: ``token_embedding``, ``positional_embedding``, ``transformer.resblocks.N``,
``ln_final``, ``text_projection``, and ``logit_scale``. The text is pooled at the end-of-text
token (OpenAI's tokenizer gives it the highest id; we pool at the last non-padding token).

Weights come from a local file (``read_state_dict``: open_clip's ``.pt``/``.bin``/
``.safetensors`` state dicts, or its training checkpoints) with no open_clip import, or by
name (``ViT-B-32`` + tag ``openai``) through open_clip when it is installed and online.
Not in a state dict: the attention heads (open_clip: width / 64) and the activation
(QuickGELU for OpenAI's weights, GELU otherwise): pass them when they differ.
"""

from __future__ import annotations

import os
from typing import Any

from torch import Tensor

from .pretrained import read_state_dict

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "clip_kwargs_from_open_clip", "convert_open_clip",
           "is_open_clip_state_dict", "load_open_clip_state_dict"]

# open_clip's OPENAI_DATASET_MEAN / STD: what its ViT CLIPs normalise images with.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_BLOCK_KEYS = {
    "ln_1.weight": "norm1.weight", "ln_1.bias": "norm1.bias",
    "attn.in_proj_weight": "attn.qkv.weight", "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.proj.weight", "attn.out_proj.bias": "attn.proj.bias",
    "ls_1.gamma": "ls1.gamma", "ls_2.gamma": "ls2.gamma",
    "ln_2.weight": "norm2.weight", "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight", "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight", "mlp.c_proj.bias": "mlp.fc2.bias",
}
_VISUAL_KEYS = {"conv1.weight": "encoder.patch_embed.proj.weight", "ln_pre.weight": "encoder.norm_pre.weight",
                "ln_pre.bias": "encoder.norm_pre.bias", "ln_post.weight": "encoder.norm.weight",
                "ln_post.bias": "encoder.norm.bias"}
_TEXT_KEYS = {"token_embedding.weight": "text.tok_embed.weight", "ln_final.weight": "text.norm.weight",
              "ln_final.bias": "text.norm.bias"}



def _block_key(k: str, key: str, tower: str) -> str:
    """Our name for ``transformer.resblocks.<i>.<rest>`` (``k``) of a tower; ``key``: the
    original open_clip key, for the error."""
    i, rest = k[len("transformer.resblocks."):].split(".", 1)
    if rest not in _BLOCK_KEYS:
        raise ValueError(f"unexpected open_clip key {key!r}")
    return f"{tower}.blocks.{i}.{_BLOCK_KEYS[rest]}"

def is_open_clip_state_dict(state_dict: dict[str, Tensor]) -> bool:
    return "visual.conv1.weight" in state_dict and "token_embedding.weight" in state_dict


def _strip(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Without the ``module.`` prefix of open_clip's (DDP) training checkpoints."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return state_dict


def _depth(state_dict: dict[str, Tensor], prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".")[0]) for k in state_dict if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def clip_kwargs_from_open_clip(
    state_dict: dict[str, Tensor], vision_heads: int | None = None, text_heads: int | None = None,
    act_layer: str = "gelu",
) -> dict[str, Any]:
    """``create_clip`` arguments for the architecture of an open_clip CLIP state dict.
    Heads default to width / 64 (open_clip's ``head_width``)."""
    sd = _strip(state_dict)
    if not is_open_clip_state_dict(sd):
        raise ValueError("not an open_clip CLIP state dict (no visual.conv1.weight / token_embedding.weight); "
                         "only ViT image towers with the OpenAI text tower are supported")
    unsupported = [k for k in ("logit_bias", "visual.attn_pool.query", "text.cls_emb") if k in sd]
    if unsupported:
        raise ValueError(f"open_clip state dict with {', '.join(unsupported)} (SigLIP / CoCa) is not supported")
    width, _, patch, _ = sd["visual.conv1.weight"].shape
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = sd["token_embedding.weight"].shape[1]
    return dict(
        encoder_preset=None, img_size=grid * patch, patch_size=patch, embed_dim=width,
        depth=_depth(sd, "visual.transformer.resblocks."), num_heads=vision_heads or max(width // 64, 1),
        mlp_ratio=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        joint_dim=sd["visual.proj"].shape[1], vocab_size=sd["token_embedding.weight"].shape[0],
        text_embed_dim=text_width, text_depth=_depth(sd, "transformer.resblocks."),
        text_num_heads=text_heads or max(text_width // 64, 1), max_len=sd["positional_embedding"].shape[0],
        image_pool="cls", text_pool="eos", pre_norm=True, norm_eps=1e-5, act_layer=act_layer,
    )


def convert_open_clip(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """An open_clip CLIP state dict as a ``ContrastiveModel`` state dict (built by
    ``create_clip`` with ``clip_kwargs_from_open_clip``'s arguments)."""
    out: dict[str, Tensor] = {}
    for key, v in _strip(state_dict).items():
        if key == "attn_mask" or key.endswith(".attn_mask"):
            continue  # the causal-mask buffer of older open_clip versions
        if key.startswith("visual."):
            k = key[len("visual."):]
            if k in _VISUAL_KEYS:
                out[_VISUAL_KEYS[k]] = v
            elif k == "class_embedding":
                out["encoder.cls_token"] = v.reshape(1, 1, -1)
            elif k == "positional_embedding":
                out["encoder.pos_embed"] = v.unsqueeze(0)
            elif k == "proj":
                out["head.image_proj.weight"] = v.t().contiguous()
            elif k.startswith("transformer.resblocks."):
                out[_block_key(k, key, "encoder")] = v
            else:
                raise ValueError(f"unexpected open_clip key {key!r}")
        elif key in _TEXT_KEYS:
            out[_TEXT_KEYS[key]] = v
        elif key == "positional_embedding":
            out["text.pos_embed.weight"] = v
        elif key == "text_projection":
            out["head.text_proj.weight"] = v.t().contiguous()
        elif key == "logit_scale":
            out["head.logit_scale"] = v.reshape(())
        elif key.startswith("transformer.resblocks."):
            out[_block_key(key, key, "text")] = v
        else:
            raise ValueError(f"unexpected open_clip key {key!r}")
    out["text.lm_head.weight"] = out["text.tok_embed.weight"]  # tied; unused by CLIP
    return out


def _offline_error(name: str, tag: str | None, cause: Exception | None = None) -> RuntimeError:
    why = f" ({type(cause).__name__}: {str(cause)[:200]})" if cause else ""
    return RuntimeError(
        f"could not fetch open_clip weights {name!r} (tag {tag!r}){why}. Without network access, save them "
        f"elsewhere (torch.save(open_clip.create_model({name!r}, pretrained={tag!r}).state_dict(), 'clip.pt')) "
        "and pass the local file, e.g. model.pretrained=/path/to/clip.pt"
    )


def load_open_clip_state_dict(name_or_path: str | os.PathLike, tag: str | None = None) -> tuple[dict[str, Tensor], bool]:
    """(state dict, whether the weights want QuickGELU) of a local file (QuickGELU unknown:
    False) or of an open_clip model name and pretrained tag (online, open_clip installed)."""
    if os.path.exists(name_or_path) or str(name_or_path).endswith((".pt", ".pth", ".bin", ".safetensors", ".ckpt")):
        return _strip(read_state_dict(name_or_path)), False
    name = str(name_or_path)
    try:
        import open_clip
    except ImportError as e:
        raise RuntimeError(f"{name!r} is not a local weights file, and loading open_clip weights by name needs "
                           "open_clip (pip install open_clip_torch); or pass a local state dict file") from e
    if name not in open_clip.list_models():
        raise ValueError(f"{name!r} is neither a weights file nor an open_clip model name (e.g. ViT-B-32)")
    quick_gelu = bool((open_clip.get_pretrained_cfg(name, tag) or {}).get("quick_gelu")) if tag else False
    try:
        model = open_clip.create_model(name, pretrained=tag, force_quick_gelu=quick_gelu)
    except Exception as e:  # offline, unknown tag, hub down: all end the same way for the user
        raise _offline_error(name, tag, e) from e
    return model.state_dict(), quick_gelu
