"""Training speed switches: gradient checkpointing changes nothing but memory, compile and
bf16 autocast run through train.py on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from mmtrans.models import ImageClassifier, TextDecoder, VisionTransformer, create_captioner
from tasks.speed import apply_speed_options
from train import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.embed_dim=32", "model.depth=2", "model.num_heads=2", "model.patch_size=8", "data.img_size=32",
        "data.batch_size=16", "data.num_train=32", "data.num_val=16", "data.num_test=16",
        "trainer.accelerator=cpu", "trainer.devices=1", "callbacks.progress_bar.refresh_rate=0",
        "trainer.fast_dev_run=true"]


def grads_after_backward(model: torch.nn.Module, loss_fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_grad_checkpointing_gives_the_same_loss_and_grads():
    torch.manual_seed(0)
    vit = ImageClassifier(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2), 5).train()
    x = torch.randn(4, 3, 32, 32)
    dec = TextDecoder(vocab_size=50, embed_dim=32, depth=3, num_heads=2, max_len=16, cross_attention=True).train()
    tokens, context = torch.randint(0, 50, (4, 12)), torch.randn(4, 6, 32)
    for model, loss_fn in ((vit, lambda: vit(x).logsumexp(-1).mean()),
                           (dec, lambda: dec(tokens, context).logsumexp(-1).mean())):
        loss, grads = grads_after_backward(model, loss_fn)
        apply_speed_options(model, grad_checkpointing=True)
        assert all(m.grad_checkpointing for m in model.modules() if hasattr(m, "set_grad_checkpointing"))
        loss_ckpt, grads_ckpt = grads_after_backward(model, loss_fn)
        assert torch.allclose(loss, loss_ckpt) and len(grads) == len(grads_ckpt)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, grads_ckpt))


def test_grad_checkpointing_reaches_encoder_and_decoder_of_a_captioner():
    model = create_captioner(encoder_preset="vit_tiny", vocab_size=40, img_size=32, patch_size=8, depth=1,
                             decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, max_len=8)
    apply_speed_options(model, grad_checkpointing=True)
    assert model.encoder.grad_checkpointing and model.decoder.grad_checkpointing
    with pytest.raises(ValueError, match="no checkpointable blocks"):
        apply_speed_options(torch.nn.Linear(2, 2), grad_checkpointing=True)


@pytest.mark.parametrize("overrides", [
    ["compile={backend: aot_eager}", "channels_last=true", "grad_checkpointing=true"],  # dynamo + AOT autograd
    ["trainer.precision=bf16-mixed"],  # bf16 autocast on the CPU
])
def test_switches_run_through_train(tmp_path: Path, overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, f"paths.output_dir={tmp_path}", *overrides])
    metrics, objects = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["test/loss"]))
    if cfg.compile:
        assert objects["model"]._compiled_call_impl is not None  # nn.Module.compile, in place
        assert all(not k.startswith("_orig_mod") for k in objects["model"].state_dict())
