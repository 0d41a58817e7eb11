"""The Hydra config tree: every option composes and resolves, targets exist, precedence holds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from tasks.config_check import check_config

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Groups picked on the command line; `specialize` is picked by interpolation (see config.yaml).
GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "specialize")
# Values a user must give for some options (`???` in the YAML).
REQUIRED = {
    "data.root": "/some/images",
    "data.annotations": "/some/captions.json",
    "data.format": "coco",
    "data.splits": {"_target_": "mmtrans.data.shapes.shapes_splits", "_partial_": True},
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def hydra_conf_dir():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield


def compose_cfg(*overrides: str) -> DictConfig:
    # paths.output_dir is ${hydra:runtime.output_dir}, which only a real run resolves.
    return compose("config", overrides=["paths.output_dir=/tmp/run", *overrides])


def targets(node: object) -> list[str]:
    if isinstance(node, DictConfig):
        found = [node["_target_"]] if "_target_" in node else []
        return found + [t for key in node for t in targets(node._get_node(key))]
    if isinstance(node, ListConfig):
        return [t for item in node for t in targets(item)]
    return []


# A model or data preset made for one task composes with that task (the others refuse it by name).
TASK_OF = {
    "model": {"captioner_tiny": "captioning", "captioner_base": "captioning", "mae": "pretrain", "clip_tiny": "retrieval"},
    "data": {n: "captioning" for n in ("scenes", "captions", "coco", "karpathy", "flickr8k", "caption_table")},
}


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_resolves(group: str, option: str) -> None:
    task = TASK_OF.get(group, {}).get(option)
    cfg = compose_cfg(f"{group}={option}", *([f"task={task}"] if task else []))
    missing = OmegaConf.missing_keys(cfg)
    assert missing <= set(REQUIRED), f"{group}={option} leaves {missing - set(REQUIRED)} unset"
    for key in sorted(missing, key=len):  # data.splits before data.format
        OmegaConf.update(cfg, key, REQUIRED[key], merge=True)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    for target in targets(cfg):
        assert callable(get_object(target)), target
    check_config(cfg)  # keys and simple types fit the constructors (what train.py checks first)


def test_specialize_files_name_an_existing_combination() -> None:
    # A typo in such a file name would silently never apply.
    combos = {f"{t}_{m}_{d}" for t in options("task") for m in options("model") for d in options("data")}
    for name in options("specialize"):
        assert name in combos, f"conf/specialize/{name}.yaml matches no task_model_data combination"


def test_default_run_is_the_small_classification_run() -> None:
    cfg = compose_cfg()
    assert cfg.task_name == "classification"
    assert cfg.task._target_ == "tasks.classification.ClassificationTask"
    assert cfg.model.preset == "vit_tiny"
    assert cfg.data.splits._target_ == "mmtrans.data.shapes.shapes_splits"
    # conf/specialize/classification_vit_tiny_shapes.yaml applies: 32x32 images, patch 8.
    assert "img_size" not in cfg.model and cfg.data.img_size == 32  # the model is built for the data
    assert cfg.model.patch_size == 8
    assert cfg.model.num_classes is None  # train.py takes it from the data


def test_command_line_choices_beat_the_task_overrides() -> None:
    cfg = compose_cfg("data=imagefolder", "data.root=/my/images", "model=vit_small")
    assert cfg.model.preset == "vit_small"
    assert cfg.data.splits._target_ == "mmtrans.data.image_folder.image_folder_splits"
    assert cfg.data.root == "/my/images"
    assert "img_size" not in cfg.model and cfg.data.img_size == 224
    # The 32x32 settings of the default pair do not leak into other choices.
    assert cfg.model.patch_size is None and cfg.model.depth is None  # the preset and the image size decide
    assert "num_train" not in cfg.data.splits


def test_command_line_values_beat_task_and_specialization() -> None:
    cfg = compose_cfg("model.patch_size=4", "trainer.max_epochs=2", "task.lr=0.01")
    assert (cfg.model.patch_size, cfg.trainer.max_epochs, cfg.task.lr) == (4, 2, 0.01)


def test_experiment_and_debug_override_the_task() -> None:
    cfg = compose_cfg("experiment=finetune", "data.root=/my/images", "model=vit_small")
    assert cfg.model.pretrained == "vit_small_patch16_224.augreg_in21k_ft_in1k"
    assert cfg.task.layer_decay == 0.75
    cfg = compose_cfg("debug=fast")
    assert cfg.trainer.fast_dev_run is True
    assert not cfg.callbacks and not cfg.logger


def test_checkpoint_monitors_the_optimized_metric() -> None:
    cfg = compose_cfg("optimized_metric=val/acc_top5")
    assert cfg.callbacks.model_checkpoint.monitor == "val/acc_top5"


def test_misspelled_key_is_an_error() -> None:
    with pytest.raises(ConfigCompositionException, match="max_epoch"):
        compose_cfg("trainer.max_epoch=3")


def test_misspelled_option_is_an_error() -> None:
    with pytest.raises(MissingConfigException, match="vit_tinny"):
        compose_cfg("model=vit_tinny")
