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
