"""README's "From Python" example runs as written, from an empty folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_python_block(section: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text.split(f"## {section}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", body, re.S)
    assert match is not None, f"no python block under '## {section}'"
    return match.group(1)


def test_from_python_example_runs_as_written(tmp_path: Path, shared_data_dir: Path) -> None:
    code = first_python_block("From Python")
    env = {**os.environ, "WMTUI_DATA_DIR": str(shared_data_dir), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    before, after = result.stdout.strip().split(" -> ")
    assert "key" in before and "key" in after
    for name in ("clean", "wm", "ftb"):
        assert (tmp_path / "runs" / name / "summary.json").is_file()
