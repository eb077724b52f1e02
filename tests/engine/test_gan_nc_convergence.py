"""``neural-cleanse`` and ``gan`` stop by the convergence rule: early once their triggers
settle, at ``scan_steps`` otherwise, and the detection says which, with the steps it ran.

The suspect is an untrained lenet5 on synthetic digits: when a scan stops does not depend on
a watermark, and the rule's thresholds below make the stopping step exact (a ``tol`` of 1
can never be beaten, so the first full window after the first mark ends the scan)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.attacks.budget import AttackerBudget, build_attacker_data
from engine.attacks.convergence import ConvergedDetection
from engine.attacks.gan import GAN_STEPS
from engine.attacks.neural_cleanse import NC_STEPS
from engine.attacks.registry import make_detector
from engine.data import load_dataset
from engine.events import ClassScan
from engine.models import Architecture, build_model
from engine.session import JobContext

TINY = {"batch": 4, "images": 120, "val_images": 40, "remove": False, "report_every": 1000}
METHODS = ["neural-cleanse", "gan"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def attacker(shared_data_dir: Path):
    data = load_dataset("synthetic", shared_data_dir, train_size=600, test_size=100).data
    return build_attacker_data(AttackerBudget(data_fraction=0.5), data, seed=0)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(Architecture("lenet5", (1, 28, 28), 10)).eval()


def scan(model, attacker, method: str, events: list, **params) -> ConvergedDetection:
    found = make_detector(method, {**TINY, **params}).detect(
        model, attacker, JobContext(events.append), 0
    )
    assert isinstance(found, ConvergedDetection)
    return found


@pytest.mark.parametrize("method", METHODS)
def test_a_settled_scan_stops_before_its_cap_and_says_so(method, model, attacker) -> None:
    events: list = []
    found = scan(
        model, attacker, method, events, scan_steps=500, converge_window=5, converge_tol=1.0
    )
    # window 1 sets the mark, window 2 finds no slot shrank by more than 100%: step 10
    assert found.steps == 10 < found.cap == 500
    assert found.stopped_because.startswith("converged at step 10")
    finals = [e for e in events if isinstance(e, ClassScan) and e.done]
    assert len(finals) == 10 and {(e.step, e.steps) for e in finals} == {(10, 10)}
    assert found.to_dict()["stopped_because"] == found.stopped_because


@pytest.mark.parametrize("method", METHODS)
def test_a_cap_of_n_stops_at_n_and_says_cap_reached(method, model, attacker) -> None:
    found = scan(model, attacker, method, [], scan_steps=7, converge_window=100)
    assert found.steps == found.cap == 7
    assert found.stopped_because == "cap reached (7 steps) before the triggers settled"


def test_the_caps_default_to_the_papers_budgets() -> None:
    """Neural Cleanse's code: 1,000 iterations of 31 batches of 32 images; AdvGAN's: 60 epochs
    over the 1,800 images a default scan optimises on; both in steps of the default batch."""
    nc, gan = make_detector("neural-cleanse").params, make_detector("gan").params
    assert nc.scan_steps == NC_STEPS == round(1000 * 31 * 32 / nc.batch)
    epochs = gan.scan_steps * gan.batch / (gan.images - gan.val_images)
    assert gan.scan_steps == GAN_STEPS and round(epochs) == 60
    # "our old budget", which the detectors recipe compares with, stays one flag away
    old = make_detector("neural-cleanse", {"scan_steps": 300}).params
    assert old.scan_steps == 300 and old.converge_window == nc.converge_window
