"""WebDataset tar shards: stream image data sets too large for one disk (`data=webdataset`).

A shard folder (a local path, or any URL prefix `webdataset.gopen` opens: `https://...`,
`pipe:aws s3 cp s3://... -`) holds `train-000000.tar`, `val-...`, `test-...` and
`shards.json` (classes, shard names, sample counts, image size), as `write_shards` (the
`mmtrans-shards` command) writes them. Each sample of a shard is `<key>.png` (or `.jpg`,
`.jpeg`, `.webp`) plus `<key>.cls` (class index) or `<key>.json` (`{"captions": [...]}`,
or `{"label": [0, 1, ...]}` for multi-label) or `<key>.txt` (one caption).

Reading (`ShardDataset`, an IterableDataset): every loader worker of every process reads
its own shards (or, with fewer shards than readers, every reader reads all shards and keeps
its own samples), so each sample is read once per pass. Training streams repeat and stop
at a fixed length: every process takes the same number of steps per epoch (DDP needs it),
`len(loader)` is exact, and shuffling is per shard order plus a buffer of samples.
A sample whose image does not decode or whose label is missing follows `on_bad_image`,
named `<shard>:<key>`.
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageOps
from torch.utils.data import IterableDataset, get_worker_info

from mmtrans.data.bad_images import SKIPPED_KEY, BadSample
from mmtrans.data.io import BadImageError
from mmtrans.data.splits import Splits

INFO_FILE = "shards.json"
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
SPLITS = ("train", "val", "test")
Transform = Callable[[Image.Image], torch.Tensor]


# -- writing -------------------------------------------------------------------------------

def write_shards(out_dir: str | os.PathLike, splits: Splits, samples_per_shard: int = 1000,
                 image_format: str = "png") -> dict[str, Any]:
    """Write `splits` (data sets whose `image` is an untransformed PIL image: see
    `DataModule.raw_splits`) as `<split>-000000.tar, ...` and `shards.json` into `out_dir`;
    returns what `shards.json` holds."""
    import webdataset as wds

    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be png or jpg, got {image_format!r}")
    os.makedirs(out_dir, exist_ok=True)
    info: dict[str, Any] = {"format": 1, "classes": list(splits.class_names), "label_type": splits.label_type,
                            "img_size": None, "in_chans": None, "splits": {}}
    for name in SPLITS:
        dataset = getattr(splits, name)
        if dataset is None:
            continue
        shards, samples, captions, writer = [], 0, 0, None
        for i in range(len(dataset)):
            item = dataset[i]
            image = item["image"]
            if not isinstance(image, Image.Image):
                raise TypeError(f"write_shards needs PIL images, the {name} split gives {type(image).__name__}")
            if info["img_size"] is None:
                info["img_size"], info["in_chans"] = image.size[0], 1 if image.mode == "L" else 3
            if i % samples_per_shard == 0:
                if writer is not None:
                    writer.close()
                shards.append(f"{name}-{len(shards):06d}.tar")
                writer = wds.TarWriter(os.path.join(out_dir, shards[-1]))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG" if image_format == "png" else "JPEG", quality=95)
            sample = {"__key__": f"{i:08d}", image_format: buffer.getvalue()}
            if "captions" in item:
                sample["json"] = json.dumps({"captions": list(item["captions"]),
                                             "image_id": str(item.get("image_id", i))}).encode()
                captions += len(item["captions"])
            else:
                label = torch.as_tensor(item["label"])
                if label.ndim == 0:
                    sample["cls"] = str(int(label)).encode()
                else:
                    sample["json"] = json.dumps({"label": label.tolist()}).encode()
            writer.write(sample)
            samples += 1
        if writer is not None:
            writer.close()
        info["splits"][name] = {"shards": shards, "samples": samples, "captions": captions}
    with open(os.path.join(out_dir, INFO_FILE), "w") as f:
        f.write(json.dumps(info, indent=1) + "\n")
    return info


# -- reading -------------------------------------------------------------------------------

def read_info(root: str) -> dict[str, Any]:
    """`shards.json` of a local folder or URL prefix."""
    import webdataset as wds

    url = f"{root.rstrip('/')}/{INFO_FILE}"
    try:
        with wds.gopen(url) as f:
            return json.loads(f.read())
    except Exception as err:  # noqa: BLE001 - missing file, network, bad JSON: one message
        raise ValueError(
            f"data.root={root}: cannot read {url} ({err}); a shard folder needs the {INFO_FILE} that "
            "mmtrans-shards writes beside the shards (classes, shard names, sample counts)"
        ) from err


def _rank_and_world() -> tuple[int, int]:
    # In forked loader workers too: they inherit the process group of their process.
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardDataset(IterableDataset):
    """The samples of `urls` (one split), decoded and transformed; see the module docstring.

    `train=True`: an endless shuffled stream cut to `len(self)` samples per process per epoch
    (whole batches of `batch_size`); captions then give one item per (image, caption).
    `train=False`: every sample once, in shard order, images with all their captions.
    """

    def __init__(self, urls: list[str], count: int, transform: Transform | None, train: bool,
                 captions: bool, in_chans: int = 3, batch_size: int = 1, on_bad_image: str = "raise",
                 shuffle_buffer: int = 1000) -> None:
        self.urls = list(urls)
        self.count = count  # samples (classification) or (image, caption) pairs (captioning) per epoch
        self.transform = transform
        self.train = train
        self.captions = captions
        self.mode = "L" if in_chans == 1 else "RGB"
        self.batch_size = batch_size
        self.on_bad_image = on_bad_image
        self.shuffle_buffer = shuffle_buffer
        self._passes = 0  # iterations started in this process (new shuffles without workers)

    def __len__(self) -> int:
        if not self.train:
            raise TypeError("an evaluation shard stream has no length known up front")
        _, world = _rank_and_world()
        return self.count // (world * self.batch_size) * self.batch_size

    def all_captions(self) -> list[str]:
        """Every caption of these shards, in order, without decoding images (tokenizer training:
        one pass over the shards)."""
        import webdataset as wds

        texts = []
        for sample in wds.tarfile_samples([{"url": u} for u in self.urls]):
            if "json" in sample:
                texts += json.loads(sample["json"]).get("captions", [])
            elif "txt" in sample:
                texts.append(sample["txt"].decode().strip())
        return texts

    def _reader(self) -> tuple[int, int, int, int]:
        """(this reader's index, readers in all, this worker's id, workers per process)."""
        rank, world = _rank_and_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world * workers, worker, workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        reader, readers, worker, workers = self._reader()
        self._passes += 1
        rng = random.Random(f"{torch.initial_seed()}-{self._passes}-{reader}")
        if not self.train:
            yield from self._items(self._samples(reader, readers, rng))
            return
        batches = len(self) // self.batch_size
        quota = (batches // workers + (worker < batches % workers)) * self.batch_size
        # A buffer no larger than this reader's share: tiny shard sets need not be read many times over.
        buffer = min(self.shuffle_buffer, max(1, self.count // readers))
        stream = self._shuffled(self._items(self._endless(reader, readers, rng)), rng, buffer)
        for _, item in zip(range(quota), stream):
            yield item

    def _endless(self, reader: int, readers: int, rng: random.Random) -> Iterator[dict[str, Any]]:
        while True:
            found = False
            for sample in self._samples(reader, readers, rng):
                found = True
                yield sample
            if not found:
                raise ValueError(f"no readable training sample in the shards {self.urls}")

    def _samples(self, reader: int, readers: int, rng: random.Random) -> Iterator[dict[str, Any]]:
        """Raw samples ({"__key__", "__url__", "png", "cls", ...}) of this reader, one pass."""
        import webdataset as wds

        # Which reader reads what is fixed (shard or sample index modulo readers): readers seed
        # their shuffles differently (rank, worker), so a share drawn after a shuffle would give
        # two DDP ranks or workers the same shard in one pass and nobody another. Each reader
        # shuffles only its own share; the shuffle buffer mixes across its shards.
        urls = list(self.urls)
        if len(urls) >= readers:
            mine = urls[reader::readers]
            if self.train:
                rng.shuffle(mine)
            yield from wds.tarfile_samples([{"url": u} for u in mine])
            return
        for i, sample in enumerate(wds.tarfile_samples([{"url": u} for u in urls])):
            if i % readers == reader:
                yield sample

    @staticmethod
    def _shuffled(items: Iterator[dict[str, Any]], rng: random.Random, size: int) -> Iterator[dict[str, Any]]:
        buffer: list[dict[str, Any]] = []
        for item in items:
            if len(buffer) < size:
                buffer.append(item)
                continue
            j = rng.randrange(len(buffer))
            buffer[j], item = item, buffer[j]
            yield item
        rng.shuffle(buffer)
        yield from buffer

    def _items(self, samples: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        skipped: list[BadSample] = []
        for sample in samples:
            try:
                items = self._decode(sample)
            except BadImageError as err:
                if self.on_bad_image == "raise":
                    raise
                skipped.append(BadSample(err.path, err.reason))
                if not self.train:  # counted on the next batch, as SkipBadImages does
                    yield BadSample(err.path, err.reason)  # type: ignore[misc]
                    skipped = []
                continue
            for item in items:
                if skipped:
                    item[SKIPPED_KEY], skipped = skipped, []
                yield item

    def _decode(self, sample: Mapping[str, Any]) -> list[dict[str, Any]]:
        where = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
        ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if ext is None:
            raise BadImageError(where, f"no image ({'/'.join('.' + e for e in IMAGE_EXTS)}) in the sample")
        try:
            image = Image.open(io.BytesIO(sample[ext]))
            image.load()
            image = ImageOps.exif_transpose(image).convert(self.mode)
        except Exception as err:  # noqa: BLE001 - PIL raises many types for bad bytes
            raise BadImageError(where, f".{ext} does not decode: {err}") from err
        meta = json.loads(sample["json"]) if "json" in sample else {}
        if self.captions:
            captions = meta.get("captions") or ([sample["txt"].decode().strip()] if "txt" in sample else None)
            if not captions:
                raise BadImageError(where, "no caption (.json with captions, or .txt)", kind="sample")
            image_id = str(meta.get("image_id", sample["__key__"]))
            if not self.train:
                return [{"image": self._tensor(image), "captions": captions, "image_id": image_id}]
            return [{"image": self._tensor(image), "caption": c, "image_id": image_id} for c in captions]
        if "cls" in sample:
            label = torch.tensor(int(sample["cls"]), dtype=torch.long)
        elif "label" in meta:
            label = torch.tensor(np.asarray(meta["label"], dtype=np.float32))
        else:
            raise BadImageError(where, "no label (.cls, or .json with a label)", kind="sample")
        return [{"image": self._tensor(image), "label": label, "id": where}]

    def _tensor(self, image: Image.Image) -> torch.Tensor:
        from mmtrans.data.transforms import to_tensor

        return self.transform(image) if self.transform is not None else to_tensor(image)


def webdataset_splits(
    root: str,
    train_transform: Transform | None = None,
    eval_transform: Transform | None = None,
    in_chans: int = 3,
    batch_size: int = 64,
    on_bad_image: str = "raise",
    shuffle_buffer: int = 1000,
) -> Splits:
    """Train / val / test streams of the shard folder (or URL prefix) `root`, split by shard
    file name as `shards.json` lists them. Without test shards, `Splits.test` is None."""
    info = read_info(root)
    parts = info.get("splits", {})
    for name in ("train", "val"):
        if not parts.get(name, {}).get("shards"):
            raise ValueError(f"data.root={root}: {INFO_FILE} lists no {name} shards ({name}-000000.tar, ...)")
    captions = any(p.get("captions") for p in parts.values())
    base = root.rstrip("/")

    def stream(name: str, train: bool) -> ShardDataset | None:
        part = parts.get(name)
        if not part or not part.get("shards"):
            return None
        count = part["captions"] if captions and train else part["samples"]
        return ShardDataset([f"{base}/{s}" for s in part["shards"]], count,
                            train_transform if train else eval_transform, train, captions, in_chans,
                            batch_size, on_bad_image, shuffle_buffer)

    return Splits(train=stream("train", True), val=stream("val", False), test=stream("test", False),
                  class_names=list(info.get("classes") or []), label_type=info.get("label_type"))


def _describe(root: str) -> dict[str, Any]:
    """What the shards say about their images (their writer's size and channels)."""
    info = read_info(root)
    return {k: info[k] for k in ("img_size", "in_chans") if info.get(k)}


webdataset_splits.describe = _describe  # type: ignore[attr-defined]

__all__ = ["INFO_FILE", "ShardDataset", "webdataset_splits", "write_shards", "read_info"]
webdataset_splits.yields = "any"  # read by tasks/task_fit.py: labelled or captioned shards
