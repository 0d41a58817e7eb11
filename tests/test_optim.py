import math

import pytest
import torch

from mmtrans.models import create_image_classifier
from mmtrans.optim import SAM, build_adamw, param_groups, warmup_cosine

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


def test_sam_steps_with_the_gradient_at_the_perturbed_weights():
    """One SAM step equals, by hand: g at w, w' = w + rho g/||g||, the base step at w with
    the gradient at w' (Foret et al. 2021, eq. 3)."""
    torch.manual_seed(0)
    model, x, y = torch.nn.Linear(4, 2), torch.randn(8, 4), torch.randn(8, 2)
    w0 = [p.detach().clone() for p in model.parameters()]
    sam = SAM(torch.optim.SGD(model.parameters(), lr=0.1), rho=0.05)

    def closure():
        sam.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    loss = sam.step(closure)
    w = [t.clone().requires_grad_() for t in w0]
    g = torch.autograd.grad(((x @ w[0].T + w[1] - y) ** 2).mean(), w)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    wp = [(wi + 0.05 * gi / norm).detach().requires_grad_() for wi, gi in zip(w, g)]
    gp = torch.autograd.grad(((x @ wp[0].T + wp[1] - y) ** 2).mean(), wp)
    for p, wi, gi in zip(model.parameters(), w0, gp):
        torch.testing.assert_close(p.detach(), wi - 0.1 * gi)
    torch.testing.assert_close(loss, ((x @ w0[0].T + w0[1] - y) ** 2).mean())  # the loss at w


def test_sam_shares_groups_and_state_with_its_base():
    model = create_image_classifier(None, num_classes=4, **TINY)
    base = build_adamw(model, 1e-3)
    sam = SAM(base, rho=0.1)
    assert all(a is b for a, b in zip(sam.param_groups, base.param_groups))  # lr schedules reach the base
    x = torch.randn(2, 3, 32, 32)

    def closure():
        sam.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        return loss

    sam.step(closure)
    state = sam.state_dict()
    assert state["state"] and "exp_avg" in next(iter(state["state"].values()))  # Adam's moments, saved
    again = SAM(build_adamw(model, 1e-3), rho=0.1)
    again.load_state_dict(state)
    assert all(a is b for a, b in zip(again.param_groups, again.base.param_groups))
    torch.testing.assert_close(again.base.state_dict()["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
    with pytest.raises(ValueError, match="closure"):
        sam.step()
    with pytest.raises(ValueError, match="rho must be > 0"):
        SAM(base, rho=0.0)
