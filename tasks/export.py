"""Export a checkpoint as a folder to share: ``mmtrans-export CKPT OUT_DIR [--force]``.

A ``.ckpt`` is a pickle: loading one from elsewhere means trusting it (mmtrans reads them
weights-only, other tools may not), and it carries optimizer state nobody needs to caption
or classify. The folder holds only data:

* ``model.safetensors``: the model's weights (a tied tensor is stored once),
* ``config.json``: the model config, the preprocessing (``preprocessing``: img_size,
  in_chans, mean, std, interpolation, crop_pct), labels (num_classes, label_type,
  class_names), generation settings, the task and the format version,
* ``tokenizer.json`` + ``special_tokens.json`` (captioning): ``CaptionTokenizer.save``, so
  ``tokenizer.json`` is the Hugging Face ``tokenizers`` format any tool reads.

``tasks.checkpoint.load_model(OUT_DIR)`` and ``mmtrans-caption OUT_DIR IMAGE`` read it back.
Exit status: 0 written, 2 nothing written (unreadable or refused checkpoint, non-empty OUT_DIR).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors.torch import save_model

from tasks.checkpoint import CONFIG_FILE, EXPORT_FILES, EXPORT_FORMAT_VERSION, WEIGHTS_FILE, load_model

__all__ = ["export", "main"]

# Keys of a task's hparams that say how to read the model's outputs.
LABEL_KEYS = ("num_classes", "label_type", "class_names", "threshold", "generation")


def export(checkpoint: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Write the folder (see the module docstring) and return its path. A non-empty
    ``out_dir`` is refused unless ``force``; then only the files named above are replaced."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} is not empty; choose a new folder or pass --force to replace its export files")
    model, info = load_model(checkpoint)  # weights-only; proves the folder will load
    config = {
        "format_version": EXPORT_FORMAT_VERSION,
        "task": info["config"].get("task_name"),
        "model": info["config"]["model"],
        "preprocessing": info["preprocessing"],
        **{k: info[k] for k in LABEL_KEYS if info.get(k) is not None},
    }
    out.mkdir(parents=True, exist_ok=True)
    for name in EXPORT_FILES:  # with --force: no tokenizer left over from an earlier export
        (out / name).unlink(missing_ok=True)
    # save_model, not save_file: it drops the second name of a tied tensor (safetensors
    # stores no aliases) and safetensors' load_model restores the tie.
    save_model(model, str(out / WEIGHTS_FILE), metadata={"format": "pt", "mmtrans_export": str(EXPORT_FORMAT_VERSION)})
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if info.get("tokenizer") is not None:
        info["tokenizer"].save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mmtrans-export", description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="a .ckpt written by `python train.py`")
    ap.add_argument("out_dir", type=Path, help="the folder to write (created; must be empty unless --force)")
    ap.add_argument("--force", action="store_true", help="write into a non-empty folder, replacing the export files")
    args = ap.parse_args(argv)
    try:
        out = export(args.checkpoint, args.out_dir, force=args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"mmtrans-export: {e}", file=sys.stderr)
        return 2
    print(f"exported {args.checkpoint} to {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
