"""One job's status file in a multirun: `job_status.json` in the job's folder, RUNNING when it
starts, COMPLETED or FAILED (with the error and its traceback) when it ends. Written by the
leaderboard callback (tasks/leaderboard.py), read back by the leaderboard table."""

from __future__ import annotations

import contextlib
import json
import os
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["STATUS_FILE", "read_json", "write_atomic", "write_status"]

STATUS_FILE = "job_status.json"


def write_status(config: DictConfig, status: str, value: Any, duration: float | None) -> None:
    """Write the job's `job_status.json` (atomically: the leaderboard may read it meanwhile)."""
    output_dir = Path(str(config.hydra.runtime.output_dir))
    record: dict[str, Any] = {
        "num": int(config.hydra.job.num),
        "status": status,
        "overrides": list(OmegaConf.to_container(config.hydra.overrides.task)),
        "optimized_metric": OmegaConf.select(config, "optimized_metric", default=None),
        # The checkpoint callback monitors the optimized metric: its mode says which way is better.
        "mode": OmegaConf.select(config, "callbacks.model_checkpoint.mode", default=None) or "max",
        "output_dir": str(output_dir),
        "duration_s": duration,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if status == "COMPLETED":
        record["return_value"] = value if isinstance(value, (int, float)) else None
    elif isinstance(value, BaseException):
        record["error_type"] = type(value).__name__
        record["error"] = str(value)
        record["traceback"] = "".join(traceback.format_exception(type(value), value, value.__traceback__))
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(output_dir / STATUS_FILE, json.dumps(record, indent=2, default=str) + "\n")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write to a temporary file next to `path`, then rename it over `path` (parallel rebuilds)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or being written by a job right now
        return None
