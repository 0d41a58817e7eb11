"""Our `Attention`: SDPA (fused) path vs explicit-softmax path, time and peak memory by length.

    python benchmarks/bench_attention.py                          # ViT-S width, L 256..4096, forward, CPU
    python benchmarks/bench_attention.py --backward               # also forward+backward (~2x longer)
    python benchmarks/bench_attention.py --lengths 196,576,1024,4096,8192 --batch 8 --device cuda

One `mmtrans.nn.attention.Attention` (self-attention, ViT-S: width 384, 6 heads, qkv bias) is
run with its own `fused_attn` switch on (scaled_dot_product_attention) and off (explicit
softmax, the path `return_attn=True` takes, which materialises the [B, H, L, L] weights).
Both are timed in the same process, interleaved (fused, explicit, explicit, fused, ...), after
warm-up; each figure is the median of --repeats runs with min-max beside it (a run is several
calls when one call is short; times are per call).

Peak memory is the peak extra memory allocated during one call above what was allocated
before it: on CUDA `torch.cuda.max_memory_allocated`; on CPU the running sum of the
allocations and frees that `torch.profiler` records (`profile_memory=True`, its "[memory]"
events in time order), i.e. every tensor made through torch's allocator, intermediates and
outputs (and, with backward, saved activations and gradients) included.

Prints a table, how each path's memory grows with L (log-log slope: ~1 linear, ~2 quadratic),
the crossover length from which the fused path is faster, and `RATIO` lines, the headline
(forward time fused/explicit at the largest length, lower is better) last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in a checkout

from timing import Numbers, add_json_flag, interleaved, timed  # noqa: E402  (benchmarks/timing.py, beside this script)

from mmtrans.nn.attention import Attention  # noqa: E402

PATHS = ("fused", "explicit")
MIB = 2**20


def peak_extra_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak memory allocated during `fn()` above what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - before
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Op-level events net out allocations and frees made inside an op; the raw "[memory]"
    # events of the trace are each one allocation (+bytes) or free (-bytes), time-stamped.
    with tempfile.TemporaryDirectory() as tmp:
        trace = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(trace)
        with open(trace) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("name") == "[memory]"]
    events.sort(key=lambda e: (e["ts"], e["args"].get("Ev Idx", 0)))
    current = peak = 0
    for e in events:
        current += e["args"]["Bytes"]
        peak = max(peak, current)
    return peak


def slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares slope of log(y) on log(x): the exponent k of y ~ x^k."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1.0)) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def growth_word(k: float) -> str:
    # Below 1: a fixed part (e.g. per-thread buffers of the fused backward) still dominates.
    return "at most linear" if k < 1.3 else "quadratic" if k > 1.7 else "between linear and quadratic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,1024,2048,4096", help="comma-separated sequence lengths")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--backward", action="store_true", help="also time forward+backward")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--min-run-ms", type=float, default=50.0, help="a timed run repeats calls to last this long"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    add_json_flag(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    lengths = sorted(int(v) for v in args.lengths.split(","))
    torch.manual_seed(0)
    attn = Attention(args.dim, args.heads, qkv_bias=True).to(device, dtype)
    phases = ["forward"] + (["forward+backward"] if args.backward else [])
    elem = torch.empty((), dtype=dtype).element_size()

    def make(phase: str, path: str, x: torch.Tensor) -> Callable[[], None]:
        fused = path == "fused"

        def forward() -> None:
            attn.fused_attn = fused
            with torch.inference_mode():
                attn.eval()(x)

        def forward_backward() -> None:
            attn.fused_attn = fused
            attn.train()
            attn.zero_grad(set_to_none=True)
            x.grad = None
            attn(x).float().square().mean().backward()

        return forward if phase == "forward" else forward_backward

    # results[phase][L] = {"time": {path: [s, ...]}, "mem": {path: bytes}}
    results: dict[str, dict[int, dict]] = {p: {} for p in phases}
    max_diff = 0.0
    for L in lengths:
        x = torch.randn(args.batch, L, args.dim, device=device, dtype=dtype, requires_grad=True)
        with torch.inference_mode():
            attn.eval().fused_attn = True
            a = attn(x)
            attn.fused_attn = False
            b = attn(x)
        max_diff = max(max_diff, (a.float() - b.float()).abs().max().item())
        del a, b
        for phase in phases:
            fns = {path: make(phase, path, x) for path in PATHS}
            calls = {}
            for path, fn in fns.items():
                for _ in range(args.warmup):
                    fn()
                # Short calls are batched into one timed run so the clock's resolution and
                # the loop's overhead stay small beside them.
                calls[path] = max(1, math.ceil(args.min_run_ms / 1e3 / timed(fn, device, 1)))
            times = interleaved(fns, args.repeats, lambda path, fn, calls=calls: timed(fn, device, calls[path]))
            mem = {path: peak_extra_bytes(fn, device) for path, fn in fns.items()}
            results[phase][L] = {"time": times, "mem": mem}
        del x

    print(
        f"Attention dim {args.dim}, {args.heads} heads, batch {args.batch}, {args.dtype}, {device}, "
        f"{args.threads} threads, median of {args.repeats} (min-max), "
        f"max |fused - explicit| output diff {max_diff:.1e}"
    )
    print("peak MiB: extra memory allocated during one call; [B,H,L,L]: one attention matrix")
    print(
        f"{'phase':<17} {'L':>5} {'fused ms':>24} {'explicit ms':>24} {'fused/expl':>10} "
        f"{'fused MiB':>10} {'expl MiB':>10} {'[B,H,L,L]':>10}"
    )
    numbers = Numbers()
    numbers.add("max_output_diff", max_diff)
    ratios: dict[str, dict[int, float]] = {}
    for phase in phases:
        ratios[phase] = {}
        for L, res in results[phase].items():
            med = {p: statistics.median(t) * 1e3 for p, t in res["time"].items()}
            span = {
                p: f"{med[p]:.2f} ({min(t) * 1e3:.2f}-{max(t) * 1e3:.2f})" for p, t in res["time"].items()
            }
            ratios[phase][L] = med["fused"] / med["explicit"]
            for p, t in res["time"].items():
                numbers.spread(f"{phase}/L{L}/{p}_ms", t, 1e3)
                numbers.add(f"{phase}/L{L}/{p}_mib", res["mem"][p] / MIB)
            numbers.add(f"{phase}/L{L}/fused_over_explicit", ratios[phase][L])
            matrix = args.batch * args.heads * L * L * elem / MIB
            print(
                f"{phase:<17} {L:>5} {span['fused']:>24} {span['explicit']:>24} {ratios[phase][L]:>10.3f} "
                f"{res['mem']['fused'] / MIB:>10.1f} {res['mem']['explicit'] / MIB:>10.1f} {matrix:>10.1f}"
            )

    for phase in phases:
        if len(lengths) > 1:
            for path in PATHS:
                k = slope(lengths, [results[phase][L]["mem"][path] for L in lengths])
                numbers.add(f"{phase}/{path}_memory_exponent", k)
                print(
                    f"{phase}: {path} peak memory grows ~ L^{k:.2f} ({growth_word(k)}) over L {lengths[0]}..{lengths[-1]}"
                )
        faster = [L for L in lengths if ratios[phase][L] < 1.0]
        # Crossover: the shortest length from which the fused path is faster at every longer one.
        cross = next(
            (L for i, L in enumerate(lengths) if all(ratios[phase][M] < 1.0 for M in lengths[i:])), None
        )
        if cross == lengths[0]:
            where = f"fused is faster at every length tested ({lengths[0]}..{lengths[-1]})"
        elif cross is not None:
            where = f"fused becomes faster at L = {cross} (slower or equal below)"
        else:
            where = f"no crossover: fused is faster only at {faster}" if faster else "fused is never faster"
        print(f"{phase}: {where}")

    top = lengths[-1]
    for phase in phases:
        mem = results[phase][top]["mem"]
        tag = "forward" if phase == "forward" else "backward"
        numbers.ratio(f"bench_attention_{tag}_memory", mem["fused"] / max(mem["explicit"], 1))
    if args.backward:
        numbers.ratio("bench_attention_backward", ratios["forward+backward"][top])
    numbers.ratio("bench_attention", ratios["forward"][top])
    numbers.write(args.json)


if __name__ == "__main__":
    main()
