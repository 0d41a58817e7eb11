"""Hugging Face GPT-2 (``GPT2LMHeadModel`` / ``GPT2Model``) -> mmtrans ``TextDecoder``.

GPT-2 stores its projections as ``Conv1D`` (weight ``[in, out]``), ours are ``nn.Linear``
(``[out, in]``): conversion renames and transposes. With cross-attention on, the
cross-attention parameters (and their norm) are not in GPT-2 and keep their init (zero output
projection), so the converted decoder computes GPT-2's logits until it is trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from .pretrained import WEIGHT_SUFFIXES, check_state_dict, read_state_dict
from .text_decoder import TextDecoder

__all__ = ["convert_gpt2", "create_gpt2_decoder", "decoder_kwargs_from_gpt2", "load_gpt2_pretrained"]

# GPT-2 name inside ``h.{i}.`` -> ours inside ``blocks.{i}.`` (and whether to transpose).
_BLOCK_KEYS = {
    "ln_1.weight": ("norm1.weight", False), "ln_1.bias": ("norm1.bias", False),
    "attn.c_attn.weight": ("attn.qkv.weight", True), "attn.c_attn.bias": ("attn.qkv.bias", False),
    "attn.c_proj.weight": ("attn.proj.weight", True), "attn.c_proj.bias": ("attn.proj.bias", False),
    "ln_2.weight": ("norm2.weight", False), "ln_2.bias": ("norm2.bias", False),
    "mlp.c_fc.weight": ("mlp.fc1.weight", True), "mlp.c_fc.bias": ("mlp.fc1.bias", False),
    "mlp.c_proj.weight": ("mlp.fc2.weight", True), "mlp.c_proj.bias": ("mlp.fc2.bias", False),
}
_TOP_KEYS = {"wte.weight": "tok_embed.weight", "wpe.weight": "pos_embed.weight",
             "ln_f.weight": "norm.weight", "ln_f.bias": "norm.bias"}
_BUFFERS = ("attn.bias", "attn.masked_bias")  # causal-mask buffers of older transformers versions
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def decoder_kwargs_from_gpt2(config: Any) -> dict[str, Any]:
    """Architecture of a ``transformers.GPT2Config`` as ``TextDecoder`` arguments (dropout included)."""
    unsupported = [
        name for name, cond in (
            (f"activation {config.activation_function!r}",
             config.activation_function not in ("gelu_new", "gelu_pytorch_tanh")),
            ("scale_attn_weights=False", not config.scale_attn_weights),
            ("scale_attn_by_inverse_layer_idx", config.scale_attn_by_inverse_layer_idx),
        ) if cond
    ]
    if unsupported:
        raise ValueError(f"GPT-2 config uses {', '.join(unsupported)}, not supported by TextDecoder")
    return dict(
        vocab_size=config.vocab_size,
        max_len=config.n_positions,
        embed_dim=config.n_embd,
        depth=config.n_layer,
        num_heads=config.n_head,
        mlp_ratio=(config.n_inner or 4 * config.n_embd) / config.n_embd,
        drop_rate=config.resid_pdrop,
        attn_drop_rate=config.attn_pdrop,
        tie_weights=config.tie_word_embeddings,
        norm_eps=config.layer_norm_epsilon,
    )


def convert_gpt2(state_dict: dict[str, Tensor], decoder: TextDecoder) -> dict[str, Tensor]:
    """Map a GPT-2 state dict (with or without the ``transformer.`` prefix) onto ``decoder``.

    A position table longer than ``decoder.max_len`` is cut to its first rows (a captioner
    rarely needs 1024 positions). Without ``lm_head.weight`` (a bare ``GPT2Model``, or the
    hub's tied checkpoint) the head is the token table, as GPT-2 ties them.
    """
    out: dict[str, Tensor] = {}
    for key, v in state_dict.items():
        k = key.removeprefix("transformer.")
        if k == "lm_head.weight":
            out["lm_head.weight"] = v
        elif k in _TOP_KEYS:
            out[_TOP_KEYS[k]] = v[: decoder.max_len] if k == "wpe.weight" else v
        elif k.startswith("h."):
            _, i, rest = k.split(".", 2)
            if rest in _BUFFERS:
                continue
            if rest not in _BLOCK_KEYS:
                raise ValueError(f"unexpected GPT-2 key {key!r}")
            name, transpose = _BLOCK_KEYS[rest]
            out[f"blocks.{i}.{name}"] = v.t().contiguous() if transpose else v
        else:
            raise ValueError(f"unexpected GPT-2 key {key!r}")
    if "lm_head.weight" not in out and "tok_embed.weight" in out:
        out["lm_head.weight"] = out["tok_embed.weight"]
    return out


def _cross_prefixes(decoder: TextDecoder) -> tuple[str, ...]:
    return tuple(f"blocks.{i}.{p}." for i in range(len(decoder.blocks)) for p in ("cross_attn", "norm_cross", "ls_cross"))


def _hub_offline() -> bool:
    import huggingface_hub.constants

    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _offline_error(name: str, cause: Exception | None = None) -> RuntimeError:
    why = f" ({type(cause).__name__}: {str(cause)[:200]})" if cause else " (the Hugging Face hub is offline)"
    return RuntimeError(
        f"could not fetch GPT-2 weights {name!r} from the Hugging Face hub{why}. Without network access, "
        f"download the model folder elsewhere (config.json + model.safetensors, e.g. from the hub page of "
        f"{name}) and pass its local path, e.g. model.decoder_pretrained=/path/to/{name}"
    )


def _local_weights(path: Path) -> Path:
    if path.is_dir():
        for f in _WEIGHT_FILES:
            if (path / f).is_file():
                return path / f
        raise FileNotFoundError(f"no {' or '.join(_WEIGHT_FILES)} in folder {path}")
    return path


def _is_local(name_or_path: str) -> bool:
    return Path(name_or_path).exists() or str(name_or_path).endswith(WEIGHT_SUFFIXES) or str(name_or_path).startswith(
        ("/", "./", "../", "~")
    )


def load_gpt2_config(name_or_path: str) -> Any:
    """``GPT2Config`` of a local folder (``config.json``), a weights file (``config.json`` beside
    it) or a hub name (online only)."""
    from transformers import GPT2Config

    if _is_local(name_or_path):
        path = Path(name_or_path).expanduser()
        folder = path if path.is_dir() else path.parent
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no config.json in {folder}: the GPT-2 architecture is read from it")
        return GPT2Config.from_json_file(str(folder / "config.json"))
    if _hub_offline():
        raise _offline_error(name_or_path)
    try:
        return GPT2Config.from_pretrained(name_or_path)
    except Exception as e:  # offline, unknown name, hub down
        raise _offline_error(name_or_path, e) from e


def load_gpt2_pretrained(decoder: TextDecoder, name_or_path: str) -> TextDecoder:
    """Load GPT-2 weights into ``decoder`` from a local HF folder, a weights file
    (``.safetensors`` or a weights-only torch pickle) or a hub name (online only).

    Every GPT-2 tensor must fit; only cross-attention parameters may be absent (they keep init).
    """
    if _is_local(name_or_path):
        state_dict = read_state_dict(_local_weights(Path(name_or_path).expanduser()))
    else:
        if _hub_offline():
            raise _offline_error(name_or_path)
        try:
            from transformers import GPT2LMHeadModel

            state_dict = GPT2LMHeadModel.from_pretrained(name_or_path).state_dict()
        except Exception as e:  # offline, unknown name, hub down: all end the same way
            raise _offline_error(name_or_path, e) from e
    converted = convert_gpt2(state_dict, decoder)
    check_state_dict(decoder, converted, str(name_or_path), allow_missing=_cross_prefixes(decoder))
    decoder.load_state_dict(converted, strict=False)  # copies in place: a tied head stays tied
    return decoder


def create_gpt2_decoder(name_or_path: str, **overrides: Any) -> TextDecoder:
    """A ``TextDecoder`` with GPT-2's architecture and weights; ``overrides`` (e.g.
    ``cross_attention=True, context_dim=192, max_len=64``) replace config values (``None`` = keep)."""
    kwargs = {**decoder_kwargs_from_gpt2(load_gpt2_config(name_or_path)),
              **{k: v for k, v in overrides.items() if v is not None}}
    decoder = load_gpt2_pretrained(TextDecoder(**kwargs), name_or_path)
    # What a checkpoint records (model.decoder_arch), so that the model is rebuilt later
    # without the GPT-2 files or the network.
    decoder.arch = kwargs
    return decoder
