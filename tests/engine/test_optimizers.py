"""The loop's SGD and Adam are torch.optim's, bit for bit, share its checkpoint layout, and
refuse the torch.optim options they do not compute instead of training without them."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from engine import optimizers
from engine.errors import ConfigError


def model_and_batches(seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(75, 4))
    batches = [(torch.randn(8, 1, 7, 7), torch.randint(0, 4, (8,))) for _ in range(6)]
    return model, batches


def train(model: nn.Module, optimizer, batches) -> None:
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def through_json(state: dict) -> dict:
    """What a checkpoint keeps: tensors as they are, the rest through JSON (runs.py)."""
    tensors = {
        (pid, k): v
        for pid, s in state["state"].items()
        for k, v in s.items()
        if isinstance(v, torch.Tensor)
    }
    plain = json.loads(
        json.dumps(
            {
                "param_groups": state["param_groups"],
                "state": {
                    str(pid): {k: v for k, v in s.items() if not isinstance(v, torch.Tensor)}
                    for pid, s in state["state"].items()
                },
            }
        )
    )
    out = {int(pid): dict(s) for pid, s in plain["state"].items()}
    for (pid, k), v in tensors.items():
        out.setdefault(int(pid), {})[k] = v.clone()
    return {"state": out, "param_groups": plain["param_groups"]}


MAKERS = {
    "sgd": (
        lambda p: optimizers.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
    ),
    "sgd-dampening": (
        lambda p: optimizers.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4, dampening=0.3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4, dampening=0.3),
    ),
    "adam": (
        lambda p: optimizers.Adam(p, lr=1e-3, weight_decay=1e-4),
        lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4),
    ),
}


def assert_same(a: nn.Module, b: nn.Module) -> None:
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_steps_match_torch_optim_bit_for_bit(name: str) -> None:
    ours, theirs = MAKERS[name]
    a, batches = model_and_batches()
    b, _ = model_and_batches()
    train(a, ours(a.parameters()), batches)
    train(b, theirs(b.parameters()), batches)
    start, _ = model_and_batches()
    assert not any(
        torch.equal(p, q) for p, q in zip(a.parameters(), start.parameters(), strict=True)
    )
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_state_moves_between_ours_and_torch_optim_mid_run(name: str) -> None:
    """Ours and torch.optim step side by side; each one's state then goes (as a checkpoint
    keeps it) into the other on a copy of the model, and all four go on stepping."""
    ours, theirs = MAKERS[name]
    a, batches = model_and_batches()
    b, _ = model_and_batches()
    opt_a, opt_b = ours(a.parameters()), theirs(b.parameters())
    train(a, opt_a, batches[:3])
    train(b, opt_b, batches[:3])
    assert_same(a, b)
    c, d, restarted = copy.deepcopy(b), copy.deepcopy(a), copy.deepcopy(b)
    opt_c, opt_d = ours(c.parameters()), theirs(d.parameters())
    opt_c.load_state_dict(through_json(opt_b.state_dict()))  # torch.optim -> ours
    opt_d.load_state_dict(through_json(opt_a.state_dict()))  # ours -> torch.optim
    opt_restarted = theirs(restarted.parameters())  # the state lost on the way
    for model, optimizer in ((a, opt_a), (b, opt_b), (c, opt_c), (d, opt_d)):
        train(model, optimizer, batches[3:])
    train(restarted, opt_restarted, batches[3:])
    for model in (a, c, d):
        assert_same(model, b)
    with pytest.raises(AssertionError):  # the comparison would see a lost state
        assert_same(restarted, b)


REFUSED = [
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True), "nesterov=True"),
    (lambda p: torch.optim.SGD(p, lr=0.1, maximize=True), "maximize=True"),
    (lambda p: torch.optim.Adam(p, amsgrad=True), "amsgrad=True"),
    (lambda p: torch.optim.Adam(p, maximize=True), "maximize=True"),
    (lambda p: torch.optim.AdamW(p), "decoupled_weight_decay=True"),
]


@pytest.mark.parametrize(("theirs", "fragment"), REFUSED)
def test_a_state_asking_for_what_ours_does_not_compute_is_refused(theirs, fragment) -> None:
    source, batches = model_and_batches()
    optimizer = theirs(source.parameters())
    train(source, optimizer, batches[:2])
    saved = optimizer.state_dict()
    ours_cls = optimizers.SGD if isinstance(optimizer, torch.optim.SGD) else optimizers.Adam
    target, _ = model_and_batches()
    ours = ours_cls(target.parameters(), lr=0.5)
    before = copy.deepcopy(ours.param_groups[0] | {"params": None})
    with pytest.raises(ConfigError, match=fragment) as caught:
        ours.load_state_dict(through_json(saved))
    assert "saved optimizer state" in str(caught.value) and "\n" not in str(caught.value)
    assert ours.param_groups[0] | {"params": None} == before and ours.state == {}  # untouched


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: optimizers.SGD(p, lr=0.1, momentum=0.9, nesterov=True), "nesterov=True"),
        (lambda p: optimizers.SGD(p, lr=0.1, maximize=True), "maximize=True"),
        (lambda p: optimizers.SGD(p, lr=0.1, differentiable=True), "differentiable=True"),
        (lambda p: optimizers.Adam(p, lr=0.1, amsgrad=True), "amsgrad=True"),
        (lambda p: optimizers.Adam(p, lr=0.1, decoupled_weight_decay=True), "decoupled"),
        (lambda p: optimizers.Adam(p, lr=0.1, amsgrd=True), "did you mean 'amsgrad'"),
    ],
)
def test_asking_ours_for_what_it_does_not_compute_is_refused(make, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make(nn.Linear(2, 2).parameters())


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(optimizers.SGD, torch.optim.SGD), (optimizers.Adam, torch.optim.Adam)],
)
def test_every_torch_option_is_computed_refused_or_a_kernel_choice(ours, theirs) -> None:
    """A torch release that adds an option fails here until ours computes or refuses it."""
    group = theirs(nn.Linear(2, 2).parameters(), lr=0.1).state_dict()["param_groups"][0]
    options = set(group) - {"params"}
    assert options == set(ours.defaults)
    known = ours.implemented | set(ours.unsupported) | (optimizers.KERNEL_CHOICES & options)
    assert known == options
    assert not ours.implemented & set(ours.unsupported)
    for option, honoured in ours.unsupported.items():
        assert group[option] == honoured  # what ours computes is torch's default


def test_resuming_a_checkpoint_that_asks_for_nesterov_is_refused(
    tmp_path: Path, isolated_data: Path
) -> None:
    """A checkpoint written elsewhere (torch.optim with Nesterov) is not resumed without it."""
    from engine.jobs import JobSpec, run

    out = tmp_path / "run"
    tiny = {"dataset": "synthetic", "train_size": 256, "test_size": 64, "device": "cpu"}
    run(JobSpec.train(out=out, epochs=1, **tiny))
    saved = json.loads((out / "checkpoint.json").read_text())
    saved["optimizer"]["param_groups"][0]["nesterov"] = True
    (out / "checkpoint.json").write_text(json.dumps(saved))
    weights = (out / "checkpoint.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="does not implement nesterov=True"):
        run(JobSpec.resume_run(out, epochs=2))
    assert (out / "checkpoint.safetensors").read_bytes() == weights  # nothing trained over it


def test_the_loops_optimizer_never_imports_dynamo() -> None:
    import subprocess

    code = (
        "import sys, torch\n"
        "from engine.training import OptimSettings, make_optimizer\n"
        "m = torch.nn.Linear(3, 2)\n"
        "for kind in ('sgd', 'adam'):\n"
        "    o = make_optimizer(m.parameters(), OptimSettings(kind, 0.1))\n"
        "    m(torch.ones(1, 3)).sum().backward(); o.step(); o.zero_grad()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
