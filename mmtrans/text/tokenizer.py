"""`CaptionTokenizer`: a `tokenizers.Tokenizer` with the caption special tokens handled once.

Every caption becomes `[bos] + ids + [eos]`; batches are right-padded with `pad_id` and come
with a boolean padding mask (True = pad). Two ways in:

* `CaptionTokenizer.train(texts)`: a small BPE trained on the captions (lowercase + NFKC,
  whitespace and punctuation split, a Metaspace decoder so `decode(encode(s))` gives back
  the normalised `s` with its spacing).
* `CaptionTokenizer.from_pretrained(path)`: any Hugging Face fast tokenizer from a local
  folder (e.g. GPT-2's). Tokenizers without a pad token (GPT-2) use eos as pad: the padding
  mask, not the pad id, is what tells padding from a real eos, so a loss must use the mask.
  Tokenizers without bos use eos as bos (GPT-2's `<|endoftext|>` is both).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS_FILE = "special_tokens.json"
TOKENIZER_FILE = "tokenizer.json"


class CaptionTokenizer:
    """Wraps `tokenizer` with the ids of its pad / bos / eos (and optional unk) tokens."""

    def __init__(self, tokenizer: Tokenizer, pad: str, bos: str, eos: str, unk: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.special_tokens = {"pad": pad, "bos": bos, "eos": eos, "unk": unk}
        ids = {}
        for role, token in self.special_tokens.items():
            if token is None:
                continue
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise ValueError(f"{role} token {token!r} is not in the tokenizer's vocabulary")
            ids[role] = token_id
        self.pad_id: int = ids["pad"]
        self.bos_id: int = ids["bos"]
        self.eos_id: int = ids["eos"]
        self.unk_id: int | None = ids.get("unk")
        self._special_ids = set(ids.values())

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    # ----------------------------------------------------------------------------- building
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 1000, min_frequency: int = 1) -> CaptionTokenizer:
        """A BPE tokenizer trained on `texts`; specials get ids 0..3 (pad, bos, eos, unk)."""
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.normalizer = normalizers.Sequence(
            [
                normalizers.NFKC(),
                normalizers.Lowercase(),
                normalizers.Replace(Regex(r"\s+"), " "),  # one space between words, as decoded
                normalizers.Strip(),
            ]
        )
        # Metaspace keeps word boundaries inside the tokens ("▁dog"), so the decoder can put the
        # spaces back exactly where they were; Punctuation then splits "dog." into "▁dog", ".".
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Metaspace(prepend_scheme="always"), pre_tokenizers.Punctuation()]
        )
        tokenizer.decoder = decoders.Metaspace(prepend_scheme="always")
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[PAD, BOS, EOS, UNK],
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer, PAD, BOS, EOS, UNK)

    def save(self, path_dir: str | os.PathLike) -> None:
        """Write `tokenizer.json` and `special_tokens.json` into `path_dir` (created if needed)."""
        path = Path(path_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path / TOKENIZER_FILE))
        (path / SPECIALS_FILE).write_text(json.dumps(self.special_tokens, indent=2) + "\n")

    def to_json(self) -> str:
        """The whole tokenizer as one JSON string (stored inside checkpoints)."""
        return json.dumps({"tokenizer": self.tokenizer.to_str(), "special_tokens": self.special_tokens})

    @classmethod
    def from_json(cls, text: str) -> CaptionTokenizer:
        data = json.loads(text)
        return cls(Tokenizer.from_str(data["tokenizer"]), **data["special_tokens"])

    @classmethod
    def load(cls, path_dir: str | os.PathLike) -> CaptionTokenizer:
        """Read a folder written by `save`."""
        path = Path(path_dir)
        for name in (TOKENIZER_FILE, SPECIALS_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(
                    f"{path / name} not found: expected a folder written by CaptionTokenizer.save"
                )
        specials = json.loads((path / SPECIALS_FILE).read_text())
        return cls(Tokenizer.from_file(str(path / TOKENIZER_FILE)), **specials)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> CaptionTokenizer:
        """A Hugging Face fast tokenizer from a local folder (or a hub name, when online).

        bos falls back to cls then eos; eos to sep; pad to eos (GPT-2 has no pad token).
        A folder written by `save` is read with `load`.
        """
        path = Path(name_or_path).expanduser()
        if (path / SPECIALS_FILE).is_file() and (path / TOKENIZER_FILE).is_file():
            return cls.load(path)
        name = str(name_or_path)
        if not path.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
            raise FileNotFoundError(f"tokenizer folder {path} does not exist")
        from transformers import AutoTokenizer  # slow import; only this path needs it

        try:
            hf = AutoTokenizer.from_pretrained(str(path) if path.exists() else name, use_fast=True)
        except (OSError, ValueError) as err:
            raise OSError(
                f"cannot load tokenizer {name!r}: {err}\nWithout a network, download it once elsewhere "
                f"(tokenizer.save_pretrained(folder)) and pass that local folder instead of a hub name."
            ) from err
        if not getattr(hf, "is_fast", False):
            raise ValueError(f"tokenizer {name!r} has no fast (tokenizers) version")
        eos = hf.eos_token or hf.sep_token
        bos = hf.bos_token or hf.cls_token or eos
        pad = hf.pad_token or eos
        if eos is None:
            raise ValueError(f"tokenizer {name!r} has neither an eos nor a sep token to end captions with")
        return cls(hf.backend_tokenizer, pad=pad, bos=bos, eos=eos, unk=hf.unk_token)

    # ----------------------------------------------------------------------------- using
    def normalize(self, text: str) -> str:
        """`text` as the tokenizer sees it (what `decode(encode(text))` returns)."""
        normalizer = self.tokenizer.normalizer
        return normalizer.normalize_str(text) if normalizer is not None else text

    def _wrap(self, ids: list[int], max_len: int | None) -> tuple[list[int], bool]:
        if max_len is not None:
            if max_len < 2:
                raise ValueError(f"max_len must be >= 2 to hold bos and eos, got {max_len}")
            if len(ids) > max_len - 2:
                return [self.bos_id, *ids[: max_len - 2], self.eos_id], True
        return [self.bos_id, *ids, self.eos_id], False

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """`[bos] + ids + [eos]`, at most `max_len` long (truncation drops words, keeps eos)."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return self._wrap(ids, max_len)[0]

    def encode_batch(
        self, texts: Sequence[str], max_len: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(ids LongTensor[B, L], padding mask BoolTensor[B, L] with True = pad, n_truncated).

        L is the longest encoded text of the batch (<= max_len); rows are right-padded.
        """
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        rows, n_truncated = [], 0
        for enc in encodings:
            row, truncated = self._wrap(enc.ids, max_len)
            rows.append(row)
            n_truncated += truncated
        length = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.ones((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = False
        return ids, mask, n_truncated

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of `ids` up to the first eos (after a leading bos), special tokens skipped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        ids = list(ids)
        if ids and ids[0] == self.bos_id:
            ids = ids[1:]  # bos may equal eos (GPT-2): skip it before looking for the end
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        ids = [i for i in ids if i not in self._special_ids]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]] | torch.Tensor) -> list[str]:
        """`decode` of each row."""
        if isinstance(batch, torch.Tensor):
            batch = batch.tolist()
        return [self.decode(row) for row in batch]
