"""Keep the evidence behind a quoted number: `results/<name>/` with the run's metrics.json,
run_info.json and the command (rules: results/README.md; checked by tests/test_results_evidence.py).

    python -m tasks.record outputs/classification/runs/<run> results/classification_default
    python -m tasks.record --metrics /tmp/vit.json results/bench_vit \\
        --command "python benchmarks/bench_vit.py --json results/bench_vit/metrics.json"
    python -m tasks.record --rerun results/classification_default   # old vs new, per key

A train.py run folder gives metrics.json and run_info.json as train.py wrote them, and the
command (from run_info's argv) unless --command is given. A benchmark's `--json OUT` file gives
metrics.json; run_info.json (commit, versions, device) is then written here, on the machine
that ran it. `--rerun` runs command.txt again from the repository root into a temporary folder
and prints old and new values side by side; it asserts nothing (timings on a shared machine
vary).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["EVIDENCE_FILES", "command_of_run", "environment_info", "record", "rerun"]

ROOT = Path(__file__).resolve().parents[1]  # commands in command.txt run from here
EVIDENCE_FILES = ("metrics.json", "run_info.json", "command.txt")
_VERSIONS = (("torch", "torch"), ("torchvision", "torchvision"), ("timm", "timm"),
             ("transformers", "transformers"), ("tokenizers", "tokenizers"),
             ("pytorch_lightning", "pytorch-lightning"), ("hydra", "hydra-core"), ("numpy", "numpy"),
             ("pillow", "pillow"))


def environment_info(command: list[str]) -> dict[str, Any]:
    """run_info.json for a run that is not train.py's (a benchmark): the same keys train.py
    writes (git commit and dirty flag, command, library versions, platform, device)."""
    import torch

    git: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        run = dict(cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
        git["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **run).stdout
        git["dirty"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout, or no git
    versions = {"python": platform.python_version()}
    for name, dist in _VERSIONS:
        try:
            versions[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cuda_version": torch.version.cuda,
    }
    return {"git": git, "command": command, "seed": None, "versions": versions,
            "platform": platform.platform(), "device": device}


def command_of_run(run_info: dict[str, Any]) -> str:
    """`python train.py <overrides>` from run_info.json's argv (its script path made relative)."""
    argv = run_info.get("command")
    if not isinstance(argv, list) or not argv:
        raise ValueError("run_info.json has no 'command' list (argv); give --command")
    script = Path(argv[0])
    script = script.name if script.name == "train.py" else str(argv[0])
    return shlex.join(["python", script, *argv[1:]])


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}; expected a JSON object")
    return data


def record(
    out: str | Path,
    run_dir: str | Path | None = None,
    metrics: str | Path | None = None,
    command: str | None = None,
    note: str | None = None,
    force: bool = False,
) -> Path:
    """Write `out`/{metrics.json, run_info.json, command.txt} from a train.py run folder
    (`run_dir`) or a benchmark's JSON (`metrics`, with `command`)."""
    out = Path(out)
    if (run_dir is None) == (metrics is None):
        raise ValueError("give either a train.py run folder or --metrics FILE (a benchmark's --json output)")
    if metrics is not None and not command:
        raise ValueError("--metrics needs --command: the exact command that wrote the numbers")
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} already holds evidence; pass --force to replace it")
    if run_dir is not None:
        run_dir = Path(run_dir)
        values = _read_json(run_dir / "metrics.json")
        info = _read_json(run_dir / "run_info.json")
        command = command or command_of_run(info)
    else:
        values = _read_json(Path(metrics))
        info = environment_info(shlex.split(command))
    if "\n" in command.strip():
        raise ValueError(f"--command must be one line; got {command!r}")
    if note:
        info["note"] = note
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(values, indent=2) + "\n")
    (out / "run_info.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "command.txt").write_text(command.strip() + "\n")
    return out


def _rerun_argv(command: str, tmp: Path) -> tuple[list[str], Path]:
    """The command with its output sent to `tmp`: a benchmark's `--json X` becomes
    `--json tmp/metrics.json`; a train.py run gets `hydra.run.dir=tmp`."""
    argv = shlex.split(command)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    if "--json" in argv:
        i = argv.index("--json")
        if i + 1 >= len(argv):
            raise ValueError(f"{command!r}: --json without a file")
        argv[i + 1] = str(tmp / "metrics.json")
        return argv, tmp / "metrics.json"
    if any(Path(a).name == "train.py" for a in argv[:2]):
        if "-m" in argv or "--multirun" in argv:
            raise ValueError(f"{command!r} is a multirun: rerun its jobs one by one")
        return [*argv, f"hydra.run.dir={tmp / 'run'}"], tmp / "run" / "metrics.json"
    raise ValueError(f"{command!r}: cannot tell where it writes its numbers (neither --json OUT nor train.py)")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def rerun(folder: str | Path, timeout: float | None = None) -> dict[str, tuple[Any, Any]]:
    """Run `folder`/command.txt again (from the repository root, into a temporary folder) and
    print each key's recorded and new value; returns {key: (old, new)}. Asserts nothing."""
    folder = Path(folder)
    command = (folder / "command.txt").read_text().strip()
    old = _read_json(folder / "metrics.json")
    with tempfile.TemporaryDirectory(prefix="mmtrans_rerun_") as tmp:
        argv, new_file = _rerun_argv(command, Path(tmp))
        print(f"rerun of {folder}: {shlex.join(argv)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, timeout=timeout)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"the command of {folder} exited with {done.returncode}: {command}")
        new = _read_json(new_file)
    pairs = {k: (old.get(k), new.get(k)) for k in [*old, *(k for k in new if k not in old)]}
    width = max([len(k) for k in pairs] + [3])
    print(f"{'key':<{width}} {'recorded':>14} {'rerun':>14} {'rerun/recorded':>15}")
    for key, (a, b) in pairs.items():
        ratio = ""
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a and math.isfinite(a):
            ratio = f"{b / a:.3f}"
        print(f"{key:<{width}} {_show(a):>14} {_show(b):>14} {ratio:>15}")
    print(f"(rerun took {wall:.1f} s including interpreter start-up)")
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmtrans-record", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", help="a train.py run folder (metrics.json + run_info.json)")
    parser.add_argument("out", nargs="?", help="results/<name>")
    parser.add_argument("--metrics", help="a benchmark's --json output instead of a run folder")
    parser.add_argument("--command", help="the exact command, one line, run from the repository root")
    parser.add_argument("--note", help="kept in run_info.json (e.g. what else ran on the machine)")
    parser.add_argument("--force", action="store_true", help="replace an existing results/<name>")
    parser.add_argument("--rerun", metavar="FOLDER", help="run FOLDER/command.txt again; print old vs new")
    args = parser.parse_args(argv)
    try:
        if args.rerun:
            rerun(args.rerun)
            return 0
        if args.metrics:  # one positional: the output folder
            out = args.out or args.run_dir
            if not out or (args.out and args.run_dir):
                parser.error("with --metrics give one folder: results/<name>")
            record(out, metrics=args.metrics, command=args.command, note=args.note, force=args.force)
        else:
            if not (args.run_dir and args.out):
                parser.error("give RUN_DIR results/<name> (or --metrics FILE results/<name>, or --rerun FOLDER)")
            out = args.out
            record(out, run_dir=args.run_dir, command=args.command, note=args.note, force=args.force)
    except (OSError, ValueError, RuntimeError, subprocess.SubprocessError) as e:
        print(f"mmtrans-record: {e}", file=sys.stderr)
        return 1
    print(f"recorded {out}: {', '.join(EVIDENCE_FILES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
