"""Captions are tokenised in the loader: `CaptionCollate` with the task's tokenizer gives token
ids and the padding mask, in worker processes too; evaluation batches stay text."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from mmtrans.data.caption_scenes import scene_caption_splits
from mmtrans.data.captions import CaptionCollate
from mmtrans.text import CaptionTokenizer


def test_collate_tokenises_training_captions_in_a_worker() -> None:
    splits = scene_caption_splits(num_train=4, num_val=2, num_test=2, img_size=32)
    tokenizer = CaptionTokenizer.train(splits.train.all_captions(), vocab_size=80)
    collate = CaptionCollate().with_tokenizer(tokenizer, max_len=6)
    batch = next(iter(DataLoader(splits.train, batch_size=5, collate_fn=collate, num_workers=1)))
    ids, mask, truncated = tokenizer.encode_batch(batch["caption"], 6)
    assert torch.equal(batch["tokens"], ids) and torch.equal(batch["padding_mask"], mask)
    assert batch["tokens"].dtype == torch.long and batch["num_truncated"] == truncated > 0
    assert (batch["tokens"][:, 0] == tokenizer.bos_id).all()
    evaluation = collate([splits.val[0], splits.val[1]])  # all references per image: no tokens
    assert "tokens" not in evaluation and len(evaluation["captions"]) == 2
    assert "tokens" not in CaptionCollate()([splits.train[0]])  # no tokenizer yet: text only


def test_collate_tokenises_every_reference_for_retrieval_in_a_worker() -> None:
    splits = scene_caption_splits(num_train=4, num_val=3, num_test=2, img_size=32)
    tokenizer = CaptionTokenizer.train(splits.train.all_captions(), vocab_size=80)
    collate = CaptionCollate().with_tokenizer(tokenizer, max_len=32, references=True)
    batch = next(iter(DataLoader(splits.val, batch_size=3, collate_fn=collate, num_workers=1)))
    flat = [c for refs in batch["captions"] for c in refs]  # image-major, the text kept
    ids, mask, _ = tokenizer.encode_batch(flat, 32)
    assert torch.equal(batch["ref_tokens"], ids) and torch.equal(batch["ref_padding_mask"], mask)
    assert [len(refs) for refs in batch["captions"]] == [5, 5, 5] and len(batch["ref_tokens"]) == 15
    assert tokenizer.decode(batch["ref_tokens"][7].tolist()) == tokenizer.normalize(batch["captions"][1][2])


def test_sample_references_draws_k_of_each_image_without_replacement() -> None:
    from tasks.retrieval import sample_references

    counts = [5, 2, 3]
    torch.manual_seed(0)
    rows = sample_references(counts, k=2).view(3, 2)
    assert rows[0].unique().numel() == 2 and set(rows[0].tolist()) <= set(range(0, 5))
    assert set(rows[1].tolist()) == {5, 6} and set(rows[2].tolist()) <= {7, 8, 9}
    rows = sample_references(counts, k=4).view(3, 4)  # more than an image has: each of its own first
    assert set(rows[1].tolist()) == {5, 6} and set(rows[2].tolist()) == {7, 8, 9}
    torch.manual_seed(0)
    again = sample_references(counts, k=2).view(3, 2)
    torch.manual_seed(0)
    assert torch.equal(again, sample_references(counts, k=2).view(3, 2))  # seeded: repeats


def test_tokenise_in_loader_hands_the_tokenizer_over_or_names_the_bad_collate() -> None:
    from types import SimpleNamespace

    import pytest
    from omegaconf import OmegaConf

    from tasks.caption_tokenizer import tokenise_in_loader

    cfg = OmegaConf.create({"task_name": "retrieval", "task": {"max_len": 12}})
    tokenizer = CaptionTokenizer.train(["a red circle", "a blue square"], vocab_size=60)
    given = []
    dm = SimpleNamespace(collate=None, set_collate=given.append)  # data=webdataset: no collate configured
    tokenise_in_loader(cfg, dm, tokenizer, references=True)
    (collate,) = given
    assert collate.tokenizer is tokenizer and collate.max_len == 12 and collate.references
    dm.collate = lambda batch: batch
    with pytest.raises(ValueError, match="task=retrieval tokenises in the data loader: data.collate must be"):
        tokenise_in_loader(cfg, dm, tokenizer)
