import math

import pytest
import torch

from mmtrans.models import create_image_classifier
from mmtrans.optim import build_adamw, param_groups, warmup_cosine

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2)


def test_no_decay_for_biases_norms_and_tables():
    model = create_image_classifier(None, num_classes=4, **TINY)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in param_groups(model, 1e-3, 0.05):
        for p in g["params"]:
            n = names[id(p)]
            expect_decay = p.ndim > 1 and not n.endswith(("pos_embed", "cls_token"))
            assert (g["weight_decay"] > 0) == expect_decay, n


def test_layer_decay_orders_learning_rates():
    model = create_image_classifier(None, num_classes=4, **TINY)
    lr_of = {}
    for g in param_groups(model, 1.0, 0.05, layer_decay=0.5):
        for p in g["params"]:
            lr_of[id(p)] = g["lr"]
    lr = {n: lr_of[id(p)] for n, p in model.named_parameters()}
    assert lr["head.fc.weight"] == 1.0
    assert lr["encoder.blocks.2.mlp.fc1.weight"] == 0.5
    assert lr["encoder.blocks.0.mlp.fc1.weight"] == 0.125
    assert lr["encoder.patch_embed.proj.weight"] == 0.0625


def test_frozen_parameters_are_left_out():
    model = create_image_classifier(None, num_classes=4, **TINY)
    model.encoder.requires_grad_(False)
    opt = build_adamw(model, 1e-3)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(
        p.numel() for p in model.head.parameters())
    model.head.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_adamw(model, 1e-3)


def test_warmup_cosine_shape():
    f = [warmup_cosine(s, 10, 110, 0.1) for s in range(111)]
    assert f[0] < f[5] < f[9] <= 1.0
    assert math.isclose(f[10], 1.0) and math.isclose(f[110], 0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))


def test_adamw_steps():
    model = torch.nn.Linear(3, 2)
    opt = build_adamw(model, 0.1)
    model(torch.ones(1, 3)).sum().backward()
    before = model.weight.clone()
    opt.step()
    assert not torch.equal(before, model.weight)
