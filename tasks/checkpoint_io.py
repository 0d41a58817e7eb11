"""Checkpoint I/O that never leaves a half-written file and never unpickles code."""

from __future__ import annotations

import contextlib
import glob
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from mmtrans.models.pretrained import load_weights_only


class AtomicCheckpointIO(TorchCheckpointIO):
    """Local-disk checkpoints written atomically and loaded with `weights_only=True`.

    Saving writes a temporary file next to the target, flushes it to disk (`fsync`) and
    renames it over the target (`os.replace`, atomic on POSIX and Windows). A crash, a full
    disk or a kill mid-save therefore leaves either the previous checkpoint or the new one,
    never a truncated file that `ckpt_path=...` would fail to resume from.

    Loading ignores Lightning's `weights_only` argument and always restricts unpickling to
    tensors and plain containers: a checkpoint from elsewhere cannot run code on load.
    This is why tasks store their config and class names as plain dicts and lists.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Same folder as the target, so that os.replace is a rename and not a copy across devices.
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(tmp, "xb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)
        # A process killed mid-save (SIGKILL skips the cleanup above) leaves its temporary
        # file behind; the next good save of the same checkpoint removes it.
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()

    def load_checkpoint(
        self,
        path: str | os.PathLike,
        map_location: Callable | str | torch.device | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        return load_weights_only(path, map_location=map_location)  # refuses code, naming the file


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (the directory entry); POSIX only, a no-op elsewhere."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
