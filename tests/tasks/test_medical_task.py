"""Label types in the classification task, class weights, the balanced sampler, and the
medical task's gathered predictions."""

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import Dataset

from mmtrans.data import Splits
from tasks.classification import ClassificationTask, balanced_class_weights
from tasks.datamodule import DataModule
from tasks.medical import MedicalTask, PredictionStore

MODEL_CFG = {
    "_target_": "mmtrans.models.create_image_classifier", "preset": None, "pretrained": None,
    "img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 1, "num_heads": 2, "in_chans": 1,
}


def make(label_type, num_classes, cls=ClassificationTask, **kw):
    outputs = 1 if label_type == "binary" else num_classes
    model = instantiate({**MODEL_CFG, "num_classes": outputs})
    return cls(model, num_classes, config={"model": MODEL_CFG}, label_type=label_type, **kw)


def test_balanced_weights_match_sklearn_and_pos_weight():
    y = np.array([0] * 70 + [1] * 20 + [2] * 10)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert balanced_class_weights(y, "multiclass", 3) == pytest.approx(expected.tolist())
    assert balanced_class_weights(y, "ordinal", 3) == pytest.approx(expected.tolist())
    assert balanced_class_weights(np.array([0] * 30 + [1] * 10), "binary", 2) == pytest.approx([3.0])
    multi = np.array([[1, 0], [0, 0], [1, 1], [0, 0]], dtype=np.float32)
    assert balanced_class_weights(multi, "multilabel", 2) == pytest.approx([1.0, 3.0])
    with pytest.raises(ValueError, match="classes \\[2\\] have no training samples"):
        balanced_class_weights(np.array([0, 1, 1]), "multiclass", 3)
    with pytest.raises(ValueError, match="never"):
        balanced_class_weights(np.zeros((3, 2)), "multilabel", 2)


@pytest.mark.parametrize("label_type", ["binary", "multiclass", "ordinal", "multilabel"])
def test_loss_and_probs_per_label_type(label_type):
    g = torch.Generator().manual_seed(0)
    k = 1 if label_type == "binary" else 3
    logits = torch.randn(8, k, generator=g)
    if label_type == "multilabel":
        target = torch.randint(0, 2, (8, 3), generator=g).float()
        weights = [1.0, 2.0, 0.5]
        ref = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(weights))
        probs = logits.sigmoid()
    elif label_type == "binary":
        target = torch.randint(0, 2, (8,), generator=g)
        weights = [2.5]
        ref = F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), pos_weight=torch.tensor(weights))
        probs = logits[:, 0].sigmoid()
    else:
        target = torch.randint(0, 3, (8,), generator=g)
        weights = [1.0, 2.0, 0.5]
        ref = F.cross_entropy(logits, target, weight=torch.tensor(weights))
        probs = logits.softmax(-1)
    task = make(label_type, 3 if label_type != "binary" else 2, class_weights=weights, label_smoothing=0.0)
    assert torch.allclose(task.loss(logits, target), ref)
    assert torch.allclose(task.probs(logits), probs)
    with pytest.raises(ValueError, match="class_weights"):
        make(label_type, 3 if label_type != "binary" else 2, class_weights=[1.0] * 5)


def test_unknown_label_type_and_medical_options():
    with pytest.raises(ValueError, match="task.label_type must be one of"):
        make("regression", 3)
    with pytest.raises(ValueError, match="task.threshold"):
        make("binary", 2, cls=MedicalTask, threshold=1.5)
    task = make("multilabel", 3, cls=MedicalTask, threshold=0.3, class_names=["Pleural effusion", "mass", "x"])
    assert task.hparams.threshold == 0.3 and task.hparams.label_type == "multilabel"
    assert task.metric_names == ["pleural_effusion", "mass", "x"]  # safe metric keys


def test_prediction_store_concatenates_batches():
    store = PredictionStore()
    store.update(torch.tensor([0.1, 0.9]), torch.tensor([0, 1]))
    store.update(torch.tensor([0.4]), torch.tensor([1]))
    probs, target = store.predictions()
    assert probs.tolist() == pytest.approx([0.1, 0.9, 0.4]) and target.tolist() == [0, 1, 1]
    store.reset()
    store.update(torch.tensor([0.5]), torch.tensor([0]))
    assert store.predictions()[0].tolist() == [0.5]  # one sample stays [N]


class Labelled(Dataset):
    def __init__(self, labels, transform=None):
        self.labels = np.asarray(labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": torch.zeros(1, 4, 4), "label": torch.as_tensor(self.labels[i]), "id": str(i)}


def labelled_splits(labels, train_transform=None, eval_transform=None):
    ds = Labelled(labels)
    return Splits(ds, ds, None, class_names=["a", "b"])


def test_weighted_sampler_balances_classes():
    torch.manual_seed(0)
    dm = DataModule(partial(labelled_splits, [0] * 900 + [1] * 100), batch_size=100, sampler="weighted")
    dm.setup("fit")
    drawn = torch.cat([b["label"] for b in dm.train_dataloader()])
    assert len(drawn) == 1000 and 0.4 < drawn.float().mean() < 0.6  # 0.1 without the sampler
    with pytest.raises(ValueError, match="data.sampler must be one of"):
        DataModule(partial(labelled_splits, [0, 1]), sampler="balanced")
    multi = DataModule(partial(labelled_splits, [[0, 1], [1, 0]]), batch_size=1, sampler="weighted")
    multi.setup("fit")
    with pytest.raises(ValueError, match="class_weights=balanced"):
        multi.train_dataloader()


def test_unknown_data_key_is_named():
    with pytest.raises(ValueError, match=r"data.pathh is not an option of this data set \(.*labelled_splits\)"):
        DataModule(partial(labelled_splits, [0, 1]), batch_size=1, pathh="x.npz")
