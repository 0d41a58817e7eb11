"""ClassificationTask on tiny tensors: losses, metrics, options and checkpoint rebuild."""

import pytest
import pytorch_lightning as L
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

from tasks.checkpoint import load_model
from tasks.classification import ClassificationTask

MODEL_CFG = {
    "_target_": "mmtrans.models.create_image_classifier", "preset": None, "num_classes": None, "pretrained": None,
    "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2,
}


class Toy(Dataset):
    """Class = texture (flat, horizontal stripes, vertical stripes, checkerboard) at a random
    brightness: visible in every patch, so a one-block ViT learns it in a few dozen steps."""

    def __init__(self, n=64, multilabel=False):
        g = torch.Generator().manual_seed(0)
        self.y = torch.randint(0, 4, (n,), generator=g)
        i, j = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
        textures = torch.stack([torch.zeros(16, 16), (i % 2).float(), (j % 2).float(), ((i + j) % 2).float()])
        level = torch.rand(n, 1, 1, 1, generator=g)
        self.x = level + textures[self.y][:, None].expand(-1, 3, -1, -1) * 0.5
        self.multilabel = multilabel

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        label = torch.nn.functional.one_hot(self.y[i], 4) if self.multilabel else self.y[i]
        return {"image": self.x[i], "label": label, "id": str(i)}


def make_task(**kw):
    model = instantiate({**MODEL_CFG, "num_classes": 4})
    return ClassificationTask(model, 4, class_names=list("abcd"), config={"model": MODEL_CFG}, **kw)


def fit(task, tmp_path, multilabel=False, **trainer_kw):
    dl = DataLoader(Toy(multilabel=multilabel), batch_size=16, shuffle=True)
    trainer = L.Trainer(accelerator="cpu", max_epochs=trainer_kw.pop("max_epochs", 1), logger=False,
                        enable_progress_bar=False, default_root_dir=tmp_path, **trainer_kw)
    trainer.fit(task, dl, dl)
    return trainer, dl


@pytest.mark.parametrize("kw", [
    {}, {"mixup": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}}, {"layer_decay": 0.75}, {"freeze_encoder": True},
])
def test_task_options_train(tmp_path, kw):
    task = make_task(**kw)
    before = {n: p.clone() for n, p in task.model.named_parameters()}
    trainer, dl = fit(task, tmp_path, limit_train_batches=3)
    changed = {n for n, p in task.model.named_parameters() if not torch.equal(before[n], p)}
    assert "head.fc.weight" in changed
    assert any(n.startswith("encoder.") for n in changed) != bool(kw.get("freeze_encoder"))
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_sam_runs_two_passes_per_optimizer_step_under_lightning(tmp_path):
    """task.sam_rho: Lightning's closure is called twice per step (gradient clipping on),
    the step count and the lr schedule stay per optimizer step, and the model learns."""
    L.seed_everything(0)
    task = make_task(sam_rho=0.05, lr=3e-3, warmup_epochs=0, min_lr_ratio=1.0, label_smoothing=0.0)
    calls = []
    step = task.training_step
    task.training_step = lambda *a, **k: calls.append(1) or step(*a, **k)
    trainer, dl = fit(task, tmp_path, max_epochs=12, gradient_clip_val=1.0)
    assert type(trainer.optimizers[0]).__name__ == "SAM"
    assert trainer.global_step == 12 * len(dl) and len(calls) == 2 * trainer.global_step
    assert trainer.callback_metrics["val/acc"] > 0.9


def test_learns_and_checkpoint_rebuilds_model_alone(tmp_path):
    L.seed_everything(0)
    task = make_task(lr=3e-3, warmup_epochs=0, min_lr_ratio=1.0, label_smoothing=0.0)
    trainer, dl = fit(task, tmp_path, max_epochs=20)
    assert trainer.callback_metrics["val/acc"] > 0.9
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    model, hp = load_model(path)  # weights_only=True inside
    assert hp["class_names"] == list("abcd")
    batch = next(iter(dl))
    with torch.no_grad():
        torch.testing.assert_close(model(batch["image"]), task.model.eval()(batch["image"]))
    (test,) = trainer.test(task, dl, verbose=False)
    assert test["test/acc"] > 0.9


def test_multilabel(tmp_path):
    task = make_task(label_type="multilabel")
    trainer, _ = fit(task, tmp_path, multilabel=True, limit_train_batches=2)
    assert "val/acc" in trainer.callback_metrics


def test_bad_arguments():
    with pytest.raises(ValueError, match="label_type"):
        make_task(label_type="ordinal_xyz")
    with pytest.raises(ValueError, match="class names"):
        ClassificationTask(instantiate({**MODEL_CFG, "num_classes": 4}), 4, class_names=["a"])
    with pytest.raises(ValueError, match=r"task.sam_rho must be > 0 .*got 0"):
        make_task(sam_rho=0)


def test_load_model_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_model(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("source", ["name", "weights file with timm's config.json"])
def test_classifier_with_a_timm_architecture_rebuilds_from_its_checkpoint(monkeypatch, tmp_path, source):
    """model.preset=null model.pretrained=<a timm ViT>: the architecture is timm's (here
    DINOv2 ViT-S/14 with 4 register tokens, which no preset has), from its name or from the
    config.json timm's hub ships beside the weights; the checkpoint's config records it, so
    load_model rebuilds the model without the source."""
    import json

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import mmtrans.models.factory as factory
    from mmtrans.data.preprocessing import Preprocessing
    from tasks.checkpoint import _build_model, checkpoint_config

    monkeypatch.setattr(factory, "load_pretrained", lambda model, source: model)  # weights are not the point
    name = "vit_small_patch14_reg4_dinov2"
    if source == "name":
        pretrained = name
    else:
        (tmp_path / "config.json").write_text(json.dumps({"architecture": name, "num_classes": 0}))
        pretrained = str(tmp_path / "model.safetensors")
    cfg = OmegaConf.create({"model": {
        "_target_": "mmtrans.models.create_image_classifier", "preset": None, "pretrained": pretrained,
        "num_classes": None, "img_size": 28, "patch_size": None, "embed_dim": None, "depth": None, "num_heads": None,
    }, "data": {"mean": None, "std": None}})
    model = instantiate(cfg.model, num_classes=3)
    assert model.encoder.embed_dim == 384 and len(model.encoder.blocks) == 12 and model.encoder.num_prefix_tokens == 5
    config = checkpoint_config(cfg, Preprocessing(28), model)
    assert config["model"]["reg_tokens"] == 4 and config["model"]["patch_size"] == 14
    (tmp_path / "config.json").unlink(missing_ok=True)  # the source is gone: the record suffices
    rebuilt = _build_model({"config": config, "num_classes": 3, "label_type": "multiclass"}, "run.ckpt")
    rebuilt.load_state_dict(model.state_dict())  # every key and shape fits


def test_mixup_mixes_binary_targets_and_refuses_multilabel():
    model = instantiate({**MODEL_CFG, "num_classes": 1})
    task = ClassificationTask(model, 2, label_type="binary", label_smoothing=0.0, config={"model": MODEL_CFG},
                              mixup={"mixup_alpha": 1.0, "prob": 1.0})
    seen = []
    task.loss = lambda logits, target: seen.append(target) or logits.sum() * 0  # the loss's targets
    task.log = lambda *a, **k: None
    torch.manual_seed(0)
    task.training_step({"image": torch.randn(8, 3, 16, 16), "label": torch.tensor([0, 1] * 4)}, 0)
    (target,) = seen
    assert target.shape == (8,) and target.is_floating_point()
    assert ((target > 0) & (target < 1)).any()  # mixed: soft positive-class targets, in [0, 1]
    assert ((target >= 0) & (target <= 1)).all()
    with pytest.raises(ValueError, match="task.mixup=.*multilabel"):
        ClassificationTask(instantiate({**MODEL_CFG, "num_classes": 3}), 3, label_type="multilabel",
                           config={"model": MODEL_CFG}, mixup={"mixup_alpha": 0.8})


class _MirrorMean(torch.nn.Module):
    """The reference for tta=hflip: a model whose logits are the mean over the image and its mirror."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return (self.model(x) + self.model(x.flip(-1))) / 2


@pytest.mark.parametrize("medical", [False, True])
def test_tta_hflip_averages_the_logits_of_each_image_and_its_mirror(tmp_path, medical):
    from tasks.medical import MedicalTask

    model = instantiate({**MODEL_CFG, "num_classes": 4})
    cls, extra = (MedicalTask, {"num_heatmaps": 0, "bootstrap_samples": 0}) if medical else (ClassificationTask, {})

    def validate(net, tta):
        task = cls(net, 4, class_names=list("abcd"), config={"model": MODEL_CFG}, tta=tta, **extra)
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
        out = trainer.validate(task, DataLoader(Toy(), batch_size=16), verbose=False)[0]
        preds = trainer.predict(task, DataLoader(Toy(), batch_size=16))
        return out, torch.cat(preds)

    tta, tta_preds = validate(model, "hflip")
    ref, ref_preds = validate(_MirrorMean(model), None)
    plain, plain_preds = validate(model, None)
    assert tta == pytest.approx(ref) and torch.allclose(tta_preds, ref_preds)
    assert tta["val/loss"] != pytest.approx(plain["val/loss"]) and not torch.allclose(tta_preds, plain_preds)
    with pytest.raises(ValueError, match="task.tta"):
        cls(model, 4, tta="vflip", **extra)
