"""Exponential weighting of a model's parameters (Namba & Sakuma, "Robust Watermarking of
Neural Network with Exponential Weighting", AsiaCCS 2019), applied for an embedding and baked
in afterwards.

Every convolution's and linear layer's weight w is used in the forward pass as
``EW(w, T) = w * exp(T |w|) / max(exp(T |w|))`` (the max over the layer): large weights keep
their value, small ones shrink towards zero, so what the model learns while reweighted lives
in its largest weights, the ones pruning keeps and fine-tuning moves least. The training loop
is not changed: :func:`reweight` puts a :mod:`torch.nn.utils.parametrize` parametrization on
each layer (the parameter objects, which the optimizer holds, stay the same) and
:func:`bake` replaces it by the plain weight ``EW(w)``. A reweighted model's ``state_dict``
is already in the baked form (its layers' state-dict hooks translate it), so a checkpoint or
model file written mid-embedding is an ordinary model of the architecture; loading such a
state back into the reweighted model inverts EW exactly (it is a bijection per layer, see
:func:`unweighted`), which is what the loop's restore after a diverged step does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

#: the layers whose weights are reweighted (biases never are)
LAYERS = (nn.Conv2d, nn.Linear)
_PARAMETRIZED = "parametrizations.weight.original"
_HANDLES = "_ew_handles"


def exp_weighted(w: torch.Tensor, temperature: float) -> torch.Tensor:
    """``EW(w, T)``, computed as ``w * exp(T (|w| - max|w|))``: the same value without the
    overflow of ``exp(T |w|)`` for large weights."""
    magnitude = w.abs()
    return w * torch.exp(temperature * (magnitude - magnitude.max()))


def unweighted(v: torch.Tensor, temperature: float) -> torch.Tensor:
    """The w with ``EW(w, T) = v``. EW keeps the largest magnitude M (its factor is 1) and maps
    each |w| in [0, M] to ``|w| exp(T (|w| - M))``, strictly increasing, so |w| is the root of
    ``x exp(T x) = |v| exp(T M)``; Newton's method from an upper bound converges to it
    monotonically (the function is convex and increasing), in float64."""
    v64 = v.detach().double()
    top = float(v64.abs().max())
    target = v64.abs() * torch.exp(torch.tensor(temperature * top, dtype=torch.float64))
    x = torch.minimum(target, torch.full_like(target, top))  # both bound the root from above
    for _ in range(100):
        grow = torch.exp(temperature * x)
        step = (x * grow - target) / (grow * (1.0 + temperature * x))
        x = x - step
        if float(step.abs().max()) <= 1e-15 * max(top, 1e-30):
            break
    return (torch.sign(v64) * x).to(v.dtype)


class ExpWeighting(nn.Module):
    """The parametrization: the layer's stored weight w is read as ``EW(w, T)``."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return exp_weighted(w, self.temperature)


def _save_baked(module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    """State-dict hook: the raw w under the plain name, as ``EW(w)``."""
    raw = state.pop(prefix + _PARAMETRIZED, None)
    if raw is not None:
        state[prefix + "weight"] = module.weight.detach()


def _load_baked(module: nn.Module, state: dict[str, Any], prefix: str, *_args: Any) -> None:
    """Load pre-hook: a baked weight goes back to the raw w it came from."""
    baked = state.pop(prefix + "weight", None)
    if baked is not None:
        temperature = module.parametrizations.weight[0].temperature  # type: ignore[union-attr]
        state[prefix + _PARAMETRIZED] = unweighted(baked, temperature)


def reweighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, LAYERS)]


def reweight(model: nn.Module, temperature: float) -> int:
    """Read every conv/linear weight of ``model`` as ``EW(w, T)`` from now on (in place);
    the number of layers reweighted. The weights themselves are not changed: the forward
    starts from ``EW(w)`` of the model as it is, as the paper's embedding does."""
    layers = reweighted_layers(model)
    for layer in layers:
        if parametrize.is_parametrized(layer, "weight"):
            raise ValueError("the model is already reweighted")
        parametrize.register_parametrization(layer, "weight", ExpWeighting(temperature))
        handles = (
            layer.register_state_dict_post_hook(_save_baked),
            layer.register_load_state_dict_pre_hook(_load_baked),
        )
        setattr(layer, _HANDLES, handles)
    return len(layers)


def bake(model: nn.Module) -> int:
    """Replace every reweighting by the plain weight ``EW(w)`` (in place, the same parameter
    objects): the model is an ordinary one again. The number of layers baked."""
    baked = 0
    for layer in reweighted_layers(model):
        if not parametrize.is_parametrized(layer, "weight"):
            continue
        parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        for handle in getattr(layer, _HANDLES, ()):
            handle.remove()
        if hasattr(layer, _HANDLES):
            delattr(layer, _HANDLES)
        baked += 1
    return baked
