"""The loop's SGD and Adam are torch.optim's, bit for bit, and share its checkpoint layout."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from engine import optimizers


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


MAKERS = {
    "sgd": (
        lambda p: optimizers.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4),
    ),
    "adam": (
        lambda p: optimizers.Adam(p, lr=1e-3, weight_decay=1e-4),
        lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4),
    ),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_steps_match_torch_optim_bit_for_bit(name: str) -> None:
    ours, theirs = MAKERS[name]
    a, batches = model_and_batches()
    b, _ = model_and_batches()
    train(a, ours(a.parameters()), batches)
    train(b, theirs(b.parameters()), batches)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_checkpoints_move_between_ours_and_torch_optim(name: str) -> None:
    ours, theirs = MAKERS[name]
    reference, batches = model_and_batches()
    train(reference, theirs(reference.parameters()), batches)  # six steps of torch.optim
    a, _ = model_and_batches()
    first = ours(a.parameters())
    train(a, first, batches[:3])
    b, _ = model_and_batches()
    b.load_state_dict(a.state_dict())
    second = theirs(b.parameters())
    second.load_state_dict(first.state_dict())  # ours -> torch.optim, then on
    train(b, second, batches[3:])
    c, _ = model_and_batches()
    c.load_state_dict(b.state_dict())
    third = ours(c.parameters())
    third.load_state_dict(second.state_dict())  # torch.optim -> ours
    for pr, pb in zip(reference.parameters(), b.parameters(), strict=True):
        assert torch.equal(pr, pb)
    assert set(third.state_dict()["state"]) == set(second.state_dict()["state"])


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
