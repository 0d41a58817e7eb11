"""Readers of the standard caption annotation formats -> `list[CaptionRecord]`.

Each reader checks its file up front and raises one error naming the file: JSON that does
not parse (with line and column), missing keys, empty or non-string captions (with the image
id), and image files that do not exist (the first few listed). Formats that carry a split
(Karpathy, Flickr8k with split files, a table with a `split` column) fill `record.split`.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

# Karpathy's "restval" (the COCO val images outside his val/test) is training data.
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
SPLITS = ("train", "val", "test")


@dataclass
class CaptionRecord:
    """One image with all its reference captions; `split` is None when the format has none."""

    image_id: str
    path: str
    captions: list[str]
    split: str | None = None


def _read_json(path: str | os.PathLike) -> object:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption annotations {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON: line {err.lineno} column {err.colno}: {err.msg}"
        ) from err


def _get(item: object, key: str, source: Path, where: str) -> object:
    if not isinstance(item, dict) or key not in item:
        raise ValueError(f"{source}: {where} has no key {key!r}")
    return item[key]


def check_records(records: list[CaptionRecord], source: str | os.PathLike) -> list[CaptionRecord]:
    """Raise ValueError naming `source` for no records, bad captions or missing image files."""
    if not records:
        raise ValueError(f"{source}: no images with captions found")
    seen: set[str] = set()
    for record in records:
        if record.image_id in seen:
            raise ValueError(f"{source}: image id {record.image_id!r} appears twice")
        seen.add(record.image_id)
        if not record.captions:
            raise ValueError(f"{source}: image {record.image_id!r} has no captions")
        for caption in record.captions:
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(
                    f"{source}: image {record.image_id!r} has an empty or non-string caption {caption!r}"
                )
    missing = [r.path for r in records if not os.path.isfile(r.path)]
    if missing:
        raise FileNotFoundError(
            f"{source}: {len(missing)} of {len(records)} referenced image files do not exist, e.g. "
            + ", ".join(missing[:5])
        )
    return records


def read_coco(annotations_json: str | os.PathLike, image_dir: str | os.PathLike) -> list[CaptionRecord]:
    """COCO captions JSON (`images[*].id/file_name`, `annotations[*].image_id/caption`).

    Images without any caption are left out (e.g. a test-set `image_info` file has none).
    """
    source = Path(annotations_json)
    data = _read_json(source)
    images = _get(data, "images", source, "the top level")
    annotations = _get(data, "annotations", source, "the top level")
    files = {}
    for i, image in enumerate(images):
        image_id = _get(image, "id", source, f"images[{i}]")
        if image_id in files:  # a second entry would silently replace the first file
            raise ValueError(f"{source}: images[{i}] repeats image id {image_id!r}")
        files[image_id] = _get(image, "file_name", source, f"images[{i}]")
    captions: dict[object, list] = defaultdict(list)
    for i, ann in enumerate(annotations):
        image_id = _get(ann, "image_id", source, f"annotations[{i}]")
        if image_id not in files:
            raise ValueError(f"{source}: annotations[{i}] refers to image id {image_id!r} not in images")
        captions[image_id].append(_get(ann, "caption", source, f"annotations[{i}]"))
    records = [
        CaptionRecord(str(image_id), os.path.join(image_dir, files[image_id]), caps)
        for image_id, caps in captions.items()
    ]
    return check_records(records, source)


def read_karpathy(dataset_json: str | os.PathLike, image_dir: str | os.PathLike) -> list[CaptionRecord]:
    """Karpathy split JSON (`images[*].filename/filepath/split/sentences[*].raw`); restval -> train.

    The path is `image_dir/filepath/filename` (COCO's file has filepath "train2014" / "val2014",
    Flickr's has none); the image id is `filepath/filename`.
    """
    source = Path(dataset_json)
    data = _read_json(source)
    records = []
    for i, image in enumerate(_get(data, "images", source, "the top level")):
        where = f"images[{i}]"
        filename = _get(image, "filename", source, where)
        relative = os.path.join(image.get("filepath", ""), filename)
        split = _get(image, "split", source, where)
        if split not in KARPATHY_SPLITS:
            raise ValueError(
                f"{source}: {where} has split {split!r}, expected one of {sorted(KARPATHY_SPLITS)}"
            )
        sentences = _get(image, "sentences", source, where)
        caps = [_get(s, "raw", source, f"{where}.sentences[{j}]") for j, s in enumerate(sentences)]
        records.append(
            CaptionRecord(relative, os.path.join(image_dir, relative), caps, KARPATHY_SPLITS[split])
        )
    return check_records(records, source)


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} not found")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def read_flickr8k(
    token_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    split_files: dict[str, str | os.PathLike] | None = None,
) -> list[CaptionRecord]:
    """Flickr8k `Flickr8k.token.txt` (`<image>#<n>\\t<caption>` lines).

    `split_files` maps "train" / "val" / "test" to the official image lists
    (`Flickr_8k.trainImages.txt`, ...); images listed in none of them are left out.
    """
    source = Path(token_file)
    captions: dict[str, list[str]] = defaultdict(list)
    for n, line in enumerate(_read_lines(source), start=1):
        if not line.strip():
            continue
        key, tab, caption = line.partition("\t")
        if not tab or "#" not in key:
            raise ValueError(f"{source}: line {n} is not '<image>#<n><TAB><caption>': {line[:80]!r}")
        captions[key.rsplit("#", 1)[0]].append(caption)
    split_of: dict[str, str] | None = None
    if split_files is not None:
        split_of = {}
        for split, list_file in split_files.items():
            if split not in SPLITS:
                raise ValueError(f"split_files keys must be among {SPLITS}, got {split!r}")
            for name in _read_lines(Path(list_file)):
                if name.strip():
                    split_of[name.strip()] = split
    records = [
        CaptionRecord(name, os.path.join(image_dir, name), caps, split_of.get(name) if split_of else None)
        for name, caps in captions.items()
        if split_of is None or name in split_of
    ]
    return check_records(records, source)


def read_caption_table(path: str | os.PathLike, image_dir: str | os.PathLike) -> list[CaptionRecord]:
    """JSONL (`.jsonl`) or CSV (anything else, e.g. Kaggle's `captions.txt`) with columns
    `image` and `caption`; several rows of one image are its references. An optional
    `split` column (train / val / test) gives the split.
    """
    source = Path(path)
    rows: list[tuple[str, dict]] = []  # (where, row)
    if source.suffix.lower() == ".jsonl":
        for n, line in enumerate(_read_lines(source), start=1):
            if not line.strip():
                continue
            try:
                rows.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{source} is not valid JSONL: line {n} column {err.colno}: {err.msg}"
                ) from err
    else:
        if not source.is_file():
            raise FileNotFoundError(f"caption file {source} not found")
        with open(source, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if "image" not in columns or "caption" not in columns:
                raise ValueError(
                    f"{source}: CSV header must have columns 'image' and 'caption', got {columns}"
                )
            rows = [(f"line {reader.line_num}", row) for row in reader]
    captions: dict[str, list] = defaultdict(list)
    splits: dict[str, str | None] = {}
    for where, row in rows:
        image = _get(row, "image", source, where)
        captions[image].append(_get(row, "caption", source, where))
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise ValueError(f"{source}: {where} has split {split!r}, expected one of {SPLITS}")
        if splits.setdefault(image, split) != split:
            raise ValueError(f"{source}: image {image!r} appears in splits {splits[image]!r} and {split!r}")
    records = [
        CaptionRecord(image, os.path.join(image_dir, image), caps, splits[image])
        for image, caps in captions.items()
    ]
    return check_records(records, source)
