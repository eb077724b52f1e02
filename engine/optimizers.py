"""SGD and Adam for the one training loop, without ``torch.optim``.

Why not ``torch.optim``: in torch 2.14 its first ``step`` (and its constructor) imports
``torch._dynamo``, which with sympy costs 1.1 s of a 2-core CPU and cannot be interrupted;
it was the last second between starting the playground and its first plotted point. These
two classes run the same arithmetic as torch's single-tensor implementations (the ones it uses
on a CPU), operation for operation, and read and write the same ``state_dict`` layout, so a
checkpoint written by either loads into the other. A test pins them to ``torch.optim`` bit for
bit over several steps. On CUDA the loop uses torch.optim itself: there its multi-tensor
kernels beat any per-parameter loop, and start-up is not what a GPU run waits on.

What torch.optim would compute and these do not (Nesterov momentum, AMSGrad, maximize,
AdamW's decoupled decay) is refused with a ``ConfigError``, whether a caller asks for it or a
loaded state dict does: a run trained without it would quietly be another run.

Detectors (Neural Cleanse, the GAN scan) still use
``torch.optim``; :func:`engine.stopping.optimizers_ready` imports its machinery there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from engine.errors import ConfigError, closest

#: torch.optim options that pick a kernel (multi-tensor, fused, graph-capturable), not the
#: arithmetic: kept in ``param_groups`` so a checkpoint round-trips, and harmless here, where
#: one per-parameter loop computes what each of those kernels computes
KERNEL_CHOICES = frozenset({"foreach", "fused", "capturable"})


class _Optimizer:
    """The part of ``torch.optim.Optimizer`` the loop and the checkpoints use."""

    defaults: ClassVar[dict[str, Any]]
    #: torch.optim options whose values this class computes
    implemented: ClassVar[frozenset[str]]
    #: torch.optim options this class does not compute, with the only value it honours: a
    #: checkpoint or a caller asking for another value is refused, never trained without it
    unsupported: ClassVar[dict[str, Any]]

    def __init__(self, params: Iterable[nn.Parameter], **group: Any) -> None:
        unknown = sorted(set(group) - set(self.defaults))
        if unknown:
            raise ConfigError(
                f"{self.name()} has no option {unknown[0]!r}{closest(unknown[0], self.defaults)}"
            )
        self.check_options(group)
        self.param_groups: list[dict[str, Any]] = [
            {"params": list(params), **self.defaults, **group}
        ]
        self.state: dict[nn.Parameter, dict[str, torch.Tensor]] = {}

    @classmethod
    def name(cls) -> str:
        return f"the training loop's {cls.__name__}"

    @classmethod
    def check_options(cls, group: Mapping[str, Any], source: str = "") -> None:
        """Refuse what torch.optim would compute and this class would not (Nesterov momentum,
        AMSGrad, ...): silently training without it would differ from the run asked for, and
        from the run a checkpoint was written by."""
        for option, honoured in cls.unsupported.items():
            value = group.get(option, honoured)
            if value != honoured:
                raise ConfigError(
                    f"{cls.name()} does not implement {option}={value!r}{source}; "
                    f"it computes only {option}={honoured!r}"
                )

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: state by parameter index, groups with their indices."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                ids.append(index.setdefault(id(p), len(index)))
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        order = {id(p): p for g in self.param_groups for p in g["params"]}
        state = {index[pid]: dict(self.state[p]) for pid, p in order.items() if p in self.state}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        params = [p for g in self.param_groups for p in g["params"]]
        groups = saved["param_groups"]
        if len(groups) != len(self.param_groups) or sum(len(g["params"]) for g in groups) != len(
            params
        ):
            raise ValueError("optimizer state does not match the model's parameters")
        for loaded in groups:  # all checked before anything changes
            self.check_options(loaded, source=" (asked for by the saved optimizer state)")
        for group, loaded in zip(self.param_groups, groups, strict=True):
            for key in self.defaults:
                if key in loaded:
                    group[key] = loaded[key]
        self.state = {}
        for pid, values in saved["state"].items():
            p = params[int(pid)]
            self.state[p] = {
                k: v.to(p.device) if isinstance(v, torch.Tensor) and k != "step" else v
                for k, v in values.items()
            }


class SGD(_Optimizer):
    """``torch.optim.SGD`` (momentum, dampening, weight decay; not Nesterov or maximize)."""

    defaults: ClassVar[dict[str, Any]] = {
        "lr": 0.01,
        "momentum": 0.0,
        "dampening": 0,
        "weight_decay": 0.0,
        "nesterov": False,
        "maximize": False,
        "foreach": None,
        "differentiable": False,
        "fused": None,
    }
    implemented: ClassVar[frozenset[str]] = frozenset(
        {"lr", "momentum", "dampening", "weight_decay"}
    )
    unsupported: ClassVar[dict[str, Any]] = {
        "nesterov": False,
        "maximize": False,
        "differentiable": False,
    }

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(
            params, **{**options, "lr": lr, "momentum": momentum, "weight_decay": weight_decay}
        )

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if decay != 0:
                    grad = grad.add(p, alpha=decay)
                if momentum != 0:
                    state = self.state.setdefault(p, {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = grad.detach().clone()
                        state["momentum_buffer"] = buf
                    else:
                        buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
                    grad = buf
                p.add_(grad, alpha=-lr)


class Adam(_Optimizer):
    """``torch.optim.Adam`` (L2 weight decay added to the gradient, as torch's default; not
    AdamW's decoupled decay, AMSGrad or maximize)."""

    defaults: ClassVar[dict[str, Any]] = {
        "lr": 0.001,
        "betas": (0.9, 0.999),
        "eps": 1e-8,
        "weight_decay": 0.0,
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "decoupled_weight_decay": False,
    }
    implemented: ClassVar[frozenset[str]] = frozenset({"lr", "betas", "eps", "weight_decay"})
    unsupported: ClassVar[dict[str, Any]] = {
        "amsgrad": False,
        "maximize": False,
        "differentiable": False,
        "decoupled_weight_decay": False,
    }

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        weight_decay: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(params, **{**options, "lr": lr, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2) = group["lr"], group["betas"]
            eps, decay = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.setdefault(p, {})
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                grad = p.grad
                state["step"] += 1
                if decay != 0:
                    grad = grad.add(p, alpha=decay)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = state["step"].item()
                step_size = lr / (1 - beta1**step)
                denom = (exp_avg_sq.sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)
