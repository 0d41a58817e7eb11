"""Checks that need a CUDA device; skipped elsewhere (CI has none)."""

import pytest
import torch

from mmtrans.models import create_image_classifier
from mmtrans.nn import Attention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_timm_parity_on_gpu_fp32_and_bf16():
    import timm

    from mmtrans.models import convert_timm_vit

    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=10).cuda().eval()
    ours = create_image_classifier("vit_small", num_classes=10).cuda().eval()
    ours.load_state_dict(convert_timm_vit(ref.state_dict(), ours))
    x = torch.randn(4, 3, 224, 224, device="cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max() < 1e-4
        with torch.autocast("cuda", dtype=torch.bfloat16):
            a, b = ours(x).float(), ref(x).float()
    assert (a - b).abs().max() < 5e-2


def test_fused_attention_matches_explicit_on_gpu():
    torch.manual_seed(0)
    attn = Attention(64, 4, qkv_bias=True).cuda().eval()
    x = torch.randn(2, 197, 64, device="cuda")
    pad = torch.zeros(2, 197, dtype=torch.bool, device="cuda")
    pad[1, -10:] = True
    with torch.no_grad():
        for kw in ({}, {"is_causal": True}, {"key_padding_mask": pad}):
            out, _ = attn(x, return_attn=True, **kw)
            torch.testing.assert_close(attn(x, **kw), out, atol=2e-5, rtol=1e-4)


def test_bf16_mixed_training_step():
    import pytorch_lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from tasks.classification import ClassificationTask

    class Dicts(TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return {"image": x, "label": y, "id": str(i)}

    model = create_image_classifier(None, num_classes=4, img_size=32, patch_size=4, embed_dim=64, depth=2,
                                    num_heads=2)
    data = Dicts(torch.randn(64, 3, 32, 32), torch.randint(0, 4, (64,)))
    task = ClassificationTask(model, 4)
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(task, DataLoader(data, batch_size=16), DataLoader(data, batch_size=16))
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert all(g.get("fused") for g in trainer.optimizers[0].param_groups)


def test_grad_checkpointing_lowers_peak_memory_on_a_long_sequence():
    from tasks.speed import apply_speed_options

    model = create_image_classifier("vit_small", num_classes=10, img_size=512).cuda().train()
    x = torch.randn(4, 3, 512, 512, device="cuda")  # 1024 tokens per image

    def peak() -> int:
        torch.cuda.reset_peak_memory_stats()
        model(x).float().logsumexp(-1).mean().backward()
        model.zero_grad(set_to_none=True)
        return torch.cuda.max_memory_allocated()

    plain = peak()
    apply_speed_options(model, grad_checkpointing=True)
    assert peak() < 0.7 * plain
