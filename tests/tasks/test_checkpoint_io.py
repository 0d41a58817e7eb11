"""AtomicCheckpointIO: a failed save never damages the previous checkpoint; loads are weights-only."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from tasks.checkpoint_io import AtomicCheckpointIO


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "last.ckpt"  # the folder is created
    io.save_checkpoint({"state_dict": {"w": torch.arange(3.0)}, "epoch": 2}, path)
    loaded = io.load_checkpoint(path)
    assert loaded["epoch"] == 2 and torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_failure_mid_save_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()

    def save_half_then_fail(obj: object, f) -> None:
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"epoch": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
    monkeypatch.undo()
    assert io.load_checkpoint(path)["epoch"] == 1


def test_next_save_removes_the_temporary_file_of_a_killed_save(tmp_path: Path) -> None:
    stale = tmp_path / ".last.ckpt.0123abcd.tmp"  # what a SIGKILL mid-save leaves
    stale.write_bytes(b"PK half")
    other = tmp_path / ".epoch_001.ckpt.0123abcd.tmp"  # another checkpoint's: not ours to touch
    other.write_bytes(b"PK")
    AtomicCheckpointIO().save_checkpoint({"epoch": 3}, tmp_path / "last.ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".epoch_001.ckpt.0123abcd.tmp", "last.ckpt"]


def test_load_refuses_pickled_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"payload": Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        AtomicCheckpointIO().load_checkpoint(path)


def test_load_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        AtomicCheckpointIO().load_checkpoint(tmp_path / "nope.ckpt")


class Evil:
    """Stands for any object whose unpickling would run code."""

    def __reduce__(self):
        return (print, ("this must never run",))
