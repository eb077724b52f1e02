"""The ``fresh-keys`` job: fresh keys of a scheme verified against a run's model."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.jobs import JobSpec, run
from engine.watermarks.pattern import PatternScheme

TINY = {"dataset": "synthetic", "train_size": 512, "test_size": 128, "epochs": 1}
TINY |= {"optimizer": "adam", "lr": 0.003, "device": "cpu"}


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fresh") / "wm"
    run(JobSpec.embed("pattern", trigger="square", out=out, **TINY))
    return out


def test_fresh_keys_do_not_verify_against_the_watermarked_model(
    marked: Path, tmp_path: Path
) -> None:
    params = {"count": 4, "test_images": 128}
    result = run(JobSpec("fresh-keys", params=params, source=marked, out=tmp_path / "fresh"))
    summary = result.summary
    assert summary["scheme"] == "pattern" and summary["fresh"] == 4
    assert summary["verified"] == 0 and summary["rate"] == 0.0
    assert summary["min_log10_p"] <= 0.0
    assert (tmp_path / "fresh" / "summary.json").is_file()


def test_every_verdict_is_counted(marked: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = PatternScheme.verify
    calls: list[int] = []

    def every_other(self, model, key, data, alpha, *, test_acc=True):  # type: ignore[no-untyped-def]
        verdict = real(self, model, key, data, alpha, test_acc=test_acc)
        calls.append(len(data.test_x))
        return dataclasses.replace(verdict, verified=len(calls) % 2 == 1)

    monkeypatch.setattr(PatternScheme, "verify", every_other)
    result = run(JobSpec("fresh-keys", params={"count": 5, "test_images": 64}, source=marked))
    assert calls == [64] * 5
    assert result.summary["verified"] == 3 and result.summary["rate"] == pytest.approx(0.6)


def test_bad_input_is_refused_before_anything_runs(marked: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'newlabel'"):
        JobSpec("fresh-keys", params={"scheme": "newlabl"}, source=marked).validate()
    with pytest.raises(ConfigError, match="count"):
        JobSpec("fresh-keys", params={"count": 0}, source=marked).validate()
    with pytest.raises(ConfigError, match="needs the run"):
        JobSpec("fresh-keys", params={}).validate()
    clean = tmp_path / "clean"
    run(JobSpec.train(out=clean, **TINY))
    with pytest.raises(ConfigError, match="has no key"):
        JobSpec("fresh-keys", source=clean).validate()
    JobSpec("fresh-keys", params={"scheme": "newlabel", "count": 1}, source=clean).validate()
