"""Captioning metrics: BLEU-1..4, CIDEr-D and ROUGE-L as the COCO caption evaluation reports them.

The scorers are pycocoevalcap's own (``Bleu(4)``, ``Cider``, ``Rouge``), so numbers are comparable
with published COCO / Flickr results. What we replace is the tokenisation step: coco-caption runs the
Stanford PTBTokenizer (a Java subprocess) and then drops a fixed list of punctuation tokens. Java is
not something a training run should need, so :func:`normalize_caption` reproduces that pipeline in
pure Python for the text captions actually contain (checked token for token against the Java
tokenizer on the Flickr8k captions; see the tests). METEOR and SPICE need Java and are left out.

``pycocoevalcap.cider.Cider`` *is* CIDEr-D (the variant the COCO server reports as "CIDEr"):
sigma=6 Gaussian length penalty, clipped n-gram counts (``min(hyp, ref)``), x10 scaling, IDF from the
references of the evaluated images.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

# Tokens coco-caption's ptbtokenizer.py removes after PTB tokenisation. The bracket names there are
# upper case ("-LRB-") but the tokenizer runs with -lowerCase, so brackets survive as "-lrb-" etc.;
# we keep that quirk so the numbers match the reference implementation.
PTB_PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

# Characters the Java tokenizer normalises before splitting (it emits ASCII quotes/dashes).
_CHAR_MAP = str.maketrans(
    {
        "\u2018": "`",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "`",
        "\u201c": " '' ",
        "\u201d": " '' ",
        "\u201e": " '' ",
        "\u00ab": " '' ",
        "\u00bb": " '' ",
        "\u2013": "--",
        "\u2014": "--",
        "\u2015": "--",
        "\u2026": "...",
        "\u00a0": " ",
        "\t": " ",
        "\n": " ",
        "\r": " ",
        "(": " -lrb- ",
        ")": " -rrb- ",
        "[": " -lsb- ",
        "]": " -rsb- ",
        "{": " -lcb- ",
        "}": " -rcb- ",
        '"': " '' ",  # opening `` or closing '': both are dropped, so the direction does not matter
    }
)
_BRACKETS = frozenset(["-lrb-", "-rrb-", "-lsb-", "-rsb-", "-lcb-", "-rcb-"])
# Words the PTB tokenizer splits in its own way ("cannot" -> "can not") or keeps whole ("'n'").
_SPLIT_WORDS = {
    "cannot": "can not",
    "gonna": "gon na",
    "gotta": "got ta",
    "wanna": "wan na",
    "lemme": "lem me",
    "gimme": "gim me",
    "'tis": "'t is",
    "'twas": "'t was",
    "'n'": "'n'",
}
# Abbreviations whose final period the PTB tokenizer keeps attached (as it does for single letters
# and dotted words like "a.m.", "u.s.").
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr vs etc mt ft jan feb mar apr aug sep sept oct nov dec co inc ltd bros prof gen".split()
)
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
# Leading quotes/symbols split off a word; a leading apostrophe that starts a word ("'90s", "'n'",
# "'cause") is not a quote.
_LEAD_PUNCT = re.compile(
    r"^(?:``|`|'(?!\d0s|n'|em\b|cause\b|til\b|t\b|(?:s|re|ve|ll|d|m)$)|\$|#|--|-(?![\d\w])|\.(?!\d))+"
)
# Trailing punctuation ("dogs'" -> "dogs '"; clitics such as "'s" end in a letter, so they stay).
_TRAIL_PUNCT = re.compile(r"(?:\.{2,}|--+|''|[.,;:?!`%'-])+$")
_PUNCT_TOKEN = re.compile(r"\.{2,}|-{2,}|[?!]{2,}|``|''|[.,;:?!'`$%#-]")


def _split_token(tok: str) -> list[str]:
    """Split one whitespace-delimited chunk into PTB-style tokens (before punctuation removal)."""
    if tok in _BRACKETS:
        return [tok]
    if tok in _SPLIT_WORDS:
        return _SPLIT_WORDS[tok].split()
    m = _LEAD_PUNCT.match(tok)
    lead, core = (m.group(0), tok[m.end() :]) if m else ("", tok)
    m = _TRAIL_PUNCT.search(core)
    core, trail = (core[: m.start()], m.group(0)) if m else (core, "")
    # a period that belongs to an abbreviation ("a.m.", "u.s.", "st.") stays on the word
    keeps_period = "." in core or core in _ABBREVIATIONS or re.fullmatch("[a-z]", core) is not None
    if trail.startswith(".") and not trail.startswith("..") and keeps_period:
        core, trail = core + ".", trail[1:]
    if core in _SPLIT_WORDS:
        body = _SPLIT_WORDS[core].split()
    else:
        c = _CLITIC.match(core)
        body = [c.group(1), c.group(2)] if c else ([core] if core else [])
    return _punct_tokens(lead) + body + _punct_tokens(trail)


def _punct_tokens(run: str) -> list[str]:
    """Break a run of punctuation into the tokens the PTB tokenizer would emit."""
    out = _PUNCT_TOKEN.findall(run)
    return ["..." if t.startswith("..") else ("--" if t.startswith("--") else t) for t in out]


def normalize_caption(text: str) -> str:
    """Lower-case and PTB-tokenise ``text``, drop coco-caption's punctuation tokens, join with spaces.

    The single normalisation used for references and hypotheses of every split, mirroring
    ``pycocoevalcap.tokenizer.PTBTokenizer`` (Stanford PTBTokenizer ``-lowerCase`` + punctuation
    filter) without Java: "A dog's ball (red)." -> "a dog 's ball -lrb- red -rrb-".
    """
    text = text.lower().translate(_CHAR_MAP)
    tokens: list[str] = []
    for chunk in text.split():
        tokens.extend(_split_token(chunk))
    return " ".join(t for t in tokens if t not in PTB_PUNCTUATIONS)


def caption_scores(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Corpus-level BLEU-1..4, CIDEr-D and ROUGE-L of ``predictions`` against ``references``.

    ``predictions`` maps an image id to one generated caption (may be empty: it scores 0);
    ``references`` maps image ids to their human captions. Only the ids in ``predictions`` are
    scored (extra reference ids are ignored); CIDEr-D's IDF comes from the references of those ids,
    as in the COCO evaluation, so CIDEr-D of a single image is always 0. Raw text in, both sides
    normalised by :func:`normalize_caption`.
    """
    if not predictions:
        raise ValueError("caption_scores: no predictions given")
    missing = [k for k in predictions if k not in references]
    if missing:
        raise ValueError(
            f"caption_scores: no references for {len(missing)} prediction id(s), e.g. {missing[:5]}"
        )
    empty = [k for k in predictions if len(references[k]) == 0]
    if empty:
        raise ValueError(f"caption_scores: empty reference list for id(s) {empty[:5]}")
    for k, v in predictions.items():
        if not isinstance(v, str):
            raise TypeError(f"caption_scores: prediction for {k!r} must be a str, got {type(v).__name__}")

    res = {k: [normalize_caption(predictions[k])] for k in predictions}
    gts = {k: [normalize_caption(r) for r in references[k]] for k in predictions}

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    out = {f"bleu{i + 1}": float(b) for i, b in enumerate(bleu)}
    out["cider"] = float(cider)
    out["rouge_l"] = float(rouge)
    return out
