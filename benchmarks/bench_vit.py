"""Our VisionTransformer vs timm's with identical weights: forward and forward+backward time.

    python benchmarks/bench_vit.py                       # ViT-S/16, 224 px, batch 8, CPU
    python benchmarks/bench_vit.py --model vit_base_patch16_224 --batch 32 --device cuda

Both models are timed in the same process, interleaved (ours, timm, timm, ours, ...), after
warm-up; each figure is the median of --repeats runs with min-max beside it. Prints a table
and `RATIO` lines, the headline (forward+backward time ours/timm, lower is better) last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in a checkout

from timing import Numbers, add_json_flag, interleaved, timed  # noqa: E402  (benchmarks/timing.py, beside this script)

from mmtrans.models import ImageClassifier, VisionTransformer, convert_timm_vit, vit_kwargs_from_timm  # noqa: E402


def build(name: str, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, num_classes=1000)
    ours = ImageClassifier(VisionTransformer(**vit_kwargs_from_timm(ref)), num_classes=1000)
    ours.load_state_dict(convert_timm_vit(ref.state_dict(), ours), strict=True)
    return ours.to(device), ref.to(device)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    add_json_flag(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ours, ref = build(args.model, device)
    x = torch.randn(args.batch, 3, 224, 224, device=device)
    with torch.no_grad():
        diff = (ours.eval()(x) - ref.eval()(x)).abs().max().item()

    def forward(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model.eval()(x)
        return run

    def forward_backward(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.train()
            model.zero_grad(set_to_none=True)
            model(x).float().logsumexp(-1).mean().backward()
        return run

    results: dict[str, dict[str, list[float]]] = {}
    for phase, make in (("forward", forward), ("forward+backward", forward_backward)):
        fns = {"ours": make(ours), "timm": make(ref)}
        for fn in fns.values():
            for _ in range(args.warmup):
                fn()
        results[phase] = interleaved(fns, args.repeats, lambda who, fn: timed(fn, device))

    print(f"{args.model}, batch {args.batch}, 224 px, {device}, {args.threads} threads, "
          f"median of {args.repeats} (min-max), max |logit diff| {diff:.1e}")
    print(f"{'phase':<18} {'ours ms':>22} {'timm ms':>22} {'ours/timm':>10}")
    numbers = Numbers()
    numbers.add("max_logit_diff", diff)
    ratios = {}
    for phase, times in results.items():
        med = {w: statistics.median(t) * 1e3 for w, t in times.items()}
        span = {w: f"{med[w]:.1f} ({min(t) * 1e3:.1f}-{max(t) * 1e3:.1f})" for w, t in times.items()}
        ratios[phase] = med["ours"] / med["timm"]
        for w, t in times.items():
            numbers.spread(f"{phase}/{w}_ms", t, 1e3)
        print(f"{phase:<18} {span['ours']:>22} {span['timm']:>22} {ratios[phase]:>10.3f}")
    numbers.ratio("bench_vit_forward", ratios["forward"])
    numbers.ratio("bench_vit", ratios["forward+backward"])
    numbers.write(args.json)


if __name__ == "__main__":
    main()
