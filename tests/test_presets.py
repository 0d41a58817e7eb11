"""The preset matrix: every file of the preset groups (conf/<group>/*.yaml), run through train()
with every task it applies to at tiny sizes, or, where this machine cannot run it (a GPU, a
cluster, a download), composed with its key settings asserted. The table below says how each
preset is tested; a preset file it does not list fails `test_table_covers_every_preset`."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tasks.config_check import check_config
from tests import fixture_data
from train import train

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
GROUPS = ("experiment", "debug", "logger", "callbacks", "model", "data", "trainer", "hparams_search", "cluster")
# task=zeroshot is not in the matrix: it evaluates a checkpoint (tests/test_retrieval_run.py and the
# documented commands run it on one made by task=retrieval).
TASKS = ("classification", "medical", "captioning", "pretrain", "retrieval")
DEFAULT_MODEL = {"classification": "vit_tiny", "medical": "vit_tiny", "captioning": "captioner_tiny", "pretrain": "mae",
                 "retrieval": "clip_tiny"}
DEFAULT_DATA = {"classification": "shapes", "medical": "medical_scans", "captioning": "scenes", "pretrain": "shapes",
                "retrieval": "scenes"}

ENCODER = ["model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.patch_size=8"]
DECODER = ["model.decoder_embed_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2"]
MODEL_TINY = {
    **{m: ENCODER for m in ("vit_tiny", "vit_small", "vit_base")},
    "image_classifier": [*ENCODER, "model.preset=vit_tiny"],  # preset null needs timm weights to name one
    "resnet18": [], "resnet50": [],
    "captioner_tiny": [*ENCODER, *DECODER], "captioner_base": [*ENCODER, *DECODER],
    "mae": [*ENCODER, *DECODER],
    "clip_tiny": [*ENCODER, "model.text_embed_dim=32", "model.text_depth=1", "model.text_num_heads=2",
                  "model.joint_dim=16"],
}
TASK_TINY = {
    "classification": [],
    "medical": ["task.bootstrap_samples=10", "task.num_heatmaps=2"],
    "captioning": ["task.tokenizer.vocab_size=120", "task.generation.max_new_tokens=4", "task.generation.num_beams=1",
                   "task.num_logged_samples=2"],
    "pretrain": ["task.num_samples=2"],
    "retrieval": ["task.tokenizer.vocab_size=120", "task.captions_per_image=2"],
}
PROCEDURAL = ["data.num_train=16", "data.num_val=8", "data.num_test=8"]
RUN = ["data.img_size=32", "data.batch_size=4", "data.num_workers=0", "trainer.accelerator=cpu", "trainer.devices=1"]
FAST = ["trainer.fast_dev_run=true"]
# A short real fit (checkpoints, loggers, early stopping and EMA act; fast_dev_run turns them off).
LIMIT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1"]


@dataclass
class Run:
    """Run `group=option` through train() with each of `tasks` (tiny model and data)."""

    tasks: tuple[str, ...]
    extra: list[str] = field(default_factory=list)
    mode: list[str] = field(default_factory=lambda: FAST)
    model: str | None = None  # chosen by the preset itself (experiments), for the tiny overrides
    data: str | None = None
    expect: dict[str, Any] = field(default_factory=dict)  # key settings of the composed preset
    check: Callable[[dict, dict, Path], None] | None = None
    needs: str | None = None  # an optional package; without it the preset is composed only


@dataclass
class Compose:
    """Composed and checked only, for the reason given; `expect`: key -> value in the config."""

    reason: str
    expect: dict[str, Any]
    extra: list[str] = field(default_factory=list)
    hydra: bool = False  # the settings are under hydra.* (launcher, sweeper)


def _files(pattern: str) -> Callable[[dict, dict, Path], None]:
    def check(metrics: dict, objects: dict, run_dir: Path) -> None:
        assert list(run_dir.glob(pattern)), f"no {pattern} in {run_dir}"
    return check


def _callback(name: str) -> Callable[[dict, dict, Path], None]:
    def check(metrics: dict, objects: dict, run_dir: Path) -> None:
        assert name in {type(cb).__name__ for cb in objects["trainer"].callbacks}
    return check


def _best_ckpt(metrics: dict, objects: dict, run_dir: Path) -> None:
    assert metrics["best_ckpt"] and Path(metrics["best_ckpt"]).is_file()


ALL = TASKS
CAPTIONS = ("captioning", "pretrain")
PRESETS: dict[str, Run | Compose] = {
    # experiment: each picks task, model and data; weights are a timm download, so null here.
    "experiment=finetune": Run(
        ("classification",), ["model.pretrained=null"], model="vit_tiny", data="imagefolder",
        expect={"data.splits._target_": "mmtrans.data.image_folder.image_folder_splits", "task.layer_decay": 0.75,
                "model.pretrained": "vit_tiny_patch16_224.augreg_in21k_ft_in1k"}),
    "experiment=captioning_coco": Run(
        ("captioning",), ["model.encoder_pretrained=null", "trainer.precision=32-true", "task.max_len=16"],
        model="captioner_base", data="coco",
        expect={"trainer.accelerator": "gpu", "trainer.precision": "bf16-mixed", "model.encoder_preset": "vit_base",
                "model.encoder_pretrained": "vit_base_patch16_224.augreg_in21k_ft_in1k",
                "data.format": "coco", "data.img_size": 224}),
    "experiment=medmnist": Run(
        ("medical",), ["model.patch_size=4", "data.img_size=null"], model="vit_small", data="medmnist",
        expect={"task._target_": "tasks.medical.MedicalTask", "model.preset": "vit_small", "model.stem": "conv",
                "model.patch_size": None, "data.name": None, "trainer.max_epochs": 100}),
    # debug: every task.
    "debug=fast": Run(ALL, mode=[], expect={"trainer.fast_dev_run": True}),
    # debug=limit's short fit with the other tasks: every LIMIT run below (callbacks=ema, ...).
    "debug=limit": Run(("classification", "captioning"), mode=[], expect={"trainer.limit_train_batches": 5},
                       check=_best_ckpt),
    # One overfit batch, one epoch with its validation (the preset's 50 epochs are for people).
    "debug=overfit": Run(ALL, ["trainer.max_epochs=1", "trainer.overfit_batches=1", "trainer.check_val_every_n_epoch=1"],
                         mode=[], expect={"trainer.overfit_batches": 4}),
    "debug=profile": Run(("classification",), mode=[], expect={"trainer.profiler._target_": "pytorch_lightning.profilers.SimpleProfiler"},
                         check=_files("*profile*")),
    # logger: a short fit (fast_dev_run would swap the loggers for a dummy). csv is the default
    # logger of every LIMIT run here; tensorboard logs each task's hyperparameters: every task.
    "logger=csv": Run(("classification",), mode=LIMIT, check=_files("csv/metrics.csv")),
    "logger=tensorboard": Run(ALL, mode=LIMIT, check=_files("tensorboard/events.out.tfevents.*")),
    "logger=many_loggers": Run(("classification",), mode=LIMIT, check=_files("tensorboard/events.out.tfevents.*")),
    "logger=none": Run(("classification",), mode=LIMIT, expect={"logger": None}),
    "logger=wandb": Run(("classification",), mode=LIMIT, needs="wandb", expect={"logger.wandb.offline": True}),
    "logger=mlflow": Run(("classification",), mode=LIMIT, needs="mlflow",
                         expect={"logger.mlflow._target_": "pytorch_lightning.loggers.MLFlowLogger"}),
    # callbacks: a short fit; the ones that follow the optimized metric or the model with every task
    # (the default ones, nan_guard included, act in every LIMIT run of the other groups).
    "callbacks=default": Run(("classification",), mode=LIMIT, check=_best_ckpt),
    "callbacks=early_stopping": Run(ALL, mode=LIMIT, check=_callback("EarlyStopping")),
    "callbacks=ema": Run(ALL, mode=LIMIT, check=_callback("WeightEMA")),
    "callbacks=model_checkpoint": Run(("medical",), mode=LIMIT, check=_best_ckpt),
    "callbacks=lr_monitor": Run(("classification",), mode=LIMIT, check=_callback("LearningRateMonitor")),
    "callbacks=nan_guard": Run(("captioning",), mode=LIMIT, check=_callback("NanGuard")),
    "callbacks=progress_bar": Run(("classification",), mode=LIMIT, check=_callback("TQDMProgressBar")),
    "callbacks=rich": Run(("classification",), mode=LIMIT, check=_callback("RichProgressBar")),
    "callbacks=rng_state": Run(("classification",), mode=LIMIT, check=_callback("RNGStateCallback")),
    "callbacks=loader_check": Run(("classification",), mode=LIMIT, check=_callback("LoaderCheck")),
    "callbacks=none": Run(("classification",), mode=LIMIT, expect={"callbacks": None}),
    # model: with the tasks that build it (the others refuse it: tests/test_config_check.py). At
    # tiny sizes vit_small/vit_base/image_classifier build what vit_tiny does (medical: vit_tiny's
    # runs); resnet50 is resnet18.yaml with another name (resnet18 runs both tasks), at 16 px.
    "model=vit_tiny": Run(("classification", "medical")),
    "model=vit_small": Run(("classification",), expect={"model.preset": "vit_small"}),
    "model=vit_base": Run(("classification",), expect={"model.preset": "vit_base"}),
    "model=image_classifier": Run(("medical",), expect={"model.preset": None}),
    "model=resnet18": Run(("classification", "medical"), ["data.img_size=24"]),  # scans are >= 24 px
    "model=resnet50": Run(("classification",), ["data.img_size=16"], expect={"model.name": "resnet50"}),
    "model=captioner_tiny": Run(("captioning",)),
    "model=captioner_base": Run(("captioning",), expect={"model.encoder_preset": "vit_base", "model.decoder_depth": 6}),
    "model=mae": Run(("pretrain",)),
    "model=clip_tiny": Run(("retrieval",), mode=LIMIT, check=_files("retrieval.json"),  # the test's top-k report
                           expect={"model._target_": "mmtrans.models.create_clip", "model.image_pool": "attn"}),
    # data: with every task that takes it (labels: classifiers; captions: captioning, retrieval
    # on the scenes (its default, every run with it above) and on a caption table; pretrain:
    # any, here on captions: on shapes (its default) model=mae runs it, on medical_scans, medmnist
    # and imagefolder conf/task/pretrain.yaml's documented commands do (test_documented_commands.py)).
    "data=shapes": Run(("classification", "medical")), "data=medical_scans": Run(("classification", "medical")),
    "data=imagefolder": Run(("classification", "medical")), "data=medmnist": Run(("classification", "medical")),
    "data=medical_csv": Run(("classification", "medical")),
    "data=scenes": Run(CAPTIONS), "data=coco": Run(CAPTIONS), "data=karpathy": Run(("captioning",)),
    "data=flickr8k": Run(("captioning",)), "data=caption_table": Run(("captioning", "retrieval")),
    "data=captions": Run(("captioning",)),
    "data=datamodule": Run(("classification",), expect={"data.splits": "???"}),  # the base: given a reader
    "data=cifar10": Compose("needs CIFAR-10's files in data/cifar (data.download=true fetches them: no network "
                            "here; torchvision checks their md5, so no fixture)",
                            {"data.splits._target_": "mmtrans.data.cifar.cifar_splits", "data.name": "cifar10",
                             "data.download": False, "data.img_size": 32}),
    "data=cifar100": Compose("as data=cifar10", {"data.name": "cifar100", "data.download": False}),
    "data=webdataset": Compose("needs shards written by mmtrans-shards: tests/data/test_shards.py writes them and "
                               "trains classification and captioning on them",
                               {"data.splits._target_": "mmtrans.data.shards.webdataset_splits"}),
    # trainer
    "trainer=default": Run(("classification",), expect={"trainer.accelerator": "auto", "trainer.devices": "auto"}),
    "trainer=cpu": Run(("medical",), expect={"trainer.accelerator": "cpu", "trainer.devices": 1}),
    "trainer=ddp_cpu": Compose("two processes through the command line: run by tests/test_ddp.py",
                               {"trainer.accelerator": "cpu", "trainer.devices": 2, "trainer.strategy": "ddp"}),
    "trainer=gpu": Compose("needs a GPU (tests/test_gpu.py runs it where there is one)",
                           {"trainer.accelerator": "gpu", "trainer.devices": 1, "trainer.precision": "bf16-mixed"}),
    "trainer=ddp": Compose("needs 2 GPUs", {"trainer.accelerator": "gpu", "trainer.devices": 2,
                                            "trainer.strategy": "ddp", "trainer.precision": "bf16-mixed"}),
    "trainer=fsdp": Compose("needs 2 GPUs", {"trainer.accelerator": "gpu", "trainer.devices": 2,
                                             "trainer.strategy.sharding_strategy": "FULL_SHARD",
                                             "trainer.strategy._target_": "pytorch_lightning.strategies.FSDPStrategy"}),
    "hparams_search=optuna": Compose(
        "a multirun (Optuna sweeper): a 3-trial search is run by tests/test_sweeps.py",
        {"hydra.sweeper._target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
         "hydra.sweeper.direction": "maximize", "hydra.mode": RunMode.MULTIRUN, "hydra.sweeper.n_trials": 20,
         "hydra.sweeper.params": {"task.lr": "tag(log, interval(1e-4, 3e-3))", "task.weight_decay": "interval(0.0, 0.1)",
                                  "model.drop_path_rate": "interval(0.0, 0.2)", "data.batch_size": "choice(32, 64, 128)"}},
        hydra=True),
    "cluster=slurm": Compose(
        "submits to SLURM (submitit): no cluster here",
        {"hydra.launcher._target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
         "hydra.launcher.nodes": 2, "hydra.launcher.tasks_per_node": 8, "hydra.launcher.gpus_per_node": 8,
         "trainer.num_nodes": 2, "trainer.devices": 8, "trainer.strategy": "ddp", "trainer.accelerator": "gpu",
         "data.num_workers": 7}, hydra=True),
}


def preset_files() -> list[str]:
    return sorted(f"{g}={p.stem}" for g in GROUPS for p in (CONF / g).glob("*.yaml"))


def test_table_covers_every_preset() -> None:
    files = preset_files()
    assert not set(files) - PRESETS.keys(), f"presets with no entry in PRESETS: {sorted(set(files) - PRESETS.keys())}"
    assert not PRESETS.keys() - set(files), f"PRESETS lists files that are gone: {sorted(PRESETS.keys() - set(files))}"


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory) -> dict[str, list[str]]:
    """Tiny data for every data preset: procedural sizes, or fixture files in every format."""
    root = tmp_path_factory.mktemp("data")
    folder = fixture_data.image_folder(root / "folder")
    captions = fixture_data.caption_files(root / "captions")
    npz = fixture_data.medmnist_npz(root / "breastmnist.npz")
    table, images = fixture_data.medical_csv(root / "csv")
    caption_root = f"data.root={root / 'captions' / 'images'}"
    return {
        "shapes": PROCEDURAL, "medical_scans": PROCEDURAL, "scenes": PROCEDURAL,
        "imagefolder": [f"data.root={folder}"],
        "medmnist": [f"data.path={npz}"],
        "medical_csv": [f"data.annotations={table}", f"data.root={images}"],
        **{fmt: [f"data.annotations={path}", caption_root] for fmt, path in captions.items()},
        "captions": ["data.format=coco", f"data.annotations={captions['coco']}", caption_root],
        "datamodule": ["data.splits={_target_:mmtrans.data.shapes.shapes_splits,_partial_:true}",
                       "+data.num_train=16", "+data.num_val=8", "+data.num_test=8"],
    }


def compose_cfg(*overrides: str, hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def run_overrides(preset: str, task: str, spec: Run, data: dict[str, list[str]]) -> list[str]:
    group, option = preset.split("=")
    model = option if group == "model" else spec.model or DEFAULT_MODEL[task]
    data_name = option if group == "data" else spec.data or DEFAULT_DATA[task]
    picks = [] if group == "experiment" else [f"task={task}", f"model={model}", f"data={data_name}"]
    return [*picks, preset, *MODEL_TINY[model], *TASK_TINY[task], *data[data_name], *RUN, *spec.mode, *spec.extra]


RUNS = [(p, t) for p, s in PRESETS.items() if isinstance(s, Run) for t in s.tasks]


@pytest.mark.parametrize(("preset", "task"), RUNS, ids=[f"{p}-{t}" for p, t in RUNS])
def test_preset_runs(preset: str, task: str, data_overrides, tmp_path: Path) -> None:
    spec = PRESETS[preset]
    assert isinstance(spec, Run)
    if spec.needs and importlib.util.find_spec(spec.needs) is None:
        pytest.skip(f"{spec.needs} is not installed (pip install -e '.[loggers]'); composed in test_preset_composes")
    cfg = compose_cfg(*run_overrides(preset, task, spec, data_overrides), f"paths.output_dir={tmp_path}")
    metrics, objects = train(cfg)
    assert metrics["wall_time_s"] >= 0 and (tmp_path / "metrics.json").is_file()
    if spec.check:
        spec.check(metrics, objects, tmp_path)


COMPOSED = [p for p, s in PRESETS.items() if s.expect]


@pytest.mark.parametrize("preset", COMPOSED)
def test_preset_composes(preset: str, tmp_path: Path) -> None:
    """The preset's own key settings, composed as a user would pick it (with its task)."""
    spec = PRESETS[preset]
    group, option = preset.split("=")
    task = spec.tasks[0] if isinstance(spec, Run) and group != "experiment" else None
    cfg = compose_cfg(*([f"task={task}"] if task else []), preset, *spec.extra if isinstance(spec, Compose) else [],
                      f"paths.output_dir={tmp_path}", hydra=isinstance(spec, Compose) and spec.hydra)
    for key, value in spec.expect.items():
        if value is None:  # an empty group (logger=none, callbacks=none)
            assert not OmegaConf.select(cfg, key), f"{preset}: {key} is not empty"
            continue
        if value == "???":
            assert OmegaConf.is_missing(cfg, key) if "." not in key else key in OmegaConf.missing_keys(cfg)
            continue
        node = OmegaConf.select(cfg, key, throw_on_missing=True)
        assert node == value, f"{preset}: {key}={node!r}, expected {value!r}"
    if isinstance(spec, Compose) and not spec.hydra and not OmegaConf.missing_keys(cfg):
        check_config(cfg)  # what train.py checks first
    if preset == "trainer=fsdp":  # the wrap policy names the shared Block
        from mmtrans.nn.block import Block

        policy = instantiate(cfg.trainer.strategy.auto_wrap_policy)
        assert Block in policy._module_classes


def test_optuna_minimises_a_loss() -> None:
    cfg = compose_cfg("task=pretrain", "hparams_search=optuna", "paths.output_dir=/tmp/unused", hydra=True)
    assert cfg.hydra.sweeper.direction == "minimize"  # val/loss: optimized_metric_mode min
