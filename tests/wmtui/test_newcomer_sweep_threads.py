"""Sweep workers follow the one thread policy: on a loaded machine they do not spawn one
worker per core (trials ran at 254-840 img/s where the playground got 8-10k)."""

from __future__ import annotations

import pytest

from engine import threads
from engine.studies import sweep_backends


@pytest.fixture
def busy_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads, "current_load", lambda: 7.3)


def test_a_loaded_machine_gets_one_worker_with_one_thread(busy_two_cores) -> None:
    assert sweep_backends.default_workers(8) == 1
    split = threads.split_threads(8, None, None)
    assert (split.workers, split.threads) == (1, 1)
    assert "load 7.3" in split.message() and "1 worker" in split.message()


def test_a_free_machine_shares_its_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "current_load", lambda: 0.0)
    assert threads.split_threads(3, None, None)[:2] == (3, 2)
    assert threads.split_threads(20, 2, None)[:2] == (2, 4)
    given = threads.split_threads(20, 2, 3)
    assert given[:2] == (2, 3) and "--threads" in given.message()
