"""check_writable: an unwritable run folder fails at the start, naming the folder, the reason and
what to set; a writable one is left exactly as it was."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from tasks.run_dir import check_writable

ROOT = Path(__file__).resolve().parents[2]


def test_a_writable_folder_is_created_and_left_as_it_was(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "run")
    assert list((tmp_path / "new" / "run").iterdir()) == []
    (tmp_path / "metrics.json").write_text("{}\n")
    before = [(p.name, p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir() if p.is_file()]
    check_writable(tmp_path)
    assert [(p.name, p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir() if p.is_file()] == before


def test_a_file_in_the_path_is_named(tmp_path: Path) -> None:
    (tmp_path / "outputs").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=rf"run folder {tmp_path}/outputs/run: Not a directory\..*hydra.run.dir="):
        check_writable(tmp_path / "outputs" / "run")
    with pytest.raises(FileExistsError, match="a file of that name exists, not a folder"):
        check_writable(tmp_path / "outputs")
    assert (tmp_path / "outputs").read_text() == "not a folder"


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_a_full_disk_is_named_and_the_probe_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    (tmp_path / "keep.txt").write_text("kept")

    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, call, disk_full)
    with pytest.raises(OSError, match=rf"{tmp_path}: No space left on device\. Free space") as info:
        check_writable(tmp_path)
    assert info.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    assert (tmp_path / "keep.txt").read_text() == "kept"


def test_no_permission_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: the tests may run as root, for whom a read-only folder is writable.
    real_open = os.open

    def refuse_probe(path: object, *args: object, **kwargs: object) -> int:
        if Path(str(path)).name.startswith(".write_probe."):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_probe)
    with pytest.raises(PermissionError, match=rf"{tmp_path}: Permission denied\..*paths.output_dir="):
        check_writable(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_folder_is_named(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="Permission denied"):
            check_writable(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_train_fails_before_reading_any_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra import compose, initialize_config_dir

    import train

    def no_building(*args: object, **kwargs: object) -> None:
        raise AssertionError("train() built an object (the data module first) before checking the run folder")

    (tmp_path / "file").write_text("")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.output_dir={tmp_path}/file/run"])
    monkeypatch.setattr(train, "instantiate", no_building)
    with pytest.raises(NotADirectoryError, match=rf"{tmp_path}/file/run: Not a directory"):
        train.train(cfg)
