"""The soft nearest-neighbour loss (SNNL; Frosst, Papernot & Hinton, ICML 2019) on a model's
hidden layers, and the entangling loss term of ``ewe`` built on it.

SNNL measures how entangled two groups of representations are: for each point, the share of
its soft neighbours (weights ``exp(-distance * T / 100)``) that carry its own group label,
averaged as ``-log``. Low: the groups are apart; high: they are mixed. Entangled watermarks
(Jia et al., USENIX Security 2021) *maximise* it between key samples and clean images of the
target class on every hidden layer, so the key's response shares the features of the task
and a thief who copies the task copies the key with it.

The formula follows the reference code (``models.py`` of cleverhans-lab/entangled-watermark
and ``wrt/defenses/watermark/jia.py`` of the Watermark-Robustness-Toolbox): ``T`` is scaled
as theirs (distances divided by ``100 / T``), the diagonal is removed by subtracting 1 from
``exp(0)`` and clipping to [0, 1], and both sums carry a small epsilon so an all-distant batch
gives a finite loss rather than NaN. Hidden representations go through a ReLU first, as the
reference takes pre-activation layer outputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

#: the epsilon of both sums (WRT's value)
EPS = 1e-7
METRICS = ("euclidean", "cosine")
#: the lowest a learnt temperature may go
MIN_TEMPERATURE = 1e-3


def pairwise_distance(x: torch.Tensor, metric: str) -> torch.Tensor:
    """[N, N] squared Euclidean distances, or cosine distances (1 - cos), of flattened rows."""
    flat = x.reshape(len(x), -1)
    if metric == "cosine":
        unit = F.normalize(flat, dim=1)
        return 1.0 - unit @ unit.T
    norms = (flat * flat).sum(1)
    return (norms[None, :] + norms[:, None] - 2.0 * flat @ flat.T).clamp(min=0.0)


def snnl(
    x: torch.Tensor, y: torch.Tensor, temperature: torch.Tensor | float, metric: str = "euclidean"
) -> torch.Tensor:
    """Soft nearest-neighbour loss of representations ``x`` [N, ...] with group labels ``y``.

    ``temperature`` is Jia's ``T``: neighbours weigh ``exp(-d * T / 100)``."""
    distance = pairwise_distance(x.float(), metric)
    weights = torch.exp(-distance * (temperature / 100.0))
    weights = (weights - torch.eye(len(x), device=x.device)).clamp(0.0, 1.0)
    pick = weights / (EPS + weights.sum(1, keepdim=True))
    same = (y[:, None] == y[None, :]).to(pick.dtype)
    return -torch.log(EPS + (pick * same).sum(1)).mean()


def hidden_layers(model: nn.Module) -> list[nn.Module]:
    """The convolutions and dense layers of ``model`` in definition order, the last one (the
    output layer) excluded: the layers whose outputs SNNL entangles."""
    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return layers[:-1]


@contextmanager
def recording(layers: list[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Collect each layer's output of the forward passes inside the block (hooks removed
    after it, whatever happens)."""
    outputs: list[torch.Tensor] = []
    handles = [
        layer.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for layer in layers
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class EntanglementLoss:
    """The training loop's loss term for watermark batches (``Source.loss``):
    ``CE(model(x), target) - weight * sum_l SNNL_l / (L + 1)`` over the L hidden layers.

    The normaliser counts the output layer as WRT's does, so ``weight`` means what WRT's
    ``snnl_weight`` means. The batch's ``y`` are group labels (1: key sample, 0: clean image
    of the target class); every image is trained towards ``target``.

    The temperatures, one per hidden layer, are the term's own state, not model parameters
    (they never reach model.safetensors): after each step's forward, each moves by
    ``T_l -= lr * dSNNL_l / dT_l`` as the reference code of Jia et al. updates them, so the
    temperature seeks the scale at which the groups look most apart while the model pulls
    them together. (WRT instead adds them to the model's optimizer, which minimises
    ``-weight * SNNL``, so its temperatures move the other way.)
    """

    def __init__(
        self,
        target: int,
        weight: float,
        temperature: float,
        temperature_lr: float,
        metric: str = "cosine",
    ) -> None:
        self.target = target
        self.weight = weight
        self.initial = temperature
        self.lr = temperature_lr
        self.metric = metric
        self.temperatures: torch.Tensor | None = None
        #: the last step's SNNL per hidden layer (read without a sync in the step)
        self.last_snnl: torch.Tensor | None = None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        layers = hidden_layers(model)
        with recording(layers) as outputs:
            logits = model(x)
        target = torch.full((len(x),), self.target, device=x.device)
        ce = F.cross_entropy(logits, target)
        if not layers or self.weight == 0:
            return ce
        if self.temperatures is None or len(self.temperatures) != len(outputs):
            self.temperatures = torch.full((len(outputs),), float(self.initial), device=x.device)
        temps = self.temperatures.clone().requires_grad_(True)  # a leaf of this step only
        with torch.autocast(x.device.type, enabled=False):  # exp of distances wants fp32
            losses = [
                snnl(F.relu(out.float()), y, temps[i], self.metric) for i, out in enumerate(outputs)
            ]
            total = torch.stack(losses)
        (grad,) = torch.autograd.grad(total.sum(), temps, retain_graph=True)
        with torch.no_grad():  # kept positive: at T <= 0 every neighbour weighs the same
            step = self.temperatures - self.lr * torch.nan_to_num(grad)
            self.temperatures = step.clamp(min=MIN_TEMPERATURE)
        self.last_snnl = total.detach()
        return ce - self.weight * total.sum() / (len(layers) + 1)
