"""Scenarios: presets and user files validated up front, phases run in order on one session,
skip and mid-run edits, one folder per phase plus the whole stream at the root."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import commands as cmd
from engine.errors import ConfigError
from engine.events import Done, Metrics, Phase, event_from_dict
from engine.runs import RunDir
from engine.session import Session
from engine.studies.scenario_runner import prepare_scenario
from engine.studies.scenarios import load_scenario, preset_names, scenario_from_mapping

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


def tiny(phases: list[dict[str, Any]], **train: Any) -> dict[str, Any]:
    return {"title": "tiny", "train": {**TINY_TRAIN, **train}, "phases": phases}


ATTACK = {
    "kind": "attack",
    "attack": "ft-basic",
    "budget": {"data_fraction": 0.5, "steps": 6},
    "params": {"batch": 32},
}


def run_scenario(raw: dict[str, Any], out: Path, steer: Any = None) -> tuple[Session, list]:
    scenario = scenario_from_mapping(raw, name="tiny")
    job, root, sinks = prepare_scenario(scenario, scenario.config(), out)
    session = Session(job, [root.event_sink(), *sinks]).start()
    events = []
    for event in session.events():
        events.append(event)
        if steer is not None:
            steer(session, event)
    return session, events


# -- reading ------------------------------------------------------------------------------
def test_every_preset_loads_and_names_its_phases() -> None:
    assert {"classic", "refit", "gan", "newlabel"} <= set(preset_names())
    classic = load_scenario("classic")
    assert [p.kind for p in classic.phases] == ["embed", "detect"]
    assert classic.phases[1].on == "embed" and classic.phases[1].plugin == "gan"
    assert classic.phases[1].parsed_params().remove is True
    refit = load_scenario("refit")
    assert {p.plugin for p in refit.phases if p.kind == "attack"} == {
        "finetune",
        "ft-basic",
        "ftau",
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (tiny([{"kind": "trian"}]), "did you mean 'train'"),
        (tiny([{"kind": "embed", "scheme": "patern"}]), "did you mean 'pattern'"),
        (tiny([{"kind": "embed", "scheme": "pattern", "params": {"target_label": "x"}}]), "target"),
        (tiny([{"kind": "train"}, {**ATTACK, "on": "nowhere"}]), "'on' phase"),
        (tiny([{"kind": "attack", "attack": "ft-basic"}]), "no earlier train/embed"),
        (tiny([{"kind": "train"}, {"kind": "attack", "attack": "gan"}]), "detect phase"),
        (tiny([{"kind": "train"}, {"kind": "train"}]), "used twice"),
        (tiny([{"kind": "train", "colour": 1}]), "key"),
        (tiny([]), "at least one"),
        (tiny([{"kind": "train"}], epochs=0), "epochs"),
        (tiny([{"kind": "train"}, {**ATTACK, "sweep": [0.5, 1.5]}]), "ratios in"),
        (tiny([{"kind": "train", "sweep": [0.5]}]), "only attack phases"),
        (tiny([{"kind": "embed", "scheme": "datafree"}]), "no earlier train/embed"),
        (
            tiny([{"kind": "train"}, {"kind": "embed", "scheme": "dual", "on": "train"}]),
            "dual embeds only while a model first learns",
        ),
        (
            tiny(
                [
                    {"kind": "train"},
                    {"kind": "embed", "scheme": "datafree", "budget": {"epochs": 1}},
                ]
            ),
            "takes no 'budget'",
        ),
    ],
)
def test_bad_scenarios_fail_before_anything_runs(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        scenario_from_mapping(raw, name="bad")


def test_unknown_preset_suggests_the_closest_and_a_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'classic'"):
        load_scenario("clasic")
    with pytest.raises(ConfigError, match="not found"):
        load_scenario(str(tmp_path / "mine.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[[phases]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(str(broken))


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gan").mkdir()  # a run folder the user called gan
    (tmp_path / "classic").mkdir()
    assert load_scenario("gan").source.endswith("presets/scenarios/gan.toml")
    assert load_scenario("classic").name == "classic"
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match="mine is a folder"):
        load_scenario("mine")
    own = tmp_path / "gan.toml"  # an existing TOML file of a preset's name is the user's
    own.write_text('title = "mine"\n[[phases]]\nkind = "train"\n')
    assert load_scenario("gan.toml").title == "mine"


SCENARIO_TYPOS = [
    (
        "[train]\nepocs = 3\n[[phases]]\nkind = 'train'\n",
        "[train]: unknown key 'epocs' (did you mean 'epochs'?)",
    ),
    ("[train]\nepochs = inf\n[[phases]]\nkind = 'train'\n", "[train]: epochs: expected a number"),
    ("train = 3\n[[phases]]\nkind = 'train'\n", "[train]: must be a table"),
    ("[[phases]]\nkind = 'train'\ncolour = 1\n", "[[phases]] #1: unknown key 'colour'"),
    (
        "[[phases]]\nname = 'owner'\nkind = 'train'\ntrain = { lr = -1 }\n",
        "[[phases]] owner train: lr: must be > 0.0",
    ),
    (
        "[[phases]]\nname = 'owner'\nkind = 'train'\n[[phases]]\nname = 'thief'\n"
        "kind = 'attack'\nattack = 'ft-basic'\nbudget = { data_fractoin = 0.2 }\n",
        "[[phases]] thief budget: unknown key 'data_fractoin' (did you mean 'data-fraction'?)",
    ),
    (
        "[[phases]]\nname = 'owner'\nkind = 'train'\n[[phases]]\nname = 'thief'\n"
        "kind = 'attack'\nattack = 'ft-basic'\nparams = 7\n",
        "[[phases]] thief params: must be a table",
    ),
    (
        "[[phases]]\nname = 'owner'\nkind = 'train'\n[[phases]]\nname = 'thief'\n"
        "kind = 'attack'\nattack = 'ft-basic'\nparams = { bacth = 3 }\n",
        "[[phases]] thief params (ft-basic): unknown key 'bacth' (did you mean 'batch'?)",
    ),
    (
        "[[phases]]\nname = 'owner'\nkind = 'embed'\nscheme = 'pattern'\n"
        "params = { targte_label = 3 }\n",
        "[[phases]] owner params (pattern): key 'targte_label' does not apply to scheme "
        "'pattern' (did you mean 'target_label'?)",
    ),
]


@pytest.mark.parametrize(("text", "fragment"), SCENARIO_TYPOS)
def test_scenario_file_errors_name_the_file_and_the_table(tmp_path, text, fragment) -> None:
    path = tmp_path / "my.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_scenario(str(path))
    message = str(info.value)
    assert message.startswith(f"{path} "), message
    assert fragment in message and "Config" not in message and "\n" not in message


# -- running ------------------------------------------------------------------------------
def test_phases_run_in_order_each_in_its_own_folder(tmp_path) -> None:
    raw = tiny([{"name": "owner", "kind": "train"}, {**ATTACK, "name": "thief"}])
    session, events = run_scenario(raw, tmp_path / "sc")
    assert session.status == "completed", [e for e in events if e.kind == "error"]
    root = tmp_path / "sc"
    assert (root / "01-owner" / "model.safetensors").is_file()
    thief = RunDir(root / "02-thief")
    assert thief.manifest()["command"] == "attack"
    assert thief.manifest()["source_run"] == str(root / "01-owner")
    summary = json.loads((root / "summary.json").read_text())
    assert [p["name"] for p in summary["phases"]] == ["owner", "thief"]
    assert all(p["status"] == "completed" for p in summary["phases"])
    assert summary["phases"][1]["test_acc"] == thief.summary()["test_acc"]
    # the root holds the whole stream, each phase folder its own part
    lines = (root / "events.jsonl").read_text().splitlines()
    recorded = [event_from_dict(json.loads(line)) for line in lines]
    starts = [e.name for e in recorded if isinstance(e, Phase) and "scenario" in e.info]
    assert starts == ["owner", "owner", "thief", "thief"]  # start and end of each
    own = [json.loads(line) for line in (root / "01-owner/events.jsonl").read_text().splitlines()]
    assert own and all(e.get("phase", "owner") != "ft-basic" for e in own)
    assert isinstance(recorded[-1], Done) and recorded[-1].summary["phases"]


def test_a_data_free_phase_embeds_into_an_earlier_model_and_a_sweep_follows(tmp_path) -> None:
    assert "datafree" in preset_names() and load_scenario("datafree").phases[1].on == "clean"
    datafree = {
        "name": "wm",
        "kind": "embed",
        "scheme": "datafree",
        "params": {"count": 10, "samples": 2, "dfad_epochs": 3, "dfad_iters": 2},
        "train": {"epochs": 2, "batch_size": 30},
    }
    prune = {"kind": "attack", "attack": "prune", "name": "prune", "sweep": [0.0, 0.5]}
    raw = tiny([{"name": "owner", "kind": "train"}, datafree, prune])
    raw["phases"][1]["params"] |= {"dfad_batch": 16, "generator_width": 4}
    session, events = run_scenario(raw, tmp_path / "sc")
    assert session.status == "completed", [e for e in events if e.kind == "error"]
    root = tmp_path / "sc"
    wm = RunDir(root / "02-wm")
    assert wm.manifest()["from"] == str(root / "01-owner")
    assert wm.summary()["setting"] == "S3" and "distill" in wm.summary()
    assert (root / "02-wm" / "key").is_dir()
    attacked = RunDir(root / "03-prune")
    assert attacked.manifest()["source_run"] == str(root / "02-wm")
    assert [row["ratio"] for row in attacked.summary()["sweep"]] == [0.0, 0.5]


def test_an_embed_phase_given_on_fine_tunes_its_key_into_that_model(tmp_path) -> None:
    """As exponential weighting's paper embeds (``wmtui embed --from RUN``); without ``on``
    the same phase trains from scratch."""
    ew = {"kind": "embed", "scheme": "exp-weighting", "params": {"key_scheme": "pattern"}}
    raw = tiny([{"name": "owner", "kind": "train"}, {**ew, "name": "into", "on": "owner"}])
    raw["phases"].append({**ew, "name": "scratch"})
    scenario = scenario_from_mapping(raw, name="tiny")
    assert [p.from_model for p in scenario.phases] == [False, True, False]
    session, events = run_scenario(raw, tmp_path / "sc")
    assert session.status == "completed", [e for e in events if e.kind == "error"]
    root = tmp_path / "sc"
    assert RunDir(root / "02-into").manifest()["from"] == str(root / "01-owner")
    assert not RunDir(root / "03-scratch").manifest().get("from")


def test_skip_ends_a_phase_keeps_its_model_and_goes_on(tmp_path) -> None:
    raw = tiny([{"name": "owner", "kind": "train"}, {**ATTACK, "name": "thief"}], epochs=50)
    sent: list[str] = []

    def steer(session: Session, event: Any) -> None:
        if isinstance(event, Metrics) and event.phase == "train" and event.step >= 8 and not sent:
            session.send(cmd.SkipPhase())
            sent.append("skip")

    session, events = run_scenario(raw, tmp_path / "sc", steer)
    assert session.status == "completed"
    summary = json.loads((tmp_path / "sc" / "summary.json").read_text())
    assert [p["status"] for p in summary["phases"]] == ["skipped", "completed"]
    owner = RunDir(tmp_path / "sc" / "01-owner")
    assert owner.summary()["status"] == "stopped" and owner.summary()["steps"] < 50 * 16
    assert (tmp_path / "sc" / "02-thief" / "model.safetensors").is_file()
    logs = [e.message for e in events if e.kind == "log"]
    assert any("skipping to the next phase" in m for m in logs)
    # the last phase has no next one: SkipPhase there is refused, not a stop
    assert not any("phase skip ignored" in m for m in logs)


def test_set_phase_params_edits_a_later_phase_and_refuses_bad_or_started_ones(tmp_path) -> None:
    raw = tiny([{"name": "owner", "kind": "train"}, {**ATTACK, "name": "thief"}], epochs=2)
    sent: list[str] = []

    def steer(session: Session, event: Any) -> None:
        if isinstance(event, Metrics) and event.phase == "train" and not sent:
            session.send(cmd.SetPhaseParams("thief", {"lr": "0.001"}))
            session.send(cmd.SetPhaseParams("thief", {"lr": "-1"}))
            session.send(cmd.SetPhaseParams("thief", {"steps": 3}, budget=True))
            session.send(cmd.SetPhaseParams("owner", {}))
            session.send(cmd.SetPhaseParams("theif", {}))
            sent.append("edits")

    session, events = run_scenario(raw, tmp_path / "sc", steer)
    assert session.status == "completed"
    logs = [e.message for e in events if e.kind == "log"]
    assert any(m.startswith("phase thief: params set (lr=0.001)") for m in logs)
    assert any("refused" in m and "lr" in m for m in logs)
    assert any("already started" in m for m in logs)
    assert any("did you mean 'thief'" in m for m in logs)
    thief = RunDir(tmp_path / "sc" / "02-thief")
    assert thief.summary()["params"]["lr"] == 0.001
    assert thief.summary()["steps"] == 3


def test_stop_ends_the_whole_scenario(tmp_path) -> None:
    raw = tiny([{"name": "owner", "kind": "train"}, {**ATTACK, "name": "thief"}], epochs=50)

    def steer(session: Session, event: Any) -> None:
        if isinstance(event, Metrics) and event.step >= 4:
            session.send(cmd.Stop())

    session, _ = run_scenario(raw, tmp_path / "sc", steer)
    assert session.status == "stopped"
    assert (tmp_path / "sc" / "01-owner" / "model.safetensors").is_file()
    assert not (tmp_path / "sc" / "02-thief").exists()
    summary = json.loads((tmp_path / "sc" / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert [(p["name"], p["status"]) for p in summary["phases"]] == [("owner", "stopped")]
