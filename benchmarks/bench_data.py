"""Our training data pipeline vs torchvision's ImageFolder: images/s, decode + augment + collate.

    python benchmarks/bench_data.py                        # 160 JPEGs 300..800 px, workers 0,1,2
    python benchmarks/bench_data.py --images 1000 --max-side 2000 --workers 0,4,8 --batch 128

Writes --images deterministic JPEGs of mixed sizes (--min-side..--max-side px, smooth colour
fields plus noise so that they compress like photos) once to a temporary folder laid out as
`train/<class>/*.jpg` plus a small `val/`, then loads `train/` two ways:

* ours: `image_folder_splits(root, train_transform=build_transform(img_size=224, train=True,
  ...))`.train (its defaults: `load_image`, no JPEG draft unless --draft-size), in a DataLoader
  built as `tasks.datamodule.DataModule` builds the train loader (shuffle, drop_last,
  persistent workers, default collate, pin_memory only with CUDA);
* torchvision: `datasets.ImageFolder(root/"train")` (its PIL loader) with the equivalent v2
  pipeline: RandomResizedCrop(224, scale and interpolation as ours, antialias) +
  RandomHorizontalFlip + ToImage + ToDtype(float32, scale=True) + Normalize, same loader options.

For each worker count, both loaders are warmed up by two batches (starts their workers) and then
timed one epoch at a time, interleaved (ours, torchvision, torchvision, ours, ...); each figure
is the median of --repeats epochs with min-max beside it. Prints a table and `RATIO` lines
(images/s ours/torchvision, higher is better), the headline, at 0 workers (in-process, the
steadiest figure on a small shared machine), last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms import InterpolationMode, v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in a checkout

from timing import Numbers, add_json_flag, interleaved  # noqa: E402  (benchmarks/timing.py, beside this script)

from mmtrans.data.image_folder import image_folder_splits  # noqa: E402
from mmtrans.data.transforms import build_transform  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CLASSES = 4
VAL_PER_CLASS = 2  # image_folder_splits' train/val layout needs a val/ folder; it is not timed


def write_jpegs(root: Path, n: int, min_side: int, max_side: int, quality: int = 90) -> None:
    """`n` JPEGs under root/train/<class>/ (and a few under root/val/), deterministic."""
    rng = np.random.default_rng(0)
    for i in range(n + CLASSES * VAL_PER_CLASS):
        split, j = ("train", i) if i < n else ("val", i - n)
        w, h = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
        # A coarse random colour field, upsampled (smooth regions and edges) plus noise (texture):
        # compresses and decodes like a photo rather than like a flat or a pure-noise image.
        coarse = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.int16)
        noise = (rng.standard_normal(size=(h, w, 1), dtype=np.float32) * 12.0).astype(np.int16)
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        folder = root / split / f"class_{j % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=quality)


def torchvision_transform(img_size: int, scale: tuple[float, float], interpolation: str) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                img_size, scale=scale, interpolation=InterpolationMode(interpolation), antialias=True
            ),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=MEAN, std=STD),
        ]
    )


def loader(dataset: Dataset, batch: int, workers: int) -> DataLoader:
    # As tasks/datamodule.py DataModule._loader builds the train loader (default config).
    return DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=workers > 0,
        collate_fn=None,
    )


def images_of(batch: dict | list) -> torch.Tensor:
    return batch["image"] if isinstance(batch, dict) else batch[0]


def warm_up(dl: DataLoader, batches: int = 2) -> None:
    """Start the workers (persistent from then on) and warm the caches, without a whole epoch."""
    for i, _ in enumerate(dl):
        if i + 1 >= batches:
            break


def images_per_s(dl: DataLoader) -> float:
    """Images per second of one pass over `dl`."""
    start = time.perf_counter()
    count = sum(images_of(b).shape[0] for b in dl)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 160 / 16 = 10 batches an epoch, split evenly over 1 or 2 workers; ~1 s an epoch here.
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--min-side", type=int, default=300)
    parser.add_argument("--max-side", type=int, default=800)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16, help="the config's 64 would leave 2 batches of 160")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated num_workers values")
    parser.add_argument(
        "--draft-size", type=int, default=None, help="ours: JPEG draft size (default: none, as the config)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    # 1, as torch sets in each DataLoader worker. At 0 workers the transforms run in this
    # process, and 2 threads on 2 busy cores made each small tensor op wait on the other thread:
    # ~10x slower per image (38 vs 4 ms) for both pipelines alike.
    parser.add_argument("--threads", type=int, default=1)
    add_json_flag(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    worker_counts = [int(v) for v in args.workers.split(",")]
    scale, interpolation = (0.5, 1.0), "bicubic"  # build_transform's defaults, passed to both

    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_jpegs(root, args.images, args.min_side, args.max_side)
        write_s = time.perf_counter() - start
        ours_tf = build_transform(
            img_size=args.img_size, train=True, mean=MEAN, std=STD, scale=scale, interpolation=interpolation
        )
        ours_ds = image_folder_splits(root, train_transform=ours_tf, draft_size=args.draft_size).train
        ref_ds = datasets.ImageFolder(
            str(root / "train"), transform=torchvision_transform(args.img_size, scale, interpolation)
        )
        assert len(ours_ds) == len(ref_ds) == args.images, (len(ours_ds), len(ref_ds))

        # Same batch layout from both: image shape and dtype, label dtype.
        torch.manual_seed(0)
        b_ours, b_ref = next(iter(loader(ours_ds, args.batch, 0))), next(iter(loader(ref_ds, args.batch, 0)))
        shapes = {
            "ours": (tuple(b_ours["image"].shape), b_ours["image"].dtype, b_ours["label"].dtype),
            "torchvision": (tuple(b_ref[0].shape), b_ref[0].dtype, b_ref[1].dtype),
        }
        same = shapes["ours"] == shapes["torchvision"]

        results: dict[int, dict[str, list[float]]] = {}
        for workers in worker_counts:
            loaders = {
                "ours": loader(ours_ds, args.batch, workers),
                "torchvision": loader(ref_ds, args.batch, workers),
            }
            for dl in loaders.values():
                for _ in range(args.warmup):
                    warm_up(dl)
            results[workers] = interleaved(loaders, args.repeats, lambda who, dl: images_per_s(dl))
            del loaders  # shuts the persistent workers down before the next worker count

    sizes = f"{args.min_side}..{args.max_side} px"
    print(
        f"{args.images} JPEGs ({sizes}, written in {write_s:.1f} s) -> {args.img_size} px, batch {args.batch}, "
        f"{args.threads} threads, draft_size {args.draft_size}, median of {args.repeats} epochs (min-max)"
    )
    for who, (shape, dtype, label_dtype) in shapes.items():
        print(f"batch from {who:<12}: image {list(shape)} {dtype}, label {label_dtype}")
    print(f"same shape and dtype: {same}")
    print(f"{'workers':>7} {'ours images/s':>22} {'torchvision images/s':>22} {'ours/tv':>8}")
    numbers = Numbers()
    ratios = {}
    for workers, rates in results.items():
        med = {w: statistics.median(v) for w, v in rates.items()}
        span = {w: f"{med[w]:.1f} ({min(v):.1f}-{max(v):.1f})" for w, v in rates.items()}
        ratios[workers] = med["ours"] / med["torchvision"]
        for w, v in rates.items():
            numbers.spread(f"workers{workers}/{w}_images_per_s", v)
        print(f"{workers:>7} {span['ours']:>22} {span['torchvision']:>22} {ratios[workers]:>8.3f}")
    if not same:
        print("WARNING: the two pipelines give batches of different shape or dtype")
    for workers in worker_counts:
        if workers != worker_counts[0]:
            numbers.ratio(f"bench_data_workers{workers}", ratios[workers])
    numbers.ratio("bench_data", ratios[worker_counts[0]])
    numbers.write(args.json)


if __name__ == "__main__":
    main()
