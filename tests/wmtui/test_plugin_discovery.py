"""A detector added by one module is found everywhere, with no name list, no type test and no
CLI module to edit: ``wmtui detect --help``, the playground's `d` form, a scenario phase, and
a real run through the job layer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.attacks import ATTACKS, AttackerData, Detection, Detector, register_detector
from engine.attacks.detection import ScanParams
from engine.config import TrainConfig
from engine.jobs import JobSpec, run
from engine.models import Architecture, build_model
from engine.registry import param
from engine.runs import RunDir
from engine.session import JobContext
from engine.studies.scenarios import scenario_from_mapping
from tests.wmtui.fakes import FakeSession, training_script
from wmtui.cli import app
from wmtui.tui.app import WmtuiApp
from wmtui.tui.screens.plugin_form import PluginFormScreen

TOY = "toy-scan"


@dataclasses.dataclass(frozen=True)
class ToyParams(ScanParams):
    """The shared scan settings plus one of its own."""

    spread: float = param(1.0, "how far apart the toy sizes are", low=0.0)


class ToyScan(Detector[ToyParams]):
    """Toy scan: sizes from the model's output bias, nothing learnt."""

    method = TOY

    def detect(
        self, model: torch.nn.Module, data: AttackerData, ctx: JobContext, seed: int
    ) -> Detection:
        sizes = [1.0 + self.params.spread * c for c in range(10)]
        return Detection(TOY, sizes, "toy size", None, 0.0, [0.0] * 10, [1.0] * 10)


@pytest.fixture
def toy_detector():
    register_detector(TOY, ToyParams)(ToyScan)
    yield
    ATTACKS.unregister(TOY)


def test_help_lists_it(toy_detector) -> None:
    result = CliRunner().invoke(app, ["detect", "--help"])
    assert result.exit_code == 0 and TOY in result.output
    assert "Toy scan" in result.output


async def test_the_scan_form_offers_it(toy_detector, tmp_path: Path) -> None:
    app_ = WmtuiApp(lambda: FakeSession(training_script()), refresh=4.0, run_path=tmp_path)
    async with app_.run_test(size=(100, 32)) as pilot:
        await pilot.press("d")
        await pilot.pause(0.2)
        assert isinstance(app_.screen, PluginFormScreen)
        assert TOY in app_.screen.plugins
        await pilot.press("escape")
        await pilot.press("a")
        await pilot.pause(0.2)
        assert TOY not in app_.screen.plugins  # the attack form lists removal attacks only


def test_a_scenario_runs_it(toy_detector, tmp_path: Path, shared_data_dir: Path) -> None:
    raw = {
        "train": {"dataset": "synthetic", "epochs": 1, "train_size": 512, "test_size": 128},
        "phases": [
            {"kind": "train"},
            {"kind": "detect", "method": TOY, "params": {"spread": 2.0}},
        ],
    }
    scenario = scenario_from_mapping(raw, name="toy")
    assert scenario.phases[1].params_type() is ToyParams
    assert scenario.phases[1].parsed_params().spread == 2.0
    with pytest.raises(Exception, match="detect phase"):
        scenario_from_mapping(
            {**raw, "phases": [{"kind": "train"}, {"kind": "attack", "attack": TOY}]}, name="bad"
        )


def test_the_job_layer_runs_it(toy_detector, tmp_path: Path, shared_data_dir: Path) -> None:
    config = TrainConfig(dataset="synthetic", train_size=512, test_size=128)
    suspect = RunDir.create(tmp_path / "s", {"command": "train", "config": config.to_dict()})
    arch = Architecture("lenet5", (1, 28, 28), 10)
    suspect.save_model(build_model(arch), arch)
    spec = JobSpec.detect(TOY, run=suspect.path, data_fraction=0.5, spread=0.5, out=tmp_path / "d")
    result = run(spec)
    assert result.summary["perturbation_sizes"][:2] == [1.0, 1.5]
    assert result.summary["method"] == TOY and result.status == "completed"
