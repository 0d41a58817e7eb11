"""GPU training speed and MFU: our ViT vs timm's, plus captioning decode tokens/s.

    python benchmarks/bench_gpu.py                         # ViT-B/16, 224 px, bf16, compile, batch 256, CUDA
    python benchmarks/bench_gpu.py --no-compile --batch 128
    python benchmarks/bench_gpu.py --device cpu --tiny      # smoke run anywhere (tested)

Training step = forward + backward + fused AdamW step under bf16 autocast, timed after
warm-up (and compilation), interleaved ours/timm, median of --repeats. MFU counts model
FLOPs analytically as nanoGPT does: per image 3 x (2 x matmul parameters x tokens +
4 x layers x tokens^2 x width) (forward + 2x for backward; the attention scores and their
weighted sum are the tokens^2 terms), divided by step time and the GPU's dense bf16 peak
(printed; --peak-tflops to override). Decode: greedy captions for a batch of 64 images with
the base captioner, generated tokens per second (fixed length: no early stop).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import Numbers, add_json_flag, timed  # noqa: E402  (benchmarks/timing.py, beside this script)

from mmtrans.generation import greedy_search  # noqa: E402
from mmtrans.models import (  # noqa: E402
    ImageClassifier,
    VisionTransformer,
    convert_timm_vit,
    create_captioner,
    vit_kwargs_from_timm,
)
from mmtrans.optim import build_adamw  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity), from the vendors' data sheets.
PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "4090": 165.0}


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override, "--peak-tflops"
    if device.type != "cuda":
        return None, "no GPU"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAKS.items():
        if key in name:
            return value, name
    return None, f"{name} (unknown peak: pass --peak-tflops)"


def vit_train_flops(model: VisionTransformer, tokens: int) -> float:
    """Model FLOPs of one training image: 3x forward (nanoGPT's accounting)."""
    matmul = sum(p.numel() for n, p in model.named_parameters() if p.ndim == 2 or "patch_embed.proj.weight" in n)
    width, depth = model.embed_dim, len(model.blocks)
    return 3.0 * (2.0 * matmul * tokens + 4.0 * depth * tokens**2 * width)


def time_steps(step, device: torch.device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        step()
    return [timed(step, device) for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="a 2-block, 64-wide ViT at 32 px: smoke test")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--decode-batch", type=int, default=64)
    parser.add_argument("--decode-tokens", type=int, default=32)
    add_json_flag(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    kw = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2} if args.tiny else {}
    ref = timm.create_model(args.model, pretrained=False, num_classes=1000, **kw)
    ours = ImageClassifier(VisionTransformer(**vit_kwargs_from_timm(ref)), num_classes=1000)
    ours.load_state_dict(convert_timm_vit(ref.state_dict(), ours), strict=True)
    models = {"ours": ours.to(device).train(), "timm": ref.to(device).train()}
    size = ours.encoder.patch_embed.img_size
    x = torch.randn(args.batch, 3, *size, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    dtype = torch.bfloat16

    def make_step(model: torch.nn.Module):
        opt = build_adamw(model, 1e-4)  # fused on CUDA
        fwd = model if args.no_compile or device.type != "cuda" else torch.compile(model)

        def step() -> None:
            with torch.autocast(device.type, dtype=dtype):
                loss = torch.nn.functional.cross_entropy(fwd(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    steps = {who: make_step(m) for who, m in models.items()}
    times: dict[str, list[float]] = {"ours": [], "timm": []}
    for step in steps.values():
        time_steps(step, device, args.warmup, 0)  # warm-up and compilation
    for r in range(args.repeats):
        for who in (["ours", "timm"] if r % 2 == 0 else ["timm", "ours"]):
            times[who] += time_steps(steps[who], device, 0, 1)

    tokens = ours.encoder.patch_embed.num_patches + ours.encoder.num_prefix_tokens
    flops = vit_train_flops(ours.encoder, tokens) * args.batch
    peak, peak_source = peak_tflops(device, args.peak_tflops)
    print(f"{args.model}{' (tiny)' if args.tiny else ''}, batch {args.batch}, {size[0]} px, {device}, "
          f"bf16 autocast, compile {'off' if args.no_compile or device.type != 'cuda' else 'on'}, "
          f"peak {peak or 'n/a'} TFLOP/s ({peak_source})")
    print(f"{'model':<6} {'step ms':>10} {'images/s':>10} {'TFLOP/s':>9} {'MFU':>7}")
    numbers = Numbers()
    speed = {}
    for who, t in times.items():
        med = statistics.median(t)
        speed[who] = args.batch / med
        achieved = flops / med / 1e12
        mfu = f"{100 * achieved / peak:.1f}%" if peak else "n/a"
        numbers.add(f"{who}_step_ms", med * 1e3)
        numbers.add(f"{who}_images_per_s", speed[who])
        numbers.add(f"{who}_tflops", achieved)
        numbers.add(f"{who}_mfu_percent", 100 * achieved / peak if peak else None)
        print(f"{who:<6} {med * 1e3:>10.1f} {speed[who]:>10.1f} {achieved:>9.2f} {mfu:>7}")

    # Decode: greedy captions with the base captioner (tiny with --tiny), fixed length.
    cap_kw = ({"encoder_preset": "vit_tiny", "img_size": 32, "patch_size": 8, "depth": 1, "decoder_embed_dim": 64,
               "decoder_depth": 2, "decoder_num_heads": 2} if args.tiny else
              {"encoder_preset": "vit_base", "img_size": 224, "patch_size": 16, "depth": 12, "decoder_embed_dim": 768,
               "decoder_depth": 6, "decoder_num_heads": 12})
    captioner = create_captioner(vocab_size=8000, max_len=args.decode_tokens + 2, **cap_kw).to(device).eval()
    images = torch.randn(args.decode_batch, 3, cap_kw["img_size"], cap_kw["img_size"], device=device)

    def decode() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            # eos_id -1 never matches: every row generates exactly decode_tokens tokens.
            greedy_search(captioner.decoder, captioner.encode(images), 1, -1, max_new_tokens=args.decode_tokens)

    dt = statistics.median(time_steps(decode, device, 1, 3))
    print(f"captioning greedy decode: batch {args.decode_batch}, {args.decode_tokens} tokens, "
          f"{args.decode_batch * args.decode_tokens / dt:.0f} tokens/s")
    numbers.add("decode_tokens_per_s", args.decode_batch * args.decode_tokens / dt)
    numbers.ratio("bench_gpu_mfu_ours", flops / statistics.median(times["ours"]) / 1e12 / peak if peak else None)
    numbers.ratio("bench_gpu", speed["ours"] / speed["timm"])
    numbers.write(args.json)


if __name__ == "__main__":
    main()
