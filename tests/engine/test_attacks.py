"""Removal attacks against a crude watermark made here: a bright square stamped onto owner
images, labelled as class 0 and trained in with an extra ``Source``. The referee's key probe
is the same stamp on test images of other classes, so retention is a real measurement."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import sys
from pathlib import Path

import pytest
import torch

from engine import commands as cmd
from engine.attacks import (
    ATTACKS,
    AttackEnv,
    AttackerBudget,
    TrainReport,
    build_attacker_data,
    fit_images,
    make_attack,
)
from engine.attacks.prune import magnitude_masks, neuron_masks, sparsity
from engine.config import TrainConfig
from engine.data import load_dataset, make_splits
from engine.errors import ConfigError, RunError
from engine.events import Log, Metrics, Phase
from engine.jobs.attack import attack_manifest, check_attack
from engine.jobs.referee import default_probes
from engine.metrics import Probe, accuracy
from engine.models import Architecture, build_model
from engine.runs import RunDir, load_model
from engine.session import JobContext
from engine.training import OptimSettings, Source, TrainLoop, clean_test_probe

TARGET = 0
TRAIN, TEST = 1024, 256


def stamp(x: torch.Tensor) -> torch.Tensor:
    """The crude trigger: a white 5x5 square near the bottom-right corner."""
    x = x.clone()
    x[:, :, -6:-1, -6:-1] = 1.0
    return x


def key_probe(data) -> Probe:
    others = data.test_y != TARGET
    return Probe("wm", data.test_x[others], torch.full((int(others.sum()),), TARGET), stamp)


def probes_for(data, device) -> list[Probe]:
    return [clean_test_probe(data), key_probe(data)]


@pytest.fixture(scope="module")
def wm_run(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A lenet5 on synthetic digits with the stamp watermark embedded (retention ~100%)."""
    data = load_dataset("synthetic", shared_data_dir, train_size=TRAIN, test_size=TEST).data
    arch = Architecture("lenet5", data.shape, data.num_classes)
    torch.manual_seed(0)
    model = build_model(arch)
    key_x = data.train_x[:64]
    loop = TrainLoop(
        model,
        [
            Source("owner", data.train_x, 64, y=data.train_y),
            Source("key", key_x, 16, y=torch.full((64,), TARGET), transform=stamp),
        ],
        OptimSettings(optimizer="adam", lr=0.003, schedule="cosine"),
        ctx=JobContext(),
        phase="train",
        total_steps=200,
        probes=[],
        eval_every=10**6,
    )
    loop.run()
    assert accuracy(model, key_probe(data)) > 0.95
    config = TrainConfig(
        dataset="synthetic", train_size=TRAIN, test_size=TEST, data_dir=str(shared_data_dir)
    )
    run = RunDir.create(
        tmp_path_factory.mktemp("wm") / "run",
        {"command": "train", "config": config.to_dict(), "seed": 0},
    )
    run.save_model(model, arch)
    return run.path


def run_attack(run: Path, name: str, params=None, out: RunDir | None = None, **budget):
    events: list = []
    budget = AttackerBudget.from_mapping({"data_fraction": 0.5, **budget})
    job = check_attack(run, name, params, budget, device="cpu", eval_every=40).job(out, probes_for)
    return job(JobContext(events.append)), events


def test_ft_basic_removes_the_watermark_where_the_low_lr_baseline_keeps_it(wm_run) -> None:
    basic, events = run_attack(wm_run, "ft-basic", steps=150)
    baseline, _ = run_attack(wm_run, "finetune", {"mode": "ftal"}, steps=150)
    assert basic["before"]["retention"]["wm"] > 0.95
    assert basic["after"]["retention"]["wm"] < 0.5
    assert basic["test_acc"] >= basic["before"]["test_acc"] - 0.05
    assert baseline["params"]["lr"] == 0.001
    assert baseline["after"]["retention"]["wm"] > 0.9
    # the referee streamed retention while the attack ran, under the attack's phase name
    metrics = [e for e in events if isinstance(e, Metrics) and e.test_acc is not None]
    assert metrics and all("wm" in m.retention for m in metrics)
    assert {m.phase for m in metrics} == {"ft-basic"}
    start = next(e for e in events if isinstance(e, Phase) and e.status == "start")
    assert start.name == "ft-basic" and start.info["steps"] == 150
    assert start.info["data_fraction"] == 0.5 and start.info["attack"] == "ft-basic"


def test_job_writes_a_new_run(wm_run, tmp_path) -> None:
    budget = AttackerBudget.from_mapping({"data_fraction": 0.25, "steps": 5})
    params = make_attack("finetune", {"mode": "rtal"}).params
    out = RunDir.create(tmp_path / "out", attack_manifest(wm_run, "finetune", params, budget))
    summary, _ = run_attack(wm_run, "finetune", {"mode": "rtal"}, out, data_fraction=0.25, steps=5)
    on_disk = out.summary()
    assert on_disk["status"] == "completed" and on_disk["steps"] == 5
    assert set(on_disk["before"]) == set(on_disk["after"]) == {"test_acc", "retention"}
    assert on_disk["retention"] == summary["retention"] and "wm" in on_disk["retention"]
    assert on_disk["labeled_images"] == round(0.25 * TRAIN)
    manifest = out.manifest()
    assert manifest["source_run"] == str(wm_run.resolve())
    assert manifest["attack"]["params"]["mode"] == "rtal"
    assert manifest["config"]["dataset"] == "synthetic"
    model, arch = load_model(out.path)
    assert arch.name == "lenet5" and isinstance(model, torch.nn.Module)


def test_set_lr_applies_mid_attack(wm_run) -> None:
    events: list = []
    ctx = JobContext(events.append)
    ctx.send(cmd.SetLR(0.0123))
    budget = AttackerBudget.from_mapping({"data_fraction": 0.25, "steps": 20})
    check_attack(wm_run, "ft-basic", None, budget, device="cpu").job(None, probes_for)(ctx)
    assert any(isinstance(e, Log) and "learning rate set to 0.0123" in e.message for e in events)
    assert all(m.lr == pytest.approx(0.0123) for m in events if isinstance(m, Metrics))


class Recorder:
    """A fake ``env.train``: records what the attack asked the loop to do, trains nothing."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, model, sources, settings, *, steps, params=None) -> TrainReport:
        self.calls.append(
            {
                "model": model,
                "sources": sources,
                "settings": settings,
                "steps": steps,
                "params": None if params is None else list(params),
            }
        )
        return TrainReport(steps, 0.0)


def attacker_data(data, **budget):
    return build_attacker_data(AttackerBudget.from_mapping(budget), data, seed=0)


def suspect(data) -> torch.nn.Module:
    torch.manual_seed(1)
    return build_model(Architecture("lenet5", data.shape, data.num_classes))


def test_ft_basic_follows_refit_appendix_a(small_synthetic) -> None:
    data, rec = small_synthetic, Recorder()
    attack = make_attack("ft-basic")
    env = AttackEnv(JobContext(), torch.device("cpu"), 0, rec)
    model = suspect(data)
    attacker = attacker_data(data, data_fraction=0.2, epochs=3)
    attack.run(model, Architecture("lenet5", data.shape, 10), attacker, env)
    (call,) = rec.calls
    s = call["settings"]
    assert (s.optimizer, s.lr, s.schedule, s.step_size, s.gamma) == ("sgd", 0.05, "step", 500, 0.9)
    assert [src.per_batch for src in call["sources"]] == [100]
    assert call["model"] is model and call["params"] is None  # the whole model
    assert call["steps"] == 3 * -(-round(0.2 * len(data.train_x)) // 100)


@pytest.mark.parametrize(("fraction", "batches"), [(0.2, [100, 50]), (0.0, [100])])
def test_ftau_batches_and_pseudo_labels(small_synthetic, fraction, batches) -> None:
    data, rec = small_synthetic, Recorder()
    model = suspect(data)
    attacker = attacker_data(data, data_fraction=fraction, unlabeled="synthetic", queries=300)
    env = AttackEnv(JobContext(), torch.device("cpu"), 0, rec)
    make_attack("ftau").run(model, Architecture("lenet5", data.shape, 10), attacker, env)
    (call,) = rec.calls
    assert [s.per_batch for s in call["sources"]] == batches
    unlabeled = call["sources"][-1]
    assert unlabeled.y is None and len(unlabeled.x) == 300  # the query cap
    x = unlabeled.x[:32].float() / 255
    with torch.no_grad():
        expected = model(x).argmax(1)
        torch.nn.init.zeros_(model.classifier[-1].weight)  # training moves the model...
    assert torch.equal(unlabeled.label(x), expected)  # ...not the frozen labeller


def test_ftll_changes_only_the_last_layer(wm_run, tmp_path) -> None:
    before = load_model(wm_run)[0].state_dict()
    budget = AttackerBudget.from_mapping({"data_fraction": 0.25, "steps": 10})
    for mode in ("ftll", "rtll", "ftal"):
        params = make_attack("finetune", {"mode": mode, "lr": 0.05}).params
        out = RunDir.create(tmp_path / mode, attack_manifest(wm_run, "finetune", params, budget))
        check_attack(wm_run, "finetune", params, budget, device="cpu").job(out, probes_for)(
            JobContext()
        )
        after = load_model(out.path)[0].state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        if mode == "ftal":
            assert len(changed) == len(before), mode
        else:
            assert changed == {"classifier.4.weight", "classifier.4.bias"}, mode


def test_prune_magnitude_zeroes_the_ratio(small_synthetic) -> None:
    model = suspect(small_synthetic)
    for scope in ("global", "layer"):
        masks = magnitude_masks(model, 0.3, scope)
        pruned = sum(int((~m).sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        assert abs(pruned / total - 0.3) < 0.01
    attack = make_attack("prune", {"ratio": 0.6})
    env = AttackEnv(JobContext(), torch.device("cpu"), 0, Recorder())
    arch = Architecture("lenet5", small_synthetic.shape, 10)
    result = attack.run(model, arch, attacker_data(small_synthetic, data_fraction=0.0), env)
    assert result.info["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert sparsity(model) == pytest.approx(0.6, abs=0.01)


def test_prune_sweep_is_monotone(wm_run, tmp_path) -> None:
    budget = AttackerBudget.from_mapping({"data_fraction": 0.1})
    job = check_attack(
        wm_run,
        "prune",
        {"method": "magnitude"},
        budget,
        device="cpu",
        sweep=[0.0, 0.3, 0.6, 0.9, 0.99],
    ).job(None, probes_for)
    rows = job(JobContext())["sweep"]
    assert [r["ratio"] for r in rows] == [0.0, 0.3, 0.6, 0.9, 0.99]
    sparsities = [r["sparsity"] for r in rows]
    assert sparsities == sorted(sparsities) and sparsities[-1] > 0.98
    assert rows[0]["test_acc"] > 0.7 and rows[-1]["test_acc"] < rows[0]["test_acc"]
    assert all("wm" in r["retention"] for r in rows)


def test_neuron_pruning_and_fine_prune_keep_units_dead(small_synthetic) -> None:
    data = small_synthetic
    model = suspect(data)
    attacker = attacker_data(data, data_fraction=0.25, steps=15)
    _, pruned, total = neuron_masks(model, attacker.labeled_x, 0.5, "last")
    assert total == 16 and pruned == 8  # lenet5's last conv layer has 16 channels
    calls = []

    def train(model, sources, settings, *, steps, params=None):
        loop = TrainLoop(
            model,
            sources,
            settings,
            ctx=JobContext(),
            phase="fine-prune",
            total_steps=steps,
            probes=[],
            eval_every=100,
        )
        calls.append(settings)
        return TrainReport(loop.run().steps, 0.0)

    env = AttackEnv(JobContext(), torch.device("cpu"), 0, train)
    arch = Architecture("lenet5", data.shape, 10)
    result = make_attack("fine-prune", {"ratio": 0.5}).run(model, arch, attacker, env)
    conv = model.features[3]
    dead = (conv.weight.flatten(1).abs().sum(1) == 0) & (conv.bias == 0)
    assert int(dead.sum()) == 8 and result.steps == 15 and calls[0].lr == 0.05


def test_distill_student_agrees_with_the_teacher(wm_run, tmp_path) -> None:
    budget = AttackerBudget.from_mapping(
        {"data_fraction": 0.0, "unlabeled": "synthetic", "unlabeled_count": 1024, "steps": 80}
    )
    params = {"student": "digit-cnn", "lr": 0.01, "optimizer": "adam", "temperature": 2.0}
    out = RunDir.create(
        tmp_path / "student",
        attack_manifest(wm_run, "distill", make_attack("distill", params).params, budget),
    )
    job = check_attack(wm_run, "distill", params, budget, device="cpu").job(out, probes_for)
    summary = job(JobContext())
    student, arch = load_model(out.path)
    teacher, _ = load_model(wm_run)
    assert arch.name == summary["model"] == "digit-cnn"
    data = load_dataset("synthetic", train_size=TRAIN, test_size=TEST).data
    with torch.no_grad():
        teacher_says = teacher(data.test_x.float() / 255).argmax(1)
    agreement = accuracy(student, Probe("agree", data.test_x, teacher_says))
    assert agreement > 0.6  # chance is about 0.1


def test_attacks_never_receive_the_key() -> None:
    import engine.attacks as package

    for plugin in ATTACKS:
        run = inspect.signature(plugin.factory.run)
        assert list(run.parameters) == ["self", "model", "arch", "data", "env"], plugin.name
    # track only adds the attacker's own probes; the referee's list never reaches the attack;
    # queries is a counter the referee reads back
    fields = {f.name for f in dataclasses.fields(AttackEnv)}
    assert fields == {"ctx", "device", "seed", "train_fn", "track", "queries"}
    modules = {Path(inspect.getsourcefile(plugin.factory)) for plugin in ATTACKS}
    modules |= {
        Path(package.__file__).parent / n for n in ("registry.py", "budget.py", "common.py")
    }
    key_loaders = ("load_key", "key_folders", "load_key_probes", "engine.jobs.referee")
    for path in modules:  # every module an attack runs in; job.py (the referee) loads the key
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                imported |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        assert not any(loader in name for name in imported for loader in key_loaders), path.name
        if path.name == "piracy.py":  # the pirate uses the schemes' public algorithms, with
            continue  # keys of its own: it may import them, never a key loader (above)
        assert not any("watermarks" in name for name in imported), path.name
        assert "engine.metrics.Probe" not in imported and "engine.attacks.job" not in imported


def test_default_probes_follow_attacked_runs_to_the_owners_real_key(
    wm_run, pattern_run, small_synthetic, tmp_path
) -> None:
    data, dev = small_synthetic, torch.device("cpu")
    assert [p.name for p in default_probes(wm_run)(data, dev)] == ["test"]  # no key folder
    owner = default_probes(pattern_run)(data, dev)
    attacked = tmp_path / "attacked"
    RunDir.create(attacked, {"command": "attack", "config": {}, "source_run": str(pattern_run)})
    again = tmp_path / "attacked-again"
    RunDir.create(again, {"command": "attack", "config": {}, "source_run": str(attacked)})
    model, _ = load_model(pattern_run)
    embedded = RunDir(pattern_run).summary()["retention"]["key"]
    for run in (attacked, again):  # followed back, through a chain, to the owner's key
        probes = default_probes(run)(data, dev)
        assert [p.name for p in probes] == ["test", "key"] == [p.name for p in owner]
        assert torch.equal(probes[1].x, owner[1].x) and torch.equal(probes[1].y, owner[1].y)
        assert accuracy(model, probes[1]) == pytest.approx(embedded) and embedded > 0.85


def test_budget_draws_a_seeded_split_disjoint_from_the_key(small_synthetic) -> None:
    data = small_synthetic
    a = attacker_data(data, data_fraction=0.3)
    b = attacker_data(data, data_fraction=0.3)
    assert torch.equal(a.labeled_x, b.labeled_x) and len(a.labeled_x) == round(0.3 * TRAIN)
    key = make_splits(TRAIN, 0, key_fraction=0.1).key
    attacker = make_splits(TRAIN, 0, attacker_fraction=0.3).attacker
    assert not set(key.tolist()) & set(attacker.tolist())
    with pytest.raises(ConfigError, match="data-fraction: must be <= 1"):
        AttackerBudget.from_mapping({"data_fraction": 1.5})
    with pytest.raises(ConfigError, match="did you mean 'synthetic'"):
        AttackerBudget.from_mapping({"unlabeled": "synthetc"})


def test_fit_images_converts_grey_and_rgb() -> None:
    rgb = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    grey = fit_images(rgb, (1, 28, 28))
    assert grey.shape == (5, 1, 28, 28) and grey.dtype == torch.uint8
    back = fit_images(grey, (3, 32, 32))
    assert back.shape == (5, 3, 32, 32) and torch.equal(back[:, 0], back[:, 2])
    white = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    assert int(fit_images(white, (1, 28, 28)).min()) == 255


@pytest.mark.parametrize(
    ("name", "params", "budget", "fragment"),
    [
        ("ft-basci", None, {}, "did you mean 'ft-basic'"),
        ("prune", {"ratio": 1.5}, {}, "ratio: must be < 1"),
        ("finetune", {"mode": "ftxx"}, {}, "unknown mode"),
        ("ft-basic", None, {"data_fraction": 0.0}, "use ftau"),
        ("ftau", None, {}, "--unlabeled"),
        ("distill", {"student": "lenet"}, {"unlabeled": "synthetic"}, "did you mean 'lenet5'"),
    ],
)
def test_bad_attack_input_fails_before_running(wm_run, name, params, budget, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        check_attack(wm_run, name, params, AttackerBudget.from_mapping(budget))


def test_missing_run_and_bad_sweep(wm_run, tmp_path) -> None:
    budget = AttackerBudget()
    with pytest.raises(RunError, match="run directory not found"):
        check_attack(tmp_path / "nope", "ft-basic", None, budget)
    with pytest.raises(ConfigError, match="needs an attack with a ratio"):
        check_attack(wm_run, "ft-basic", None, budget, sweep=[0.1])
    with pytest.raises(ConfigError, match="ratio: must be < 1"):
        check_attack(wm_run, "prune", None, budget, sweep=[0.1, 1.0])


@pytest.mark.parametrize("fraction", [0.0, 0.2])
def test_ftau_runs_through_the_loop_and_keeps_accuracy(wm_run, fraction) -> None:
    summary, _ = run_attack(
        wm_run,
        "ftau",
        data_fraction=fraction,
        unlabeled="synthetic",
        unlabeled_count=512,
        steps=40,
    )
    assert summary["status"] == "completed" and summary["steps"] == 40
    assert summary["unlabeled_images"] == 512
    assert summary["test_acc"] >= summary["before"]["test_acc"] - 0.1


def test_attacks_import_no_ui_library() -> None:
    import subprocess

    code = (
        "import sys, engine.attacks\n"
        "print(','.join(m for m in ('textual', 'rich', 'typer') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
