"""What the benchmark scripts share: a timer (wall time of a call, GPU work included) and the
interleaved repeat loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch


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
