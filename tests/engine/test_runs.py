import os
import pickle
from pathlib import Path

import pytest
import torch

from engine.config import TrainConfig
from engine.errors import ConfigError, RunError
from engine.jobs import JobSpec, new_run_manifest, train_job
from engine.models import Architecture, build_model
from engine.runs import RunDir, atomic_write_json, import_pt, load_model, save_model
from engine.session import Session


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_json(tmp_path / "a.json", {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "a.json", {"x": float("nan")})
    assert (tmp_path / "a.json").read_text().strip().endswith("}")  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_model_round_trip_through_safetensors(tmp_path: Path) -> None:
    arch = Architecture("lenet5", (1, 28, 28), 10)
    model = build_model(arch)
    save_model(tmp_path, model, arch)
    loaded, arch2 = load_model(tmp_path)
    assert arch2 == arch
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model.eval()(x), loaded.eval()(x))


@pytest.mark.parametrize("damage", ["weights", "arch", "mismatch", "missing"])
def test_corrupt_model_files_are_run_errors(tmp_path: Path, damage: str) -> None:
    arch = Architecture("lenet5", (1, 28, 28), 10)
    save_model(tmp_path, build_model(arch), arch)
    if damage == "weights":
        (tmp_path / "model.safetensors").write_bytes(b"\x00" * 20)
    elif damage == "arch":
        (tmp_path / "model.json").write_text("{not json")
    elif damage == "mismatch":
        (tmp_path / "model.json").write_text(
            '{"name": "lenet5", "in_shape": [3, 32, 32], "num_classes": 10}'
        )
    else:
        (tmp_path / "model.safetensors").unlink()
    with pytest.raises(RunError):
        load_model(tmp_path)


class Boom:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pt_import_never_executes_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": Boom(str(marker))}, evil)
    with pytest.raises(RunError, match="refusing"):
        import_pt(evil)
    assert not marker.exists()
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(RunError):
        import_pt(plain)
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    assert torch.equal(import_pt(good)["w"], torch.ones(3))


def test_create_refuses_existing_run_and_unwritable_dir(tmp_path: Path) -> None:
    RunDir.create(tmp_path / "r", {"config": {}})
    with pytest.raises(RunError, match="already holds a run"):
        RunDir.create(tmp_path / "r", {"config": {}})
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(RunError, match="cannot write"):
        RunDir.create(not_a_dir / "r", {"config": {}})
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(RunError, match="cannot write"):
            RunDir.create(locked / "r", {"config": {}})
    finally:
        locked.chmod(0o700)


def test_overwrite_removes_everything_the_replaced_run_wrote(tmp_path: Path) -> None:
    """An old key left behind would referee the new model as if it were watermarked."""
    old = RunDir.create(tmp_path / "r", {"config": {}})
    for name in ("model.safetensors", "model.json", "checkpoint.safetensors", "summary.json"):
        (old.path / name).write_text("old")
    for folder in ("key", "key-2", "reversed"):
        (old.path / folder).mkdir()
        (old.path / folder / "key.json").write_text("{}")
    (old.path / "notes.txt").write_text("mine")
    RunDir.create(tmp_path / "r", {"config": {"new": 1}}, overwrite=True)
    assert sorted(p.name for p in old.path.iterdir()) == ["manifest.json", "notes.txt"]
    assert RunDir.open(old.path).manifest()["config"] == {"new": 1}


def test_a_job_never_writes_over_its_input_run(tmp_path: Path) -> None:
    spec = JobSpec.attack("prune", run=tmp_path / "r", out=tmp_path / "r/", overwrite=True)
    with pytest.raises(ConfigError, match="input run itself"):
        spec.validate()


def run_training(out: Path, config: TrainConfig, resume: bool = False) -> Session:
    run = RunDir.open(out) if resume else RunDir.create(out, new_run_manifest(config, "train"))
    sink = run.event_sink()
    session = Session(train_job(config, run, resume=resume), [sink]).start()
    list(session.events())
    sink.close()
    return session


def test_resume_continues_exactly_where_the_checkpoint_left(tmp_path: Path) -> None:
    base = TrainConfig(
        dataset="synthetic",
        train_size=256,
        test_size=64,
        batch_size=64,
        eval_every=2,
        schedule="step",
    )
    straight = run_training(tmp_path / "straight", base.replace(epochs=2))
    assert straight.status == "completed"
    run_training(tmp_path / "halves", base.replace(epochs=1))
    resumed = run_training(tmp_path / "halves", base.replace(epochs=2), resume=True)
    assert resumed.status == "completed" and resumed.summary["steps"] == 8
    a, _ = load_model(tmp_path / "straight")
    b, _ = load_model(tmp_path / "halves")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-6)
    run_dir = RunDir.open(tmp_path / "halves")
    assert run_dir.summary()["status"] == "completed"
    steps = [e["step"] for e in run_dir.events() if e["event"] == "metrics"]
    assert steps == sorted(steps) and steps[-1] == 8
