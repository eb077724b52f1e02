"""DeepSigns' two watermark losses on one hidden layer's activations, and the reading of its
bits from the mean activation of the key images (Rouhani, Chen & Koushanfar, ASPLOS 2019).

The layer is found by role (:mod:`engine.watermarks.white_box`) and its output recorded by a
forward hook, as :mod:`engine.watermarks.snnl` records hidden layers, so the loop's model is
trained and read unchanged. Activations are the layer's output as it leaves the module (before
the ReLU that follows it), flattened per image.

The Gaussian centres ``mu`` (one per chosen class) are the loss term's own state, never model
parameters, so they never reach ``model.safetensors``: the verifier reads the *empirical* mean
of the key images' activations, never ``mu``; the centres only steer training.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.base import as_float
from engine.deploy import unwrap
from engine.watermarks.white_box import LayerRole, find_layer

#: key images per forward pass when reading the mean activations
READ_BATCH = 256


@contextmanager
def recording(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """The outputs ``layer`` gives during the block, flattened per image; hook removed after."""
    outputs: list[torch.Tensor] = []
    handle = layer.register_forward_hook(
        lambda _m, _i, out: outputs.append(out.reshape(len(out), -1))
    )
    try:
        yield outputs
    finally:
        handle.remove()


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode for a side reading of a model being trained: BatchNorm statistics and dropout
    stay untouched, and each module's own mode comes back after (a loop that freezes norm
    statistics keeps them frozen)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


@torch.no_grad()
def class_means(
    model: nn.Module, role: LayerRole, x: torch.Tensor, groups: torch.Tensor, count: int
) -> torch.Tensor:
    """[count, M]: the mean activation of ``role``'s layer over the images of each group
    (uint8 key images, groups 0..count-1), read in eval mode from the classifier itself (a
    served model's input transforms are for queries, not for reading its weights)."""
    net = unwrap(model)
    device = next(net.parameters()).device
    layer = find_layer(net, role)
    with evaluating(net), recording(layer) as outputs:
        for start in range(0, len(x), READ_BATCH):
            net(as_float(x[start : start + READ_BATCH].to(device)))
    acts = torch.cat(outputs).float()
    groups = groups.to(acts.device)
    sums = torch.zeros(count, acts.shape[1], device=acts.device).index_add_(0, groups, acts)
    sizes = torch.bincount(groups, minlength=count).clamp(min=1).to(acts)
    return sums / sizes[:, None]


def centre_loss(
    acts: torch.Tensor, mu: torch.Tensor, groups: torch.Tensor, separate: bool
) -> torch.Tensor:
    """The paper's loss1 (WRT's ``cal_loss1``), per image and unit: the mean squared distance
    of each activation to its group's centre; with ``separate``, minus the mean squared
    distance to the other centres (pushes the Gaussians apart). WRT sums instead of averaging;
    see :class:`DeepSignsLoss` for why we do not."""
    units = acts.shape[1]
    pull = ((acts - mu[groups]) ** 2).sum(1).mean() / units
    if not separate or len(mu) < 2:
        return pull
    every = torch.cdist(acts, mu).pow(2).sum(1).mean() / units  # summed over every centre
    return pull - (every - pull) / (len(mu) - 1)


def signature_loss(
    mu: torch.Tensor, projection: torch.Tensor, signature: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """The paper's loss2 (WRT's ``cal_loss2``): for each centre whose group is in the batch,
    the mean binary cross-entropy of ``sigmoid(projection @ mu_k / sqrt(M))`` against its bits,
    summed over those centres. ``projection`` is [N, M], ``signature`` [centres, N]. The
    ``sqrt(M)`` keeps the logits at the scale of one unit whatever the layer's width; it
    changes no sign, so the bits read are the paper's ``sigmoid(A mu) > 0.5``."""
    logits = mu[present] @ projection.T / projection.shape[1] ** 0.5
    bce = F.binary_cross_entropy_with_logits(logits, signature[present].float(), reduction="none")
    return bce.mean(1).sum()


def batch_means(acts: torch.Tensor, groups: torch.Tensor, count: int) -> torch.Tensor:
    """[count, M]: each group's mean activation in the batch (zero for a group not in it),
    differentiable, so loss2 on it trains the model itself."""
    sums = torch.zeros(count, acts.shape[1], device=acts.device).index_add(0, groups, acts)
    sizes = torch.bincount(groups, minlength=count).clamp(min=1).to(acts)
    return sums / sizes[:, None]


#: where the centres come from: the key batch's own class means, or WRT's learnt variables
CENTRES = ("batch", "learnt")


class DeepSignsLoss:
    """The loop's loss term for key batches (``Source.loss``):
    ``gamma0 * CE + gamma1 * loss1 + gamma2 * loss2`` on a batch of key images whose labels are
    their groups (the first ``count`` classes, so a group is also the image's true class).

    ``centres="batch"`` (our default): mu is the batch's mean activation per group, so loss2
    pushes the model's activations themselves to encode the bits and loss1 tightens each
    group around its mean; what is trained is exactly what the verifier reads.
    ``centres="learnt"`` (WRT's reading): mu is a variable of its own, started on the first
    call at the model's mean activations of the key images (WRT's ``from_scratch: False``) and
    moved after each call by ``mu_lr`` times the running sum of the gradients of
    ``gamma1 * loss1 + gamma2 * loss2`` (WRT never zeroes mu's gradient); loss2 reaches the
    model only through loss1 pulling the activations to mu.

    Scale: WRT sums loss1 over every image and unit and feeds loss2 the raw ``A mu``, so both
    grow with the layer's width M; on its BatchNorm network at learning rate 0.01 that holds,
    but on a LeNet-5 at 0.05 either sum alone sent test accuracy to 10%. So loss1 is per image
    and unit, and loss2 reads ``A mu / sqrt(M)`` (a unit's scale; no sign changes, so neither
    do the bits): the gammas mean the same for any layer, at the price of no longer being
    WRT's numbers in WRT's units. WRT's learnt centres barely moved in a few
    epochs (BER 0.49 after 12 key batches on a synthetic LeNet-5), hence batch centres."""

    def __init__(
        self,
        role: LayerRole,
        projection: torch.Tensor,
        signature: torch.Tensor,
        key_x: torch.Tensor,
        key_groups: torch.Tensor,
        gammas: tuple[float, float, float],
        mu_lr: float,
        separate: bool = False,
        centres: str = "batch",
    ) -> None:
        self.role = role
        self.projection = projection.float()
        self.signature = signature
        self.key_x, self.key_groups = key_x, key_groups
        self.gamma0, self.gamma1, self.gamma2 = gammas
        self.mu_lr = mu_lr
        self.separate = separate
        self.learnt = centres == "learnt"
        #: the learnt centres [count, M] and their gradients' running sum (term state, not
        #: the model's: they never reach the model file)
        self.mu: torch.Tensor | None = None
        self.grad_sum: torch.Tensor | None = None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        count = len(self.signature)
        if self.learnt and self.mu is None:
            self.mu = class_means(model, self.role, self.key_x, self.key_groups, count)
            self.grad_sum = torch.zeros_like(self.mu)
        with recording(find_layer(model, self.role)) as outputs:
            logits = model(x)
        ce = F.cross_entropy(logits, y)
        with torch.autocast(x.device.type, enabled=False):  # distances and sigmoids in fp32
            acts = outputs[-1].float()
            if self.mu is not None:
                mu = self.mu.clone().requires_grad_(True)  # a leaf of this call only
            else:
                mu = batch_means(acts, y, count)
            present = torch.unique(y)
            loss1 = self.gamma1 * centre_loss(acts, mu, y, self.separate)
            loss2 = self.gamma2 * signature_loss(
                mu, self.projection.to(acts.device), self.signature.to(acts.device), present
            )
        if self.mu is None or self.grad_sum is None:
            return self.gamma0 * ce + loss1 + loss2
        (grad,) = torch.autograd.grad(loss1 + loss2, mu, retain_graph=True)
        with torch.no_grad():
            self.grad_sum = self.grad_sum + torch.nan_to_num(grad)
            self.mu = self.mu - self.mu_lr * self.grad_sum
        return self.gamma0 * ce + loss1 + loss2.detach()
