"""Data-free watermarking by truncated adversarial distillation (Yan, Li, Wang), measured.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/datafree.py [--dataset fashion-mnist]
        [--seeds 3] [--clean-epochs 5] [--only truncation,settings,fresh,robustness]
        [--dfad-epochs 30] [--dfad-iters 20] [--dfad-batch 128] [--generator-width 32]
        [--rounds 60] [--attack-epochs 50] [--fresh 100] [--prune-method neuron]
        [--first-seed 0] [--robust-trigger gi|pn|pnop]

    .venv/bin/python benchmarks/datafree.py --recipe cifar10 [--clean-epochs 200] [...]

Every watermark is embedded by the ``datafree`` embed job from a clean model trained first
(``--clean-epochs`` with the default train config; one per seed), N = 100 triggers,
lambda = 5, M = 10 N. The default (CPU) recipe is lenet5 with a small DFAD (30 epochs of 20
rounds of 128 codes, generator width 32) and at least 60 injection rounds (then on until
every trigger is learnt, at most 300); ``--recipe cifar10`` is the paper's CIFAR-10 +
resnet18 configuration on CUDA (clean model 200 epochs of SGD 0.1, momentum 0.9, decay
5e-4, cosine, batch 128; DFAD width 64, batch 256, 50 rounds per epoch, DFAD's 500 epochs as
the complete schedule). It stops with one line when cifar10 or CUDA is missing, before
anything runs.

1. truncation: per seed, the same S3 embedding (PN triggers, as the paper's Table 2) with
   the truncated and the complete (``complete=True``) distillation: distillation time,
   epochs run, fidelity (test accuracy after injection), trigger accuracy; then the time
   ratio complete / truncated and the fidelity difference. Target: >= 3x faster, fidelity
   within 0.5 points.
2. settings: S1-S4 x PN/PNOP/GI (Table 1 x Fig. 5): fidelity (mean ± sd), trigger accuracy,
   verification p-value, the clean accuracy, and the checks S1 < S2 < S3 <= S4 + 0.5, S3
   within 2 points of S4 and within 1.5 of clean, triggers 100%, p < 1e-6 (pass/FAIL; nothing
   is tuned to pass). Each embedding distils its own generator (S1/S2 with PN/PNOP do not
   distil at all).
3. fresh: ``--fresh`` trigger sets of the watermark's kind (seed 0, S3, GI: sampled from the
   owner's own generator) with new labels, uniform over the classes and, as the owner draws
   them, unlike the clean model's answer, each verified (the scheme's verify, alpha 1e-3)
   against the watermarked and the clean model: how many verify (must be 0).
4. robustness of every seed's S3 model (``--robust-trigger``, the paper's GI by default),
   refereed by the attack job (the owner's key retention), mean ± sd over the seeds: ft-basic
   and finetune ftal at 20% of the training data (``--attack-epochs``,
   the paper's 50), and pruning (``--prune-method``, neuron by default; the paper's Fig. 6
   is unstructured: magnitude) at ratios 0, 0.1, ..., 0.9.

Run folders go to a temporary directory, removed at the end. The duration is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from engine.data import load_dataset
from engine.errors import UserError
from engine.jobs import JobSpec, Result, run
from engine.jobs.datafree import GENERATOR_FILE
from engine.models.dfad_generator import DFADGenerator
from engine.runs import RunDir, load_tensors
from engine.watermarks import get_scheme, load_key
from engine.watermarks.base import Key
from engine.watermarks.datafree import SETTING_NAMES, labels_unlike, make_triggers

ADJUSTS = ("none", "noise", "generator", "data")
TRIGGERS = ("pn", "pnop", "gi")
ALPHA = 1e-3
PRUNE_RATIOS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


@dataclasses.dataclass(frozen=True)
class Recipe:
    dataset: str
    model: str
    device: str
    clean_epochs: int
    #: the clean model's train config beyond dataset, model, epochs, seed, device
    clean_config: dict[str, Any]
    dfad_epochs: int
    dfad_iters: int
    dfad_batch: int
    generator_width: int
    rounds: int


RECIPES = {
    "cpu": Recipe("fashion-mnist", "lenet5", "cpu", 5, {}, 30, 20, 128, 32, 60),
    "cifar10": Recipe(
        "cifar10",
        "resnet18",
        "cuda",
        200,
        {
            "optimizer": "sgd",
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "cosine",
            "batch_size": 128,
        },
        500,
        50,
        256,
        64,
        60,
    ),
}


def spread(values: list[float], scale: float = 100.0, unit: str = "%") -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * mean:6.2f}{unit} ± {scale * sd:4.2f}"


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


class Bench:
    """The recipe, the temporary root, and the clean model per seed (trained once)."""

    def __init__(self, recipe: Recipe, root: Path, data_dir: str) -> None:
        self.recipe, self.root, self.data_dir = recipe, root, data_dir
        self.cleans: dict[int, Result] = {}
        self.embeds: dict[tuple[Any, ...], Result] = {}

    def clean_spec(self, seed: int) -> JobSpec:
        r = self.recipe
        return JobSpec.train(
            out=self.root / f"clean-{seed}",
            dataset=r.dataset,
            model=r.model,
            epochs=r.clean_epochs,
            seed=seed,
            device=r.device,
            data_dir=self.data_dir,
            **r.clean_config,
        )

    def clean(self, seed: int) -> Result:
        if seed not in self.cleans:
            started = time.monotonic()
            self.cleans[seed] = run(self.clean_spec(seed))
            acc = self.cleans[seed].summary["test_acc"]
            took = time.monotonic() - started
            print(f"  [clean seed {seed}: {100 * acc:.2f}%, {took:.0f} s]", flush=True)
        return self.cleans[seed]

    def embed_spec(self, seed: int, adjust: str, trigger: str, complete: bool, tag: str) -> JobSpec:
        r = self.recipe
        return JobSpec.embed(
            "datafree",
            from_run=self.root / f"clean-{seed}",
            out=self.root / tag,
            trigger=trigger,
            adjust=adjust,
            count=100,
            lam=5.0,
            samples=10,
            dfad_epochs=r.dfad_epochs,
            dfad_iters=r.dfad_iters,
            dfad_batch=r.dfad_batch,
            generator_width=r.generator_width,
            complete=complete,
            epochs=r.rounds,
            seed=seed,
            device=r.device,
        )

    def preflight(self) -> None:
        """Every check that needs no run yet (dataset present, device there, the DFAD
        values in range): a missing cifar10 or CUDA is one line before anything runs."""
        self.clean_spec(0).validate()
        self.embed_spec(0, "generator", "gi", False, "preflight").validate(inputs=False)

    def embed(self, seed: int, adjust: str, trigger: str, *, complete: bool = False) -> Result:
        """One datafree embedding (cached: sections share the seed-0 S3/GI model)."""
        name = (seed, adjust, trigger, complete)
        if name in self.embeds:
            return self.embeds[name]
        tag = f"{SETTING_NAMES[adjust]}-{trigger}{'-complete' if complete else ''}-{seed}"
        self.clean(seed)
        result = run(self.embed_spec(seed, adjust, trigger, complete, tag))
        s = result.summary
        distill = s.get("distill")
        shown = "no distillation"
        if distill:
            shown = f"distil {distill['epochs_run']} ep {distill['seconds']:.0f} s"
        print(
            f"  [{tag}: fidelity {100 * s['test_acc']:.2f}%, triggers "
            f"{100 * s['retention']['key']:.2f}%, log10 p {s['verify']['log10_p_value']:.1f}, "
            f"{shown}, inject {s['rounds']} rounds {s['inject_seconds']:.0f} s]",
            flush=True,
        )
        self.embeds[name] = result
        return result


# -- 1. truncation ---------------------------------------------------------------------------
def truncation(bench: Bench, seeds: range) -> None:
    print("\n1. truncated vs complete distillation (S3, PN triggers)", flush=True)
    rows = []
    for seed in seeds:
        short = bench.embed(seed, "generator", "pn").summary
        full = bench.embed(seed, "generator", "pn", complete=True).summary
        rows.append((seed, short, full))
    print("  seed  schedule   distill s  epochs run  truncated at  inject s  fidelity  triggers")
    for seed, short, full in rows:
        for label, s in (("truncated", short), ("complete", full)):
            d = s["distill"]
            print(
                f"  {seed:4d}  {label:9s}  {d['seconds']:9.1f}  {d['epochs_run']:10d}  "
                f"{d['truncated_at']!s:>12s}  {s['inject_seconds']:8.1f}  "
                f"{100 * s['test_acc']:7.2f}%  {100 * s['retention']['key']:7.2f}%"
            )
    short_s = [s["distill"]["seconds"] for _, s, _ in rows]
    full_s = [f["distill"]["seconds"] for _, _, f in rows]
    ratios = [f / s for s, f in zip(short_s, full_s, strict=True)]
    short_acc = [s["test_acc"] for _, s, _ in rows]
    full_acc = [f["test_acc"] for _, _, f in rows]
    diffs = [s - f for s, f in zip(short_acc, full_acc, strict=True)]
    clean = [bench.clean(seed).summary["test_acc"] for seed, _, _ in rows]
    print(f"\n  over {len(rows)} seeds (mean ± sd)")
    print(f"  clean accuracy          {spread(clean)}")
    print(f"  distillation, truncated {spread(short_s, 1.0, ' s')}")
    print(f"  distillation, complete  {spread(full_s, 1.0, ' s')}")
    print(f"  fidelity, truncated     {spread(short_acc)}")
    print(f"  fidelity, complete      {spread(full_acc)}")
    ratio = statistics.fmean(ratios)
    diff = 100 * statistics.fmean(diffs)
    print(
        f"  time complete/truncated {spread(ratios, 1.0, 'x')}  (of the means "
        f"{statistics.fmean(full_s) / statistics.fmean(short_s):.2f}x)"
    )
    print(f"  fidelity truncated - complete {spread(diffs, 100.0, ' points')}")
    print(f"  check: truncated >= 3x faster (mean ratio {ratio:.2f}x): {verdict(ratio >= 3)}")
    print(f"  check: fidelity within 0.5 points ({diff:+.2f}): {verdict(abs(diff) <= 0.5)}")


# -- 2. settings -----------------------------------------------------------------------------
def settings(bench: Bench, seeds: range) -> None:
    shown = ", ".join(str(seed) for seed in seeds)
    print(f"\n2. adjustment settings x trigger kinds over seed(s) {shown}", flush=True)
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for seed in seeds:
        for adjust in ADJUSTS:
            for trigger in TRIGGERS:
                summary = bench.embed(seed, adjust, trigger).summary
                found.setdefault((adjust, trigger), []).append(summary)
    clean = [bench.clean(seed).summary["test_acc"] for seed in seeds]
    head = "".join(f"{t.upper():>20s}" for t in TRIGGERS)
    print(f"\n  fidelity (test accuracy, mean ± sd); clean model {spread(clean)}")
    print(f"  setting        {head}")
    for adjust in ADJUSTS:
        cells = "".join(
            f"{spread([s['test_acc'] for s in found[adjust, t]]):>20s}" for t in TRIGGERS
        )
        print(f"  {SETTING_NAMES[adjust]} {adjust:10s}  {cells}")
    print("\n  trigger accuracy (mean, min) and verification log10 p-value (worst)")
    print(f"  setting        {head}")
    for adjust in ADJUSTS:
        cells = ""
        for t in TRIGGERS:
            acc = [s["retention"]["key"] for s in found[adjust, t]]
            logp = max(s["verify"]["log10_p_value"] for s in found[adjust, t])
            cells += (
                f"{f'{100 * statistics.fmean(acc):.0f}% ({100 * min(acc):.0f}) {logp:.0f}':>20s}"
            )
        print(f"  {SETTING_NAMES[adjust]} {adjust:10s}  {cells}")
    mean = {k: 100 * statistics.fmean(s["test_acc"] for s in v) for k, v in found.items()}
    clean_mean = 100 * statistics.fmean(clean)
    print("\n  checks (on the means)")
    for t in TRIGGERS:
        s1, s2, s3, s4 = (mean[a, t] for a in ADJUSTS)
        print(
            f"  {t.upper():4s} S1 < S2 < S3 <= S4 + 0.5 ({s1:.2f} < {s2:.2f} < {s3:.2f} <= "
            f"{s4 + 0.5:.2f}): {verdict(s1 < s2 < s3 <= s4 + 0.5)}"
        )
        print(
            f"  {t.upper():4s} S3 within 2 points of S4 ({s3 - s4:+.2f}): "
            f"{verdict(abs(s3 - s4) <= 2)}"
        )
        print(
            f"  {t.upper():4s} S3 within 1.5 points of clean ({s3 - clean_mean:+.2f}): "
            f"{verdict(abs(s3 - clean_mean) <= 1.5)}"
        )
    every = [s for v in found.values() for s in v]
    full = sum(s["retention"]["key"] == 1.0 for s in every)
    strong = sum(s["verify"]["log10_p_value"] < -6 for s in every)
    print(
        f"  trigger accuracy 100% in {full}/{len(every)} embeddings: {verdict(full == len(every))}"
    )
    print(f"  p < 1e-6 in {strong}/{len(every)} embeddings: {verdict(strong == len(every))}")


# -- 3. fresh trigger sets -------------------------------------------------------------------
def fresh(bench: Bench, count: int, trigger: str = "gi") -> None:
    wm = bench.embed(0, "generator", trigger)
    clean_run = bench.clean(0)
    source = "from the owner's generator" if trigger == "gi" else "fresh noise"
    print(f"\n3. {count} fresh {trigger.upper()} trigger sets ({source}; seed-0 S3 model)")
    started = time.monotonic()
    models = {
        "watermarked": RunDir(wm.path).load_model("cpu")[0],
        "clean": RunDir(clean_run.path).load_model("cpu")[0],
    }
    owner = load_key(wm.path / "key")
    data = load_dataset(owner.meta["dataset"], bench.data_dir or None, train=False).data
    gen = DFADGenerator(data.shape, width=bench.recipe.generator_width)
    gen.load_state_dict(load_tensors(wm.path / GENERATOR_FILE, "generator"))  # S3 distils one
    scheme = get_scheme("datafree")
    n, k = len(owner.tensors["y"]), data.num_classes

    def check(key: Key) -> dict[str, Any]:
        return {
            m: scheme.verify(model, key, data, ALPHA, test_acc=False) for m, model in models.items()
        }

    rules: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
        "uniform labels": lambda x, seed: torch.randint(
            0, k, (n,), generator=torch.Generator().manual_seed(seed)
        ),
        "labels unlike M_clean": lambda x, seed: labels_unlike(models["clean"], x, k, seed),
    }
    for name, found in check(owner).items():
        print(
            f"  owner's key vs {name:11s}: verified {found.verified}, trigger acc "
            f"{100 * found.retention:.0f}%, log10 p {found.log10_p_value:.1f}"
        )
    print("  fresh sets            model        verified  trigger acc mean / max  min log10 p")
    for rule, labels in rules.items():
        verdicts: dict[str, list[Any]] = {m: [] for m in models}
        for i in range(count):
            seed = 1_000_000 + i
            x = make_triggers(owner.params["trigger"], n, data.shape, seed, gen).float()
            key = dataclasses.replace(
                owner, tensors={**owner.tensors, "x": x, "y": labels(x, seed)}
            )
            for m, found in check(key).items():
                verdicts[m].append(found)
        for m, found in verdicts.items():
            acc = [v.retention for v in found]
            print(
                f"  {rule:21s} {m:11s}  {sum(v.verified for v in found):3d}/{count}     "
                f"{100 * statistics.fmean(acc):5.1f}% / {100 * max(acc):5.1f}%"
                f"{min(v.log10_p_value for v in found):13.2f}"
            )
    print(f"  ({time.monotonic() - started:.0f} s; alpha {ALPHA:g}; must be 0 verified)")


# -- 4. robustness ---------------------------------------------------------------------------
def robustness(
    bench: Bench, seeds: range, attack_epochs: int, prune_method: str, trigger: str = "gi"
) -> None:
    """The attacks on every seed's S3 model: per seed, then mean ± sd over the seeds."""
    shown = ", ".join(str(seed) for seed in seeds)
    print(
        f"\n4. robustness of the S3/{trigger.upper()} models, seeds {shown} (20% of the "
        f"training data, {attack_epochs} epochs)",
        flush=True,
    )
    attacks = (("ft-basic", "ft-basic", {}), ("finetune ftal", "finetune", {"mode": "ftal"}))
    rows: dict[str, list[tuple[float, float]]] = {"none": []}
    sweeps: list[list[dict[str, Any]]] = []
    for seed in seeds:
        wm = bench.embed(seed, "generator", trigger)
        rows["none"].append((wm.summary["test_acc"], wm.summary["retention"]["key"]))
        for label, name, values in attacks:
            s = run(
                JobSpec.attack(
                    name,
                    run=wm,
                    data_fraction=0.2,
                    epochs=attack_epochs,
                    out=bench.root / f"attack-{name}-{seed}",
                    device=bench.recipe.device,
                    **values,
                )
            ).summary
            rows.setdefault(label, []).append((s["test_acc"], s["retention"]["key"]))
            print(
                f"  [seed {seed} {label}: test {100 * s['test_acc_before']:.2f}% -> "
                f"{100 * s['test_acc']:.2f}%, triggers {100 * s['retention_before']['key']:.0f}% "
                f"-> {100 * s['retention']['key']:.0f}%]",
                flush=True,
            )
        sweeps.append(
            run(
                JobSpec.attack(
                    "prune",
                    run=wm,
                    method=prune_method,
                    sweep=PRUNE_RATIOS,
                    data_fraction=0.2,
                    out=bench.root / f"prune-{seed}",
                    device=bench.recipe.device,
                )
            ).summary["sweep"]
        )
        cells = ", ".join(
            f"{r['ratio']:.1f}: {100 * r['test_acc']:.1f}/{100 * r['retention']['key']:.0f}"
            for r in sweeps[-1]
        )
        print(f"  [seed {seed} {prune_method} pruning, test/triggers %: {cells}]", flush=True)
    print("  attack                 test accuracy        triggers")
    for label, found in rows.items():
        print(f"  {label:21s}  {spread([a for a, _ in found])}  {spread([k for _, k in found])}")
    print(f"  {prune_method} pruning: ratio  fidelity             triggers")
    for i, ratio in enumerate(PRUNE_RATIOS):
        at = [sweep[i] for sweep in sweeps]
        print(
            f"  {'':16s}{ratio:.1f}  {spread([r['test_acc'] for r in at])}  "
            f"{spread([r['retention']['key'] for r in at])}"
        )


def recipe_from(args: argparse.Namespace) -> Recipe:
    base = RECIPES[args.recipe]
    chosen = {
        name: getattr(args, name)
        for name in (
            "dataset",
            "model",
            "device",
            "clean_epochs",
            "dfad_epochs",
            "dfad_iters",
            "dfad_batch",
            "generator_width",
            "rounds",
        )
        if getattr(args, name) is not None
    }
    return dataclasses.replace(base, **chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--dataset", help="default: fashion-mnist (cpu), cifar10")
    parser.add_argument("--model", help="default: lenet5 (cpu), resnet18 (cifar10)")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), help="cpu / cuda")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    parser.add_argument(
        "--robust-trigger", choices=TRIGGERS, default="gi", help="fresh/robustness: the paper's gi"
    )
    parser.add_argument("--clean-epochs", type=int, help="default: 5 (cpu), 200 (cifar10)")
    parser.add_argument("--dfad-epochs", type=int, help="complete schedule: 30 (cpu), 500")
    parser.add_argument("--dfad-iters", type=int, help="rounds per epoch: 20 (cpu), 50")
    parser.add_argument("--dfad-batch", type=int, help="codes per round: 128 (cpu), 256")
    parser.add_argument("--generator-width", type=int, help="32 (cpu), 64")
    parser.add_argument(
        "--rounds", type=int, help="injection rounds at least (--epochs; then on until learnt): 60"
    )
    parser.add_argument("--attack-epochs", type=int, default=50)
    parser.add_argument("--prune-method", choices=("neuron", "magnitude"), default="neuron")
    parser.add_argument("--fresh", type=int, default=100, help="fresh trigger sets")
    parser.add_argument("--only", default="truncation,settings,fresh,robustness")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    unknown = parts - {"truncation", "settings", "fresh", "robustness"}
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}")
    recipe = recipe_from(args)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bench = Bench(recipe, Path(tmp), args.data_dir)
            bench.preflight()
            print(
                f"{recipe.dataset}, {recipe.model}, {recipe.device}; clean {recipe.clean_epochs} "
                f"epochs {recipe.clean_config or '(default train config)'}; DFAD "
                f"{recipe.dfad_epochs} epochs x {recipe.dfad_iters} rounds x "
                f"{recipe.dfad_batch} codes, width {recipe.generator_width}; "
                f"{recipe.rounds} injection rounds, N 100, lambda 5, M 10N",
                flush=True,
            )
            if "truncation" in parts:
                truncation(bench, seeds)
            if "settings" in parts:
                settings(bench, seeds)
            if "fresh" in parts:
                fresh(bench, args.fresh, args.robust_trigger)
            if "robustness" in parts:
                robustness(bench, seeds, args.attack_epochs, args.prune_method, args.robust_trigger)
    except UserError as exc:
        print(f"datafree benchmark: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"\ntook {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
