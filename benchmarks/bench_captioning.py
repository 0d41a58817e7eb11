"""End-to-end captioning throughput of our ImageCaptioner: greedy vs beam search (3 beams).

    python benchmarks/bench_captioning.py                  # captioner_tiny, 64 px, batch 32, CPU
    python benchmarks/bench_captioning.py --base           # captioner_base, 224 px (ViT-B/16 + 6 blocks)
    python benchmarks/bench_captioning.py --base --device cuda --batch 64

The model comes from the real config tree, composed with Hydra as ``train.py`` does:
``task=captioning`` (``conf/model/captioner_tiny.yaml`` on the 64 px scenes), or with
``--base`` ``experiment=captioning_coco model.encoder_pretrained=null``
(``conf/model/captioner_base.yaml`` at 224 px, 40 positions), random weights. As in the
captioning task, the BPE tokenizer is trained on captions (``../shared/data/flickr8k_1k``,
or a few built-in sentences without it) at the configured size, and the model is sized to it.
Each run is one ``mmtrans.generation.caption_images`` call on a batch of random images:
encode, search on the KV cache, decode to strings; ``max_new_tokens`` is the task's
(``task.generation.max_new_tokens``). EOS is banned for every step (``min_new_tokens =
max_new_tokens``), so greedy and beam search always run the full length and the work is
fixed; with a trained model they would stop earlier (beam search once every example is done).
The encoder alone is timed too, to give the decoding-only ratio beside the end-to-end one.

No reference library: the ratio is our beam-3 time / our greedy time on the same batch
(lower is better; target <= 3.5). One thread by default: on a shared 2-core machine a second
thread makes every small op wait for a busy core (see bench_decoder.py); ``--threads 2`` on an
idle machine. The three are timed in the same process, interleaved (the order reversed every
other repeat), after warm-up; each figure is the median of --repeats runs with min-max beside
it. Prints a table and ``RATIO`` lines, the headline (beam-3 time / greedy time) last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere in a checkout

from timing import Numbers, add_json_flag, interleaved, timed  # noqa: E402  (benchmarks/timing.py, beside this script)

from mmtrans.generation import caption_images  # noqa: E402
from mmtrans.text import CaptionTokenizer  # noqa: E402

CAPTIONS = ROOT.parent / "shared" / "data" / "flickr8k_1k" / "captions.txt"
FALLBACK_CAPTIONS = [
    "a small red circle left of a large blue square .",
    "two dogs run across the green grass in a park .",
    "a man in a black jacket rides a bike down the street .",
    "a girl in a pink dress is climbing up a set of stairs .",
]


def compose_config(base: bool) -> DictConfig:
    base_overrides = ["experiment=captioning_coco", "model.encoder_pretrained=null"]  # random weights
    overrides = base_overrides if base else ["task=captioning"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=overrides)


def train_tokenizer(vocab_size: int) -> CaptionTokenizer:
    if CAPTIONS.is_file():  # "image,caption" CSV with a header line
        texts = [line.split(",", 1)[1] for line in CAPTIONS.read_text().splitlines()[1:] if "," in line]
    else:
        texts = FALLBACK_CAPTIONS
    return CaptionTokenizer.train(texts, vocab_size=vocab_size)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", action="store_true", help="captioner_base at 224 px")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the task's")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    add_json_flag(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cfg = compose_config(args.base)
    tokenizer = train_tokenizer(cfg.task.tokenizer.vocab_size)
    torch.manual_seed(0)
    # The task builds the model for the data's resolved size and channels; both configs set the
    # size, and captioning images are RGB (in_chans null: from the data, which is RGB here).
    img, chans = cfg.data.img_size, cfg.data.in_chans or 3
    model = instantiate(cfg.model, vocab_size=tokenizer.vocab_size, img_size=img, in_chans=chans,
                        _convert_="all").to(device).eval()
    n_new = args.max_new_tokens or cfg.task.generation.max_new_tokens
    images = torch.randn(args.batch, chans, img, img, generator=torch.Generator().manual_seed(1)).to(device)

    def run(num_beams: int) -> Callable[[], list[str]]:
        def fn() -> list[str]:
            with torch.inference_mode():
                return caption_images(model, tokenizer, images, num_beams=num_beams, max_new_tokens=n_new,
                                      min_new_tokens=n_new, length_penalty=cfg.task.generation.length_penalty)
        return fn

    def encode() -> None:
        with torch.inference_mode():
            model.encode(images)

    fns = {"greedy": run(1), f"beam {args.beams}": run(args.beams), "encode only": encode}
    for fn in fns.values():
        for _ in range(args.warmup):
            fn()
    times = interleaved(fns, args.repeats, lambda who, fn: timed(fn, device))

    name = "captioner_base" if args.base else "captioner_tiny"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{name} ({params:.1f} M params, vocab {tokenizer.vocab_size}), {img} px, batch {args.batch}, "
          f"{n_new} new tokens (EOS banned), random weights, {device}, {args.threads} threads, "
          f"median of {args.repeats} (min-max); no reference library")
    print(f"{'search':<12} {'ms per batch':>26} {'images/s':>10} {'x greedy':>9}")
    med = {who: statistics.median(ts) for who, ts in times.items()}
    numbers = Numbers()
    for who, ts in times.items():
        key = who.replace(" ", "_")
        numbers.spread(f"{key}_ms", ts, 1e3)
        numbers.add(f"{key}_images_per_s", args.batch / med[who])
        span = f"{med[who] * 1e3:.1f} ({min(ts) * 1e3:.1f}-{max(ts) * 1e3:.1f})"
        print(f"{who:<12} {span:>26} {args.batch / med[who]:>10.1f} {med[who] / med['greedy']:>9.3f}")
    beam, greedy, enc = med[f"beam {args.beams}"], med["greedy"], med["encode only"]
    numbers.ratio("bench_captioning_decode", (beam - enc) / (greedy - enc))
    numbers.ratio("bench_captioning", beam / greedy)
    numbers.write(args.json)


if __name__ == "__main__":
    main()
