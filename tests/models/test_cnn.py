"""CNN baselines: shapes, the MedMNIST small-input stem (against MedMNIST v2's ResNet-18
definition), timm parity, pretrained files, layer decay and class activation maps."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import adapt_input_conv
from torch import nn

from mmtrans.models import CNNEncoder, create_cnn_classifier
from mmtrans.models.cnn import resolve_small_input_stem
from mmtrans.optim import param_groups
from mmtrans.viz import class_activation_maps, class_evidence_map
from tasks.speed import apply_speed_options


@pytest.mark.parametrize("size,chans", [(28, 1), (28, 3), (224, 1), (224, 3)])
def test_shapes_grey_and_rgb(size: int, chans: int) -> None:
    model = create_cnn_classifier("resnet18", num_classes=5, img_size=size, in_chans=chans).eval()
    x = torch.randn(2, chans, size, size)
    with torch.no_grad():
        tokens = model.forward_features(x)
        logits = model(x)
    grid = 4 if size == 28 else 7  # 28 px: small stem (/8); 224 px: standard stem (/32)
    assert tokens.shape == (2, grid * grid, 512) and logits.shape == (2, 5)
    enc = model.encoder
    assert (enc.num_features, enc.embed_dim, enc.num_prefix_tokens, enc.global_pool) == (512, 512, 0, "avg")
    assert enc.use_fc_norm is False and enc.in_chans == chans


def test_small_stem_on_off_and_auto() -> None:
    assert resolve_small_input_stem("auto", 28) and resolve_small_input_stem("auto", 64)
    assert not resolve_small_input_stem("auto", 65) and not resolve_small_input_stem("auto", 224)
    small = CNNEncoder("resnet18", 1, 224, small_input_stem=True).trunk
    assert (small.conv1.kernel_size, small.conv1.stride, small.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert small.conv1.bias is None and isinstance(small.maxpool, nn.Identity)
    standard = CNNEncoder("resnet18", 1, 28, small_input_stem=False).trunk
    assert (standard.conv1.kernel_size, standard.conv1.stride) == ((7, 7), (2, 2))
    assert isinstance(standard.maxpool, nn.MaxPool2d)
    assert CNNEncoder("resnet18", 1, 28, small_input_stem=False)(torch.randn(2, 1, 28, 28)).shape == (2, 1, 512)
    with pytest.raises(ValueError, match="small_input_stem"):
        CNNEncoder("resnet18", 1, 28, small_input_stem="yes")
    with pytest.raises(ValueError, match="not a timm model"):
        CNNEncoder("resnet_nope", 1, 28)


# MedMNIST v2's ResNet-18 (MedMNIST/experiments, MedMNIST2D/models.py, from kuangliu's CIFAR
# ResNet), written out again here as the reference: 3x3 stride-1 stem, no max-pool.
class _RefBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class _MedMNISTResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths, cin = (64, 128, 256, 512), 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(_RefBlock(cin, w, stride), _RefBlock(w, w, 1)))
            cin = w
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def _randomize_bn(model: nn.Module) -> None:
    # Non-trivial running statistics, so eval-mode BN is part of what is compared.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_small_stem_is_medmnist_resnet18() -> None:
    torch.manual_seed(0)
    ref = _MedMNISTResNet18(in_channels=1, num_classes=3)
    _randomize_bn(ref)
    ref.eval()
    ours = create_cnn_classifier("resnet18", num_classes=3, img_size=28, in_chans=1).eval()
    sd = {}
    for k, v in ref.state_dict().items():
        if k.startswith("linear."):
            sd["head.fc." + k[len("linear."):]] = v
        else:
            sd["encoder.trunk." + k.replace("shortcut.", "downsample.")] = v
    ours.load_state_dict(sd, strict=True)  # same parameters, no more, no fewer
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_timm_parity_standard_stem() -> None:
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False, num_classes=7)
    _randomize_bn(ref)
    ref.eval()
    ours = create_cnn_classifier("resnet18", 7, img_size=224, in_chans=3, small_input_stem=False).eval()
    sd = {("head." if k.startswith("fc.") else "encoder.trunk.") + k: v for k, v in ref.state_dict().items()}
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() < 1e-5
        pooled = ours.head(ours.forward_features(x), pre_logits=True)
        assert (pooled - ref.forward_head(ref.forward_features(x), pre_logits=True)).abs().max().item() < 1e-5


def test_pretrained_file_grey_and_small_stem(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(src.state_dict(), path)
    grey = CNNEncoder("resnet18", in_chans=1, img_size=224, small_input_stem=False, pretrained=str(path))
    # timm's RGB -> grey adaptation of conv1, the rest as saved; ImageNet normalisation.
    torch.testing.assert_close(grey.trunk.conv1.weight, adapt_input_conv(1, src.conv1.weight))
    torch.testing.assert_close(grey.trunk.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    assert grey.pretrained_cfg["mean"] == (0.485, 0.456, 0.406) and grey.pretrained_cfg["source"] == str(path)
    assert CNNEncoder("resnet18", 1, 28).pretrained_cfg["mean"] == (0.5, 0.5, 0.5)  # random init
    small = CNNEncoder("resnet18", in_chans=3, img_size=28, pretrained=str(path))  # conv1 7x7 does not fit
    assert small.trunk.conv1.weight.shape == (64, 3, 3, 3)
    torch.testing.assert_close(small.trunk.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    with pytest.raises(ValueError, match="missing keys"):  # another architecture: named keys, not a crash
        CNNEncoder("resnet50", 3, 224, pretrained=str(path))


def test_layer_ids_and_layer_decay_groups() -> None:
    model = create_cnn_classifier("resnet18", 4, img_size=28, in_chans=1)
    assert model.num_layers == 5
    ids = {n: model.layer_id(n) for n, _ in model.named_parameters()}
    assert ids["encoder.trunk.conv1.weight"] == ids["encoder.trunk.bn1.bias"] == 0
    assert ids["encoder.trunk.layer1.0.conv1.weight"] == 1 and ids["encoder.trunk.layer4.1.bn2.weight"] == 4
    assert ids["head.fc.weight"] == 5
    groups = param_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    scales = {g["lr_scale"] for g in groups}
    assert scales == {0.5 ** k for k in range(6)}
    # BN weights and biases: no weight decay; conv kernels: decay.
    bn = model.encoder.trunk.bn1.weight
    assert all(g["weight_decay"] == 0.0 for g in groups if any(p is bn for p in g["params"]))


def test_class_activation_maps() -> None:
    torch.manual_seed(0)
    model = create_cnn_classifier("resnet18", 3, img_size=28, in_chans=1)
    with torch.no_grad():
        model.head.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    model.train()
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    evidence, classes = class_evidence_map(model, x)
    with torch.no_grad():
        logits = model(x)
    # The CAM's defining property: position contributions average (plus bias) to the logit.
    assert torch.equal(classes, logits.argmax(-1)) and evidence.shape == (2, 4, 4)
    expected = logits.gather(1, classes[:, None])[:, 0]
    torch.testing.assert_close(evidence.mean((-2, -1)) + model.head.fc.bias[classes], expected, atol=1e-5, rtol=1e-5)
    model.train()
    maps = class_activation_maps(model, x, class_idx=torch.tensor([0, 2]))
    assert model.training and model.encoder.trunk.bn1.training  # modes restored
    assert maps.shape == (2, 28, 28) and (maps >= 0).all()
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(2))
    # Where the evidence is highest, the map is highest (bilinear upsampling keeps the argmax cell).
    evidence, _ = class_evidence_map(model.eval(), x, torch.tensor([0, 2]))
    for i in range(2):
        r, c = divmod(int(evidence[i].argmax()), 4)
        assert maps[i, 7 * r:7 * r + 7, 7 * c:7 * c + 7].max() == maps[i].max()
    with pytest.raises(ValueError, match="CNN encoder"):
        from mmtrans.models import create_image_classifier

        class_activation_maps(create_image_classifier("vit_tiny", 2, img_size=32, depth=1), torch.randn(1, 3, 32, 32))


def test_speed_options_keep_outputs_and_grads() -> None:
    torch.manual_seed(0)
    model = create_cnn_classifier("resnet18", 3, img_size=28, in_chans=1).train()
    x = torch.randn(4, 1, 28, 28)

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = model(x).logsumexp(-1).mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads()
    apply_speed_options(model, channels_last=True, grad_checkpointing=True)
    assert model.encoder.grad_checkpointing and model.encoder.trunk.conv1.weight.is_contiguous(
        memory_format=torch.channels_last)
    loss2, grads2 = loss_and_grads()
    torch.testing.assert_close(loss2, loss, atol=1e-5, rtol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(grads, grads2))
