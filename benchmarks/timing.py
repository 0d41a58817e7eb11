"""What the benchmark scripts share: a timer (wall time of a call, GPU work included), the
interleaved repeat loop, and the `--json OUT` record of the printed numbers."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

_START = time.perf_counter()  # imported at the top of each script: its wall time starts here

def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer sees it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, calls: int = 1) -> float:
    """Seconds per call of `fn`, over `calls` back-to-back calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    sync(device)
    return (time.perf_counter() - start) / calls


def interleaved(
    fns: Mapping[str, object], repeats: int, measure: Callable[[str, object], float]
) -> dict[str, list[float]]:
    """`repeats` values of `measure(name, fn)` for each entry of `fns`, interleaved with the
    order reversed every other repeat: drift and whatever the previous run left in the caches
    hit all alike."""
    values: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        order = list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]
        for name, fn in order:
            values[name].append(measure(name, fn))
    return values


class Numbers:
    """The numbers a benchmark prints, kept so that `--json OUT` can write them as one flat JSON
    object: the evidence `python -m tasks.record --metrics OUT` files under results/ (see
    results/README.md). `ratio` prints the `RATIO` lines, so a printed ratio and a recorded one
    cannot differ."""

    def __init__(self) -> None:
        self.values: dict[str, float | int | str | None] = {}

    def add(self, key: str, value: float | int | str | None) -> None:
        # 6 significant digits: enough for any figure printed, readable in the JSON (and a
        # tiny difference such as 9.7e-08 stays itself rather than rounding to 0).
        self.values[key] = float(f"{value:.6g}") if isinstance(value, float) else value

    def spread(self, key: str, values: list[float], scale: float = 1.0) -> None:
        """`key_median`, `key_min`, `key_max` of `values` x `scale` (e.g. 1e3: seconds -> ms)."""
        scaled = [v * scale for v in values]
        self.add(f"{key}_median", statistics.median(scaled))
        self.add(f"{key}_min", min(scaled))
        self.add(f"{key}_max", max(scaled))

    def ratio(self, name: str, value: float | None) -> None:
        print(f"RATIO {name} {'n/a' if value is None else f'{value:.3f}'}")
        self.add(name, value)

    def write(self, path: str | None) -> None:
        """Write the numbers to `path` (nothing when None: no --json given)."""
        if path:
            # The script's time from this module's import (after torch's), as train.py's wall_time_s.
            values = {**self.values, "wall_time_s": round(time.perf_counter() - _START, 1)}
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(values, indent=2) + "\n")


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", metavar="OUT", default=None,
        help="also write the printed numbers as one flat JSON object to OUT "
        "(evidence for results/: python -m tasks.record --metrics OUT ...)",
    )
