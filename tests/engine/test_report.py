"""Reports: a folder read into plain data, figures, a self-contained page with no URL, atomic
writes, and bad input refused before anything is written."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from engine.errors import RunError
from engine.events import Metrics, Phase, TriggerPreview
from engine.reports import RecipeData, RunData, build, collect, make_report
from engine.reports.html import inline_svg
from engine.reports.stream import fold_timeline, triggers_from_events
from engine.session import Session

try:  # the scenario runner moved out of scenarios.py
    from engine.studies.scenario_runner import prepare_scenario
except ImportError:  # pragma: no cover
    from engine.studies.scenarios import prepare_scenario  # type: ignore[attr-defined,no-redef]
from engine.studies.scenarios import scenario_from_mapping

TINY_TRAIN = {
    "dataset": "synthetic",
    "train_size": 512,
    "test_size": 128,
    "epochs": 1,
    "optimizer": "adam",
    "lr": 0.003,
    "eval_every": 4,
    "device": "cpu",
}
SCAN = {"scan_steps": 8, "images": 200, "val_images": 50, "batch": 8, "report_every": 4}
#: a scenario touching every section: embed, an attack, a swept attack, a scan
TINY = {
    "title": "tiny report",
    "description": "see https://example.org/paper and http://example.org for the paper",
    "train": TINY_TRAIN,
    "phases": [
        {"name": "owner", "kind": "embed", "scheme": "pattern", "params": {"trigger": "square"}},
        {
            "name": "thief",
            "kind": "attack",
            "attack": "ft-basic",
            "budget": {"data_fraction": 0.5, "steps": 6},
            "params": {"batch": 32},
        },
        {"name": "prune", "kind": "attack", "attack": "prune", "sweep": [0.0, 0.5]},
        {
            "name": "scan",
            "kind": "detect",
            "method": "neural-cleanse",
            "on": "owner",
            "params": {**SCAN, "remove": False},
            "budget": {"data_fraction": 0.5},
        },
    ],
}
RUN_SECTIONS = ["phases", "curves", "scans", "triggers", "verification", "configuration"]


def run_scenario(raw: dict[str, Any], out: Path) -> Path:
    scenario = scenario_from_mapping(raw, name="tiny")
    job, root, sinks = prepare_scenario(scenario, scenario.config(), out)
    session = Session(job, [root.event_sink(), *sinks]).start()
    for _ in session.events():
        pass
    assert session.status == "completed"
    return out


@pytest.fixture(scope="module")
def scenario_run(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    mp = pytest.MonkeyPatch()
    mp.setenv("WMTUI_DATA_DIR", str(shared_data_dir))
    try:
        return run_scenario(TINY, tmp_path_factory.mktemp("report") / "sc")
    finally:
        mp.undo()


def no_url(text: str) -> None:
    assert "http://" not in text and "https://" not in text


def sections(page: str) -> list[str]:
    return re.findall(r"<section id='([\w-]+)'>", page)


# -- reading -----------------------------------------------------------------------------------
def test_a_scenario_is_read_phase_by_phase(scenario_run: Path) -> None:
    data = collect(scenario_run)
    assert isinstance(data, RunData) and data.kind == "scenario"
    assert [p["name"] for p in data.phases] == ["owner", "thief", "prune", "scan"]
    assert data.title == "tiny report" and data.status == "completed"
    assert {"test accuracy", "retention key"} <= set(data.timeline.accuracy)
    labels = [label for _, label in data.timeline.boundaries]
    assert labels[0] == "owner" and "thief" in labels
    assert [s.name for s in data.scans] == ["scan"] and len(data.scans[0].sizes) == 10
    assert data.verdicts and data.verdicts[0]["phase"] == "owner"
    assert {"retention", "p_value", "verified"} <= set(data.verdicts[0])
    assert [name for name, _ in data.sweeps] == ["prune"]
    assert [t.name for t in data.triggers] == ["true trigger"]
    assert data.versions["torch"] and data.config["config"]["dataset"] == "synthetic"


def test_the_timeline_runs_across_phases_with_a_segment_each() -> None:
    def metrics(phase: str, step: int, acc: float | None) -> dict:
        return Metrics(phase, step, 0.0, 0.1, 1.0 / step, 0.0, acc, {"key": 0.5}).to_dict()

    events = [
        Phase("a", "start", info={"scenario": "s"}).to_dict(),
        Phase("embed", "start").to_dict(),
        metrics("embed", 1, None),
        metrics("embed", 10, 0.8),
        Phase("b", "start", info={"scenario": "s"}).to_dict(),
        Phase("gan", "start").to_dict(),
        Phase("gan-remove", "start").to_dict(),  # a scan records no metrics: same x
        metrics("gan-remove", 5, 0.7),
        {"event": "metrics", "step": "garbage"},  # a foreign line is no crash
    ]
    timeline = fold_timeline(events)
    assert timeline.boundaries == [(0.0, "a"), (10.0, "b / gan-remove")]
    assert timeline.accuracy["test accuracy"][0] == [(10.0, 80.0)]
    assert timeline.accuracy["test accuracy"][-1] == [(15.0, 70.0)]
    assert len(timeline.loss) == 3 and timeline.loss[0][0] == (1.0, 1.0)


def test_trigger_previews_become_pngs_and_bad_ones_are_skipped() -> None:
    import torch

    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 20:, 20:] = 255
    good = TriggerPreview.from_tensor("true trigger", image).to_dict()
    bad = {**good, "name": "reversed-x", "shape": [1, 28, 27]}
    found = triggers_from_events([Phase("embed", "start").to_dict(), good, bad])
    assert [(t.phase, t.name, t.size) for t in found] == [("embed", "true trigger", (28, 28))]
    assert found[0].png.startswith(b"\x89PNG")


def test_inline_svg_drops_every_url_and_prefixes_ids() -> None:
    svg = (
        '<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "x" "http://www.w3.org/x.dtd">\n'
        '<svg xmlns:xlink="http://www.w3.org/1999/xlink" xmlns="http://www.w3.org/2000/svg">'
        '<metadata><rdf:RDF xmlns:cc="http://creativecommons.org/ns#"/></metadata>'
        '<defs><clipPath id="p1"/></defs><g clip-path="url(#p1)"><use xlink:href="#p1"/></g>'
        "<text>https://example.org</text></svg>"
    )
    out = inline_svg(svg, "fig")
    no_url(out)
    assert out.startswith("<svg>") and "<metadata" not in out
    assert 'id="fig-p1"' in out and "url(#fig-p1)" in out and 'href="#fig-p1"' in out


# -- the page ----------------------------------------------------------------------------------
def test_scenario_report_is_self_contained_with_every_section(
    scenario_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rep" / "report.html"
    report, figures = make_report(scenario_run, out)
    page = out.read_text(encoding="utf-8")
    no_url(page)
    assert "example.org/paper" in page.replace("&#47;", "/")  # shown, but not as a link
    assert sections(page) == [*RUN_SECTIONS[:5], "sweeps", "configuration", "versions"]
    assert "data:image/png;base64," in page and "<script" not in page
    assert page.count("<svg") == 3  # curves, the scan's bars, the sweep
    names = sorted(p.name for p in figures)
    assert names == sorted(
        f"{n}.{ext}" for n in ("curves", "scan-1-scan", "sweep-1-prune") for ext in ("svg", "pdf")
    )
    for path in figures:
        data = path.read_bytes()
        if path.suffix == ".pdf":
            assert data.startswith(b"%PDF")
        else:
            assert ET.fromstring(data).tag.endswith("svg")  # a standalone, valid SVG
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    # deterministic: the same folder gives the same bytes
    again = build(scenario_run)
    assert again.page == page and again.figures == report.figures


def test_a_single_run_and_a_detect_run_get_their_own_reports(
    scenario_run: Path, tmp_path: Path
) -> None:
    owner = build(scenario_run / "01-owner")
    assert owner.kind == "run" and "verified" in owner.page
    assert sections(owner.page) == [*RUN_SECTIONS, "versions"]
    scan = collect(scenario_run / "04-scan")
    assert isinstance(scan, RunData) and scan.command == "detect" and len(scan.scans) == 1
    # its true trigger comes from the recording of the run it scanned
    assert [t.name for t in scan.triggers] == ["true trigger"]


def test_reversed_pngs_are_shown_when_the_recording_has_no_preview(
    scenario_run: Path, tmp_path: Path
) -> None:
    from PIL import Image

    folder = tmp_path / "scan"
    shutil.copytree(scenario_run / "04-scan", folder)
    (folder / "reversed").mkdir()
    Image.new("L", (112, 112), 200).save(folder / "reversed" / "class3-mask.png")
    (folder / "reversed" / "class3-trigger.png").write_bytes(b"not a png")
    data = collect(folder)
    assert isinstance(data, RunData)
    assert [t.name for t in data.triggers if t.name.startswith("reversed")] == [
        "reversed class3-mask"
    ]


def test_secrets_never_reach_the_page(scenario_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "run"
    shutil.copytree(scenario_run / "01-owner", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    pem_header = "-----BEGIN " + "PRIVATE KEY-----"  # a marker, built so no key is committed
    manifest["scheme_params"] |= {"passphrase": "hunter2", "note": pem_header}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    page = build(folder).page
    assert "hunter2" not in page and "PRIVATE KEY" not in page
    key = (folder / "key" / "key.json").read_text()
    assert json.loads(key)["scheme"] == "pattern"  # the key folder is there, and unread


def test_verdicts_show_statistics_only() -> None:
    from engine.reports.collect import verdicts_of

    claim = {"key": "dual(owner=pirate, signature=abcd)", "retention": 0.9, "verified": True}
    (row,) = verdicts_of("piracy", {"claims": [claim]})
    assert row == {
        "phase": "piracy",
        "key set": "pirate claim 1",
        "retention": 0.9,
        "verified": True,
    }


# -- recipes -----------------------------------------------------------------------------------
def fake_recipe(folder: Path, trial: Path) -> Path:
    shutil.copytree(trial, folder / "trials" / "owner-abc")
    cell = {
        "table": "Table II",
        "paper": 0.99,
        "paper_text": "99%",
        "std": 0.5,
        "n": 2,
        "values": [98.0, 99.0],
        "expect": 98.0,
        "tolerance": 2.0,
        "reason": "tiny scale",
        "unit": "%",
    }
    result = {
        "recipe": "gan",
        "title": "GAN scan finds the target",
        "paper": "Wang et al. 2019, see https://example.org",
        "source": "Table II",
        "scale": "quick",
        "seconds": 12.5,
        "passed": False,
        "cells": [
            {**cell, "name": "retention held", "mean": 98.5, "ok": True},
            {**cell, "name": "test accuracy", "mean": 50.0, "ok": False},
            {**cell, "name": "not measured", "mean": None, "std": None, "n": 0, "ok": None},
        ],
        "trials": [
            {
                "id": "owner-abc",
                "params": {"seed": 0},
                "run": "trials/owner-abc",
                "status": "completed",
            },
            {
                "id": "owner-def",
                "params": {"seed": 1},
                "run": "trials/owner-def",
                "status": "failed",
            },
        ],
    }
    (folder / "recipe.json").write_text(json.dumps(result))
    return folder


def test_recipe_report_marks_each_cell_and_shows_the_first_trial(
    scenario_run: Path, tmp_path: Path
) -> None:
    folder = fake_recipe(tmp_path / "recipe", scenario_run)
    data = collect(folder)
    assert isinstance(data, RecipeData) and data.first is not None
    assert [t["id"] for t in data.trials] == ["owner-abc", "owner-def"]
    out = tmp_path / "out" / "r.html"
    _, figures = make_report(folder, out)
    page = out.read_text(encoding="utf-8")
    no_url(page)
    found = sections(page)
    assert found[:3] == ["comparison", "trials", "trial"]
    assert {f"trial-{s}" for s in RUN_SECTIONS} <= set(found)
    assert page.count("badge pass'>pass") == 1 and page.count("badge fail'>fail") == 2
    assert "unchecked" in page and "98.5 ± 0.5%" in page and "failed" in page
    assert (out.parent / "figures" / "trial-curves.svg") in figures
    # an unfinished recipe has not failed its paper: it says how far it got
    result = json.loads((folder / "recipe.json").read_text())
    (folder / "recipe.json").write_text(json.dumps({**result, "complete": False}))
    page = build(folder).page
    assert "incomplete</span> 1 of 2 trials" in page


# -- bad input ---------------------------------------------------------------------------------
def bad_source(case: str, root: Path) -> Path:
    """A folder (or file) that is no report source, of the kind ``case`` names."""
    root.mkdir()
    path = root / case
    if case == "file":
        path.write_text("x")
    elif case == "empty":
        path.mkdir()
    elif case == "corrupt-manifest":
        path.mkdir()
        (path / "manifest.json").write_text("{")
    elif case == "corrupt-recipe":
        path.mkdir()
        (path / "recipe.json").write_text("[1]")
    elif case == "unfinished-recipe":
        path.mkdir()
        (path / "manifest.json").write_text(json.dumps({"command": "reproduce", "config": {}}))
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "not found"),
        ("file", "is a file"),
        ("empty", "not a run, scenario, recipe or sweep"),
        ("corrupt-manifest", "corrupt"),
        ("corrupt-recipe", "corrupt"),
        ("unfinished-recipe", "not finished"),
    ],
)
def test_bad_input_is_one_error_and_nothing_written(
    tmp_path: Path, case: str, message: str
) -> None:
    out = tmp_path / "out" / "report.html"
    with pytest.raises(RunError, match=message) as caught:
        make_report(bad_source(case, tmp_path / "in"), out)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_file_name(scenario_run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="is a folder"):
        make_report(scenario_run, tmp_path)
    (tmp_path / "figures").write_text("in the way")
    with pytest.raises(RunError, match="figures"):
        make_report(scenario_run, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(RunError, match="not an HTML page"):
        make_report(scenario_run, scenario_run / "summary.json")
    assert json.loads((scenario_run / "summary.json").read_text())["phases"]
