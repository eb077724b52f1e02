"""``neural-cleanse``: per-class mask + pattern reverse engineering (Wang et al., S&P 2019).

For every candidate target class c it searches a mask m_c in [0,1]^{H x W} and a pattern
p_c in [0,1]^{C x H x W} such that ``(1 - m_c) x + m_c p_c`` is classified as c for clean x,
minimising ``CE + cost_c * |m_c|_1``. A watermark target needs a much smaller mask than any
natural class (the trigger is a shortcut), so the L1 norms' MAD anomaly index flags it.
All classes are searched at once (the K triggers stacked, the classifier run once on the
K x B stamped images); each class keeps its own cost, adjusted as Neural Cleanse does: up
while the search succeeds, down while it fails, so every class ends at the smallest mask
that still works rather than wherever one fixed weight happens to balance.
"""

from __future__ import annotations

import dataclasses
import time

import torch
import torch.nn.functional as F
from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.detection import (
    Detection,
    Detector,
    ReversedTrigger,
    ScanParams,
    ScanReporter,
    ScanSet,
    batched_logits,
    decide,
    frozen,
    masked_mean,
    others_mask,
)
from engine.attacks.registry import register_attack
from engine.data.base import as_float
from engine.models.generators import StackedTrigger
from engine.registry import param
from engine.session import JobContext


@dataclasses.dataclass(frozen=True)
class NeuralCleanseParams(ScanParams):
    init_cost: float = param(1e-3, "initial weight of the mask's L1 norm (NC: 1e-3)", low=0.0)
    target_success: float = param(
        0.99, "attack success a mask must reach to count (NC: 0.99)", low=0.0, high=1.0
    )
    patience: int = param(10, "steps between cost adjustments", low=1)
    cost_up: float = param(1.5, "cost multiplier while succeeding (NC: 1.5)", low=1.0)


def mask_pattern_images(
    mask: torch.Tensor, pattern: torch.Tensor, example: torch.Tensor
) -> dict[str, torch.Tensor]:
    """What to show of a mask/pattern trigger: the mask, the trigger (mask x pattern) and one
    clean image stamped with it."""
    return {
        "mask": mask.detach().clamp(0, 1),
        "trigger": (mask * pattern).detach().clamp(0, 1),
        "stamped": torch.lerp(example, pattern, mask).detach().clamp(0, 1),
    }


def mask_pattern_trigger(
    cls: int, mask: torch.Tensor, pattern: torch.Tensor, example: torch.Tensor
) -> ReversedTrigger:
    mask, pattern = mask.detach().clone(), pattern.detach().clone()
    return ReversedTrigger(
        cls,
        lambda x: torch.lerp(x, pattern.to(x.dtype), mask.to(x.dtype)),
        mask_pattern_images(mask, pattern, example),
        {"mask": mask, "pattern": pattern},
    )


@register_attack("neural-cleanse", NeuralCleanseParams)
class NeuralCleanse(Detector[NeuralCleanseParams]):
    """Neural Cleanse: per-class mask+pattern search, L1 norms, MAD anomaly index, unlearning."""

    method = "neural-cleanse"

    def detect(self, model: nn.Module, data: AttackerData, ctx: JobContext, seed: int) -> Detection:
        p = self.params
        started = time.perf_counter()
        k = data.num_classes
        with frozen(model):
            scan = ScanSet.build(
                model, data.clean_images(), limit=p.images, val=p.val_images, seed=seed
            )
            device = scan.train_x.device
            torch.manual_seed(seed)
            trig = StackedTrigger(data.shape, k).to(device)
            opt = torch.optim.Adam(trig.parameters(), lr=p.lr, betas=(0.5, 0.9))
            cost = torch.full((k,), p.init_cost, device=device)
            best_l1 = torch.full((k,), float("inf"), device=device)
            best_mask = trig.mask().detach().clone()
            best_pattern = trig.pattern().detach().clone()
            succeeded = torch.zeros(k, device=device)
            targets = torch.arange(k, device=device)
            gen = torch.Generator().manual_seed(seed + 1)
            report = ScanReporter(ctx, self.method, k, p.report_every)
            for step in range(p.scan_steps):
                ctx.between_steps()
                x, pred = scan.batch(step, p.batch, gen)
                counts = others_mask(pred, k)
                logits = batched_logits(model, trig.apply(x))
                ce = F.cross_entropy(
                    logits.flatten(0, 1),
                    targets.repeat_interleave(len(x)),
                    reduction="none",
                ).view(k, -1)
                l1 = trig.mask().flatten(1).sum(1)
                loss = (masked_mean(ce, counts) + cost * l1).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    hit = (logits.argmax(2) == targets.unsqueeze(1)).float()
                    asr = masked_mean(hit, counts)
                    ok = asr >= p.target_success
                    better = ok & (l1 < best_l1)
                    best_l1 = torch.where(better, l1, best_l1)
                    best_mask[better] = trig.mask()[better]
                    best_pattern[better] = trig.pattern()[better]
                    succeeded += ok.float()
                    if (step + 1) % p.patience == 0:
                        # Neural Cleanse's schedule, per class: mostly succeeding -> a larger
                        # L1 weight shrinks the mask; mostly failing -> a smaller one
                        up = succeeded >= p.patience / 2
                        cost = torch.where(up, cost * p.cost_up, cost / p.cost_up**1.5)
                        succeeded.zero_()
                    report.running(step, torch.where(best_l1.isfinite(), best_l1, l1))
            never = ~best_l1.isfinite()  # no mask ever reached the target: keep the last one
            best_mask[never] = trig.mask().detach()[never]
            best_pattern[never] = trig.pattern().detach()[never]
            sizes, success = self._validate(model, scan, best_mask, best_pattern)
        flagged, index, indices = decide(sizes, rule=p.rule, threshold=None)
        report.final(sizes)
        trigger = None
        if flagged is not None:
            trigger = mask_pattern_trigger(
                flagged, best_mask[flagged], best_pattern[flagged], as_float(scan.val_x[:1])[0]
            )
        return Detection(
            method=self.method,
            sizes=sizes,
            size_kind="mask L1 norm",
            flagged_class=flagged,
            anomaly_index=index,
            anomaly_indices=indices,
            success=success,
            rule=p.rule,
            steps=p.scan_steps,
            seconds=round(time.perf_counter() - started, 3),
            trigger=trigger,
        )

    @torch.no_grad()
    def _validate(
        self, model: nn.Module, scan: ScanSet, mask: torch.Tensor, pattern: torch.Tensor
    ) -> tuple[list[float], list[float]]:
        """Mask L1 per class and the success of each mask on the held-out images."""
        k = len(mask)
        x = as_float(scan.val_x)
        stamped = torch.lerp(x.unsqueeze(0), pattern.unsqueeze(1), mask.unsqueeze(1))
        hit = (
            batched_logits(model, stamped).argmax(2) == torch.arange(k, device=x.device)[:, None]
        ).float()
        success = masked_mean(hit, others_mask(scan.val_pred, k))
        return mask.flatten(1).sum(1).tolist(), success.tolist()
