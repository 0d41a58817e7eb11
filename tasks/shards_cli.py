"""Write any of our data configs as WebDataset tar shards: ``mmtrans-shards OUT_DIR <overrides>``.

    mmtrans-shards shards/ task=classification data=shapes
    mmtrans-shards coco_shards/ task=captioning data=coco data.annotations=... data.root=...
    python train.py task=classification data=webdataset data.root=shards/

The overrides compose the config as for train.py; its data config is built, and its train /
val / test splits are written untransformed (images as stored or rendered, re-encoded as PNG
or JPEG; labels, or all captions of an image) into ``OUT_DIR/{train,val,test}-000000.tar, ...``
with ``shards.json`` (classes, shard names, counts, image size) beside them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from mmtrans.data.shards import INFO_FILE, write_shards

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmtrans-shards", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write the shards into (created)")
    parser.add_argument("overrides", nargs="*", help="config overrides as for train.py (task=..., data=...)")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="image encoding (png: lossless)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out_dir)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*args.overrides, f"paths.output_dir={out}"])
    if "webdataset_splits" in str(cfg.data.splits.get("_target_", "")):
        print("mmtrans-shards: the data config is already shards (data=webdataset)", file=sys.stderr)
        return 2
    datamodule = instantiate(cfg.data, _convert_="all")
    info = write_shards(out, datamodule.raw_splits(), args.samples_per_shard, args.format)
    for name, part in info["splits"].items():
        extra = f", {part['captions']} captions" if part["captions"] else ""
        print(f"{name}: {part['samples']} samples{extra} in {len(part['shards'])} shard(s)")
    print(f"wrote {out / INFO_FILE}; train with: python train.py task={cfg.task_name} data=webdataset "
          f"data.root={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
