"""The start-up config check: typos and wrong types fail naming the key (every shipped
config passing it is tested in test_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from tasks.config_check import check_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
def compose_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*overrides, "paths.output_dir=/tmp/unused"])


def test_key_that_is_no_argument_is_named_with_a_suggestion() -> None:
    # A YAML typo (simulated with `+`, which adds a key): Hydra accepts it, the check does not.
    with pytest.raises(ValueError, match=r"task.lrr: MedicalTask has no argument 'lrr'; did you mean 'lr'\?"):
        check_config(compose_cfg("task=medical", "+task.lrr=1e-3"))
    # Data set options sit at data.*: a typo is named with the right key and the valid ones.
    with pytest.raises(ValueError, match=r"data.num_trian: DataModule \(data set options: shapes_splits\) has no "
                                         r"argument 'num_trian'; did you mean 'num_train'\?; valid keys: .*num_val"):
        check_config(compose_cfg("+data.num_trian=5"))
    for data in ("data=medmnist", "task=captioning data=caption_table", "data=medical_csv", "data=imagefolder",
                 "data=cifar10"):
        check_config(compose_cfg(*data.split()))  # every declared key is an option of its reader


def test_wrong_types_are_named() -> None:
    with pytest.raises(ValueError) as info:
        check_config(compose_cfg("task.lr=abc", "trainer.max_epochs=1.5", "task.freeze_encoder=maybe"))
    message = str(info.value)
    assert "task.lr='abc': ClassificationTask(lr: float)" in message
    assert "trainer.max_epochs=1.5: Trainer(max_epochs: int | None)" in message
    assert "task.freeze_encoder='maybe'" in message
    check_config(compose_cfg("task.lr=1", "trainer.max_epochs=3"))  # an int where a float goes is fine


def test_misspelled_override_fails_at_composition() -> None:
    # Hydra's struct mode: an override of a key that does not exist names the key.
    with pytest.raises(ConfigCompositionException, match="task.lrr"):
        compose_cfg("task.lrr=1e-3")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["task=captioning", "model=resnet18"], r"task=captioning does not take model=resnet18\|resnet50 "
         r"\(mmtrans.models.create_cnn_classifier\): .* choose model=captioner_base or model=captioner_tiny$"),
        (["task=classification", "model=captioner_tiny"], r"task=classification does not take "
         r"model=captioner_base\|captioner_tiny .* choose model=image_classifier or model=resnet18 .*model=vit_tiny$"),
        (["task=pretrain", "model=vit_tiny"], r"task=pretrain does not take model=.*vit_tiny .*choose model=mae$"),
        (["task=medical", "model=mae"], r"task=medical does not take model=mae .*model=resnet18"),
        (["task=classification", "data=scenes"], r"task=classification needs data with labels; data=scenes .* "
         r"yields captions: choose data=cifar10 .*data=shapes"),
        (["task=captioning", "data=shapes"], r"task=captioning needs data with captions; data=shapes .*yields labels: "
         r"choose data=caption_table .*data=scenes or data=webdataset$"),
        (["task=medical", "data=coco"], r"task=medical needs data with labels; data=caption_table\|captions\|coco"),
        (["task=retrieval", "model=captioner_tiny"], r"task=retrieval does not take model=captioner_base\|captioner_tiny "
         r".* choose model=clip_tiny$"),
        (["task=classification", "model=clip_tiny"], r"task=classification does not take model=clip_tiny "
         r"\(mmtrans.models.create_clip\)"),
        (["task=retrieval", "data=shapes"], r"task=retrieval needs data with captions; data=shapes"),
        # No model group: the data is still checked (class names to prompt with).
        (["task=zeroshot", "data=scenes"], r"task=zeroshot needs data with labels; data=scenes .*yields captions"),
    ],
)
def test_preset_that_does_not_fit_the_task_is_named(overrides: list[str], message: str) -> None:
    # At compose time (check_config runs first in train.py), not as a bad keyword in the build.
    with pytest.raises(ValueError, match=message):
        check_config(compose_cfg(*overrides))


def test_presets_that_fit_pass_the_task_check() -> None:
    for overrides in (["task=medical", "model=resnet50"], ["task=pretrain", "data=scenes"],
                      ["task=pretrain", "data=medical_scans"], ["task=captioning", "data=coco"],
                      ["task=retrieval", "data=coco"], ["task=zeroshot", "data=medmnist"]):
        check_config(compose_cfg(*overrides))


def test_data_set_option_under_splits_is_refused() -> None:
    # data.num_train (the reader's shipped default) is passed at call time and would beat a
    # data.splits.num_train bound in the partial: the specialize files once set it there, ignored.
    with pytest.raises(ValueError, match=r"data.splits.num_train: data set options sit at data.\*: set "
                                         r"data.num_train instead"):
        check_config(compose_cfg("+data.splits.num_train=5"))
    assert compose_cfg().data.num_train == 20000  # conf/specialize/classification_vit_tiny_shapes.yaml
