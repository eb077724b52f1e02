"""``abs``: Artificial Brain Stimulation (Liu et al., "ABS: Scanning Neural Networks for
Back-doors by Artificial Brain Stimulation", CCS 2019).

A backdoor lives in a few inner neurons that, once elevated, force one label whatever the
input. ABS finds them directly instead of searching every class's trigger:

1. **stimulate**: on a few seed images per class (TrojanZoo's default: 5), set one channel of
   an inner convolution to a sweep of values (``samples`` levels up to ``samp_k`` times the
   layer's largest activation) and read the logits. A candidate neuron elevates the same label
   (other than the image's own) on at least 75% of the seeds; candidates are ranked by that
   elevation's margin over the next label (the smallest over those seeds), largest first,
   and the ``top_neurons`` (20) kept. Every (neuron,
   level, seed) goes through the rest of the network in one batched call per chunk.
2. **reverse**: one mask + pattern per candidate, all optimised together on the seeds (the
   stacked triggers of :mod:`engine.models.generators`), maximising the candidate's
   activation, penalising the other channels' and the mask's area, heavily once the mask's
   L1 exceeds ``max_size`` (16) pixels (ABS's bounded trigger; TrojanZoo's weight 500, twice
   that beyond 1.2x the bound), plus the candidate's label (``--label-weight``, see below).
3. **score**: a candidate's REASR is the share of held-out clean images (not already of its
   label) its trigger sends to its label. A class's size is ``1 - REASR`` of its best
   candidate (1 with none), so the per-class bars and the MAD line keep their meaning
   (smaller = more suspicious); the default rule flags the best class when its REASR reaches
   ``--reasr`` (ABS's decision), ``--rule mad`` flags by the anomaly index instead.

Removal unlearns the flagged candidate's trigger, as the other detectors do. The reversal
runs until the candidates' losses stop falling (:mod:`engine.attacks.convergence`).
Departures, measured on the tests' synthetic lenet5 (square -> class 4; 600 steps):

* the size bound is on the mask's L1, not TrojanZoo's count of pixels above 0.01: the count
  left every candidate with 16 faint pixels (none above 0.5) and REASR 0 everywhere;
* the candidate's label enters the loss (CE, ``--label-weight 1``): the neuron alone
  reversed a trigger of REASR 0.73 for the target (threshold 0.9 missed), with it 0.99,
  while no other label passed 0.22 (0.25 on the clean twin); ``--label-weight 0`` is the
  paper's objective;
* only convolution channels are stimulated (every ``Conv2d``, or the hidden ``Linear``
  layers of a model without one) and candidates are ranked by their largest margin (the
  ABS paper's order; TrojanZoo's code sorts ascending), ``top_neurons`` in all layers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from engine import stopping
from engine.attacks.budget import AttackerData
from engine.attacks.convergence import ConvergedDetection, Convergence, converged_detection
from engine.attacks.detection import Detector, ScanParams
from engine.attacks.neural_cleanse import mask_pattern_trigger
from engine.attacks.registry import register_detector
from engine.attacks.scan import ScanReporter, ScanSet, batched_logits, frozen
from engine.attacks.tabor import ConvergeParams
from engine.data.base import as_float
from engine.errors import ConfigError
from engine.metrics import RULES, decide
from engine.models.generators import StackedTrigger
from engine.registry import param
from engine.session import JobContext

#: most stimulated images per classifier call (neurons x levels x seeds are chunked)
STIMULUS_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class AbsParams(ScanParams, ConvergeParams):
    scan_steps: int = param(
        1000, "most reversal steps (TrojanZoo: 1000; the scan stops once converged)", low=1
    )
    seeds_per_class: int = param(5, "seed images per class (TrojanZoo: 5)", low=1, high=1000)
    top_neurons: int = param(20, "candidate neurons kept (TrojanZoo: 20)", low=1, high=10_000)
    max_size: int = param(16, "largest trigger, in pixels (TrojanZoo: 16)", low=1)
    samples: int = param(5, "stimulation levels per neuron (TrojanZoo: 5)", low=2, high=100)
    samp_k: float = param(
        8.0, "highest level, times the layer's largest activation / levels", low=0.0
    )
    remask_weight: float = param(500.0, "mask-area weight once over --max-size (500)", low=0.0)
    label_weight: float = param(
        1.0,
        "weight of the candidate's label (CE) beside its neuron's activation (0: the neuron "
        "alone, as the paper)",
        low=0.0,
    )
    reasr: float = param(
        0.9, "REASR a class's best trigger must reach to be flagged", low=0.0, high=1.0
    )
    rule: str = param(
        "threshold",
        "flag the best class when: threshold (REASR >= --reasr, ABS's rule), mad (anomaly "
        "index of 1 - REASR >= 2), both, either",
        choices=RULES,
    )


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An inner neuron whose elevation raises ``label`` on most seeds."""

    layer: int
    neuron: int
    label: int
    margin: float


def stimulated_layers(model: nn.Module) -> list[nn.Module]:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return convs
    return [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]


@contextlib.contextmanager
def replaced(layer: nn.Module, make: object) -> Iterator[None]:
    """Run ``layer`` with its output replaced by ``make(output)`` (a forward hook)."""
    handle = layer.register_forward_hook(lambda _m, _i, out: make(out))  # type: ignore[operator]
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def stimulate(
    model: nn.Module, layer: nn.Module, seeds: torch.Tensor, p: AbsParams
) -> torch.Tensor:
    """[neurons, levels, seeds, classes]: the logits with each channel of ``layer`` set to each
    level in turn (all spatial positions), everything else as the seed image makes it."""
    acts: list[torch.Tensor] = []
    with replaced(layer, lambda out: acts.append(out) or out):
        model(seeds)
    base = acts[0]
    channels = base.shape[1]
    top = float(base.max().clamp_min(1e-6))
    levels = p.samp_k * torch.arange(p.samples, device=seeds.device) * top / p.samples
    per = max(1, STIMULUS_CHUNK // (p.samples * len(seeds)))
    out = []
    for start in range(0, channels, per):
        chosen = torch.arange(start, min(channels, start + per), device=seeds.device)
        onehot = nn.functional.one_hot(chosen, channels).bool()  # [n, channels]

        def swap(h: torch.Tensor, onehot: torch.Tensor = onehot) -> torch.Tensor:
            sel = onehot.view(len(onehot), 1, 1, channels, *([1] * (h.dim() - 2)))
            value = levels.view(1, -1, 1, *([1] * (h.dim() - 1)))
            return torch.where(sel, value, h.unsqueeze(0).unsqueeze(0)).flatten(0, 2)

        with replaced(layer, swap):
            logits = model(seeds)
        out.append(logits.view(len(chosen), p.samples, len(seeds), -1))
    return torch.cat(out)


def candidates_of(
    logits: torch.Tensor, seed_pred: torch.Tensor, layer: int, p: AbsParams
) -> list[Candidate]:
    """The neurons whose elevation raises one label (not the seed's own) on >= 75% of seeds."""
    low = max(1, p.samples // 5)
    rise = logits[:, low:].amax(1) - logits[:, :low].amin(1)  # [neurons, seeds, classes]
    values, labels = rise.sort(dim=-1, descending=True)
    own = labels[..., 0] == seed_pred
    margin = torch.where(own, values[..., 1] - values[..., 2], values[..., 0] - values[..., 1])
    label = torch.where(own, labels[..., 1], labels[..., 0])
    mode = label.mode(dim=1).values  # [neurons]
    agree = label == mode[:, None]
    found = []
    for n in range(len(mode)):
        if agree[n].sum() >= 0.75 * len(seed_pred):
            found.append(Candidate(layer, n, int(mode[n]), float(margin[n][agree[n]].min())))
    return found


def seed_images(scan: ScanSet, classes: int, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``per_class`` search images of each class the suspect predicts (no labels needed)."""
    picks = [torch.nonzero(scan.train_pred == c).flatten()[:per_class] for c in range(classes)]
    index = torch.cat(picks)
    return as_float(scan.train_x[index]), scan.train_pred[index]


@register_detector("abs", AbsParams)
class Abs(Detector[AbsParams]):
    """ABS: stimulate inner neurons, reverse a bounded trigger per candidate, score by REASR."""

    method = "abs"

    def threshold(self, shape: tuple[int, int, int]) -> float:
        """The size line of the threshold rule: 1 - REASR."""
        return round(1.0 - self.params.reasr, 9)

    def detect(
        self, model: nn.Module, data: AttackerData, ctx: JobContext, seed: int
    ) -> ConvergedDetection:
        p = self.params
        started = time.perf_counter()
        k = data.num_classes
        report = ScanReporter(ctx, self.method, k, p.report_every, p.scan_steps)
        with frozen(model):
            scan = ScanSet.build(
                model, data.clean_images(), limit=p.images, val=p.val_images, seed=seed
            )
            seeds, seed_pred = seed_images(scan, k, p.seeds_per_class)
            layers = stimulated_layers(model)
            if not layers:
                raise ConfigError("abs stimulates inner layers: this model has none it knows")
            found: list[Candidate] = []
            for i, layer in enumerate(layers):
                ctx.between_steps()
                found += candidates_of(stimulate(model, layer, seeds, p), seed_pred, i, p)
            found = sorted(found, key=lambda c: -c.margin)[: p.top_neurons]
            ctx.log(f"abs: {len(found)} candidate neurons from {len(layers)} layers")
            conv = Convergence(p.scan_steps, window=p.converge_window, tol=p.converge_tol)
            masks = patterns = None
            if found:
                masks, patterns = self._reverse(model, layers, found, seeds, ctx, seed, conv)
                labels = torch.tensor([c.label for c in found], device=seeds.device)
                reasr = reasr_of(model, scan, masks, patterns, labels)
            best = [(-1.0, -1)] * k
            for j, cand in enumerate(found):
                score = float(reasr[j])
                if score > best[cand.label][0]:
                    best[cand.label] = (score, j)
        stopped = conv.reason() if found else "no candidate neuron: nothing to reverse"
        ctx.log(f"{self.method}: {stopped}")
        sizes = [1.0 - max(score, 0.0) for score, _ in best]
        success = [max(score, 0.0) for score, _ in best]
        threshold = self.threshold(data.shape) if p.rule != "mad" else None
        flagged, index, indices = decide(sizes, rule=p.rule, threshold=threshold, gap=p.gap)
        report.steps = conv.stopped_at or 0
        report.final(sizes)
        trigger = None
        if flagged is not None and masks is not None and patterns is not None:
            j = best[flagged][1]
            example = as_float(scan.val_x[:1])[0]
            trigger = mask_pattern_trigger(flagged, masks[j], patterns[j], example)
        return converged_detection(
            self.method,
            sizes,
            "1 - REASR of the best neuron trigger",
            (flagged, index, indices),
            success,
            p,
            steps=conv.stopped_at or 0,
            started=started,
            trigger=trigger,
            stopped_because=stopped,
            threshold=threshold,
        )

    def _reverse(
        self,
        model: nn.Module,
        layers: list[nn.Module],
        found: list[Candidate],
        seeds: torch.Tensor,
        ctx: JobContext,
        seed: int,
        conv: Convergence,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One bounded mask + pattern per candidate, all optimised at once on the seeds."""
        p = self.params
        device = seeds.device
        torch.manual_seed(seed)
        trig = StackedTrigger(tuple(seeds.shape[1:]), len(found), inits=("random",)).to(device)
        stopping.optimizers_ready()
        opt = torch.optim.Adam(trig.parameters(), lr=p.lr, betas=(0.5, 0.9))
        used = sorted({c.layer for c in found})
        slots = {i: [j for j, c in enumerate(found) if c.layer == i] for i in used}
        neurons = torch.tensor([c.neuron for c in found], device=device)
        labels = torch.tensor([c.label for c in found], device=device)
        to_label = labels.repeat_interleave(len(seeds))
        for step in range(p.scan_steps):
            ctx.between_steps()
            parts: dict[int, list[torch.Tensor]] = {i: [] for i in used}
            hooks = [
                layers[i].register_forward_hook(lambda _m, _i, out, got=parts[i]: got.append(out))
                for i in used
            ]
            try:  # batched_logits may call the model in chunks: each layer's parts in order
                logits = batched_logits(model, trig.apply(seeds))
            finally:
                for hook in hooks:
                    hook.remove()
            loss = torch.zeros(len(found), device=device)
            for i, js in slots.items():
                act = torch.cat(parts[i])
                h = act.view(len(found), len(seeds), *act.shape[1:])[js]
                h = h + torch.relu(h)  # positive activation counts twice (ABS)
                per_channel = h.flatten(3).sum(3).sum(1) if h.dim() > 3 else h.sum(1)
                own = per_channel.gather(1, neurons[js][:, None]).squeeze(1)
                rest = per_channel.sum(1) - own
                loss[js] = -own + 1e-4 * rest
            if p.label_weight:
                ce = F.cross_entropy(logits.flatten(0, 1), to_label, reduction="none")
                loss = loss + p.label_weight * ce.view(len(found), -1).sum(1)
            mask = trig.mask()
            area = mask.flatten(1).sum(1)
            with torch.no_grad():
                size = area.detach()
                weight = torch.where(
                    size > 1.2 * p.max_size,
                    2 * p.remask_weight,
                    torch.where(size > p.max_size, p.remask_weight, 0.01),
                )
            total = loss + weight * area
            opt.zero_grad(set_to_none=True)
            total.sum().backward()
            opt.step()
            if conv.update(step, total.detach()):
                break
        return trig.mask().detach(), trig.pattern().detach()


@torch.no_grad()
def reasr_of(
    model: nn.Module,
    scan: ScanSet,
    masks: torch.Tensor,
    patterns: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """[S] share of held-out images not already of candidate s's label that its trigger sends
    there (ABS's REASR, measured on images the reversal never saw)."""
    hits = torch.zeros(len(masks), device=masks.device)
    counts = torch.zeros(len(masks), device=masks.device)
    for start in range(0, len(scan.val_x), 256):
        x = as_float(scan.val_x[start : start + 256])
        pred = scan.val_pred[start : start + 256]
        stamped = torch.lerp(x.unsqueeze(0), patterns.unsqueeze(1), masks.unsqueeze(1))
        hit = batched_logits(model, stamped).argmax(2) == labels[:, None]
        weight = (pred.unsqueeze(0) != labels[:, None]).float()
        hits += (hit.float() * weight).sum(1)
        counts += weight.sum(1)
    return hits / counts.clamp_min(1)
