"""Dual embedding and piracy (Li et al.), measured: the tables of issue 13 in one command.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/piracy.py [--dataset fashion-mnist]
        [--epochs 5] [--seeds 3] [--pirates 10] [--claims 1000] [--only fidelity,claims,piracy]
        [--pirate-optimizer adam|sgd] [--pirate-lr 0.001] [--pirate-clip 5 (0: none)]

1. fidelity: a clean model and a dual model trained with the same configuration (lenet5,
   Adam 1e-3, gradient norm clipped at 5, the dual scheme's numerics) per seed: test accuracy
   (NC), the dual model's null and true accuracy and verification p-value; mean and spread.
2. claims: ``--claims`` fresh, validly signed claims (new key pairs, random verifier strings)
   verified against the dual model and the clean model: how many verify (must be 0).
3. piracy: ``--pirates`` pirates, each with its own key, attack the dual model (5,000 images,
   10 epochs, a pirate dual claim) and a pattern model (a pirate pattern key): NC before and
   after, the owner's marks after, how many pirate claims verify, and how many attacks got
   both "NC within 5 points of before" and "pirate verified" (resistance: none).

Run folders go to a temporary directory, removed at the end. The duration is printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.jobs import JobSpec, run
from engine.runs import RunDir
from engine.watermarks.claims import create_key_pair, load_private_key, sign_claim
from engine.watermarks.dual import verify_claim

NUMERICS = {"optimizer": "adam", "lr": 0.001, "clip_grad": 5.0, "device": "cpu"}


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:6.2f}% ± {100 * sd:4.2f}"


def train_pair(root: Path, dataset: str, epochs: int, seed: int, keys: Path) -> tuple[Any, Any]:
    common = {"dataset": dataset, "epochs": epochs, "seed": seed, **NUMERICS}
    clean = run(JobSpec.train(out=root / f"clean-{seed}", **common))
    dual = run(
        JobSpec.embed(
            "dual", owner="owner", signing_key=str(keys), out=root / f"dual-{seed}", **common
        )
    )
    return clean, dual


def fidelity(pairs: list[tuple[Any, Any]]) -> None:
    clean = [c.summary["test_acc"] for c, _ in pairs]
    dual = [d.summary["test_acc"] for _, d in pairs]
    null = [d.summary["verify"]["null_acc"] for _, d in pairs]
    true = [d.summary["verify"]["true_acc"] for _, d in pairs]
    logp = [d.summary["verify"]["log10_p_value"] for _, d in pairs]
    verified = sum(d.summary["verify"]["verified"] for _, d in pairs)
    print(f"\n1. fidelity over {len(pairs)} seeds (mean ± sd)")
    print(f"  clean NC          {spread(clean)}")
    drop = 100 * (statistics.fmean(clean) - statistics.fmean(dual))
    print(f"  dual NC           {spread(dual)}   (drop {drop:.2f} points)")
    print(f"  dual null acc     {spread(null)}   (lowest {100 * min(null):.2f}%)")
    print(f"  dual true acc     {spread(true)}")
    mean_log = statistics.fmean(logp)
    print(f"  verified          {verified}/{len(pairs)}, log10 p-value mean {mean_log:.0f}")
    attempts = [d.summary.get("attempts", 1) for _, d in pairs]
    print(
        f"  trainings per model (a trapped claim starts again with a fresh one): {attempts}, "
        f"{sum(a - 1 for a in attempts)} trapped claims replaced"
    )


def random_claims(pairs: list[tuple[Any, Any]], count: int, root: Path) -> None:
    clean_run, dual_run = pairs[0]
    models = {}
    for name, result in (("dual", dual_run), ("clean", clean_run)):
        models[name] = RunDir(result.path).load_model("cpu")[0]
    from engine.data import load_dataset

    config = RunDir(dual_run.path).manifest()["config"]
    data = load_dataset(config["dataset"], config["data_dir"] or None).data
    verified = {"dual": 0, "clean": 0}
    signer = None
    started = time.monotonic()
    for i in range(count):
        if i % 50 == 0:  # a fresh key pair every 50 claims (each claim: a fresh verifier)
            signer = load_private_key(create_key_pair(root / f"pk-{i}", bits=2048))
        claim = sign_claim(signer, f"stranger-{i}|{time.time_ns()}", {"scheme": "dual", "size": 6})
        for name, model in models.items():
            verified[name] += verify_claim(model, claim, data, 1e-3).verified
    took = time.monotonic() - started
    pairs_made = -(-count // 50)
    print(f"\n2. {count} random, validly signed claims ({pairs_made} key pairs; {took:.0f} s)")
    print(f"  verified against the dual model: {verified['dual']}/{count}")
    print(f"  verified against the clean model: {verified['clean']}/{count}")


def pirate(
    model_run: Path, scheme: str, count: int, root: Path, numerics: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        spec = JobSpec.attack(
            "piracy",
            run=model_run,
            scheme=scheme,
            owner=f"pirate-{i}",
            data_fraction=0.0834,
            epochs=10,
            seed=i,
            out=root / f"pirate-{scheme}-{i}",
            **numerics,
        )
        rows.append(run(spec).summary)
    return rows


def piracy_table(label: str, rows: list[dict[str, Any]]) -> None:
    before = [r["before"]["test_acc"] for r in rows]
    after = [r["after"]["test_acc"] for r in rows]
    pirate_ok = [r["claim_verified"] for r in rows]
    kept = [b - a <= 0.05 for b, a in zip(before, after, strict=True)]
    both = sum(k and p for k, p in zip(kept, pirate_ok, strict=True))
    owner = {
        k: [r["after"]["retention"][k] for r in rows]
        for k in rows[0]["after"]["retention"]
        if not k.startswith("pirate")
    }
    print(f"\n  {label}: {len(rows)} pirates")
    print(f"    NC before {spread(before)}   after {spread(after)}")
    for name, values in owner.items():
        print(f"    owner {name:10s} after {spread(values)}")
    diverged = sum("diverged_at" in r.get("info", {}) for r in rows)
    print(f"    pirate trainings that diverged (last evaluated model kept): {diverged}/{len(rows)}")
    print(f"    pirate claims verified: {sum(pirate_ok)}/{len(rows)}")
    print(f"    NC kept (within 5 points) AND pirate verified: {both}/{len(rows)}")


def robustness(dual_models: list[Path], root: Path, scan_steps: int) -> None:
    """Detectors (paper Table 5: not flagged), fine-tuning and a pruning sweep (Fig. 6), on
    every seed's dual model: mean ± sd over the seeds."""
    print(f"\n4. robustness of the dual models ({len(dual_models)} seeds; mean ± sd)")
    for method in ("neural-cleanse", "gan"):
        shown = []
        for seed, model in enumerate(dual_models):
            found = run(
                JobSpec.detect(
                    method,
                    run=model,
                    scan_steps=scan_steps,
                    remove=False,
                    data_fraction=0.1,
                    out=root / f"scan-{method}-{seed}",
                )
            ).summary
            index = found.get("anomaly_index")
            flagged = found.get("flagged_class")
            shown.append(f"{'n/a' if index is None else f'{index:.2f}'} (flagged {flagged})")
        print(f"  {method:15s} anomaly index per seed: {', '.join(shown)}")
    for name, values in (
        ("ft-basic 20%", {"attack": "ft-basic", "data_fraction": 0.2, "epochs": 10}),
        (
            "finetune ftal 20%",
            {"attack": "finetune", "mode": "ftal", "data_fraction": 0.2, "epochs": 10},
        ),
    ):
        rows = []
        for seed, model in enumerate(dual_models):
            given = dict(values)
            attack = given.pop("attack")
            out = root / f"{attack}-{seed}"
            rows.append(run(JobSpec.attack(attack, run=model, out=out, **given)).summary)
        nc = [r["test_acc"] for r in rows]
        null = [r["after"]["retention"]["key null"] for r in rows]
        true = [r["after"]["retention"]["key true"] for r in rows]
        print(f"  {name:18s} NC {spread(nc)}, null {spread(null)}, true {spread(true)}")
    ratios = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    sweeps = [
        run(
            JobSpec.attack(
                "prune",
                run=model,
                method="neuron",
                sweep=ratios,
                data_fraction=0.1,
                out=root / f"prune-{seed}",
            )
        ).summary["sweep"]
        for seed, model in enumerate(dual_models)
    ]
    print("  neuron pruning: ratio   NC                null              true")
    for i, ratio in enumerate(ratios):
        rows = [sweep[i] for sweep in sweeps]
        print(
            f"                 {ratio:.1f}  {spread([r['test_acc'] for r in rows])}  "
            f"{spread([r['retention']['key null'] for r in rows])}  "
            f"{spread([r['retention']['key true'] for r in rows])}"
        )


def hidden_marks(root: Path, dataset: str, epochs: int, keys: Path) -> None:
    """``--count 3``: three claims at once, each verified on its own."""
    common = {"dataset": dataset, "epochs": epochs, "seed": 0, **NUMERICS}
    spec = JobSpec.embed(
        "dual", owner="owner", signing_key=str(keys), count=3, out=root / "count3", **common
    )
    result = run(spec)
    print(f"\n5. --count 3: NC {100 * result.summary['test_acc']:.2f}%")
    for name in ("claim.json", "claim-2.json", "claim-3.json"):
        verdict = run(JobSpec.verify(run=result.path, claim=result.path / name)).summary
        print(
            f"  {name}: verified {verdict['verified']}, null {100 * verdict['null_acc']:.2f}%, "
            f"true {100 * verdict['true_acc']:.2f}%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pirates", type=int, default=10)
    parser.add_argument("--claims", type=int, default=1000)
    parser.add_argument("--only", default="fidelity,claims,piracy,robustness,count")
    parser.add_argument("--scan-steps", type=int, default=300)
    parser.add_argument("--pirate-optimizer", choices=("adam", "sgd"), default="adam")
    parser.add_argument("--pirate-lr", type=float, default=0.001)
    parser.add_argument("--pirate-clip", type=float, default=5.0, help="0: no clipping")
    args = parser.parse_args()
    pirate_numerics = {
        "optimizer": args.pirate_optimizer,
        "lr": args.pirate_lr,
        "clip_grad": args.pirate_clip,
    }
    parts = set(args.only.split(","))
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        keys = create_key_pair(root / "owner-keys", bits=3072)
        print(f"{args.dataset}, lenet5, {args.epochs} epochs, {NUMERICS}")
        pairs = [train_pair(root, args.dataset, args.epochs, s, keys) for s in range(args.seeds)]
        if "fidelity" in parts:
            fidelity(pairs)
        if "claims" in parts:
            random_claims(pairs, args.claims, root)
        if "piracy" in parts:
            print(f"\n3. piracy (5,000 images, 10 epochs, the pirate's {pirate_numerics})")
            dual_model = pairs[0][1].path
            piracy_table(
                "dual model, pirate dual claims",
                pirate(dual_model, "dual", args.pirates, root, pirate_numerics),
            )
            common = {"dataset": args.dataset, "epochs": args.epochs, "seed": 0, **NUMERICS}
            square = run(
                JobSpec.embed(
                    "pattern", trigger="square", target_label=4, out=root / "square", **common
                )
            )
            piracy_table(
                "pattern model, pirate pattern keys",
                pirate(square.path, "pattern", args.pirates, root, pirate_numerics),
            )
        if "robustness" in parts:
            robustness([dual.path for _, dual in pairs], root, args.scan_steps)
        if "count" in parts:
            hidden_marks(root, args.dataset, args.epochs, keys)
    print(f"\ntook {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
