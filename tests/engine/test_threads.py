"""The one CPU-thread policy: --threads, else OMP_NUM_THREADS, else the free cores."""

from __future__ import annotations

import os

import pytest
import torch

from engine import threads
from engine.errors import ConfigError
from engine.threads import apply_threads, choose_threads


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """A pretend machine: ``machine(cores, load)`` sets what the policy sees."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def set_machine(cores: int, load: float) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load), raising=False)

    return set_machine


@pytest.mark.parametrize(
    ("cores", "load", "ui", "expected"),
    [
        (8, 0.0, False, 8),  # idle: every core
        (8, 3.2, False, 5),  # busy: what is free
        (8, 3.2, True, 4),  # the screen keeps one
        (2, 1.7, False, 1),  # a shared 2-core box: one, never oversubscribed
        (2, 40.0, False, 1),  # overloaded: at least one
        (1, 0.0, True, 1),  # one core with a screen: still one
    ],
)
def test_automatic_choice_is_the_free_cores(machine, cores, load, ui, expected) -> None:
    machine(cores, load)
    choice = choose_threads(None, ui=ui)
    assert choice.count == expected
    assert f"{cores} cores" in choice.reason and "--threads N" in choice.reason


def test_requested_wins_then_the_environment(machine, monkeypatch) -> None:
    machine(8, 0.0)
    assert choose_threads(3) == (3, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads(None) == (2, "OMP_NUM_THREADS")
    assert choose_threads(5).count == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: ignored
    assert choose_threads(None).count == 8


@pytest.mark.parametrize("requested", [0, -1, 10**6])
def test_bad_requests_are_a_config_error(machine, requested: int) -> None:
    machine(4, 0.0)
    with pytest.raises(ConfigError, match="--threads must be between 1 and 1024"):
        choose_threads(requested)


def test_no_load_average_counts_as_idle(machine, monkeypatch) -> None:
    machine(4, 0.0)

    def unavailable() -> tuple[float, float, float]:
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert threads.current_load() == 0.0 and choose_threads(None).count == 4


def test_apply_sets_torch_and_says_what_it_chose(machine) -> None:
    machine(4, 0.0)
    try:
        assert apply_threads(2) == "cpu threads: 2 (--threads)"
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
