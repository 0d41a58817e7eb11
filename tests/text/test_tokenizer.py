import pytest
import torch

from mmtrans.text import BOS, EOS, PAD, UNK, CaptionTokenizer

CORPUS = [
    "A dog runs across the grass.",
    "Two  dogs, playing in the park!",
    "a man's hat is red",
    "A child in a pink dress is climbing up a set of stairs .",
    "The girl is sitting on the stairs",
] * 3


@pytest.fixture(scope="module")
def tok() -> CaptionTokenizer:
    return CaptionTokenizer.train(CORPUS, vocab_size=300)


def test_specials_and_vocab(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert [tok.tokenizer.id_to_token(i) for i in range(4)] == [PAD, BOS, EOS, UNK]
    assert 4 < tok.vocab_size <= 300 and len(tok) == tok.vocab_size


@pytest.mark.parametrize("text", CORPUS[:5] + ["  The DOG's  stairs .", "dogs play on grass!"])
def test_round_trip(tok, text):
    ids = tok.encode(text)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.pad_id not in ids
    assert tok.decode(ids) == tok.normalize(text)
    assert tok.normalize(text) == " ".join(text.lower().split())


def test_decode_stops_at_eos_and_skips_specials(tok):
    ids = tok.encode("a dog runs")
    padded = ids + [tok.pad_id, tok.pad_id] + tok.encode("the girl")[1:]
    assert tok.decode(padded) == "a dog runs"
    assert tok.decode(torch.tensor(ids[1:])) == "a dog runs"  # no bos
    assert tok.decode([tok.bos_id, tok.pad_id] + ids[1:]) == "a dog runs"


def test_truncation_keeps_eos(tok):
    full = tok.encode("a child in a pink dress is climbing up a set of stairs")
    short = tok.encode("a child in a pink dress is climbing up a set of stairs", max_len=5)
    assert len(short) == 5 and short[-1] == tok.eos_id and short[:4] == full[:4]
    with pytest.raises(ValueError, match="max_len"):
        tok.encode("a dog", max_len=1)


def test_encode_batch(tok):
    texts = ["a dog", "a child in a pink dress is climbing up a set of stairs", "the girl is sitting"]
    ids, mask, n_truncated = tok.encode_batch(texts, max_len=8)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == mask.shape
    assert ids.shape[1] <= 8
    lengths = (~mask).sum(1)
    for row, text, length in zip(ids, texts, lengths):
        assert row[:length].tolist() == tok.encode(text, max_len=8)
        assert (row[length:] == tok.pad_id).all()
    assert n_truncated == sum(len(tok.encode(t)) > 8 for t in texts) >= 1
    ids, mask, n = tok.encode_batch(["a dog"])
    assert n == 0 and not mask.any() and ids.shape == (1, len(tok.encode("a dog")))


def test_save_load(tok, tmp_path):
    tok.save(tmp_path / "tok")
    loaded = CaptionTokenizer.load(tmp_path / "tok")
    assert (loaded.pad_id, loaded.bos_id, loaded.eos_id) == (tok.pad_id, tok.bos_id, tok.eos_id)
    for text in CORPUS[:5]:
        assert loaded.encode(text) == tok.encode(text)
    assert CaptionTokenizer.from_pretrained(tmp_path / "tok").encode(CORPUS[0]) == tok.encode(CORPUS[0])
    with pytest.raises(FileNotFoundError, match="tokenizer.json not found"):
        CaptionTokenizer.load(tmp_path)


def test_from_pretrained_local_hf_folder(tok, tmp_path):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok.tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )
    hf.save_pretrained(tmp_path / "hf")
    loaded = CaptionTokenizer.from_pretrained(str(tmp_path / "hf"))
    assert (loaded.pad_id, loaded.bos_id, loaded.eos_id) == (tok.pad_id, tok.bos_id, tok.eos_id)
    assert loaded.encode(CORPUS[1]) == tok.encode(CORPUS[1])
    assert loaded.decode(loaded.encode(CORPUS[1])) == tok.normalize(CORPUS[1])


def test_from_pretrained_gpt2_style_no_pad(tok, tmp_path):
    # GPT-2: one <|endoftext|> token is bos and eos, and there is no pad: pad falls back to eos.
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(tokenizer_object=tok.tokenizer, eos_token=EOS)
    hf.save_pretrained(tmp_path / "gpt2ish")
    loaded = CaptionTokenizer.from_pretrained(tmp_path / "gpt2ish")
    assert loaded.pad_id == loaded.bos_id == loaded.eos_id == tok.eos_id
    ids, mask, _ = loaded.encode_batch(["a dog", "the girl is sitting on the stairs"])
    assert ids[0, 0] == loaded.eos_id and mask[0].any() and not mask[1].any()
    assert loaded.decode(ids[0]) == "a dog"  # the leading bos (== eos) does not end the text


def test_from_pretrained_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CaptionTokenizer.from_pretrained(tmp_path / "nope")
