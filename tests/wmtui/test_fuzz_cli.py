"""Fuzzing what users type: command-line values and scenario files.

Whatever the input (wrong types, out-of-range, huge or negative numbers, NaN/inf, empty or
unicode text), a command ends with exit 0, 1 or 2, prints no traceback, and bad input (2)
writes nothing; a scenario file gives a Scenario or a :class:`UserError`, nothing else.
Valid input stops where the work would start: :func:`wmtui.cli.common.run_headless` (where
every headless session starts) and the playground's app raise :class:`Validated` instead, so
nothing trains. The inputs Hypothesis found broken are pinned as explicit regression tests at
the end.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from engine.attacks import AttackerBudget
from engine.config import TrainConfig
from engine.errors import UserError
from engine.jobs import JOB_KINDS
from engine.registry import check_value, scalar_type
from engine.studies.scenarios import load_scenario, preset_names
from tests.conftest import save_suspect_run
from wmtui.cli import app

runner = CliRunner()
# fixtures are per test, not per example: they only point at folders and patch functions
FUZZ = settings(
    max_examples=int(os.environ.get("WMTUI_FUZZ_EXAMPLES", "150")),  # more for a deep local run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Validated(Exception):
    """Valid input reached the point where the work would start."""


def stop_here(*args: Any, **kwargs: Any) -> None:
    raise Validated


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    import wmtui.cli.common
    import wmtui.tui.app

    monkeypatch.setattr(wmtui.cli.common, "run_headless", stop_here)
    monkeypatch.setattr(wmtui.tui.app, "WmtuiApp", stop_here)


@pytest.fixture(scope="module")
def area(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> dict[str, Path]:
    """A suspect run (attack, detect, verify, resume and --from target it), a scratch folder
    for the runs valid input creates, and a file that is not a run."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "file.txt").write_text("not a run\n")
    return {
        "suspect": save_suspect_run(root / "suspect", shared_data_dir),
        "scratch": root / "out",
        "file": root / "file.txt",
    }


# -- strategies --------------------------------------------------------------------------------
# argv can hold any text but NUL (a C string ends there); lone surrogates are not text either
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
WEIRD = st.sampled_from(
    [
        *["", " ", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400"],
        *["0", "-0", "-1", "1", "2", "0.5", "1.5", "1e-320", "0x10", "1_000", "9" * 40],
        *["true", "false", "yes", "None", "auto", "synthetic", "mnist", "lenet5", "cpu", "cuda"],
        *[".", "/", "..", "é", "日本語", "🙂", "a b", "line\nbreak"],
    ]
)
NUMBER = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats().map(repr),  # nan, inf, 1e+300, -0.0 ...
    st.integers(-3, 3).map(str),
)
VALUE = st.one_of(WEIRD, NUMBER, TEXT)
# a --model with a colon is imported as module:factory; random text must not import modules
MODEL = st.one_of(
    st.sampled_from(["lenet5", "digit-cnn", "lenet", "nosuch_mod:f", "os:nothere", "x:"]),
    TEXT.filter(lambda text: ":" not in text),
)


def flags(cls: type) -> list[str]:
    return [f"--{field.name.replace('_', '-')}" for field in dataclasses.fields(cls)]


def plugin_flags(kind: str) -> dict[str, list[str]]:
    return {
        p.name: flags(p.params) if p.params else [] for p in JOB_KINDS.get(kind).factory.plugins()
    }


def accepted(cls: type, field: dataclasses.Field, text: str) -> bool:
    try:
        check_value(field.name, text, field, scalar_type(get_type_hints(cls)[field.name]))
    except UserError:
        return False
    return True


def plain_values(classes: list[type]) -> dict[str, list[str]]:
    """For every flag of ``classes``, the simple values every class declaring it accepts (its
    choices, small numbers, its default): what a "plain" example draws, so some command
    lines are valid and reach the end of the checks."""
    fields: dict[str, list[tuple[type, dataclasses.Field]]] = {}
    for cls in classes:
        for field in dataclasses.fields(cls):
            fields.setdefault(f"--{field.name.replace('_', '-')}", []).append((cls, field))
    values = {}
    for flag, owners in fields.items():
        candidates = {"1", "2", "0.5", "0.1", "0", "synthetic"}  # numbers, a dataset name
        for cls, field in owners:
            candidates |= set(field.metadata.get("choices") or ())
            if field.default not in (None, dataclasses.MISSING):
                candidates.add(str(field.default))
            if scalar_type(get_type_hints(cls)[field.name]) is str:  # free text: its default
                candidates = {*(field.metadata.get("choices") or ()), str(field.default)}
        ok = [c for c in candidates if all(accepted(cls, f, c) for cls, f in owners)]
        values[flag] = sorted(ok)
    return values


TRAIN_FLAGS = [f for f in flags(TrainConfig) if f != "--model"]
SCHEMES, ATTACKS, DETECTORS = (plugin_flags(kind) for kind in ("embed", "attack", "detect"))
SCHEME_FLAGS = sorted({f for names in SCHEMES.values() for f in names})
TYPOS = ["--epocs", "--nosuch", "-x"]
PLAIN = plain_values(
    [
        TrainConfig,
        AttackerBudget,
        *(
            p.params
            for kind in ("embed", "attack", "detect")
            for p in JOB_KINDS.get(kind).factory.plugins()
            if p.params
        ),
    ]
) | {
    "--eval-every": ["1", "100"],
    "--sweep": ["0,0.5"],
    "--device": ["cpu", "auto"],
    "--refresh": ["2"],
    "--alpha": ["0.001"],
    "--scheme": sorted(SCHEMES),
    "--key": [""],
}
# one example is "plain" (simple values, known names) or fully fuzzed, in every draw alike
PLAIN_EXAMPLE = st.shared(st.integers(0, 2).map(lambda n: n == 0), key="plain")


@st.composite
def options(draw: st.DrawFn, names: list[str], most: int = 5) -> list[str]:
    """Up to ``most`` of ``names`` with values; when not plain, now and then a flag that does
    not exist, a --model or a --threads."""
    plain = draw(PLAIN_EXAMPLE)
    chosen = draw(st.lists(st.sampled_from(names), max_size=most, unique=True))
    args = []
    for name in chosen:
        known = PLAIN.get(name)
        args += [name, draw(st.sampled_from(known) if plain and known else VALUE)]
    if plain:
        return args
    if "--dataset" in names and draw(st.booleans()):
        args += ["--model", draw(MODEL)]
    if draw(st.integers(0, 9)) == 0:
        args += [draw(st.sampled_from(TYPOS)), draw(VALUE)]
    if draw(st.integers(0, 4)) == 0:
        args += ["--threads", draw(st.one_of(NUMBER, WEIRD))]
    return args


@st.composite
def plugin_name(draw: st.DrawFn, names: dict[str, list[str]]) -> str:
    known = st.sampled_from(sorted(names))
    return draw(known if draw(PLAIN_EXAMPLE) else st.one_of(known, TEXT))


@st.composite
def command_line(draw: st.DrawFn, area: dict[str, Path]) -> tuple[list[str], Path | None]:
    """One command with fuzzed options, and the --out folder it was given (None: it has none)."""
    out = area["scratch"] / uuid.uuid4().hex
    suspect = st.just(str(area["suspect"]))
    elsewhere = st.sampled_from([str(area["file"]), str(area["scratch"] / "missing"), "", "."])
    run = draw(suspect if draw(PLAIN_EXAMPLE) else st.one_of(suspect, elsewhere, TEXT))
    command = draw(st.sampled_from(["train", "embed", "attack", "detect", "run", "verify", "tui"]))
    command = draw(st.sampled_from([command, command, "resume"]))
    if command == "train":
        own = [*draw(options(TRAIN_FLAGS)), *draw(config_option(area))]
        return ["train", *own, "--out", str(out)], out
    if command == "embed":
        scheme = ["--scheme", draw(plugin_name(SCHEMES))] if draw(st.booleans()) else []
        source = ["--from", run] if draw(st.integers(0, 3)) == 0 else []
        own = [*draw(options(TRAIN_FLAGS + SCHEME_FLAGS)), *draw(config_option(area))]
        return ["embed", *scheme, *source, *own, "--out", str(out)], out
    if command in ("attack", "detect"):
        plugins = ATTACKS if command == "attack" else DETECTORS
        chooser = "--attack" if command == "attack" else "--method"
        name = draw(plugin_name(plugins))
        own = draw(options(plugins.get(name) or sorted({f for v in plugins.values() for f in v})))
        budget = draw(options(flags(AttackerBudget), most=3))
        extra = [*draw(options(["--sweep", "--eval-every", "--device"], most=2))]
        if command == "detect" and draw(st.booleans()):
            extra.append("--remove")
        args = [command, chooser, name, "--run", run, *budget, *extra, *own]
        return [*args, "--out", str(out)], out
    if command == "run":
        scenario = draw(st.one_of(st.sampled_from(preset_names()), TEXT))
        return ["run", scenario, *draw(options(TRAIN_FLAGS, most=3)), "--out", str(out)], out
    if command == "verify":
        extra = draw(options(["--alpha", "--device", "--key"], most=3))
        return ["verify", "--run", run, *extra], None
    if command == "resume":
        return ["resume", run, *draw(options(["--epochs"], most=1))], None
    # the playground, as the default command: its flags with no "tui" in front
    scenario = ["--scenario", draw(st.sampled_from(preset_names()))] if draw(st.booleans()) else []
    own = draw(options(TRAIN_FLAGS + SCHEME_FLAGS + ["--refresh", "--scheme"], most=4))
    return [*scenario, *own, *draw(config_option(area)), "--out", str(out)], out


@st.composite
def config_option(draw: st.DrawFn, area: dict[str, Path]) -> list[str]:
    """Now and then a --config: a generated file of [train] and [scheme] tables, or a path
    that is not a TOML file (a folder, a text file, nothing)."""
    if draw(PLAIN_EXAMPLE) or draw(st.integers(0, 3)) != 0:
        return []
    if draw(st.booleans()):
        odd = [".", str(area["suspect"]), str(area["file"]), str(area["scratch"] / "no.toml")]
        return ["--config", draw(st.sampled_from(odd))]
    scheme_keys = sorted({flag[2:].replace("-", "_") for flag in SCHEME_FLAGS} | {"name"})
    lines: list[str] = []
    for name, keys in (("train", fields_of(TrainConfig)), ("scheme", scheme_keys)):
        body = draw(table(keys))
        if isinstance(body, dict):
            lines += [
                f"[{name}]",
                *(f"{toml_string(k)} = {toml_value(v)}" for k, v in body.items()),
            ]
        else:
            lines.insert(0, f"{name} = {toml_value(body)}")
    path = area["scratch"] / f"{uuid.uuid4().hex}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ["--config", str(path)]


def check_outcome(args: list[str], result: Any, out: Path | None) -> None:
    """The contract: 0/1/2 (or stopped at the start of the work), no traceback, one error
    line, and a refused command leaves no folder behind."""
    shown = f"{args!r}\n{result.output}"
    outcome = "valid" if isinstance(result.exception, Validated) else f"exit {result.exit_code}"
    event(f"{'tui' if args[0].startswith('-') else args[0]}: {outcome}")
    if isinstance(result.exception, Validated):
        return
    assert result.exception is None or isinstance(result.exception, SystemExit), shown
    assert result.exit_code in (0, 1, 2), shown
    assert "Traceback" not in result.output, shown
    if result.exit_code == 2:
        ours = [line for line in result.stderr.splitlines() if line.startswith("wmtui: error:")]
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert (ours == lines[:1] and len(lines) == 1) or "Error:" in result.stderr, shown
        assert out is None or not out.exists(), shown


@FUZZ
@given(data=st.data())
def test_fuzzed_command_lines_end_cleanly(stubbed, area, data) -> None:
    args, out = data.draw(command_line(area))
    check_outcome(args, runner.invoke(app, args), out)


# -- scenario files -----------------------------------------------------------------------------
def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    escaped = "".join(
        "\\" + ch
        if ch in '"\\'
        else f"\\u{ord(ch):04x}"
        if ord(ch) < 0x20 or ord(ch) == 0x7F
        else ch
        for ch in text
    )
    return f'"{escaped}"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return inline_table(value)


def inline_table(table: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items()) + "}"


SCALAR = st.one_of(
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.integers(-3, 3),
    st.floats(),
    TEXT,
    st.sampled_from(["", "auto", "synthetic", "lenet5", "sgd", "adam", "step", "cpu", "text"]),
)
TOML_VALUE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=2),
    max_leaves=4,
)


def fields_of(cls: type | None) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if cls else []


@st.composite
def table(draw: st.DrawFn, names: list[str], most: int = 4) -> dict[str, Any] | Any:
    """A table of known keys (and now and then a typo) with fuzzed values; rarely a scalar.
    A plain example draws known keys with values they take."""
    if draw(PLAIN_EXAMPLE):
        plain = {name: PLAIN.get(f"--{name.replace('_', '-')}") for name in names}
        usable = sorted(name for name, values in plain.items() if values)
        keys = draw(st.lists(st.sampled_from(usable), max_size=most, unique=True)) if usable else []
        return {key: draw(st.sampled_from(plain[key])) for key in keys}
    if draw(st.integers(0, 14)) == 0:
        return draw(SCALAR)
    keys = draw(st.lists(st.sampled_from([*names, "epocs", "colour"]), max_size=most))
    return {key: draw(TOML_VALUE) for key in keys}


@st.composite
def phase(draw: st.DrawFn, index: int) -> dict[str, Any]:
    plain = draw(PLAIN_EXAMPLE)
    kinds = ["train", "embed"] if plain and index == 0 else ["train", "embed", "attack", "detect"]
    kind = draw(st.sampled_from(kinds if plain else [*kinds, "attack", "trian"]))
    plugins = {"embed": SCHEMES, "attack": ATTACKS, "detect": DETECTORS}.get(kind, {})
    key = {"embed": "scheme", "attack": "attack", "detect": "method"}.get(kind)
    item: dict[str, Any] = {"name": f"p{index}", "kind": kind}
    if not plain and draw(st.integers(0, 5)) == 0:
        item["name"] = draw(TOML_VALUE)
    if key:
        item[key] = draw(plugin_name(plugins))
        params = JOB_KINDS.get(kind).factory
        names = fields_of(params.params_type(item[key])) if item[key] in plugins else []
        item["params"] = draw(table(names))
    if kind in ("attack", "detect"):
        item["budget"] = draw(table(fields_of(AttackerBudget), most=3))
    elif draw(st.booleans()):
        item["train"] = draw(table(fields_of(TrainConfig), most=2))
    return item


@st.composite
def scenario_text(draw: st.DrawFn) -> str:
    plain = draw(PLAIN_EXAMPLE)
    lines = [f"title = {toml_value(draw(TEXT if plain else TOML_VALUE))}"]
    if not plain and draw(st.integers(0, 9)) == 0:
        lines.append(f"{toml_string(draw(TEXT))} = 1")
    train = draw(table(fields_of(TrainConfig), most=6))
    if isinstance(train, dict):
        lines += ["[train]", *(f"{toml_string(k)} = {toml_value(v)}" for k, v in train.items())]
    else:
        lines.insert(0, f"train = {toml_value(train)}")
    for index in range(draw(st.integers(1 if plain else 0, 3))):
        lines.append("[[phases]]")
        lines += [f"{toml_string(k)} = {toml_value(v)}" for k, v in draw(phase(index)).items()]
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=scenario_text())
def test_fuzzed_scenario_files_load_or_say_why(stubbed, area, text: str) -> None:
    path = area["scratch"] / f"{uuid.uuid4().hex}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    try:
        load_scenario(str(path))
    except UserError as exc:
        message = str(exc)
        assert "\n" not in message and str(path) in message, message
        assert "TrainConfig" not in message and "AttackerBudget" not in message, message
    out = area["scratch"] / uuid.uuid4().hex
    args = ["run", str(path), "--out", str(out)]
    check_outcome(args, runner.invoke(app, args), out)


# -- what the fuzzing found, pinned --------------------------------------------------------------
def one_error_line(result: Any) -> str:
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error: "), lines
    return lines[0]


def test_a_path_with_a_control_character_stays_one_line(tmp_path: Path) -> None:
    # found: "resume '\x1e0'" printed the path raw, and \x1e (like \n) breaks the line
    line = one_error_line(runner.invoke(app, ["resume", str(tmp_path / "a\x1eb\nc")]))
    assert line.endswith("run directory not found: " + str(tmp_path / "a\\x1eb\\nc"))


CONFIG_SHAPES = [
    ("train = false\n", "train must be a [train] table, got False"),  # found: a TypeError
    ("[train]\nepocs = 3\n", "[train]: unknown key 'epocs' (did you mean 'epochs'?)"),
    ("[train]\nepochs = inf\n", "epochs: expected a number, got inf"),  # an OverflowError
]


@pytest.mark.parametrize(
    ("command", "text", "fragment"),
    [
        *(("train", text, fragment) for text, fragment in CONFIG_SHAPES),
        *(("embed", text, fragment) for text, fragment in CONFIG_SHAPES),
        ("embed", "scheme = 3\n", "scheme must be a [scheme] table, got 3"),
    ],
)
def test_config_files_with_the_wrong_shape_are_one_line(tmp_path, command, text, fragment) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    out = tmp_path / "run"
    line = one_error_line(runner.invoke(app, [command, "--config", str(path), "--out", str(out)]))
    assert fragment in line and str(path) in line and not out.exists()


def test_a_config_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    # found: IsADirectoryError escaped load_toml
    line = one_error_line(runner.invoke(app, ["train", "--config", str(tmp_path)]))
    assert f"cannot read config file {tmp_path}" in line


def test_a_scheme_name_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[scheme]\nname = 5\n")
    line = one_error_line(runner.invoke(app, ["embed", "--config", str(path)]))
    assert "unknown" in line and "'5'" in line
