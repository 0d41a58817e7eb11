"""Sweep leaderboard: a Hydra callback that ranks the jobs of a multirun by the optimized metric.

    python train.py -m task=classification model=vit_tiny,vit_small task.lr=1e-3,3e-4

Each job writes `job_status.json` into its own folder (RUNNING when it starts; COMPLETED or
FAILED with the error when it ends), then the leaderboard of the whole sweep folder is
rebuilt from every job folder found there. Rebuilding from the files, not from what this
process saw, keeps it right when jobs run in other processes or machines (joblib, submitit)
and when a job fails: Hydra's BasicSweeper then raises after the batch and never calls
`on_multirun_end`. Files in the sweep folder (`hydra.sweep.dir`):

    leaderboard.csv   one row per job, best first: every key of its metrics.json, best epoch, error
    leaderboard.md    the same as a Markdown table, with a line naming the best job
    leaderboard.png   a bar per job of the optimized metric (failed jobs marked as such)

Single runs (hydra.mode=RUN) write nothing. A broken leaderboard never fails a job: errors
here are logged as warnings.

Here: the callback and the rebuild; the status files are tasks/job_status.py, the ranking and
the CSV/Markdown tables tasks/leaderboard_table.py, the bar chart tasks/leaderboard_plot.py.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tasks.job_status import STATUS_FILE, write_atomic, write_status
from tasks.leaderboard_plot import draw_bars
from tasks.leaderboard_table import collect_rows, write_tables

__all__ = ["LeaderboardCallback", "rebuild", "write_leaderboard"]

log = logging.getLogger(__name__)


class LeaderboardCallback(Callback):
    """Registered under `hydra.callbacks` (conf/hydra/default.yaml)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        output_dir = str(config.hydra.runtime.output_dir)
        self._started[output_dir] = time.time()
        # A job killed before it ends (SLURM time limit, OOM killer) stays listed as RUNNING.
        _guarded(write_status, config, "RUNNING", None, None)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        started = self._started.pop(str(config.hydra.runtime.output_dir), None)
        duration = round(time.time() - started, 1) if started is not None else None
        status = "COMPLETED" if job_return.status == JobStatus.COMPLETED else "FAILED"
        # `return_value` re-raises a job's exception; the stored value is the exception itself.
        value = getattr(job_return, "_return_value", None)
        _guarded(write_status, config, status, value, duration)
        _guarded(rebuild, _sweep_dir(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        board = _guarded(rebuild, _sweep_dir(config))
        if board:
            log.info(f"Leaderboard: {board['md']} ({board['summary']})")


def _is_multirun(config: DictConfig) -> bool:
    mode = OmegaConf.select(config, "hydra.mode")
    return mode == RunMode.MULTIRUN or str(mode) in ("MULTIRUN", "RunMode.MULTIRUN")


def _sweep_dir(config: DictConfig) -> Path:
    # Same resolution (and cached ${now:...}) as Hydra's own join of sweep.dir and subdir.
    return Path(os.path.abspath(str(config.hydra.sweep.dir)))


def _guarded(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # the leaderboard is a report: it must not kill a job or the sweep
        log.warning(f"leaderboard: {fn.__name__} failed:\n{traceback.format_exc()}")
        return None


def rebuild(sweep_dir: Path, attempts: int = 5) -> dict[str, Any] | None:
    """Rebuild the leaderboard files; again if a job wrote its files meanwhile.

    A rebuild that read the folder before another job's status landed must not have the last
    word: after writing, the inputs are looked at again and the board rebuilt if they changed.
    The last job to write a status therefore always leaves a complete board.
    """
    board = None
    for _ in range(attempts):
        before = _inputs_signature(sweep_dir)
        board = write_leaderboard(sweep_dir)
        if _inputs_signature(sweep_dir) == before:
            break
    return board


def _inputs_signature(sweep_dir: Path) -> list[tuple[str, int, int]]:
    files = []
    for status in sweep_dir.rglob(STATUS_FILE):
        files += [status, status.with_name("metrics.json")]
    signature = []
    for f in files:
        with contextlib.suppress(OSError):
            st = f.stat()
            signature.append((str(f), st.st_mtime_ns, st.st_size))
    return sorted(signature)


def write_leaderboard(sweep_dir: Path) -> dict[str, Any] | None:
    """Write leaderboard.csv, .md and .png into `sweep_dir`; None when it has no job yet."""
    rows, metric, mode = collect_rows(sweep_dir)
    if not rows:
        return None
    ranked_key, summary = write_tables(sweep_dir, rows, metric, mode)
    png = io.BytesIO()
    draw_bars(rows, ranked_key or "no metric", mode).save(png, format="PNG")
    write_atomic(sweep_dir / "leaderboard.png", png.getvalue())
    return {"rows": rows, "md": sweep_dir / "leaderboard.md", "summary": summary}
