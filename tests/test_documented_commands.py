"""Every `python train.py ...` line of README.md (inside ``` blocks) and of the conf/**/*.yaml
comments, run through train() at tiny sizes: data paths point at small fixtures (real
../shared/data is kept when present), placeholders (`<run>`, `.../last.ckpt`) at a tiny run
made first, timm names become null (no network). What needs a GPU, a download, a cluster or
a sweeper is composed and its key setting asserted; what cannot even be composed usefully here
is listed in NOT_RUN with the reason (and must still be in the docs). One test id per line."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from tasks.config_check import check_config
from tests import fixture_data
from train import train

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Documented commands that are composed and checked but not run, and why.
NOT_RUN = {
    "model.decoder_pretrained=/path/to/gpt2": "needs a local GPT-2 folder (weights and tokenizer files from the "
                                              "hub); the converter is tested in tests/models",
    "model.pretrained=/path/to/model.safetensors": "needs timm weights downloaded from the hub; local weight "
                                                   "files are tested in tests/models and tests/test_pretrain_run.py",
    "model.pretrained=vit_small_patch14_reg4_dinov2": "preset null: the architecture itself comes from the hub",
}


def _commands_in_readme() -> list[tuple[str, str]]:
    out, block, lines = [], False, (ROOT / "README.md").read_text().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            block = not block
        elif block and lines[i].lstrip().startswith("python train.py"):
            start, cmd = i, lines[i].strip()
            while _code(cmd).endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = _code(cmd)[:-1] + " " + lines[i].strip()
            out.append((f"README.md:{start + 1}", _code(cmd)))
        i += 1
    return out


def _commands_in_conf() -> list[tuple[str, str]]:
    out = []
    for path in sorted(CONF.rglob("*.yaml")):
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = re.match(r"\s*#.*?(python train\.py[^`]*)", lines[i])
            if m:
                start, cmd = i, m.group(1)
                while _code(cmd).endswith("\\") and i + 1 < len(lines):
                    i += 1
                    cmd = _code(cmd)[:-1] + " " + lines[i].strip().lstrip("#").strip()
                out.append((f"{path.relative_to(ROOT)}:{start + 1}", _code(cmd)))
            i += 1
    return out


def _code(cmd: str) -> str:
    """The command without its trailing `# comment`."""
    return re.split(r"\s+#", cmd, maxsplit=1)[0].rstrip()


COMMANDS = _commands_in_readme() + _commands_in_conf()


def test_commands_were_found_and_not_run_entries_are_documented() -> None:
    assert len(COMMANDS) > 50 and any(k.startswith("README") for k, _ in COMMANDS)
    text = "\n".join(c for _, c in COMMANDS)
    for fragment in NOT_RUN:
        assert fragment in text, f"NOT_RUN lists {fragment!r}, which no documented command has any more"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict[str, Any]:
    """Small data in every format, and a tiny classification, pretrain and retrieval run to
    point `<run>` placeholders at (task=zeroshot's at the retrieval run)."""
    root = tmp_path_factory.mktemp("docs")
    table, csv_images = fixture_data.medical_csv(root / "csv")
    found: dict[str, Any] = {
        "folder": fixture_data.image_folder(root / "folder"), "captions": fixture_data.caption_files(root / "cap"),
        "caption_images": root / "cap" / "images", "npz": fixture_data.medmnist_npz(root / "x" / "breastmnist.npz"),
        "csv": table, "csv_images": csv_images,
    }
    # The MAE at the size the documented pretrain runs have (32 px: patch 4, mae.yaml's depth 4),
    # only narrower: the commands that take its encoder must name that architecture themselves.
    for task, tiny in (("classification", [*ENCODER, *RUN]), ("pretrain", [*WIDTH, *DECODER, *RUN_ANY_SIZE]),
                       ("retrieval", [*TINY_MODEL["clip"], *RUN])):
        run = root / f"{task}_run"
        overrides = [f"task={task}", *tiny, *TINY_TASK[task], *PROCEDURAL, *LIMIT, f"paths.output_dir={run}"]
        train(compose_cfg(*overrides))
        assert (run / "checkpoints" / "last.ckpt").is_file()
        found[task] = run
    return found


WIDTH = ["model.embed_dim=32", "model.num_heads=2"]
ENCODER = [*WIDTH, "model.depth=1", "model.patch_size=8"]
DECODER = ["model.decoder_embed_dim=32", "model.decoder_depth=1", "model.decoder_num_heads=2"]
TINY_MODEL = {"vit_tiny": ENCODER, "cnn": ["data.img_size=16"], "captioner": [*ENCODER, *DECODER],
              "mae": [*ENCODER, *DECODER],
              "clip": [*ENCODER, "model.text_embed_dim=32", "model.text_depth=1", "model.text_num_heads=2",
                       "model.joint_dim=16"],
              None: []}  # task=zeroshot: no model group, the model is the checkpoint's
TINY_TASK = {
    "classification": [], "medical": ["task.bootstrap_samples=10", "task.num_heatmaps=2"],
    "captioning": ["task.tokenizer.vocab_size=120", "task.generation.max_new_tokens=4", "task.generation.num_beams=1",
                   "task.max_len=16", "model.max_len=16"],
    "pretrain": ["task.num_samples=2"],
    "retrieval": ["task.tokenizer.vocab_size=120", "task.captions_per_image=2"],
    "zeroshot": [],
}
PROCEDURAL = ["data.num_train=16", "data.num_val=8", "data.num_test=8"]
RUN_ANY_SIZE = ["data.batch_size=4", "data.num_workers=0", "trainer.accelerator=cpu", "trainer.devices=1",
                "trainer.precision=32-true"]
RUN = ["data.img_size=32", *RUN_ANY_SIZE]
LIMIT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1"]
MODEL_KIND = {"mmtrans.models.create_image_classifier": "vit_tiny", "mmtrans.models.create_cnn_classifier": "cnn",
              "mmtrans.models.create_captioner": "captioner", "mmtrans.models.create_mae": "mae",
              "mmtrans.models.create_clip": "clip"}
TASK_KIND = {"tasks.classification.ClassificationTask": "classification", "tasks.medical.MedicalTask": "medical",
             "tasks.captioning.CaptioningTask": "captioning", "tasks.pretrain.PretrainTask": "pretrain",
             "tasks.retrieval.RetrievalTask": "retrieval", "tasks.zeroshot.ZeroShotTask": "zeroshot"}


def compose_cfg(*overrides: str, hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def parse(cmd: str) -> tuple[list[str], bool]:
    """(overrides of the first job, multirun): `-m a=1,2` -> `a=1`."""
    args = shlex.split(cmd)[2:]
    multirun = "-m" in args or "--multirun" in args
    # Optuna's search space (tag(...), interval(...), choice(...)) is the sweeper's, not a job's value.
    args = [a for a in args if a not in ("-m", "--multirun") and not re.match(r"[^=]+=(tag|interval|choice)\(", a)]
    if multirun:
        args = [a.split("=", 1)[0] + "=" + _first_choice(a.split("=", 1)[1]) if "=" in a else a for a in args]
    return args, multirun


def _first_choice(value: str) -> str:
    depth = 0
    for i, ch in enumerate(value):
        depth += ch in "[({"
        depth -= ch in "])}"
        if ch == "," and depth == 0:
            return value[:i]
    return value


def _shared(value: str) -> str | None:
    """A ../shared/data path as an absolute path, when that data is here."""
    if value.startswith("../shared/"):
        path = (ROOT / value).resolve()
        return str(path) if path.exists() else None
    return None


def placeholders(args: list[str], fx: dict[str, Any], tmp_path: Path) -> list[str]:
    """`<run>` and `.../last.ckpt` (not even valid override syntax) -> the tiny runs made first."""
    out = []
    # zero-shot and retrieval: an image-text model
    ckpt_run = fx["retrieval"] if {"task=zeroshot", "task=retrieval"} & set(args) else fx["classification"]
    for arg in args:
        key, _, value = arg.partition("=")
        if key in ("model.pretrained", "model.encoder_pretrained") and "<run>" in value:
            value = str(fx["pretrain"] / "checkpoints" / "last.ckpt")
        elif key == "ckpt_path" and ("<run>" in value or "..." in value):
            value = str(ckpt_run / "checkpoints" / "last.ckpt")
        elif key == "resume_from" and "<run>" in value:
            value = str(tmp_path / "resumed")  # a copy: the resumed run writes into it
            shutil.copytree(fx["classification"], value)
        out.append(f"{key}={value}" if "=" in arg else arg)
    return out


def substitute(args: list[str], cfg: DictConfig, fx: dict[str, Any]) -> list[str]:
    """Data paths -> fixtures, by the reader the config picked (../shared/data kept when here)."""
    splits = cfg.data.splits._target_ if "_target_" in cfg.data.get("splits", {}) else ""
    fmt = cfg.data.get("format")
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "data.root":
            value = _shared(value) or (str(fx["caption_images"]) if "caption" in splits else
                                       str(fx["csv_images"]) if "medical_csv" in splits else str(fx["folder"]))
        elif key == "data.annotations":
            value = _shared(value) or str(fx["csv"] if "medical_csv" in splits else
                                          fx["captions"]["caption_table" if fmt == "table" else fmt])
        elif key == "data.path":
            value = _shared(value) or str(fx["npz"])
        out.append(f"{key}={value}" if "=" in arg else arg)
    return out


def _is_weights_path(value: Any) -> bool:
    return isinstance(value, str) and ("/" in value or Path(value).exists())


@pytest.mark.parametrize(("where", "cmd"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command(where: str, cmd: str, fixtures, tmp_path: Path) -> None:
    args, multirun = parse(cmd)
    takes_mae = any("<run>" in a and "pretrained=" in a for a in args)
    if any(a.startswith("hydra/launcher=joblib") for a in args) and not importlib.util.find_spec(
            "hydra_plugins.hydra_joblib_launcher"):
        pytest.skip("hydra-joblib-launcher is not installed (pip install -e '.[sweep]')")
    args = placeholders(args, fixtures, tmp_path)
    first = compose_cfg(*args, f"paths.output_dir={tmp_path}", hydra=True)  # as Hydra would: all of it parses
    not_run = [why for fragment, why in NOT_RUN.items() if fragment in cmd]
    # What this machine cannot do: compose, check and assert the setting that needs it.
    if any(a.startswith("cluster=") for a in args):
        assert first.hydra.launcher._target_.endswith("SlurmLauncher") and first.trainer.strategy == "ddp"
        not_run.append("submits to SLURM")
    if any(a.startswith("hparams_search=") for a in args):
        assert first.hydra.sweeper._target_.endswith("OptunaSweeper")
        not_run.append("an Optuna multirun (tests/test_sweeps.py runs one)")
    if any(re.match(r"trainer=(gpu|ddp|fsdp)$", a) for a in args):
        assert first.trainer.accelerator == "gpu"
        not_run.append("needs a GPU")
    if "data.download=true" in args:
        assert first.data.download is True
        not_run.append("downloads")
    if any(a.startswith("hydra/launcher=") for a in args):
        not_run.append("a parallel launcher")
    cfg = OmegaConf.masked_copy(first, [k for k in first if k != "hydra"])
    if not_run:
        if not OmegaConf.missing_keys(cfg):
            check_config(cfg)
        return
    args = substitute(args, cfg, fixtures)
    cfg = compose_cfg(*args, f"paths.output_dir={tmp_path}")
    model, task = MODEL_KIND[cfg.model._target_] if cfg.get("model") else None, TASK_KIND[cfg.task._target_]
    # With the MAE's encoder: only narrower, so a patch size or depth that does not fit it fails here too.
    tiny = [*(WIDTH + (DECODER if model == "captioner" else []) if takes_mae else TINY_MODEL[model]), *TINY_TASK[task]]
    if cfg.task.get("contrastive_weight", 0) > 0:  # CoCa: model.unimodal_depth (1) text-only blocks, then one more
        tiny.append("model.decoder_depth=2")
    if "num_train" in cfg.data:
        tiny += PROCEDURAL
    for key in ("model.pretrained", "model.encoder_pretrained"):  # a timm name: the network
        if OmegaConf.select(cfg, key) and not _is_weights_path(OmegaConf.select(cfg, key)):
            tiny.append(f"{key}=null")
    resumes = any(a.startswith(("resume_from=", "ckpt_path=")) for a in args) and cfg.train
    mode = ["trainer.max_epochs=2", *LIMIT[1:]] if resumes else ["trainer.fast_dev_run=true"]
    # The MAE's runs, and zero-shot's (the image size comes from the checkpoint), keep their image size.
    cfg = compose_cfg(*args, *(RUN_ANY_SIZE if takes_mae or task == "zeroshot" else RUN), *tiny, *mode,
                      f"paths.output_dir={tmp_path / 'run'}")
    metrics, _ = train(cfg)
    run_dir = Path(cfg.resume_from or cfg.paths.output_dir)  # resume_from continues in that run's folder
    assert (run_dir / "metrics.json").is_file() and metrics
