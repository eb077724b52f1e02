"""benchmarks/sok_attacks.py decides the SoK's findings from its own table, counts a seed
without a verdict as undecided (never as kept), refuses bad input in one line before writing
anything, and plans every preprocessing and modification attack the registry holds. No job
runs here: the table itself is a benchmark, never a CI test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import sok_attacks  # noqa: E402
import sok_plan  # noqa: E402
import sok_table  # noqa: E402

from engine.attacks import ATTACKS, MODIFICATION, PREPROCESSING, REMOVAL  # noqa: E402

SCHEMES = ["pattern", "abstract"]


def rows(attack: str, family: str, removed: dict[str, list[bool | None]]) -> list[dict[str, Any]]:
    """One completed row per scheme and seed, with the verdicts given."""
    out = []
    for scheme, verdicts in removed.items():
        for seed, value in enumerate(verdicts):
            out.append(
                {
                    "attack": attack,
                    "family": family,
                    "scheme": scheme,
                    "seed": seed,
                    "status": "completed",
                    "removed": value,
                    "test_acc": 0.8 + 0.01 * seed,
                    "wm_accuracy": 0.1,
                    "seconds": 2.0 + seed,
                }
            )
    return out


def sok_like() -> list[dict[str, Any]]:
    """The SoK's picture: each single attack removes one scheme, the chain removes both."""
    return (
        rows("jpeg", PREPROCESSING, {"pattern": [True, True, False], "abstract": [False] * 3})
        + rows("ft-basic", MODIFICATION, {"pattern": [False] * 3, "abstract": [True] * 3})
        + rows("sok-combined-1", sok_table.COMBINED_FAMILY, {s: [True] * 3 for s in SCHEMES})
    )


def holds(table_rows: list[dict[str, Any]]) -> list[bool | None]:
    table = sok_table.aggregate(table_rows, SCHEMES)
    return [f["holds"] for f in sok_table.findings(table, SCHEMES)]


def test_cells_count_removed_seeds_and_accuracy() -> None:
    table = sok_table.aggregate(sok_like(), SCHEMES)
    jpeg = table[0]["cells"]["pattern"]
    assert (jpeg["removed"], jpeg["judged"], jpeg["removes"]) == (2, 3, True)
    assert jpeg["acc_mean"] == pytest.approx(0.81)
    assert sok_table.cell_text(jpeg) == "2/3  81.00 ± 1.00"
    assert table[0]["seconds"] == pytest.approx(3.0)
    assert "| preprocessing | jpeg | 2/3  81.00 ± 1.00 | 0/3" in sok_table.markdown(table, SCHEMES)


def test_the_three_findings_follow_the_table() -> None:
    assert holds(sok_like()) == [True, True, True]
    # the watermarked models' own row is no attack: it cannot break finding 2 or make 1 hold
    marked = rows(sok_table.BASELINE, sok_table.BASELINE_FAMILY, {s: [True] * 3 for s in SCHEMES})
    assert holds(marked + sok_like()) == [True, True, True]
    # one attack that removes both schemes breaks finding 2
    both = rows("weight-shifting", MODIFICATION, {s: [True] * 3 for s in SCHEMES})
    assert holds(sok_like() + both)[1] is False
    # a scheme no single attack removes breaks finding 1 (the chain does not count)
    kept = [r | {"removed": False} if r["attack"] == "ft-basic" else r for r in sok_like()]
    assert holds(kept)[0] is False
    # a scheme the chain leaves in place breaks finding 3
    chain_fails = [
        r | {"removed": False} if r["family"] == "combined" and r["scheme"] == "abstract" else r
        for r in sok_like()
    ]
    assert holds(chain_fails)[2] is False


def test_missing_verdicts_leave_a_finding_undecided_not_decided() -> None:
    unknown = [r | {"removed": None} if r["attack"] == "ft-basic" else r for r in sok_like()]
    table = sok_table.aggregate(unknown, SCHEMES)
    assert table[1]["cells"]["abstract"]["rate"] is None
    assert sok_table.cell_text(table[1]["cells"]["abstract"]).startswith("?  ")
    # abstract is removed by no single attack with a verdict, but ft-basic's are missing
    assert holds(unknown)[0] is None
    no_chain = [r for r in sok_like() if r["family"] != "combined"]
    assert holds(no_chain)[2] is None


def test_an_attack_the_budget_refuses_is_named_and_left_out_of_the_findings() -> None:
    refused = [
        {
            "attack": "ftau",
            "family": MODIFICATION,
            "scheme": s,
            "seed": 0,
            "status": "n/a",
            "reason": "ftau needs an unlabelled source",
        }
        for s in SCHEMES
    ]
    table = sok_table.aggregate(sok_like() + refused, SCHEMES)
    assert holds(sok_like() + refused) == [True, True, True]
    assert sok_table.not_applicable(table) == ["ftau: ftau needs an unlabelled source"]
    assert "| modification | ftau | n/a | n/a |" in sok_table.markdown(table, SCHEMES)
    # a job that failed is a missing verdict, not an attack that does not apply
    failed = [r | {"status": "failed"} for r in refused]
    assert holds(sok_like() + failed)[1] is None


@pytest.mark.parametrize(
    "args",
    [
        ["--schemes", "patern"],
        ["--attacks", "jpg"],
        ["--seeds", "0,x"],
        ["--threads", "0"],
        ["--minutes", "-1"],
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    assert sok_attacks.main([*args, "--scale", "smoke", "--work", str(work)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not work.exists()


def test_the_plan_holds_every_single_attack_of_both_families_but_piracy() -> None:
    cells = sok_plan.plan_cells([], 0)
    planned = {c.name for c in cells if c.family != sok_table.COMBINED_FAMILY}
    wanted = {
        p.name
        for p in ATTACKS.select(REMOVAL)
        if p.family in (PREPROCESSING, MODIFICATION) and p.name != "piracy"
    }
    assert planned == wanted
    assert "distill" not in planned and "piracy" not in planned
    families = [c.family for c in cells]
    assert families == sorted(families, key=[PREPROCESSING, MODIFICATION, "combined"].index)
    for cell in cells:
        if cell.chain:
            assert len(cell.chain) >= 2 and all(n in ATTACKS for n in cell.step_names())
