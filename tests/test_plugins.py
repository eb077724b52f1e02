"""Plugins by entry point, installed for real: a tiny package built with setuptools into a
fresh venv adds an attack and a dataset that the CLI and a scenario use by name, while a
broken package installed beside it costs one warning line per entry point and nothing else.
The in-process tests load fake entry points to show what a failure leaves behind: nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine import plugins
from engine.attacks import ATTACKS, make_attack
from engine.data import DATASETS
from engine.errors import ConfigError
from engine.jobs import JOB_KINDS

TOY_PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "toy-wm-plugin"
version = "0.1"

[project.entry-points."wmtui.attacks"]
weight-noise = "toy_wm_plugin.noise"

[project.entry-points."wmtui.datasets"]
stripes = "toy_wm_plugin.stripes:load_stripes"
"""

TOY_ATTACK = '''
import dataclasses

import torch

from engine.attacks import Attack, AttackResult, register_attack
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class WeightNoiseParams:
    scale: float = param(0.01, "std of the noise added to every weight", low=0.0)


@register_attack("weight-noise", WeightNoiseParams)
class WeightNoise(Attack[WeightNoiseParams]):
    """Add Gaussian noise to every weight."""

    def run(self, model, arch, data, env):
        gen = torch.Generator().manual_seed(env.seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen).to(p.device) * self.params.scale)
        env.log(f"noise {self.params.scale} added")
        return AttackResult(model, arch)
'''

TOY_DATASET = '''
import torch

from engine.data.base import ImageSet
from engine.data.catalog import DATASETS, DatasetRequest


def _stripes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=gen)
    rows = torch.arange(28).view(1, 28, 1)
    period = (y + 2).view(-1, 1, 1)
    x = ((rows % period) == 0).expand(n, 28, 28).float() * 200
    x = x + torch.rand(n, 28, 28, generator=gen) * 55
    return x.to(torch.uint8).unsqueeze(1), y


@DATASETS.register("stripes")
def load_stripes(request: DatasetRequest) -> ImageSet:
    """Stripes, 28x28 grey, 4 classes: the stripe period is the class."""
    train_x, train_y = _stripes(request.train_size or 600, 1)
    test_x, test_y = _stripes(request.test_size or 200, 2)
    return ImageSet("stripes", train_x, train_y, test_x, test_y, ["2", "3", "4", "5"])
'''

BROKEN_PYPROJECT = """
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "broken-wm-plugin"
version = "0.2"

[project.entry-points."wmtui.attacks"]
boom = "broken_wm_plugin.boom"
clash = "broken_wm_plugin.clash"

[project.entry-points."wmtui.datasets"]
oops = "broken_wm_plugin:register"
"""

BROKEN_FILES = {
    "__init__.py": "def register():\n    raise RuntimeError('no data here')\n",
    "boom.py": "import a_module_that_is_not_installed\n",
    "clash.py": textwrap.dedent(TOY_ATTACK).replace('"weight-noise"', '"ft-basic"'),
}

#: the three warning lines' reasons, one per broken entry point
BROKEN_REASONS = {
    "boom": "ModuleNotFoundError: No module named 'a_module_that_is_not_installed'",
    "clash": "ValueError: attack 'ft-basic' registered twice",
    "oops": "RuntimeError: no data here",
}


def write_package(root: Path, pyproject: str, package: str, files: dict[str, str]) -> Path:
    (root / package).mkdir(parents=True)
    (root / "pyproject.toml").write_text(textwrap.dedent(pyproject), encoding="utf-8")
    for name, text in files.items():
        (root / package / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv seeing this environment's packages (wmtui, torch, pip, setuptools) through a
    .pth file, with the toy and the broken plugin built and installed into it alone."""
    base = tmp_path_factory.mktemp("plugins")
    toy = write_package(
        base / "toy",
        TOY_PYPROJECT,
        "toy_wm_plugin",
        {"__init__.py": "", "noise.py": TOY_ATTACK, "stripes.py": TOY_DATASET},
    )
    broken = write_package(base / "broken", BROKEN_PYPROJECT, "broken_wm_plugin", BROKEN_FILES)
    env = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = str(env / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_path("purelib")  # addsitedir: our editable install's .pth runs too
    (Path(site) / "wmtui_dev.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    pip = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    pip += ["--no-index", "--disable-pip-version-check", str(toy), str(broken)]
    subprocess.run(pip, check=True, capture_output=True, cwd=base)
    return env


def wmtui(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [str(env / "bin" / "python"), "-m", "wmtui", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=300)


def check_warnings(stderr: str) -> None:
    """One line per broken entry point, naming it, its distribution and the reason; no
    traceback."""
    lines = [line for line in stderr.splitlines() if "plugin" in line and "skipped" in line]
    assert len(lines) == 3, stderr
    for name, reason in BROKEN_REASONS.items():
        [line] = [line for line in lines if line.startswith(f"wmtui: plugin {name!r} ")]
        assert "broken-wm-plugin 0.2" in line and line.endswith(reason), line
    assert "Traceback" not in stderr


def done_summary(stdout: str) -> dict:
    events = [json.loads(line) for line in stdout.splitlines()]
    [done] = [e for e in events if e.get("event") == "done"]
    return done["summary"]


def test_a_plugin_attack_and_dataset_from_the_cli(venv: Path, tmp_path: Path) -> None:
    train = wmtui(
        venv, "train", "--dataset", "stripes", "--epochs", "1", "--batch-size", "50",
        "--out", "clean", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr
    check_warnings(train.stderr)
    manifest = json.loads((tmp_path / "clean" / "manifest.json").read_text())
    assert "stripes" in json.dumps(manifest)

    attack = wmtui(
        venv, "attack", "--attack", "weight-noise", "--run", "clean", "--scale", "3",
        "--out", "noisy", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert attack.returncode == 0, attack.stderr
    check_warnings(attack.stderr)
    summary = done_summary(attack.stdout)
    assert (summary["attack"], summary["params"], summary["dataset"]) == (
        "weight-noise",
        {"scale": 3.0},
        "stripes",
    )
    # the flag reached the plugin: the saved weights moved by noise of std 3
    before, after = (load_file(tmp_path / run / "model.safetensors") for run in ("clean", "noisy"))
    moved = torch.cat([(after[k] - before[k]).flatten() for k in before])
    assert 2.7 < float(moved.std()) < 3.3

    listing = wmtui(venv, "attack", "--list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "Add Gaussian noise to every weight." in listing.stdout
    assert "--scale" in listing.stdout and "std of the noise added" in listing.stdout


def test_a_plugin_attack_and_dataset_in_a_scenario(venv: Path, tmp_path: Path) -> None:
    scenario = tmp_path / "my.toml"
    scenario.write_text(
        textwrap.dedent(
            """
            title = "stripes, then noise"

            [train]
            dataset = "stripes"
            epochs = 1
            batch_size = 50

            [[phases]]
            name = "clean"
            kind = "train"

            [[phases]]
            name = "noise"
            kind = "attack"
            attack = "weight-noise"
            params = { scale = 3.0 }
            """
        )
    )
    result = wmtui(venv, "run", str(scenario), "--out", "scen", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    check_warnings(result.stderr)
    assert (tmp_path / "scen").is_dir()
    assert "noise 3.0 added" in result.stdout


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for fake plugin modules; what they register is forgotten after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = {name: set(reg.names()) for name, reg in plugins.GROUPS.items()}
    yield tmp_path
    for name, registry in plugins.GROUPS.items():
        for added in set(registry.names()) - before[name]:
            registry.unregister(added)
    for module in [m for m in sys.modules if m.startswith("fake_wm_")]:
        del sys.modules[module]


def point(name: str, value: str, group: str = "wmtui.attacks") -> EntryPoint:
    return EntryPoint(name=name, value=value, group=group)


def test_a_failing_plugin_takes_back_what_it_registered(
    module_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A module that registers a good attack, then clashes: neither stays; the next plugin
    (a callable entry point) still loads, and its declaration gives validated params."""
    (module_dir / "fake_wm_half.py").write_text(
        TOY_ATTACK.replace('"weight-noise"', '"half-noise"')
        + "\nregister_attack('ft-basic', WeightNoiseParams)(WeightNoise)\n"
    )
    (module_dir / "fake_wm_late.py").write_text(
        TOY_ATTACK.replace("@register_attack", "# @register_attack")
        + "\ndef register():\n    register_attack('late-noise', WeightNoiseParams)(WeightNoise)\n"
    )
    problems = plugins.load_entry_points(
        [point("half", "fake_wm_half"), point("late", "fake_wm_late:register")]
    )
    assert problems == [
        "wmtui: plugin 'half' from an unknown distribution (wmtui.attacks = fake_wm_half) "
        "skipped: ValueError: attack 'ft-basic' registered twice"
    ]
    assert capsys.readouterr().err == problems[0] + "\n"
    assert "half-noise" not in ATTACKS and "ft-basic" in ATTACKS
    assert "late-noise" in [p.name for p in JOB_KINDS.get("attack").factory.plugins()]
    assert make_attack("late-noise", {"scale": "0.5"}).params.scale == 0.5
    with pytest.raises(ConfigError, match=r"scale: must be >= 0\.0"):
        make_attack("late-noise", {"scale": "-1"})


def test_a_plugin_without_a_declaration_or_registration_is_refused(
    module_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (module_dir / "fake_wm_bare.py").write_text(
        "from engine.attacks import ATTACKS\n"
        "ATTACKS.register('bare', None, role='removal')(lambda params: None)\n"
    )
    (module_dir / "fake_wm_empty.py").write_text("X = 1\n")
    problems = plugins.load_entry_points(
        [point("bare", "fake_wm_bare"), point("empty", "fake_wm_empty", "wmtui.datasets")]
    )
    assert [p.split(" skipped: ")[1] for p in problems] == [
        "attack 'bare' declares no params dataclass",
        "'fake_wm_empty' registered no dataset",
    ]
    assert "bare" not in ATTACKS and "empty" not in DATASETS
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_loading_is_once_per_process() -> None:
    first = plugins.load_plugins()
    assert plugins.load_plugins() == first
