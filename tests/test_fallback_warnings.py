"""What is skipped says so: a config check that cannot run part of itself, a DICOM window
that cannot be used, a config.json beside weights that does not parse. Each warns once,
with the reason, and the rest goes on as before."""

from __future__ import annotations

import inspect
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import mmtrans.data.medical_io as medical_io
import tasks.config_check as config_check
from mmtrans.models.pretrained import timm_model_name
from tasks.config_check import check_config


def thing_with_a_dangling_hint(size: NotImportableHere = 1) -> None:  # noqa: F821 - the point of the test
    """A target whose annotations do not resolve (a forward reference to a missing name)."""


def test_config_check_says_when_type_hints_do_not_resolve(monkeypatch) -> None:
    monkeypatch.setattr(config_check, "_WARNED", set())
    cfg = OmegaConf.create({"thing": {"_target_": f"{__name__}.thing_with_a_dangling_hint", "size": "x"}})
    with pytest.warns(UserWarning, match=r"config check of thing_with_a_dangling_hint: its type hints do not "
                                         r"resolve \(NameError.*NotImportableHere.*only key names are checked"):
        check_config(cfg)  # size='x' cannot be checked against the hint: accepted, as said
    bad_key = OmegaConf.create({"thing": {"_target_": f"{__name__}.thing_with_a_dangling_hint", "sise": 1}})
    with pytest.raises(ValueError, match=r"thing.sise: .* did you mean 'size'"):  # names still checked, warned once
        check_config(bad_key)


def test_config_check_says_when_a_signature_cannot_be_read(monkeypatch) -> None:
    monkeypatch.setattr(config_check, "_WARNED", set())

    def no_signature(func):
        raise ValueError("no signature found")

    monkeypatch.setattr(config_check.inspect, "signature", no_signature)
    cfg = OmegaConf.create({"thing": {"_target_": f"{__name__}.thing_with_a_dangling_hint", "anything": 1}})
    with pytest.warns(UserWarning, match=r"its signature cannot be read \(no signature found\): its keys are not "
                                         r"checked"):
        check_config(cfg)
    monkeypatch.setattr(config_check.inspect, "signature", inspect.signature)


def test_config_check_says_when_source_cannot_be_read(monkeypatch) -> None:
    monkeypatch.setattr(config_check, "_WARNED", set())

    def no_source(obj):
        raise OSError("could not get source code")

    monkeypatch.setattr(config_check.inspect, "getsource", no_source)
    cfg = OmegaConf.create({"task": {"_target_": "tasks.medical.MedicalTask", "lr": 1.0}})
    with pytest.warns(UserWarning, match=r"MedicalTask.__init__: its source cannot be read .* base classes' "
                                         r"arguments are not checked"):
        check_config(cfg)


@pytest.mark.skipif(find_spec("pydicom") is None, reason="pydicom not installed (extra 'medical')")
def test_unusable_dicom_window_is_warned_once_and_min_max_used(tmp_path: Path, monkeypatch) -> None:
    from tests.data.test_medical_io import HU, STORED, min_max, write_dicom

    monkeypatch.setattr(medical_io, "_WINDOW_WARNED", False)
    paths = [write_dicom(tmp_path / f"{i}.dcm", STORED, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40,
                         WindowWidth=0) for i in range(2)]
    with pytest.warns(UserWarning, match=r"0.dcm: its window .* is unusable .*min-max instead. Set data.window") as seen:
        out = [np.asarray(medical_io.load_medical_image(p)) for p in paths]
    assert len([w for w in seen if "window" in str(w.message)]) == 1  # once, not per image
    for pixels in out:
        np.testing.assert_array_equal(pixels, min_max(HU))


def test_config_json_beside_weights_that_does_not_parse_is_warned(tmp_path: Path) -> None:
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    assert timm_model_name(str(weights)) is None  # no config.json: nothing to say
    (tmp_path / "config.json").write_text("{not json")
    with pytest.warns(UserWarning, match=r"config.json does not parse .*the architecture it would name is not used"):
        assert timm_model_name(str(weights)) is None
    (tmp_path / "config.json").write_text('{"architecture": "vit_small_patch16_224"}')
    assert timm_model_name(str(weights)) == "vit_small_patch16_224"
