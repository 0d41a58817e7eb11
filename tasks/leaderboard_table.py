"""The leaderboard of a sweep folder as a table: one row per job folder (its job_status.json
and metrics.json), ranked by the optimized metric, failed jobs last; written as
leaderboard.csv and leaderboard.md. The bar chart: tasks/leaderboard_plot.py."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import re
from pathlib import Path
from typing import Any

from tasks.job_status import STATUS_FILE, read_json, write_atomic

__all__ = ["collect_rows", "write_tables"]

# Order of the rows after the ranked ones.
_STATUS_ORDER = {"COMPLETED": 0, "RUNNING": 1, "FAILED": 2}


def collect_rows(sweep_dir: Path) -> tuple[list[dict[str, Any]], str | None, str]:
    """One row per job folder (a folder with job_status.json), ranked; and the metric and mode."""
    jobs = []
    for status_file in sweep_dir.rglob(STATUS_FILE):
        status = read_json(status_file)
        if status is not None:
            jobs.append((status, read_json(status_file.with_name("metrics.json")) or {}, status_file.parent))
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


def write_tables(sweep_dir: Path, rows: list[dict[str, Any]], metric: str | None, mode: str) -> tuple[str | None, str]:
    """Write leaderboard.csv and leaderboard.md of `rows` (from `collect_rows`, at least one)
    into `sweep_dir`; returns the metric key ranked by and a one-line summary."""
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
    return ranked_key, summary



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
