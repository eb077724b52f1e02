"""The package as a user installs it: ``python -m build`` makes an sdist and, from that sdist,
a wheel; the wheel goes into a fresh virtual environment that cannot see this checkout, and
the commands a newcomer types first run there.

A data file the code reads at run time but the package leaves out (a preset, the stylesheet)
only fails in an installed copy: the editable install used for development reads the source
tree, so only a test like this one catches it.

The fresh environment reuses the dependencies already installed beside the test run (torch
and friends are too big to install again): a ``.pth`` file in its site-packages names ours as
a plain path line, which puts that folder on ``sys.path`` without running the ``.pth`` files
in it, so our editable install's import hook stays off. The wheel is installed before that
line is written, so pip never sees the editable install either.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "wmtui")
#: what the build does not need from a checkout (caches, environments, outputs)
SKIP_ANYWHERE = {".git", ".venv", "venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
SKIP_AT_TOP = {"build", "dist", "runs", "site", ".hypothesis", ".mypy_cache"}
TIMEOUT = 300


@dataclass(frozen=True)
class Installed:
    """The wheel installed into ``venv``; ``work`` is the current folder of every command."""

    wheel: Path
    sdist: Path
    src: Path
    venv: Path
    work: Path
    env: dict[str, str]

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def wmtui(self) -> str:
        return str(self.venv / "bin" / "wmtui")

    def run(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(*args)
        assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stderr[-3000:]}"
        return done


def _skip(folder: str, names: list[str]) -> set[str]:
    top = Path(folder).resolve() == ROOT
    return {
        n
        for n in names
        if n in SKIP_ANYWHERE
        or n.endswith((".egg-info", ".pyc"))
        or (top and (n in SKIP_AT_TOP or n.startswith(".")))
    }


def clean_env(tmp: Path) -> dict[str, str]:
    """No PYTHONPATH (it would put the checkout back), caches and data under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "MPLCONFIGDIR"):
        env[name] = str(tmp / name.lower())
    env["WMTUI_DATA_DIR"] = str(tmp / "data")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    pytest.importorskip("build", reason="python -m build comes with the dev extra")
    tmp = tmp_path_factory.mktemp("wheel")
    env = clean_env(tmp)
    # a copy, so that the build's egg-info and build/ never race another run in the checkout
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=_skip)
    dist = tmp / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = dist.glob("wmtui-*.whl")
    (sdist,) = dist.glob("wmtui-*.tar.gz")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    flags = ["--no-deps", "--no-index", "--disable-pip-version-check", "--quiet"]
    done = subprocess.run(
        [*pip, *flags, str(wheel)], cwd=tmp, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ours = sysconfig.get_paths()
    site = Path(
        subprocess.check_output(
            [
                str(venv / "bin" / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            env=env,
            text=True,
        ).strip()
    )
    lines = dict.fromkeys([ours["purelib"], ours["platlib"]])  # the dependencies, as paths
    (site / "_wmtui_test_dependencies.pth").write_text("\n".join(lines) + "\n")

    work = tmp / "work"
    work.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return Installed(wheel, sdist, src, venv, work, env)


@pytest.fixture(scope="module")
def facts(installed: Installed) -> dict[str, Any]:
    """What the installed package says about itself, asked in the fresh environment."""
    script = """
import json, sys
import engine, wmtui
from engine.studies.presets import KINDS, preset_dir, preset_names
print(json.dumps({
    "engine": engine.__file__,
    "wmtui": wmtui.__file__,
    "version": engine.__version__,
    "presets": {k: [str(preset_dir(k)), preset_names(k)] for k in KINDS},
    "editable": sorted(m for m in sys.modules if m.startswith("__editable__")),
    "path": sys.path,
}))
"""
    return json.loads(installed.ok(installed.python, "-c", script).stdout)


def package_files(src: Path) -> set[str]:
    return {
        p.relative_to(src).as_posix()
        for package in PACKAGES
        for p in (src / package).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_wheel_and_sdist_hold_every_file_of_the_packages(installed: Installed) -> None:
    expected = package_files(installed.src)
    data = {name for name in expected if not name.endswith(".py")}
    assert "wmtui/tui/app.tcss" in data
    for kind in ("scenarios", "recipes", "sweeps"):
        assert any(n.startswith(f"engine/studies/presets/{kind}/") for n in data), kind
    with zipfile.ZipFile(installed.wheel) as wheel:
        assert expected - set(wheel.namelist()) == set()
    with tarfile.open(installed.sdist) as sdist:
        top = installed.sdist.name.removesuffix(".tar.gz")
        names = {n.removeprefix(f"{top}/") for n in sdist.getnames()}
    assert expected - names == set()


def test_the_fresh_environment_imports_the_installed_copy(
    installed: Installed, facts: dict[str, Any]
) -> None:
    venv = installed.venv.resolve()
    for module in ("engine", "wmtui"):
        assert Path(facts[module]).resolve().is_relative_to(venv), facts[module]
    for folder, names in facts["presets"].values():
        assert Path(folder).resolve().is_relative_to(venv) and names, folder
    assert facts["editable"] == []  # our editable install's hook never ran
    # "" is the command's current folder, a temporary one; the checkout is on no other entry
    assert ROOT not in {Path(p).resolve() for p in facts["path"] if p}


def test_version_is_the_engine_version(installed: Installed, facts: dict[str, Any]) -> None:
    assert installed.ok(installed.wmtui, "--version").stdout.strip() == (
        f"wmtui {facts['version']}"
    )


def test_the_classic_preset_runs_headless_to_completion(
    installed: Installed, facts: dict[str, Any]
) -> None:
    """The installed classic preset, with its GAN scan cut to a few steps (300 steps of ten
    generators take minutes on a CPU; the scan's length is not what this test is about)."""
    folder, names = facts["presets"]["scenario"]
    assert "classic" in names
    text = (Path(folder) / "classic.toml").read_text(encoding="utf-8")
    quick = text.replace("params = { remove = true }", "params = { remove = true, scan_steps = 3 }")
    assert quick != text, "the classic preset's GAN phase changed: update this test's edit"
    (installed.work / "classic.toml").write_text(quick, encoding="utf-8")
    sizes = ["--dataset", "synthetic", "--epochs", "1", "--train-size", "1024"]
    sizes += ["--test-size", "128", "--threads", "1", "--out", "classic-run"]
    installed.ok(installed.wmtui, "run", "classic.toml", *sizes)
    summary = json.loads((installed.work / "classic-run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [p["status"] for p in summary["phases"]] == ["completed", "completed"]

    listed = installed.ok(installed.wmtui, "run", "--list").stdout
    assert all(name in listed for name in names)


def test_recipes_and_sweep_grids_come_from_the_package(
    installed: Installed, facts: dict[str, Any]
) -> None:
    recipes = installed.ok(installed.wmtui, "reproduce", "--list", "--json").stdout
    _, recipe_names = facts["presets"]["recipe"]
    assert sorted({row["recipe"] for row in json.loads(recipes)}) == recipe_names

    grids = json.loads(installed.ok(installed.wmtui, "sweep", "--list", "--json").stdout)
    _, grid_names = facts["presets"]["sweep grid"]
    assert [row["grid"] for row in grids] == grid_names
    trials = {row["grid"]: row["trials"] for row in grids}

    dry = installed.ok(installed.wmtui, "sweep", "minimal", "--dry-run", "--json")
    rows = [json.loads(line) for line in dry.stdout.splitlines()]
    assert len(rows) == trials["minimal"] and not any(row["done"] for row in rows)


PILOT = """
import asyncio, json, sys
from importlib import resources
from textual.css.stylesheet import Stylesheet
from wmtui.tui.app import WmtuiApp


def rules(sheet):
    return sorted(
        (sorted(r.selector_names), r.styles.css_lines)
        for r in sheet.rules
        if not r.is_default_rules
    )


async def main():
    css = resources.files("wmtui.tui").joinpath("app.tcss")
    alone = Stylesheet()
    alone.add_source(css.read_text(encoding="utf-8"), read_from=("app.tcss", ""))
    alone.parse()
    app = WmtuiApp(None, refresh=4.0, chooser=lambda scenario: sys.exit("nothing starts"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        listed = app.screen.query_one("#scenarios")
        print(json.dumps({
            "css": str(css),
            "screen": type(app.screen).__name__,
            "expected": rules(alone),
            "applied": rules(app.stylesheet),
            "from": [k[0] for k, v in app.stylesheet.source.items() if not v.is_defaults],
            "layout": app.screen.styles.layout.name,
            "scenarios": [
                listed.get_option_at_index(i).id for i in range(listed.option_count)
            ],
        }))
        await pilot.press("q")


asyncio.run(main())
"""


def test_the_playground_starts_with_its_stylesheet(
    installed: Installed, facts: dict[str, Any]
) -> None:
    """The start screen, driven by Textual's pilot in the fresh environment: the rules the
    app applies beyond the widgets' defaults are exactly the installed ``app.tcss``'s."""
    (installed.work / "pilot.py").write_text(PILOT, encoding="utf-8")
    seen = json.loads(installed.ok(installed.python, "pilot.py").stdout.splitlines()[-1])
    venv = installed.venv.resolve()
    assert Path(seen["css"]).resolve().is_relative_to(venv)
    assert seen["from"] and all(Path(p).resolve().is_relative_to(venv) for p in seen["from"])
    assert seen["expected"] and seen["applied"] == seen["expected"]
    assert seen["screen"] == "StartScreen" and seen["layout"] == "vertical"
    assert seen["scenarios"] == facts["presets"]["scenario"][1]
