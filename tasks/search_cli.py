"""Search images by text with a trained image-text checkpoint:
``mmtrans-search CKPT IMAGES_DIR "a red circle" ["another query" ...]``.

The model, its preprocessing and the tokenizer come from the checkpoint (task=retrieval, or a
CoCa captioning run). Images are embedded in streamed batches (as ``mmtrans-caption``: one
directory listing at a time, images over ``--max-pixels`` refused from their header);
``--index FILE`` writes the image embeddings once (safetensors, with the paths and the
checkpoint they came from) and later runs read them instead of the images. Prints, per query,
``rank<TAB>score<TAB>path`` of the ``--top-k`` best images; ``--json OUT`` writes them too.
Exit status: 0 all searched, 1 some images could not be read, 2 nothing could run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
from torch import Tensor

from mmtrans.data.io import load_image, shown
from mmtrans.data.preprocessing import Preprocessing
from tasks.caption_cli import DEFAULT_MAX_PIXELS, _batches, iter_images
from tasks.checkpoint import load_model

PROG = "mmtrans-search"


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the image projection: an index made by another model is refused."""
    weight = model.head.image_proj.weight.detach().float().cpu().contiguous()
    return hashlib.sha256(weight.numpy().tobytes()).hexdigest()[:16]


def read_index(path: Path, fingerprint: str) -> tuple[list[str], Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            embeddings = f.get_tensor("embeddings")
    except Exception as e:  # not a safetensors file, truncated
        raise ValueError(f"cannot read index {path}: {e}") from e
    if meta.get("model") != fingerprint:
        raise ValueError(f"index {path} was made with another model; delete it or pass --reindex")
    paths = json.loads(meta.get("paths", "[]"))
    if len(paths) != len(embeddings):
        raise ValueError(f"index {path} is inconsistent: {len(paths)} paths, {len(embeddings)} embeddings")
    return paths, embeddings


def write_index(path: Path, paths: list[str], embeddings: Tensor, fingerprint: str) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": embeddings.contiguous()}, str(path),
              metadata={"paths": json.dumps(paths), "model": fingerprint})


def embed_images(model: torch.nn.Module, transform, sources: list[str], batch_size: int, device: str,
                 max_pixels: int | None) -> tuple[list[str], Tensor, int, int]:
    """(paths, embeddings [N, E], images seen, images that failed), streamed in batches."""
    paths, chunks, seen, failed = [], [], 0, 0
    for batch in _batches(iter_images(sources), batch_size):
        seen += len(batch)
        tensors, ok = [], []
        for f in batch:
            try:
                tensors.append(transform(load_image(f, max_pixels=max_pixels)))
                ok.append(f)
            except (OSError, ValueError) as e:  # missing, unreadable or not an image
                failed += 1
                print(f"{PROG}: {e}" if shown(f) in str(e) else f"{PROG}: {shown(f)}: {e}", file=sys.stderr)
        if ok:
            with torch.no_grad():
                chunks.append(model.encode_image(torch.stack(tensors).to(device)).float().cpu())
            paths += [shown(f) for f in ok]
    return paths, torch.cat(chunks) if chunks else torch.zeros(0, 0), seen, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a .ckpt written by `python train.py task=retrieval` (or a CoCa captioner)")
    ap.add_argument("images", help="an image folder (searched recursively) or one image file")
    ap.add_argument("queries", nargs="+", help="text queries, e.g. \"a dog on the grass\"")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--index", type=Path, default=None,
                    help="image embeddings file (safetensors): written if missing, else read instead of the images")
    ap.add_argument("--reindex", action="store_true", help="embed the images again and overwrite --index")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                    help=f"refuse images with more pixels (default {DEFAULT_MAX_PIXELS:,}; 0: PIL's own limit only)")
    args = ap.parse_args(argv)
    if args.top_k < 1:
        ap.error("--top-k must be >= 1")

    try:
        model, info = load_model(args.checkpoint, map_location="cpu")
    except (FileNotFoundError, ValueError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    tokenizer = info.get("tokenizer")
    if tokenizer is None or not hasattr(model, "encode_text"):
        print(f"{PROG}: {args.checkpoint} has no text encoder ({type(model).__name__}): use a task=retrieval or "
              "CoCa captioning checkpoint", file=sys.stderr)
        return 2
    if not info.get("preprocessing"):
        print(f"{PROG}: {args.checkpoint} records no preprocessing (written by an older mmtrans)", file=sys.stderr)
        return 2
    model.to(args.device)
    fingerprint = model_fingerprint(model)

    failed = 0
    if args.index is not None and args.index.is_file() and not args.reindex:
        try:
            paths, embeddings = read_index(args.index, fingerprint)
        except ValueError as e:
            print(f"{PROG}: {e}", file=sys.stderr)
            return 2
        print(f"{PROG}: {len(paths)} images from index {args.index}", file=sys.stderr)
    else:
        transform = Preprocessing.from_dict(info["preprocessing"], str(args.checkpoint)).transform(train=False)
        paths, embeddings, seen, failed = embed_images(model, transform, [args.images], args.batch_size, args.device,
                                                       args.max_pixels or None)
        if seen == 0:
            print(f"{PROG}: no images found in {args.images}", file=sys.stderr)
            return 2
        if args.index is not None and paths:
            write_index(args.index, paths, embeddings, fingerprint)
            print(f"{PROG}: wrote {len(paths)} image embeddings to {args.index}", file=sys.stderr)
    if not paths:
        print(f"{PROG}: no image could be read", file=sys.stderr)
        return 2

    max_len = info.get("max_len") or (model.text if hasattr(model, "text") else model.decoder).max_len
    tokens, pad, _ = tokenizer.encode_batch(args.queries, max_len)
    with torch.no_grad():
        text = model.encode_text(tokens.to(args.device), pad.to(args.device)).float().cpu()
    scores, index = (text @ embeddings.T).topk(min(args.top_k, len(paths)), dim=1)
    results = []
    for query, row_scores, row_index in zip(args.queries, scores, index):
        print(f"# {query}")
        hits = [{"image": paths[i], "score": round(float(s), 4)} for s, i in zip(row_scores, row_index.tolist())]
        for rank, hit in enumerate(hits, 1):
            print(f"{rank}\t{hit['score']:.4f}\t{hit['image']}", flush=True)
        results.append({"query": query, "results": hits})
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
