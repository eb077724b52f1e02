"""benchmarks/gpu.py does not rot: its tiny CPU version runs, and prints all three sections
with numbers. Nothing here looks at speed (the figures of a CPU are not the GPU targets)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"
SECTIONS = ("scan", "train", "bf16")


def run_gpu_check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # TMPDIR: gan_scan caches its trained model under the temp dir; the data dir comes from
    # conftest's WMTUI_DATA_DIR, and OMP_NUM_THREADS=1 from conftest too
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_cpu_quick_prints_three_sections_with_numbers(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    done = run_gpu_check(tmp_path, "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "NOT the GPU targets" in done.stdout

    table = [line.split() for line in done.stdout.splitlines()]
    for section in SECTIONS:
        lines = [cells for cells in table if cells and cells[0] == section]
        assert lines, f"no {section} rows in:\n{done.stdout}"

    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    rows = doc["rows"]
    assert {r["section"] for r in rows} == set(SECTIONS)
    for row in rows:
        assert isinstance(row["value"], int | float) and math.isfinite(row["value"]), row
    targets = [r for r in rows if r["target"]]
    # one ratio per detector, the loop ratio, the bf16 agreement: all CUDA claims, unjudged
    assert len(targets) == 4
    assert {r["verdict"] for r in targets} == {"n/a (cpu)"}
    names = " ".join(r["name"] for r in rows)
    for expected in ("gan: ratio", "neural-cleanse: ratio", "engine / bare", "accuracy difference"):
        assert expected in names


def test_only_and_json_lines_on_stdout(tmp_path: Path) -> None:
    done = run_gpu_check(tmp_path, "--only", "bf16", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert rows and {r["section"] for r in rows} == {"bf16"}
    assert "accuracy difference" in done.stderr  # the table went to stderr
