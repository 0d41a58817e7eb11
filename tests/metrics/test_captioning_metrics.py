"""caption_scores against pycocoevalcap's scorers, its edge cases, and normalize_caption vs the Java PTBTokenizer."""

import csv
import shutil
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from mmtrans.metrics import caption_scores, normalize_caption

FLICKR_CAPTIONS = Path(__file__).parents[2] / ".." / "shared" / "data" / "flickr8k_1k" / "captions.txt"

REFERENCES = {
    "img1": [
        "A brown dog runs across the grass.",
        "A dog is running in a field.",
        "The dog sprints on green grass!",
    ],
    "img2": [
        "Two children play soccer in a park.",
        "Kids kick a ball on the lawn.",
        "Two kids are playing football.",
    ],
    "img3": ["A man rides a red bike down the street.", "A cyclist on a city road."],
    "img4": ["A grey cat sleeps on a sofa.", "A cat is lying on the couch, asleep."],
}
PREDICTIONS = {
    "img1": "a dog running on the grass",
    "img2": "Two kids playing with a ball in the park.",
    "img3": "A man rides a bike down the street.",
    "img4": "a cat on a couch",
}


def _direct(predictions, references):
    """pycocoevalcap's scorers called directly, as COCOEvalCap.evaluate does (minus the Java tokenizer)."""
    res = {k: [normalize_caption(v)] for k, v in predictions.items()}
    gts = {k: [normalize_caption(r) for r in references[k]] for k in predictions}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    return {
        "bleu1": bleu[0],
        "bleu2": bleu[1],
        "bleu3": bleu[2],
        "bleu4": bleu[3],
        "cider": cider,
        "rouge_l": rouge,
    }


def test_scores_equal_pycocoevalcap_called_directly():
    scores = caption_scores(PREDICTIONS, REFERENCES)
    expected = _direct(PREDICTIONS, REFERENCES)
    assert set(scores) == {"bleu1", "bleu2", "bleu3", "bleu4", "cider", "rouge_l"}
    for key, value in expected.items():
        assert isinstance(scores[key], float)
        assert scores[key] == pytest.approx(value, abs=1e-12), key
    # a plausible mid-range result, not a degenerate one
    assert 0.3 < scores["bleu1"] < 1.0 and 0.05 < scores["bleu4"] < scores["bleu1"]
    assert 0.0 < scores["cider"] < 10.0 and 0.0 < scores["rouge_l"] < 1.0


def test_perfect_predictions():
    perfect = {k: refs[0] for k, refs in REFERENCES.items()}
    scores = caption_scores(perfect, REFERENCES)
    # coco BLEU adds tiny=1e-15 / small=1e-9 to every ratio, so "1" is 1 - O(1e-10)
    for n in range(1, 5):
        assert scores[f"bleu{n}"] == pytest.approx(1.0, abs=1e-6)
    assert scores["rouge_l"] == 1.0
    assert scores["cider"] > 3.0


def test_bleu4_of_three_word_corpus_is_the_coco_smoothing_floor():
    # No 4-grams anywhere: the coco scorer does not return 0 but (1e-15 / 1e-9) ** (1/4) ~ 0.0316.
    refs = {"a": ["red dog runs"], "b": ["blue cat sits"], "c": ["green bird flies"]}
    scores = caption_scores({k: v[0] for k, v in refs.items()}, refs)
    assert scores["bleu3"] == pytest.approx(1.0, abs=1e-6)
    assert scores["bleu4"] == pytest.approx(1e-6**0.25, rel=1e-6)


def test_nonsense_scores_zero():
    scores = caption_scores({k: "purple quantum banana xylophone" for k in REFERENCES}, REFERENCES)
    assert scores["cider"] == 0.0 and scores["rouge_l"] == 0.0
    for n in range(1, 5):
        assert scores[f"bleu{n}"] < 1e-9


def test_empty_prediction_is_allowed_and_contributes_zero():
    with_empty = dict(PREDICTIONS, img4="")
    scores = caption_scores(with_empty, REFERENCES)
    assert scores == pytest.approx(_direct(with_empty, REFERENCES), abs=1e-12)
    # ROUGE-L and CIDEr-D are per-image means: the empty caption adds a 0 term
    per_image_rouge = [
        Rouge().calc_score([normalize_caption(PREDICTIONS[k])], [normalize_caption(r) for r in REFERENCES[k]])
        for k in ("img1", "img2", "img3")
    ]
    assert scores["rouge_l"] == pytest.approx(sum(per_image_rouge) / 4, abs=1e-12)
    all_empty = caption_scores({k: "" for k in REFERENCES}, REFERENCES)
    assert all(v == 0.0 for v in all_empty.values())


def test_extra_reference_ids_are_ignored():
    refs = dict(REFERENCES, img5=["An unrelated photo of a boat."])
    assert caption_scores(PREDICTIONS, refs) == caption_scores(PREDICTIONS, REFERENCES)


def test_missing_references_error_names_the_id():
    with pytest.raises(ValueError, match="img9"):
        caption_scores(dict(PREDICTIONS, img9="a dog"), REFERENCES)


def test_empty_reference_list_and_empty_predictions_are_errors():
    with pytest.raises(ValueError, match="empty reference list.*img2"):
        caption_scores(PREDICTIONS, dict(REFERENCES, img2=[]))
    with pytest.raises(ValueError, match="no predictions"):
        caption_scores({}, REFERENCES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A Dog RUNS.", "a dog runs"),
        ("  A   man,\ton a bike;  fast!\n", "a man on a bike fast"),
        ('Two dogs -- one "brown" -- play... ok?', "two dogs one brown play ok"),
        ("The dog's ball isn't red.", "the dog 's ball is n't red"),
        ("A black-and-white photo at 10:30, 3.5 cats", "a black-and-white photo at 10:30 3.5 cats"),
        ("It\u2019s a \u201cquoted\u201d toy \u2014 nice\u2026", "it 's a quoted toy nice"),
        # coco-caption lower-cases before filtering "-LRB-", so brackets survive as tokens
        ("A cat (grey) on a mat.", "a cat -lrb- grey -rrb- on a mat"),
        ("", ""),
    ],
)
def test_normalize_caption(text, expected):
    assert normalize_caption(text) == expected


def test_normalization_is_applied_to_both_sides():
    refs = {
        "a": ["A dog runs on the grass."],
        "b": ["Two cats sleep on a sofa."],
        "c": ["A man rides a bike."],
    }
    shouted = {"a": "A DOG RUNS ON THE GRASS!", "b": "two cats, sleep on a sofa", "c": "a man rides a bike"}
    assert caption_scores(shouted, refs) == caption_scores({k: v[0] for k, v in refs.items()}, refs)


@pytest.mark.skipif(shutil.which("java") is None, reason="the reference PTBTokenizer needs Java")
@pytest.mark.skipif(not FLICKR_CAPTIONS.is_file(), reason=f"shared data not found at {FLICKR_CAPTIONS}")
def test_normalize_caption_matches_java_ptbtokenizer_on_flickr8k():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    with open(FLICKR_CAPTIONS, newline="") as f:
        captions = [row["caption"] for row in csv.DictReader(f)][:1500]
    captions += [r for refs in REFERENCES.values() for r in refs] + list(PREDICTIONS.values())
    try:
        java = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(captions)})
    except OSError as e:  # e.g. site-packages not writable for its temp file
        pytest.skip(f"PTBTokenizer could not run: {e}")
    mismatches = [(c, java[i][0]) for i, c in enumerate(captions) if normalize_caption(c) != java[i][0]]
    assert not mismatches, mismatches[:5]
