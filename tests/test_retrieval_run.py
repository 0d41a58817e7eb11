"""task=retrieval end to end on tiny models and data (train.py, retrieval.json, checkpoint),
zero-shot classification from its checkpoint, the search CLI, CoCa as a captioning option,
and the bad-input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from mmtrans.models import contrastive_chance_loss, create_clip
from tasks.checkpoint import load_model
from tasks.retrieval import RetrievalTask
from tasks.search_cli import main as search_main
from tasks.zeroshot import ZeroShotTask, check_templates
from train import train

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["trainer.accelerator=cpu", "trainer.devices=1", "callbacks.progress_bar.refresh_rate=0"]
TINY = [
    "task=retrieval", "model.embed_dim=32", "model.depth=1", "model.num_heads=2", "model.text_embed_dim=32",
    "model.text_depth=1", "model.text_num_heads=2", "model.joint_dim=16", "data.batch_size=8", "data.img_size=32",
    "data.num_train=16", "data.num_val=8", "data.num_test=8", "task.tokenizer.vocab_size=120", *COMMON,
]
RETRIEVAL_METRICS = {f"test/{d}_{m}" for d in ("i2t", "t2i") for m in ("r1", "r5", "r10", "medr")}


def compose_cfg(output_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"paths.output_dir={output_dir}"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("retrieval_run")
    metrics, _ = train(compose_cfg(run, *TINY, "trainer.max_epochs=1"))
    return run, metrics


def test_fit_test_writes_metrics_and_retrieval_json(trained):
    run, metrics = trained
    assert RETRIEVAL_METRICS <= metrics.keys() and "val/i2t_r1_best" in metrics
    assert 0 <= metrics["test/i2t_r1"] <= metrics["test/i2t_r5"] <= metrics["test/i2t_r10"] <= 1
    report = json.loads((run / "retrieval.json").read_text())
    assert len(report["image_to_text"]) == 8 and len(report["text_to_image"]) == 40  # 5 references each
    first = report["image_to_text"][0]
    assert len(first["top_k"]) == 5 and len(first["references"]) == 5 and {"caption", "score", "match"} <= set(
        first["top_k"][0])
    assert report["metrics"]["i2t_r1"] == pytest.approx(metrics["test/i2t_r1"])
    # A candidate matches by text (a caption written for several images is a reference of each),
    # and the metrics count the same way: R@1 is the share of first candidates that match.
    for query in report["image_to_text"]:
        assert [c["match"] for c in query["top_k"]] == [c["caption"] in query["references"] for c in query["top_k"]]
    top1 = [q["top_k"][0]["match"] for q in report["image_to_text"]]
    assert metrics["test/i2t_r1"] == pytest.approx(sum(top1) / len(top1))
    top1 = [q["top_k"][0]["match"] for q in report["text_to_image"]]
    assert metrics["test/t2i_r1"] == pytest.approx(sum(top1) / len(top1))
    model, info = load_model(metrics["best_ckpt"])  # the checkpoint alone rebuilds model and tokenizer
    assert info["tokenizer"].vocab_size == model.text.vocab_size


def test_training_goes_through_the_models_forward():
    """compile=true compiles a model's forward (nn.Module.compile): a training step that called
    encode_image / encode_text alone would run uncompiled."""
    torch.manual_seed(0)
    model = create_clip(encoder_preset=None, embed_dim=16, depth=1, num_heads=2, img_size=32, patch_size=8,
                        vocab_size=50, text_embed_dim=16, text_depth=1, text_num_heads=2, max_len=8, joint_dim=8)
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append((len(args[0]), len(args[1]))))
    batch = {"image": torch.randn(2, 3, 32, 32), "captions": [["a", "b", "c"], ["d", "e"]],
             "ref_tokens": torch.randint(1, 50, (5, 6)), "ref_padding_mask": torch.zeros(5, 6, dtype=torch.bool)}
    loss = RetrievalTask(model, tokenizer=None, captions_per_image=2).training_step(batch, 0)
    assert calls == [(2, 4)] and loss.requires_grad  # 2 images, 2 of the references of each


def test_a_run_stuck_at_chance_says_so(tmp_path):
    """A model that does not learn (lr 0) keeps the loss at chance: from the second epoch a warning
    names the loss and the chance level (the second epoch after a one-epoch warm-up)."""
    cfg = compose_cfg(tmp_path, *TINY, "trainer.max_epochs=3", "task.warmup_epochs=1", "task.lr=0", "trainer.limit_val_batches=0",
                      "trainer.limit_test_batches=0")
    chance = contrastive_chance_loss(8, cfg.task.captions_per_image)  # batches of 8 images
    with pytest.warns(UserWarning, match=rf"epoch 2's mean train/loss [0-9.]+ has not fallen 1 % below chance \({chance:.3f}"):
        train(cfg)


def test_validate_evaluates_a_checkpoint_on_val(trained, tmp_path):
    # The command in conf/config.yaml (validate=true), at tiny sizes: val only, no test.
    _, metrics = trained
    evaluate = ["train=false", "test=false", "validate=true", f"ckpt_path={metrics['best_ckpt']}"]
    val = train(compose_cfg(tmp_path / "val", *TINY, *evaluate))[0]
    assert not any(k.startswith("test/") for k in val)
    # The same val split as training's: the numbers of its (one-epoch, so best) checkpoint.
    names = {f"val/{d}_{m}" for d in ("i2t", "t2i") for m in ("r1", "r5", "r10", "medr")}
    assert {k: val[k] for k in names} == pytest.approx({k: metrics[k] for k in names})
    # A larger val split than training used.
    tiny = [o for o in TINY if not o.startswith("data.num_val=")]
    assert names <= train(compose_cfg(tmp_path / "val16", *tiny, *evaluate, "data.num_val=16"))[0].keys()
    with pytest.raises(ValueError, match="does nothing"):
        train(compose_cfg(tmp_path / "none", *TINY, "train=false", "test=false", f"ckpt_path={metrics['best_ckpt']}"))


def test_zeroshot_from_the_checkpoint_on_shapes(trained, tmp_path):
    _, metrics = trained
    zs = train(compose_cfg(tmp_path / "zs", "task=zeroshot", f"ckpt_path={metrics['best_ckpt']}", "data=shapes",
                           "data.num_train=8", "data.num_val=8", "data.num_test=16", "data.batch_size=8", *COMMON))[0]
    assert {"test/acc", "test/acc_top5", "test/auc"} <= zs.keys() and 0 <= zs["test/acc"] <= 1
    with pytest.raises(ValueError, match="exactly one"):
        train(compose_cfg(tmp_path / "bad", "task=zeroshot", f"ckpt_path={metrics['best_ckpt']}", "data=shapes",
                          "data.num_test=8", "task.templates=[a photo]", *COMMON))


def test_zeroshot_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="non-empty list"):
        check_templates([])
    with pytest.raises(ValueError, match="exactly one"):
        check_templates(["a {} and a {}"])
    from mmtrans.models import create_image_classifier

    classifier = create_image_classifier(None, num_classes=3, embed_dim=16, depth=1, num_heads=2, img_size=32,
                                         patch_size=8)
    with pytest.raises(ValueError, match="no text encoder"):
        ZeroShotTask(classifier, None, ["a", "b"], ["a {}"])
    # A classification checkpoint given to task=zeroshot: named, with what it lacks.
    ckpt = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in classifier.state_dict().items()},
                "hyper_parameters": {"num_classes": 3, "config": {"model": {
                    "_target_": "mmtrans.models.create_image_classifier", "preset": None, "embed_dim": 16,
                    "depth": 1, "num_heads": 2, "img_size": 32, "patch_size": 8}},
                    "preprocessing": {"img_size": 32, "in_chans": 3, "mean": [0.5] * 3, "std": [0.5] * 3,
                                      "interpolation": "bicubic", "crop_pct": 1.0}}}, ckpt)
    with pytest.raises(ValueError, match="has no text encoder"):
        train(compose_cfg(tmp_path / "zs", "task=zeroshot", f"ckpt_path={ckpt}", "data=shapes", "data.num_test=8",
                          *COMMON))


def test_search_cli_with_index(trained, tmp_path, capsys):
    _, metrics = trained
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 30 + i), (200, 40 * i, 0)).save(images / f"{i}.png")
    index = tmp_path / "index.safetensors"
    ckpt = metrics["best_ckpt"]
    assert search_main([ckpt, str(images), "a red circle", "two shapes", "--index", str(index), "--top-k", "2",
                        "--json", str(tmp_path / "hits.json")]) == 0
    captured = capsys.readouterr()
    assert index.is_file() and "wrote 3 image embeddings" in captured.err
    assert captured.out.count("# ") == 2 and captured.out.count("\t") == 2 * 2 * 2
    hits = json.loads((tmp_path / "hits.json").read_text())
    assert [len(h["results"]) for h in hits] == [2, 2]
    # The index is read, not the images: removing them changes nothing.
    for f in images.iterdir():
        f.unlink()
    assert search_main([ckpt, str(images), "a red circle", "--index", str(index), "--top-k", "2"]) == 0
    captured2 = capsys.readouterr()
    assert "3 images from index" in captured2.err
    assert captured2.out.splitlines()[:3] == captured.out.splitlines()[:3]
    assert search_main([ckpt, str(images), "x"]) == 2  # no images (and no index)
    assert "no images found" in capsys.readouterr().err


def test_coca_option_of_captioning_fast_dev_run(tmp_path):
    cfg = compose_cfg(tmp_path, "task=captioning", "model.decoder_embed_dim=32", "model.decoder_depth=2",
                      "model.decoder_num_heads=2", "model.embed_dim=32", "model.depth=1", "model.num_heads=2",
                      "model.joint_dim=16", "data.batch_size=8", "data.img_size=32", "data.num_train=16",
                      "data.num_val=8", "data.num_test=8", "task.tokenizer.vocab_size=120",
                      "task.generation.max_new_tokens=4", "task.contrastive_weight=1.0", "trainer.fast_dev_run=true",
                      *COMMON)
    metrics, objects = train(cfg)
    model = objects["model"]
    assert type(model).__name__ == "CoCa" and not model.decoder.blocks[0].has_cross
    assert {"train/contrastive_loss", "train/caption_loss", "test/cider"} <= metrics.keys()
