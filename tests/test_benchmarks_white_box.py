"""benchmarks/white_box.py at its smoke scale: one seed of ``uchida`` on synthetic data, its
clean twin read with the same key, the attacks refereed on the BER, the table and its JSON
written; bad input is one line and exit 2. The measured table is a benchmark, not a test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import white_box  # noqa: E402


def test_the_smoke_table_reads_the_ber_of_every_model_and_attack(tmp_path: Path, capsys) -> None:
    out = tmp_path / "table.md"
    args = ["--scale", "smoke", "--dataset", "synthetic", "--schemes", "uchida"]
    assert white_box.main([*args, "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {row["attack"]: row for row in report["rows"]}
    assert set(rows) == {"embedded", "clean model"} | {
        c[0] for c in white_box.attacks_for("uchida")
    }
    assert rows["embedded"]["value"] == 0 and rows["embedded"]["verified"]
    clean = rows["clean model"]
    assert 0.3 < clean["value"] < 0.7 and clean["p_value"] > 1e-3 and not clean["verified"]
    permuted = rows["feature-permutation"]
    assert permuted["value"] > 0.25 and permuted["removed"] is True  # same outputs, bits moved
    assert permuted["acc_change"] == pytest.approx(0.0)
    assert all(row["status"] == "completed" for row in report["rows"])
    text = out.read_text()
    assert "| uchida | feature-permutation |" in text and "removed 1/1" in text
    assert capsys.readouterr().out.strip().endswith(text.strip().splitlines()[-1])
    # a rerun reuses every run folder
    assert white_box.main([*args, "--work", str(tmp_path / "work"), "--out", str(out)]) == 0
    again = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert all(row.get("reused", True) for row in again)


def test_cells_are_mean_and_sd_over_seeds() -> None:
    rows = [
        {"scheme": "s", "attack": "prune 0.65", "status": "completed", "value": v,
         "acc_change": c, "p_value": p, "removed": r}
        for v, c, p, r in ((0.0, -0.01, 1e-30, False), (0.5, -0.03, 0.5, True))
    ]  # fmt: skip
    line = white_box.cell_line("s", "prune 0.65", rows)
    assert "0.25 ± 0.35" in line and "-2.00 ± 1.41" in line and "removed 1/2" in line


def test_bad_input_is_one_line_and_exit_2_and_an_unregistered_scheme_is_skipped(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert white_box.main(["--schemes", "uchda", "--work", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown")
    monkeypatch.setattr(white_box, "SCHEMES", (*white_box.SCHEMES, "future-scheme"))
    plan = white_box.parse(["--schemes", "future-scheme,uchida", "--scale", "smoke"])
    assert plan.schemes == ["uchida"]
    assert "future-scheme: not registered" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
