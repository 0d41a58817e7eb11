"""The run folder must be writable before a run starts, not when its first checkpoint is due."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["check_writable"]

# A few KiB rather than one byte: on a nearly full disk a tiny write can still fit in a block
# that is already allocated, and some filesystems only report ENOSPC when the data is flushed.
_PROBE_BYTES = 4096


def check_writable(path: str | os.PathLike) -> None:
    """Create the folder `path` (with its parents) and write, fsync and remove a probe file in it.

    Why: an unwritable run folder (a parent that is a file, no permission, a full disk) would
    otherwise surface as an OSError from the logger or the checkpoint callback, after the data
    was read and an epoch trained. Raises an OSError of the same kind (PermissionError,
    NotADirectoryError, ...; ENOSPC stays a plain OSError) whose message names the folder, the
    reason and the settings that move the run elsewhere.

    Nothing already in the folder is read, changed or removed: the probe has a fresh random
    name, is created exclusively (O_EXCL) and is removed again, even when writing it failed.
    """
    path = Path(path)
    probe = path / f".write_probe.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * _PROBE_BYTES)
            os.fsync(fd)
        finally:
            try:
                os.close(fd)
            finally:
                os.unlink(probe)
    except OSError as err:
        reason = err.strerror or str(err)
        if isinstance(err, FileExistsError) and not path.is_dir():
            reason = "a file of that name exists, not a folder"
        raise OSError(
            err.errno,
            f"cannot write to the run folder {path}: {reason}. Free space or fix the permissions "
            f"there, or write the run elsewhere: hydra.run.dir=DIR (or paths.output_dir=DIR)",
        ) from err
