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
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

STATUS_FILE = "job_status.json"
# Order of the rows after the ranked ones.
_STATUS_ORDER = {"COMPLETED": 0, "RUNNING": 1, "FAILED": 2}


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
        _guarded(_write_status, config, "RUNNING", None, None)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_multirun(config):
            return
        started = self._started.pop(str(config.hydra.runtime.output_dir), None)
        duration = round(time.time() - started, 1) if started is not None else None
        status = "COMPLETED" if job_return.status == JobStatus.COMPLETED else "FAILED"
        # `return_value` re-raises a job's exception; the stored value is the exception itself.
        value = getattr(job_return, "_return_value", None)
        _guarded(_write_status, config, status, value, duration)
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


def _write_status(config: DictConfig, status: str, value: Any, duration: float | None) -> None:
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


# -- the leaderboard -------------------------------------------------------------------------


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


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or being written by a job right now
        return None


def collect_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], str | None, str]:
    """One row per job folder (a folder with job_status.json), ranked; and the metric and mode."""
    jobs = []
    for status_file in sweep_dir.rglob(STATUS_FILE):
        status = _read_json(status_file)
        if status is not None:
            jobs.append((status, _read_json(status_file.with_name("metrics.json")) or {}, status_file.parent))
    jobs.sort(key=lambda job: job[0].get("num", 0))
    # The first job's metric names the ranking (a sweep over tasks would mix metrics).
    metric = next((s.get("optimized_metric") for s, _, _ in jobs if s.get("optimized_metric")), None)
    mode = next((s.get("mode") for s, _, _ in jobs if s.get("mode")), "max")

    # What the jobs share (the fixed overrides) is said once; rows show what differs.
    override_lists = [status.get("overrides", []) for status, _, _ in jobs]
    common = set.intersection(*map(set, override_lists)) if len(jobs) > 1 else set()
    rows = []
    for status, metrics, job_dir in jobs:
        value = metrics.get(f"{metric}_best", metrics.get(metric)) if metric else None
        value = value if isinstance(value, (int, float)) and math.isfinite(value) else None
        epoch, epoch_from = _best_epoch(metrics, job_dir, metric, mode)
        error = f"{status['error_type']}: {status.get('error', '')}" if status.get("error_type") else ""
        rows.append(
            {
                "num": status.get("num"),
                "overrides": " ".join(status.get("overrides", [])),
                "varying": " ".join(o for o in status.get("overrides", []) if o not in common),
                "common": " ".join(o for o in status.get("overrides", []) if o in common),
                "status": status.get("status", "UNKNOWN"),
                "metrics": metrics,
                "value": value,
                "best_epoch": epoch,
                "best_epoch_from": epoch_from,
                "wall_time_s": metrics.get("wall_time_s", status.get("duration_s")),
                "error": " ".join(error.split()),
                "output_dir": str(job_dir),
            }
        )
    sign = -1 if mode == "max" else 1
    rows.sort(
        key=lambda r: (
            r["status"] != "COMPLETED" or r["value"] is None,  # ranked rows first
            _STATUS_ORDER.get(r["status"], 3),
            sign * r["value"] if r["value"] is not None else 0.0,
            r["num"] if r["num"] is not None else 0,
        )
    )
    rank = 0
    for row in rows:
        if row["status"] == "COMPLETED" and row["value"] is not None:
            rank += 1
            row["rank"] = rank
        else:
            row["rank"] = None
        row["best"] = row["rank"] == 1
    return rows, metric, mode


_EPOCH_IN_NAME = re.compile(r"epoch_(\d+)")


def _best_epoch(metrics: dict[str, Any], job_dir: Path, metric: str | None, mode: str) -> tuple[Any, str]:
    """From the best checkpoint's name (epoch_NNN.ckpt), else from the CSV log's best row."""
    match = _EPOCH_IN_NAME.search(Path(metrics.get("best_ckpt") or "").name)
    if match:
        return int(match.group(1)), "checkpoint"
    if not metric:
        return None, ""
    best = None
    for log_file in job_dir.rglob("metrics.csv"):
        with contextlib.suppress(OSError, ValueError, csv.Error), open(log_file, newline="") as f:
            for row in csv.DictReader(f):
                value, epoch = row.get(metric), row.get("epoch")
                if value and epoch and math.isfinite(float(value)):
                    better = best is None or (
                        float(value) > best[0] if mode == "max" else float(value) < best[0]
                    )
                    if better:
                        best = (float(value), int(float(epoch)))
    return (best[1], "csv log") if best else (None, "")


def write_leaderboard(sweep_dir: Path) -> dict[str, Any] | None:
    """Write leaderboard.csv, .md and .png into `sweep_dir`; None when it has no job yet."""
    rows, metric, mode = collect_rows(sweep_dir)
    if not rows:
        return None
    ranked_key = f"{metric}_best" if any(f"{metric}_best" in r["metrics"] for r in rows) else metric
    keys = sorted({k for r in rows for k in r["metrics"]} - {"best_ckpt", "wall_time_s", ranked_key})
    keys = ([ranked_key] if ranked_key and any(ranked_key in r["metrics"] for r in rows) else []) + keys
    keys += ["best_ckpt"] if any("best_ckpt" in r["metrics"] for r in rows) else []
    columns = ["rank", "best", "num", "status", "overrides", *keys]
    columns += ["best_epoch", "best_epoch_from", "wall_time_s", "error", "output_dir"]

    table = [
        {**r["metrics"], **{k: v for k, v in r.items() if k != "metrics"}, "best": "*" if r["best"] else ""}
        for r in rows
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in table)
    write_atomic(sweep_dir / "leaderboard.csv", buffer.getvalue())

    counts = {s: sum(r["status"] == s for r in rows) for s in ("COMPLETED", "FAILED", "RUNNING")}
    summary = f"{len(rows)} jobs: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
    best = next((r for r in rows if r["best"]), None)
    md = [
        "# Sweep leaderboard",
        "",
        f"`{sweep_dir}`: {summary}. Ranked by `{ranked_key}` ({mode}); failed jobs last.",
        "",
    ]
    if rows[0]["common"]:
        md += [f"Overrides of every job: `{rows[0]['common']}`; the table shows the others.", ""]
    if best:
        md += [
            f"**Best: job {best['num']}** `{best['varying'] or '(no overrides)'}`: {ranked_key} "
            f"{best['value']:.4f}, epoch {best['best_epoch']}, checkpoint "
            f"`{_relative(best['metrics'].get('best_ckpt'), sweep_dir)}`.",
            "",
        ]
    md_columns = [c for c in columns if c != "best"]
    md += ["| " + " | ".join(md_columns) + " |", "|" + "---|" * len(md_columns)]
    for row in table:
        cells = []
        for c in md_columns:
            cell = row.get(c)
            if c == "overrides":
                cell = row["varying"]
            elif c in ("best_ckpt", "output_dir"):
                cell = _relative(cell, sweep_dir)
            elif c == "rank" and row["best"]:
                cell = f"**{cell} (best)**"
            cells.append(_md_cell(cell))
        md.append("| " + " | ".join(cells) + " |")
    write_atomic(sweep_dir / "leaderboard.md", "\n".join(md) + "\n")

    png = io.BytesIO()
    draw_bars(rows, ranked_key or "no metric", mode).save(png, format="PNG")
    write_atomic(sweep_dir / "leaderboard.png", png.getvalue())
    return {"rows": rows, "md": sweep_dir / "leaderboard.md", "summary": summary}


def _relative(path: Any, root: Path) -> str:
    if not path:
        return ""
    with contextlib.suppress(ValueError):
        return str(Path(os.path.abspath(path)).relative_to(root))
    return str(path)


def _md_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("|", "\\|")
    return text if len(text) <= 200 else text[:197] + "..."


# -- the plot ---------------------------------------------------------------------------------


def draw_bars(rows: list[dict[str, Any]], metric: str, mode: str) -> Any:
    """A horizontal bar per job in leaderboard order, drawn with PIL (no matplotlib)."""
    from PIL import Image, ImageDraw, ImageFont  # only when drawing: Hydra imports this module at startup

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = max(12, probe.textbbox((0, 0), "Ag", font=font)[3]) + 8
    labels = [f"#{r['num']}  {r['varying'] or '(no overrides)'}" for r in rows]
    label_w = min(380, max(int(probe.textlength(t, font=font)) for t in labels) + 10)
    bar_w, value_w, pad = 320, 150, 10
    width = pad + label_w + bar_w + value_w + pad
    top = pad + 2 * line_h
    height = top + line_h * len(rows) + line_h + pad
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), f"{metric} per job ({mode} is best)", fill="black", font=font)

    values = [r["value"] for r in rows if r["value"] is not None]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    hi = hi if hi > lo else lo + 1.0
    x0 = pad + label_w

    def x_of(v: float) -> int:
        return x0 + round((v - lo) / (hi - lo) * bar_w)

    for i, (row, label) in enumerate(zip(rows, labels)):
        y = top + i * line_h
        draw.text((pad, y + 3), _fit(draw, label, label_w - 10, font), fill="black", font=font)
        if row["value"] is not None:
            color = (46, 125, 50) if row["best"] else (74, 120, 181)
            draw.rectangle(
                [min(x_of(0), x_of(row["value"])), y + 2, max(x_of(0), x_of(row["value"])), y + line_h - 3],
                fill=color,
            )
            text = f"{row['value']:.4f}" + ("  best" if row["best"] else "")
            draw.text((x0 + bar_w + 6, y + 3), text, fill=color, font=font)
        elif row["status"] == "FAILED":
            draw.rectangle([x0, y + 2, x0 + bar_w, y + line_h - 3], outline=(198, 40, 40))
            error = row["error"].split(":")[0] or "error"
            draw.text(
                (x0 + 6, y + 3),
                _fit(draw, f"FAILED ({error})", bar_w - 12, font),
                fill=(198, 40, 40),
                font=font,
            )
        else:
            draw.text((x0 + 6, y + 3), f"{row['status']}, no value", fill="gray", font=font)
    axis_y = top + line_h * len(rows)
    draw.line([x_of(0), top - 2, x_of(0), axis_y], fill="black")
    draw.line([x0, axis_y, x0 + bar_w, axis_y], fill="black")
    for v in (lo, hi):
        text = f"{v:.3g}"
        tx = min(max(x_of(v) - int(draw.textlength(text, font=font)) // 2, 0), width - 40)
        draw.text((tx, axis_y + 3), text, fill="black", font=font)
    return image


def _fit(draw: Any, text: str, width: int, font: Any) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
