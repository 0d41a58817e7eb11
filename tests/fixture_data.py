"""Tiny on-disk data sets in every format the data presets read, for tests that run the real
configs (tests/test_presets.py, tests/test_documented_commands.py). A few KB each."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
CAPTIONS = ["a {c} square", "the {c} box", "something {c}"]


def image_folder(root: Path, per_class: int = 8) -> Path:
    """root/<class>/<i>.png: two classes of plain colour images of varied size."""
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.new("RGB", (20 + i, 18), colour).save(root / name / f"{i}.png")
    return root


def caption_images(root: Path, n: int = 12) -> dict[str, list[str]]:
    """root/<i>.jpg and their captions (three each)."""
    root.mkdir(parents=True, exist_ok=True)
    captions = {}
    for i in range(n):
        name, colour = list(COLOURS.items())[i % 2]
        Image.new("RGB", (24 + i, 20), colour).save(root / f"{i}.jpg")
        captions[f"{i}.jpg"] = [c.format(c=name) for c in CAPTIONS]
    return captions


def caption_files(folder: Path) -> dict[str, Path]:
    """One annotation file per caption format (coco, karpathy, flickr8k, table) over the
    images in folder/images: {format: annotations path}, images at folder/"images"."""
    caps = caption_images(folder / "images")
    names = list(caps)
    coco = folder / "captions_train2017.json"
    coco.write_text(json.dumps({
        "images": [{"id": i, "file_name": n} for i, n in enumerate(names)],
        "annotations": [{"image_id": i, "id": 10 * i + j, "caption": c}
                        for i, n in enumerate(names) for j, c in enumerate(caps[n])],
    }))
    karpathy = folder / "dataset_coco.json"
    split = ["train"] * (len(names) - 4) + ["val", "val", "test", "test"]
    karpathy.write_text(json.dumps({"dataset": "coco", "images": [
        {"filename": n, "split": s, "sentences": [{"raw": c, "tokens": c.split()} for c in caps[n]]}
        for n, s in zip(names, split)]}))
    token = folder / "Flickr8k.token.txt"
    token.write_text("".join(f"{n}#{j}\t{c}\n" for n in names for j, c in enumerate(caps[n])))
    table = folder / "captions.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "caption"])
        writer.writerows([n, c] for n in names for c in caps[n])
    return {"coco": coco, "karpathy": karpathy, "flickr8k": token, "caption_table": table}


def medmnist_npz(path: Path, n: int = 16, rgb: bool = False, classes: int = 2) -> Path:
    """A MedMNIST-layout .npz of 28 px images; labels [N, 1] cycling over `classes`."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def medical_csv(folder: Path, n: int = 20) -> tuple[Path, Path]:
    """labels.csv (path, label, effusion, nodule, a, b, patient_id) beside grey PNGs in
    folder/images (so data.root may be that folder or left null): (csv, image folder)."""
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        Image.new("L", (24, 24), 40 + 10 * i).save(images / f"{i}.png")
        rows.append({"path": f"{i}.png", "label": "lesion" if i % 2 else "normal", "effusion": i % 2,
                     "nodule": (i // 2) % 2, "a": i % 2, "b": (i // 2) % 2, "patient_id": f"P{i // 2}"})
    table = images / "labels.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return table, images
