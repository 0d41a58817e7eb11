"""Our TextDecoder vs transformers' GPT2LMHeadModel with identical weights: greedy generation speed.

    python benchmarks/bench_decoder.py          # reduced GPT-2 (see below), CPU, < 60 s on 2 cores
    python benchmarks/bench_decoder.py --full   # the issue's sizes: GPT-2 small, 128 new tokens
    python benchmarks/bench_decoder.py --full --device cuda --repeats 10

Random GPT-2 weights (seeded) are converted into our decoder with ``convert_gpt2`` (cross-
attention off); the logits of both are compared first. Then both generate greedily from the
same prompt (BOS + ``--prompt`` random tokens) with the KV cache on: ours with
``mmtrans.generation.greedy_search``, Hugging Face with ``model.generate(do_sample=False,
use_cache=True)``. EOS is banned for all ``--new-tokens`` steps on both sides
(``min_new_tokens = max_new_tokens``), so the work is fixed, and the generated tokens must be
equal. A run is one whole generate call (prompt prefill + the cached steps); tokens/s counts
generated tokens of all rows. Our uncached greedy (``use_cache=False``: the whole prefix
again at every step) runs at batch 1 in the same interleaved loop, for the cache speed-up.

Default size: GPT-2 small (12 layers, 768 wide, 12 heads, 50257 tokens) generates ~20
tokens/s at batch 1 on the 2-core CPU (one thread; ~6.5 s per 128-token generation, ~67 s for
the uncached one), so the issue's sizes take well over ten minutes at 5 repeats. The default
is a reduced GPT-2 (4 layers, 192 wide, 3 heads: the captioner_tiny decoder's size, and 8192
tokens) at the issue's lengths (prompt 32, 128 new tokens): ~46 s. ``--full`` sets the
issue's exact sizes (GPT-2 small). Single flags (``--layers --width --heads --vocab --prompt
--new-tokens``) override either. The cache speed-up grows with the model: at the default
size a cached step is mostly per-op overhead and recomputing the prefix costs only ~5x;
at GPT-2 small it was 10.4x (``--full --batches 1 --repeats 1``, one run).

One thread by default: the decode steps are too small to split, and on a shared 2-core
machine a second thread makes every op wait for a busy core (4x slower per token measured
while another job ran). Use ``--threads 2`` on an idle machine.

Both are timed in the same process, interleaved (the order reversed every other repeat),
after warm-up (the first, checked run of each); each figure is the median of --repeats runs
with min-max beside it. Prints a table and ``RATIO`` lines, the headline (our/HF tokens/s at
batch 1, higher is better) last.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in a checkout

from timing import Numbers, add_json_flag, interleaved, timed  # noqa: E402  (benchmarks/timing.py, beside this script)

from mmtrans.generation import greedy_search  # noqa: E402
from mmtrans.models import TextDecoder, convert_gpt2, decoder_kwargs_from_gpt2  # noqa: E402

REDUCED = dict(layers=4, width=192, heads=3, vocab=8192, prompt=32, new_tokens=128)
FULL = dict(layers=12, width=768, heads=12, vocab=50257, prompt=32, new_tokens=128)  # GPT-2 small


def build(args: argparse.Namespace, device: torch.device) -> tuple[TextDecoder, GPT2LMHeadModel]:
    eos = args.vocab - 1  # GPT-2's <|endoftext|> is the last id; it is BOS and EOS
    config = GPT2Config(
        vocab_size=args.vocab, n_layer=args.layers, n_embd=args.width, n_head=args.heads,
        bos_token_id=eos, eos_token_id=eos,
    )
    torch.manual_seed(0)
    ref = GPT2LMHeadModel(config).eval()
    ours = TextDecoder(**{**decoder_kwargs_from_gpt2(config), "cross_attention": False}).eval()
    ours.load_state_dict(convert_gpt2(ref.state_dict(), ours), strict=True)
    return ours.to(device), ref.to(device)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the issue's sizes: " + str(FULL))
    for name, value in REDUCED.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                            help=f"default {value} ({FULL[name]} with --full)")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    add_json_flag(parser)
    args = parser.parse_args()
    for name, value in (FULL if args.full else REDUCED).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()  # generate()'s advice on generation configs
    device = torch.device(args.device)
    ours, ref = build(args, device)
    eos = bos = args.vocab - 1
    n_new, batches = args.new_tokens, [int(b) for b in args.batches.split(",")]

    gen = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        x = torch.randint(0, args.vocab - 1, (2, args.prompt + 1), generator=gen).to(device)
        diff = (ours(x) - ref(x).logits).abs().max().item()

    def run_ours(prompt: torch.Tensor, use_cache: bool = True) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with torch.inference_mode():
                return greedy_search(ours, None, bos, eos, max_new_tokens=n_new, min_new_tokens=n_new,
                                     prompt=prompt, use_cache=use_cache)
        return run

    def run_hf(prompt: torch.Tensor) -> Callable[[], torch.Tensor]:
        ids = torch.cat([torch.full_like(prompt[:, :1], bos), prompt], dim=1)  # BOS + prompt, as ours

        def run() -> torch.Tensor:
            with torch.inference_mode():
                out = ref.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                                   min_new_tokens=n_new, do_sample=False, use_cache=True,
                                   pad_token_id=eos, eos_token_id=eos)
            return out[:, ids.shape[1]:]
        return run

    results: dict[int, dict[str, list[float]]] = {}
    for batch in batches:
        prompt = torch.randint(0, args.vocab - 1, (batch, args.prompt), generator=gen).to(device)
        fns = {"ours": run_ours(prompt), "hf": run_hf(prompt)}
        if batch == 1:
            fns["ours, no cache"] = run_ours(prompt, use_cache=False)
        # Same weights, greedy, no early stop: the same tokens, or the comparison is void.
        tokens = {who: fn() for who, fn in fns.items()}  # also the first warm-up run
        for who, t in tokens.items():
            if t.shape != (batch, n_new) or not torch.equal(t, tokens["ours"]):
                raise AssertionError(f"batch {batch}: {who} generated {tuple(t.shape)} tokens; expected "
                                     f"{(batch, n_new)}, equal to ours")
        for fn in fns.values():
            for _ in range(args.warmup - 1):
                fn()
        results[batch] = interleaved(fns, args.repeats, lambda who, fn: timed(fn, device))

    print(f"GPT-2 {args.layers} layers x {args.width} wide, {args.heads} heads, vocab {args.vocab}; greedy, "
          f"prompt {args.prompt} (+BOS), {n_new} new tokens, KV cache; {device}, {args.threads} threads, "
          f"transformers {transformers.__version__}; median of {args.repeats} (min-max); "
          f"max |logit diff| {diff:.1e}; generated tokens identical")
    print(f"{'batch':<16} {'ours tok/s':>22} {'HF tok/s':>22} {'ours/HF':>8}")
    numbers = Numbers()
    numbers.add("max_logit_diff", diff)
    ratios = {}

    def rate(batch: int, ts: list[float], who: str) -> tuple[float, str]:
        n = batch * n_new
        med = n / statistics.median(ts)
        numbers.spread(f"batch{batch}/{who}_tok_s", [n / t for t in ts])
        return med, f"{med:.1f} ({n / max(ts):.1f}-{n / min(ts):.1f})"

    for batch, times in results.items():
        (o, o_s), (h, h_s) = rate(batch, times["ours"], "ours"), rate(batch, times["hf"], "hf")
        ratios[batch] = o / h
        print(f"{batch:<16} {o_s:>22} {h_s:>22} {ratios[batch]:>8.3f}")
    speedup = None
    if 1 in results:
        (c, _), (u, u_s) = rate(1, results[1]["ours"], "ours"), rate(1, results[1]["ours, no cache"], "ours_no_cache")
        speedup = c / u
        print(f"{'1, ours no cache':<16} {u_s:>22} {'':>22} {'':>8}   cached/uncached {speedup:.2f}x")
    head = 1 if 1 in ratios else batches[0]  # the headline is batch 1 (the first batch if 1 is not run)
    for batch in batches:
        if batch != head:
            numbers.ratio(f"bench_decoder_batch{batch}", ratios[batch])
    if speedup is not None:
        numbers.ratio("bench_decoder_cache_speedup", speedup)
    numbers.ratio("bench_decoder", ratios[head])
    numbers.write(args.json)


if __name__ == "__main__":
    main()
