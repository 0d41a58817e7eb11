"""Every measured number quoted in a result table of README.md and benchmarks/README.md cites
its evidence, `results/<name>`, in the same row, and equals (to the precision shown) a value of
that folder's metrics.json; the folder holds metrics.json, run_info.json and command.txt.
What counts as a quoted number, and where: results/README.md. Also tests tasks.record and the
benchmarks' `Numbers` (--json) on tiny inputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.record import EVIDENCE_FILES, command_of_run, record, rerun

ROOT = Path(__file__).resolve().parents[1]
# The sections whose tables are result tables (up to the next heading of the same level).
# A table row anywhere else in these files is checked too once it cites results/<name>.
RESULT_SECTIONS = {
    "README.md": ("## Results", "## Sweeps and clusters"),
    "benchmarks/README.md": ("## Latest numbers", "## Where targets are missed"),
}
CITATION = re.compile(r"results/([A-Za-z0-9_.-]+)")
# A number not glued to a word or a decimal point before it (x86, H200, bf16, .5 are not numbers
# here); thousands separators allowed; an optional unit after it.
NUMBER = re.compile(
    r"(?<![\w.])(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<frac>\.\d+)?(?:e[-+]?\d+)?"
    r"(?:\s?(?P<unit>ms|s|min|h|%|MiB|GiB|MB|GB|tok/s|tokens/s|images/s)(?![\w/]))?"
)
# Removed before numbers are read: code spans (commands, config values), link targets, URLs,
# the citations themselves.
STRIP = re.compile(r"`[^`]*`|\]\([^)]*\)|https?://\S+|results/[A-Za-z0-9_.-]+")
SEPARATOR = re.compile(r"^\|\s*:?-{3,}")


def quoted_numbers(row: str) -> list[tuple[str, int]]:
    """(text, decimals) of each measured number in a table row: one with a decimal part, or an
    integer with a unit of time, memory, throughput or a percentage. Integers without a unit
    (counts, sizes, seeds) are not measurements."""
    text = STRIP.sub(" ", row)
    found = []
    for m in NUMBER.finditer(text):
        if m.group("frac") or m.group("unit"):
            decimals = len(m.group("frac")) - 1 if m.group("frac") else 0
            found.append((m.group(0).strip(), decimals))
    return found


def candidate_values(metrics: dict) -> list[float]:
    """Every number in metrics.json (nested objects flattened), and what a table may show of it:
    seconds as minutes or milliseconds, a fraction as a percentage."""
    values: list[float] = []

    def walk(key: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{key}/{k}", v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            v = abs(float(value))
            values.extend([v, v * 100])
            if key.endswith("_s"):
                values.extend([v / 60, v * 1000])

    walk("", metrics)
    return values


def matches(number: str, decimals: int, values: list[float]) -> bool:
    x = float(re.match(r"[\d,]+(?:\.\d+)?", number).group(0).replace(",", ""))
    return any(abs(v - x) <= 0.5 * 10**-decimals + 1e-9 for v in values)


def table_rows(path: Path, sections: tuple[str, ...]) -> list[tuple[int, str, bool]]:
    """(line number, row, in a result section) of every table body row (header and separator
    rows left out) in the file."""
    lines = path.read_text().splitlines()
    rows, section, level, fenced = [], False, 0, False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced  # a "# comment" in a code block is no heading
        heading = None if fenced else re.match(r"^(#+) ", line)
        if heading:
            if any(line.startswith(s) for s in sections):
                section, level = True, len(heading.group(1))
            elif section and len(heading.group(1)) <= level:
                section = False
        if not line.lstrip().startswith("|") or SEPARATOR.match(line.strip()):
            continue
        if i + 1 < len(lines) and SEPARATOR.match(lines[i + 1].strip()):
            continue  # a header row
        rows.append((i + 1, line, section))
    return rows


def problems(path: Path, sections: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """What is wrong with the quoted numbers of `path` (empty: all backed)."""
    found = []
    name = path.relative_to(root) if path.is_relative_to(root) else path
    for lineno, row, in_section in table_rows(path, sections):
        cited = CITATION.findall(row)
        if not in_section and not cited:
            continue
        numbers = quoted_numbers(row)
        if not cited:
            if numbers and not re.search(r"https?://", row):  # an external source is cited by its link
                found.append(f"{name}:{lineno}: quotes {numbers[0][0]} but cites no results/<name> in the row")
            continue
        values: list[float] = []
        for folder in dict.fromkeys(cited):
            missing = [f for f in EVIDENCE_FILES if not (root / "results" / folder / f).is_file()]
            if missing:
                found.append(f"{name}:{lineno}: results/{folder} lacks {', '.join(missing)}")
                continue
            values += candidate_values(json.loads((root / "results" / folder / "metrics.json").read_text()))
        for number, decimals in numbers:
            if values and not matches(number, decimals, values):
                found.append(
                    f"{name}:{lineno}: {number} equals no value of {', '.join(f'results/{c}' for c in cited)}"
                    "/metrics.json (to the precision shown)"
                )
    return found


@pytest.mark.parametrize("doc", sorted(RESULT_SECTIONS))
def test_quoted_numbers_cite_their_evidence(doc: str) -> None:
    found = problems(ROOT / doc, RESULT_SECTIONS[doc])
    assert not found, "numbers without evidence (see results/README.md):\n" + "\n".join(found)


def test_every_results_folder_is_complete() -> None:
    for folder in sorted(p for p in (ROOT / "results").iterdir() if p.is_dir()):
        missing = [f for f in EVIDENCE_FILES if not (folder / f).is_file()]
        assert not missing, f"{folder.relative_to(ROOT)} lacks {missing}"
        assert len((folder / "command.txt").read_text().strip().splitlines()) == 1, folder


def _results(tmp_path: Path, metrics: dict) -> Path:
    (tmp_path / "results" / "run").mkdir(parents=True)
    for f in EVIDENCE_FILES:
        (tmp_path / "results" / "run" / f).write_text("{}\n" if f.endswith(".json") else "python x.py\n")
    (tmp_path / "results" / "run" / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path


def test_checker_names_file_line_and_number(tmp_path: Path) -> None:
    root = _results(tmp_path, {"test/acc": 0.52149, "wall_time_s": 778.4, "nested": {"ratio": 1.3049}})
    doc = root / "doc.md"
    doc.write_text(
        "## Results\n\n| command | wall time | acc | ratio |\n| --- | --- | --- | --- |\n"
        "| `python train.py seed=0.25` [run](results/run) | 778 s (13.0 min) | 0.521 | **1.305** |\n"
        "| `python train.py` | 2-core x86, 1x H200 | 3 seeds, batch 16 | |\n"  # no quoted number
        "| `python train.py` | 572 s | 0.9245 | |\n"  # numbers, no citation
        "| results/run | 0.522 | | |\n"  # a number the evidence does not hold
        "| results/gone | 0.5 | | |\n"  # a folder that does not exist
        "| paper [ref](https://example.org/paper) | 0.901 | | |\n"  # an external source
        "\n## Other\n\n| setting | value |\n| --- | --- |\n| lr | 0.001 |\n"
    )
    found = problems(doc, ("## Results",), root)
    assert found == [
        "doc.md:7: quotes 572 s but cites no results/<name> in the row",
        "doc.md:8: 0.522 equals no value of results/run/metrics.json (to the precision shown)",
        "doc.md:9: results/gone lacks metrics.json, run_info.json, command.txt",
    ], found


def test_record_and_rerun_a_benchmark(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A stand-in for a benchmark: writes its numbers to --json as the real ones do (timing.Numbers).
    script = tmp_path / "bench_fake.py"
    script.write_text(
        "import argparse, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
        "from timing import Numbers, add_json_flag\n"
        "p = argparse.ArgumentParser(); add_json_flag(p); args = p.parse_args()\n"
        "n = Numbers(); n.spread('fwd_ms', [0.001, 0.003, 0.002], 1e3); n.ratio('bench_fake', 0.97651)\n"
        "n.write(args.json)\n"
    )
    out = tmp_path / "first.json"
    done = subprocess.run([sys.executable, str(script), "--json", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "RATIO bench_fake 0.977"
    numbers = json.loads(out.read_text())
    assert numbers["bench_fake"] == 0.97651 and numbers["fwd_ms_median"] == 2.0 and numbers["fwd_ms_max"] == 3.0
    assert numbers["wall_time_s"] >= 0

    folder = tmp_path / "results" / "bench_fake"
    command = f"python {script} --json results/bench_fake/metrics.json"
    record(folder, metrics=out, command=command)
    assert (folder / "command.txt").read_text() == command + "\n"
    info = json.loads((folder / "run_info.json").read_text())
    assert {"git", "command", "versions", "device"} <= set(info) and info["command"][-1].endswith("metrics.json")
    with pytest.raises(FileExistsError, match="--force"):
        record(folder, metrics=out, command=command)
    pairs = rerun(folder)
    assert pairs["bench_fake"] == (0.97651, 0.97651)
    assert json.loads((folder / "metrics.json").read_text()) == numbers  # the evidence is not overwritten
    assert "bench_fake" in capsys.readouterr().out


def test_record_a_train_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"val/acc": 0.5, "wall_time_s": 1.0}))
    (run / "run_info.json").write_text(json.dumps({"command": ["/abs/train.py", "task=medical", "seed=1"]}))
    folder = record(tmp_path / "results" / "medical", run_dir=run)
    assert (folder / "command.txt").read_text() == "python train.py task=medical seed=1\n"
    assert json.loads((folder / "metrics.json").read_text()) == {"val/acc": 0.5, "wall_time_s": 1.0}
    assert command_of_run({"command": ["train.py", "data.root=my dir"]}) == "python train.py 'data.root=my dir'"
    with pytest.raises(FileNotFoundError, match="metrics.json does not exist"):
        record(tmp_path / "results" / "x", run_dir=tmp_path)
