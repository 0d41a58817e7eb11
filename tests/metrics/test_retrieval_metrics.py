"""Recall@K and median rank on hand-made similarity matrices (several references per image)."""

from __future__ import annotations

import pytest
import torch

from mmtrans.metrics.retrieval import retrieval_metrics, retrieval_ranks, text_keys, top_k


def test_ranks_with_several_references_per_image():
    # 3 images; texts 0,1 -> image 0, texts 2,3 -> image 1, text 4 -> image 2.
    text_image = torch.tensor([0, 0, 1, 1, 2])
    sim = torch.tensor([
        [0.1, 0.9, 0.8, 0.0, 0.2],  # image 0: best text 1 is its own -> rank 1
        [0.9, 0.1, 0.2, 0.8, 0.3],  # image 1: text 0 (not its), then text 3 (its) -> rank 2
        [0.5, 0.6, 0.7, 0.8, 0.1],  # image 2: its only text is last -> rank 5
    ])
    i2t, t2i = retrieval_ranks(sim, text_image)
    assert i2t.tolist() == [1, 2, 5]
    # text 0: column [0.1, 0.9, 0.5] -> image 1, 2, 0: its image 0 is 3rd; text 1: image 0 first;
    # text 2: [0.8, 0.2, 0.7] -> image 1 is 3rd; text 3: [0.0, 0.8, 0.8] tie kept in order -> 1st;
    # text 4: [0.2, 0.3, 0.1] -> image 2 is 3rd.
    assert t2i.tolist() == [3, 1, 3, 1, 3]
    m = retrieval_metrics(sim, text_image, ks=(1, 2, 5))
    assert m["i2t_r1"] == pytest.approx(1 / 3) and m["i2t_r2"] == pytest.approx(2 / 3) and m["i2t_r5"] == 1.0
    assert m["t2i_r1"] == pytest.approx(2 / 5) and m["t2i_r2"] == pytest.approx(2 / 5) and m["t2i_r5"] == 1.0
    assert m["i2t_medr"] == 2 and m["t2i_medr"] == 3


def test_ties_give_no_credit_and_median_follows_karpathy():
    # Every score equal: candidates keep their order, so only the first image/text is found.
    sim = torch.zeros(4, 4)
    m = retrieval_metrics(sim, torch.arange(4))
    assert m["i2t_r1"] == 0.25 and m["t2i_r1"] == 0.25
    i2t, _ = retrieval_ranks(torch.tensor([[1.0, 0.5, 0.0], [0.9, 0.8, 0.7]]), torch.tensor([0, 1, 1]))
    assert i2t.tolist() == [1, 2]
    # Ranks 1, 1, 3, 3: Karpathy's floor(median(0-based ranks)) + 1 = 2 (a lower median would say 1).
    sim = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0.9, 0.8, 0.1, 0], [0.9, 0.8, 0, 0.1]])
    assert retrieval_ranks(sim, torch.arange(4))[0].tolist() == [1, 1, 3, 3]
    assert retrieval_metrics(sim, torch.arange(4))["i2t_medr"] == 2


def test_top_k_and_bad_shapes():
    index, scores = top_k(torch.tensor([[0.1, 0.7, 0.3]]), 5)
    assert index.tolist() == [[1, 2, 0]] and scores.shape == (1, 3)
    with pytest.raises(ValueError, match="N_texts"):
        retrieval_metrics(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="image indices"):
        retrieval_metrics(torch.zeros(2, 2), torch.tensor([0, 2]))


def test_a_text_written_for_several_images_counts_for_each():
    # Texts 0 and 2 are the same caption, written for images 0 and 1; text 1 -> image 0, text 3 -> image 1.
    text_image = torch.tensor([0, 0, 1, 1])
    key = text_keys(["a red circle", "a large red circle", "a red circle", "a small red circle"])
    assert key.tolist() == [0, 1, 0, 2]
    sim = torch.tensor([
        [0.5, 0.1, 0.9, 0.0],  # image 0: best is text 2, image 1's copy of its own text 0
        [0.2, 0.4, 0.3, 0.9],  # image 1: its own text 3 first
    ])
    i2t, t2i = retrieval_ranks(sim, text_image, key)
    assert i2t.tolist() == [1, 1]
    # text 0 ("a red circle", image 0's): column [0.5, 0.2] -> image 0 first; text 2 (the same
    # caption, image 1's): column [0.9, 0.3] -> image 0 first, which has it too -> rank 1.
    assert t2i.tolist() == [1, 2, 1, 1]
    # Without keys every text is its own: image 0 finds image 1's copy first (rank 2), and
    # text 2 finds image 0 before its own image 1.
    i2t, t2i = retrieval_ranks(sim, text_image)
    assert i2t.tolist() == [2, 1] and t2i.tolist() == [1, 2, 2, 1]
    # All-distinct keys give the same ranks as none.
    assert [r.tolist() for r in retrieval_ranks(sim, text_image, torch.arange(4) * 7)] == [[2, 1], [1, 2, 2, 1]]
    with pytest.raises(ValueError, match="text_key"):
        retrieval_ranks(sim, text_image, torch.zeros(3, dtype=torch.long))
