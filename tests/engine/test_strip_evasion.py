"""``strip-evasion``: STRIP's entropy as the paper defines it, wrong answers that depend on the
query alone, the false-positive rate the threshold was set for, the filter on disk (never
unpickled), and the owner's key collapsing through it while honest users keep their answers."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from engine.attacks import ATTACKS, EVASION
from engine.data import load_dataset
from engine.data.base import as_float
from engine.deploy import DEPLOY_SPEC, DEPLOY_WEIGHTS, Deployed
from engine.filters import FILTERS, make_filter
from engine.filters.strip import Strip
from engine.jobs import JobSpec, run
from engine.jobs.referee import load_key_probes
from engine.models import Architecture, build_model
from engine.runs import load_model
from tests.conftest import save_suspect_run
from wmtui.cli import app
from wmtui.cli import attacks as cli_attacks

cli_attacks.register(app)
runner = CliRunner()
ARCH = Architecture("lenet5", (1, 28, 28), 10)


def lenet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ARCH).eval()


def strip_filter(
    n: int = 3, threshold: float = math.inf, answer: str = "random", blend: str = "mix"
) -> Strip:
    made = make_filter("strip", {"n": n, "answer": answer, "seed": 5, "blend": blend})
    assert isinstance(made, Strip)
    gen = torch.Generator().manual_seed(1)
    made.clean.copy_(torch.randint(0, 256, made.clean.shape, generator=gen, dtype=torch.uint8))
    made.threshold.fill_(threshold)
    return made


def test_registered_as_an_evasion_attack_and_a_filter() -> None:
    assert ATTACKS.get("strip-evasion").family == EVASION
    assert "strip" in FILTERS


@pytest.mark.parametrize("blend", ["mix", "add"])
def test_entropy_is_the_mean_over_blends_of_the_prediction_entropy_in_bits(blend: str) -> None:
    model, strip = lenet(), strip_filter(n=3, blend=blend)
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    expected = []
    for query in x:
        total = 0.0
        for clean in strip.clean:
            if blend == "mix":
                blend_image = 0.5 * query + 0.5 * clean.float() / 255
            else:  # the paper's code: both at full weight, saturating
                blend_image = (query + clean.float() / 255).clamp(0, 1)
            with torch.no_grad():
                probs = torch.softmax(model(blend_image[None]), 1)[0].double()
            total += -sum(float(p) * math.log2(float(p)) for p in probs if p > 0)
        expected.append(total / 3)
    assert strip.entropy(x, model).tolist() == pytest.approx(expected, rel=1e-5)


def test_flagged_queries_get_a_wrong_answer_that_depends_on_the_query_alone() -> None:
    model = lenet()
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        honest = model(x)
        flag_all = strip_filter(threshold=math.inf)
        answers = flag_all(x, honest, model).argmax(1)
        assert (answers != honest.argmax(1)).all()
        assert len(answers.unique()) >= 5  # a random class, not one fixed wrong answer
        order = torch.randperm(64, generator=torch.Generator().manual_seed(4))
        shuffled = flag_all(x[order], honest[order], model).argmax(1)
        assert torch.equal(shuffled, answers[order])  # per query, whatever the batch
        second = strip_filter(answer="second")(x, honest, model).argmax(1)
        assert torch.equal(second, honest.topk(2, 1).indices[:, 1])
        # an uncalibrated (or never-triggered) filter leaves every answer as it was
        assert torch.equal(strip_filter(threshold=-math.inf)(x, honest, model), honest)
        # a query is a query in either mode: only the loop's fitting pass goes unfiltered
        assert torch.equal(flag_all(x, honest, model.train()), flag_all(x, honest, model.eval()))
    # the loop fitting the classifier (a chain's fine-tuning after this step): unfiltered
    assert torch.equal(flag_all(x, honest, model.train()), honest)


def test_false_positive_rate_on_unseen_clean_queries_is_within_two_points_of_the_set_rate(
    pattern_run: Path, tmp_path: Path, shared_data_dir: Path
) -> None:
    # 2,000 calibration images and 2,000 unseen test images: the rate's standard deviation
    # (threshold quantile and measurement together) is about 0.7 points, so 2 points is ~3 sd.
    # The quantile's coverage does not depend on n, so n = 8 keeps the test fast.
    model, _ = load_model(pattern_run)
    suspect = save_suspect_run(
        tmp_path / "suspect", shared_data_dir, model, train_size=2072, test_size=2000
    )
    out = tmp_path / "served"
    spec = JobSpec.attack(
        "strip-evasion",
        run=suspect,
        out=out,
        data_fraction=1.0,
        n=8,
        calibration=2000,
        held_out=0,
        device="cpu",
    )
    summary = run(spec).summary
    assert summary["status"] == "completed" and summary["steps"] == 0
    assert summary["info"]["calibration_images"] == 2000 and summary["info"]["blend_images"] == 8
    served, _ = load_model(out)
    strip = served.filters[0]
    test = load_dataset("synthetic", shared_data_dir, train_size=2072, test_size=2000).data
    flagged = strip.flagged(as_float(test.test_x), served.inner)
    assert abs(float(flagged.float().mean()) - 0.05) <= 0.02


@pytest.fixture(scope="module")
def strip_run(pattern_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pattern run served behind STRIP by the command line (n 16: a few seconds)."""
    out = tmp_path_factory.mktemp("strip") / "served"
    result = runner.invoke(
        app,
        [
            "attack",
            "--attack",
            "strip-evasion",
            "--run",
            str(pattern_run),
            "--out",
            str(out),
            "--n",
            "16",
            "--data-fraction",
            "1.0",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_the_key_collapses_through_the_filter_while_clean_accuracy_drops_by_little(
    strip_run: Path,
) -> None:
    summary = json.loads((strip_run / "summary.json").read_text())
    info = summary["info"]
    before, after = summary["retention_before"]["key"], summary["retention"]["key"]
    assert before >= 0.9 and after <= 0.35 and after < before / 2
    # clean queries lose about what the false-positive rate flags, no more
    assert summary["test_acc_before"] - summary["test_acc"] <= 2 * info["fpr_set"]
    assert info["held_out_images"] > 0 and 0.0 <= info["fpr_held_out"] <= 0.15
    assert summary["cost"]["queries"] == 0 and summary["cost"]["labels"] == 0


def test_the_filter_reloads_from_safetensors_and_answers_as_the_referee_measured(
    strip_run: Path, pattern_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = json.loads((strip_run / DEPLOY_SPEC).read_text())
    assert [f["name"] for f in record["filters"]] == ["strip"]
    tensors = load_file(str(strip_run / DEPLOY_WEIGHTS))
    assert tensors["filter.0.clean"].dtype == torch.uint8
    assert tensors["filter.0.clean"].shape == (16, 1, 28, 28)
    summary = json.loads((strip_run / "summary.json").read_text())
    assert float(tensors["filter.0.threshold"]) == pytest.approx(summary["info"]["threshold"])

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a deployed model must never be unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    first, _ = load_model(strip_run)
    second, _ = load_model(strip_run)
    assert isinstance(first, Deployed) and isinstance(first.filters[0], Strip)
    data = load_dataset("synthetic", train_size=1024, test_size=256).data
    (probe,) = [
        p for p in load_key_probes(pattern_run, data, torch.device("cpu")) if p.name == "key"
    ]
    x = as_float(probe.x)
    x = probe.transform(x) if probe.transform is not None else x
    with torch.no_grad():
        answers = first(x)
        assert torch.equal(answers, second(x))
    key_acc = float((answers.argmax(1) == probe.y).float().mean())
    assert key_acc == pytest.approx(summary["retention"]["key"])


def test_verify_queries_through_the_filter(strip_run: Path, pattern_run: Path) -> None:
    result = runner.invoke(
        app,
        ["verify", "--run", str(strip_run), "--key", str(pattern_run / "key"), "--json"],
    )
    assert result.exit_code in (0, 1), result.output
    row = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")][-1]
    summary = json.loads((strip_run / "summary.json").read_text())
    assert row["retention"] == pytest.approx(summary["retention"]["key"])
    assert row["retention"] < summary["retention_before"]["key"] / 2


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--fpr", "1.5"], "fpr"),
        (["--answer", "wrong"], "answer"),
        (["--n", "0"], "n"),
        (["--data-fraction", "0"], "clean images"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    pattern_run: Path, tmp_path: Path, flags: list[str], fragment: str
) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "attack",
            "--attack",
            "strip-evasion",
            "--run",
            str(pattern_run),
            "--out",
            str(out),
            *flags,
        ],
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.output
    assert not out.exists()
