"""Pretrained weights from files (offline), timm names (online only), and bad checkpoints."""

import os
import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file

from mmtrans.models import create_encoder, create_image_classifier, read_state_dict

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture
def timm_tiny():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, **TINY).eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".bin"])
def test_local_timm_weights_file(tmp_path, timm_tiny, suffix):
    path = tmp_path / f"weights{suffix}"
    sd = {k: v.contiguous() for k, v in timm_tiny.state_dict().items()}
    save_file(sd, str(path)) if suffix == ".safetensors" else torch.save(sd, path)
    model = create_image_classifier(None, num_classes=5, pretrained=str(path), **TINY).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (model(x) - timm_tiny(x)).abs().max() < 1e-4
    assert model.encoder.pretrained_cfg["source"] == str(path)
    # fine-tuning on a new label set keeps the encoder, starts a fresh head
    other = create_image_classifier(None, num_classes=3, pretrained=str(path), **TINY)
    torch.testing.assert_close(other.encoder.pos_embed, model.encoder.pos_embed)


def test_own_checkpoint_roundtrip(tmp_path):
    model = create_image_classifier(None, num_classes=4, **TINY)
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    again = create_image_classifier(None, num_classes=4, pretrained=str(tmp_path / "m.safetensors"), **TINY)
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_shape_mismatch_names_key_and_file(tmp_path, timm_tiny):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in timm_tiny.state_dict().items()}, str(path))
    with pytest.raises(ValueError, match=r"w\.safetensors.*\n.*shape mismatch: encoder\.blocks\.0"):
        create_image_classifier(None, num_classes=5, pretrained=str(path), **{**TINY, "embed_dim": 64})


def test_missing_file_is_named():
    with pytest.raises(FileNotFoundError, match="/no/such/weights.safetensors"):
        create_encoder("vit_tiny", pretrained="/no/such/weights.safetensors")


def test_offline_hub_name_says_pass_a_local_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="model.pretrained=/path/to/model.safetensors"):
        create_encoder(None, pretrained="vit_tiny_patch16_224", img_size=32)


def test_unknown_name_and_preset():
    with pytest.raises(ValueError, match="neither a weights file nor a timm model name"):
        create_encoder(None, pretrained="not_a_model_xyz")
    with pytest.raises(ValueError, match="unknown ViT preset 'vit_huge_nope'.*vit_tiny"):
        create_encoder("vit_huge_nope")


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_pickle_with_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    evil = _Evil()
    evil.target = target
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"weight": evil}, f)
    with pytest.raises(ValueError, match="evil.pth.*refused"):
        read_state_dict(path)
    assert not target.exists()


def test_a_checkpoint_of_ours_gives_its_encoder_architecture(tmp_path) -> None:
    """model.pretrained / encoder_pretrained = an MAE (or any task) checkpoint: the unset
    architecture keys come from what it recorded, so its weights fit without repeating them."""
    import torch

    from mmtrans.models import create_vit
    from mmtrans.models.factory import encoder_kwargs

    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {"model": {
        "patch_size": 8, "depth": 2, "embed_dim": None, "stem": "conv", "stem_depth": 2}}}}, ckpt)
    kwargs = encoder_kwargs("vit_tiny", str(ckpt), {"img_size": 64, "patch_size": None, "depth": None, "stem_depth": None})
    assert (kwargs["patch_size"], kwargs["depth"], kwargs["stem"], kwargs["stem_depth"]) == (8, 2, "conv", 2)
    assert len(create_vit("vit_tiny", **kwargs).patch_embed.stem) == 3 * 3 * 2  # 3 stages x 2 convs x (conv, norm, act)
    assert create_vit("vit_tiny", img_size=64, stem="conv", stem_depth=None).patch_embed.stem[3].stride == (2, 2)  # null: 1
    with pytest.raises(ValueError, match=r"stem_depth=2; model.stem_depth=1"):
        encoder_kwargs("vit_tiny", str(ckpt), {"img_size": 64, "stem_depth": 1})
    assert encoder_kwargs("vit_tiny", str(ckpt), {"img_size": 64, "depth": 3})["depth"] == 3  # explicit wins
    assert encoder_kwargs("vit_tiny", None, {"img_size": 64, "patch_size": None})["patch_size"] == 8  # from the image
    # A different stem is refused by name, even where its keys would fit: at patch 2 the conv and
    # the pooled conv stem share parameter names and shapes.
    assert encoder_kwargs("vit_tiny", str(ckpt), {"img_size": 64, "stem": "conv"})["stem"] == "conv"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {"model": {"patch_size": 2, "stem": "conv"}}}}, ckpt)
    with pytest.raises(ValueError, match=r"stem='conv'.*model.stem='conv_pool'"):
        encoder_kwargs("vit_tiny", str(ckpt), {"img_size": 28, "stem": "conv_pool"})
    # A conv stem recorded before stem_depth existed (or left null) had one conv per stage: the
    # MedMNIST recipe's stem_depth=2 would not fit it, and is refused by name.
    assert encoder_kwargs("vit_tiny", str(ckpt), {"img_size": 28, "stem_depth": None})["stem_depth"] == 1
    with pytest.raises(ValueError, match=r"stem_depth=1; model.stem_depth=2"):
        encoder_kwargs("vit_tiny", str(ckpt), {"img_size": 28, "stem_depth": 2})
