"""Caption images with a trained checkpoint: ``mmtrans-caption CKPT IMAGE_OR_FOLDER ...``.

The model, its preprocessing and the tokenizer all come from the checkpoint. Folders are
streamed in batches, one directory listing at a time (memory stays bounded however many
files they hold). Images over ``--max-pixels`` are refused from their header, before
decoding. Prints ``path<TAB>caption`` per image (file names that are not UTF-8 with
backslash escapes); ``--json OUT`` also writes ``[{"image", "caption"}, ...]``.
Exit status: 0 all captioned, 1 some images could not be read, 2 nothing could run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

from mmtrans.data.image_folder import iter_image_files
from mmtrans.data.io import load_image, shown
from mmtrans.data.preprocessing import Preprocessing
from mmtrans.generation import caption_images
from tasks.checkpoint import load_model

# A batch holds this many decoded pixels per image at most (~150 MB as RGB); photos from
# 8K cameras (33 MP) pass, scanned posters and decompression bombs do not.
DEFAULT_MAX_PIXELS = 50_000_000


def iter_images(paths: list[str]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            yield from map(Path, iter_image_files(p))
        else:
            yield p  # a missing, odd or unsupported file is reported when it is read


def _batches(files: Iterator[Path], size: int) -> Iterator[list[Path]]:
    batch: list[Path] = []
    for f in files:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmtrans-caption", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a .ckpt written by `python train.py task=captioning`")
    ap.add_argument("images", nargs="+", help="image files and/or folders (searched recursively)")
    ap.add_argument("--beams", type=int, default=None, help="beam size (default: as in training; 1 = greedy)")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the captions to this JSON file")
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                    help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS:,}; 0: PIL's own limit only)")
    args = ap.parse_args(argv)

    try:
        model, info = load_model(args.checkpoint, map_location="cpu")
    except (FileNotFoundError, ValueError) as e:
        print(f"mmtrans-caption: {e}", file=sys.stderr)
        return 2
    tokenizer = info.get("tokenizer")
    if tokenizer is None:
        print(f"mmtrans-caption: {args.checkpoint} is not a captioning checkpoint (no tokenizer)", file=sys.stderr)
        return 2
    model.to(args.device)
    if not info.get("preprocessing"):
        print(f"mmtrans-caption: {args.checkpoint} records no preprocessing (written by an older mmtrans)",
              file=sys.stderr)
        return 2
    transform = Preprocessing.from_dict(info["preprocessing"], str(args.checkpoint)).transform(train=False)
    generation = {**(info.get("generation") or {})}
    if args.beams is not None:
        generation["num_beams"] = args.beams
    if args.max_new_tokens is not None:
        generation["max_new_tokens"] = args.max_new_tokens

    results, failed, seen = [], 0, 0
    for batch in _batches(iter_images(args.images), args.batch_size):
        seen += len(batch)
        tensors, ok = [], []
        for f in batch:
            try:
                tensors.append(transform(load_image(f, max_pixels=args.max_pixels or None)))
                ok.append(f)
            except (OSError, ValueError) as e:  # missing, unreadable or not an image
                failed += 1
                print(f"mmtrans-caption: {e}" if shown(f) in str(e) else f"mmtrans-caption: {shown(f)}: {e}",
                      file=sys.stderr)
        if not ok:
            continue
        for f, caption in zip(ok, caption_images(model, tokenizer, torch.stack(tensors).to(args.device), **generation)):
            print(f"{shown(f)}\t{caption}", flush=True)
            results.append({"image": shown(f), "caption": caption})
    if seen == 0:
        print(f"mmtrans-caption: no images found in {' '.join(args.images)}", file=sys.stderr)
        return 2
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
