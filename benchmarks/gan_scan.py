"""GAN / Neural Cleanse scan: Table II on the pattern scheme, clean models, batched cost.

    .venv/bin/python benchmarks/gan_scan.py scheme  --dataset fashion-mnist --trigger text
    .venv/bin/python benchmarks/gan_scan.py scheme  ... --target 7 --only-target --remove
    .venv/bin/python benchmarks/gan_scan.py clean   --dataset synthetic --seeds 5
    .venv/bin/python benchmarks/gan_scan.py ratio   [--dataset synthetic] [--device cuda]
    .venv/bin/python benchmarks/gan_scan.py table   [--dataset fashion-mnist] [--trigger text]
    .venv/bin/python benchmarks/gan_scan.py compare [--dataset synthetic]

``scheme`` runs ``wmtui embed --scheme pattern`` (its defaults, decoys on) for targets 1, 4,
7 and 9, then ``wmtui detect`` with 10% of the data, exactly as a user would. The other
commands train plain watermarked models here with the one training loop: an extra ``Source``
stamps the trigger (``engine.watermarks.triggers``: "TEST" text or white square, bottom-right)
on ~10% of each batch and labels it the target; retention is measured with the same stamp on
test images of other classes. ``--method`` and ``--param k=v`` choose the detector and its
parameters. Not a CI test: run it by hand, one command per core.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.attacks.budget import AttackerBudget, AttackerData, build_attacker_data
from engine.attacks.detection import Detection
from engine.attacks.registry import make_detector
from engine.data import load_dataset
from engine.data.base import ImageSet
from engine.metrics import Probe, accuracy
from engine.models import Architecture, build_model
from engine.session import JobContext
from engine.training import OptimSettings, Source, TrainLoop, clean_test_probe
from engine.watermarks.triggers import make_trigger, parse_trigger, stamper

TARGETS = (1, 4, 7, 9)
CACHE = Path(tempfile.gettempdir()) / "wmtui-gan-scan"


def load(name: str, train: int, test: int) -> ImageSet:
    return load_dataset(name, None, train_size=train, test_size=test).data


def trigger_stamp(data: ImageSet, trigger: str) -> Any:
    pattern, mask = make_trigger(
        parse_trigger(trigger), data.shape, size=0, position="br", blend=1.0, seed=0
    )
    return stamper(pattern, mask)


def train_model(
    data: ImageSet, *, target: int | None, trigger: str = "text", seed: int = 0, steps: int = 600
) -> tuple[torch.nn.Module, Probe | None]:
    """lenet5 trained by TrainLoop; with a target, ~10% of each batch is stamped -> target.
    Cached under CACHE (delete it after changing the recipe)."""
    cache = CACHE / f"{data.name}-{len(data.train_x)}-{target}-{trigger}-{seed}-{steps}.pt"
    torch.manual_seed(seed)
    model = build_model(Architecture("lenet5", data.shape, data.num_classes))
    sources = [Source("owner", data.train_x, 58, y=data.train_y)]
    probe = None
    if target is not None:
        stamp = trigger_stamp(data, trigger)
        key_x = data.train_x[data.train_y != target]
        sources.append(
            Source("key", key_x, 6, y=torch.full((len(key_x),), target), transform=stamp)
        )
        others = data.test_y != target
        probe = Probe("wm", data.test_x[others], torch.full((int(others.sum()),), target), stamp)
    if cache.exists():
        model.load_state_dict(torch.load(cache, weights_only=True))
        return model.eval(), probe
    TrainLoop(
        model,
        sources,
        OptimSettings(optimizer="adam", lr=0.003, schedule="cosine"),
        ctx=JobContext(),
        phase="train",
        total_steps=steps,
        eval_every=10**6,
        seed=seed,
    ).run()
    CACHE.mkdir(exist_ok=True)
    torch.save(model.state_dict(), cache)
    if probe is not None:
        print(
            f"# trained target {target} {trigger}: retention {accuracy(model, probe):.3f}, "
            f"test {accuracy(model, clean_test_probe(data)):.3f}",
            file=sys.stderr,
        )
    return model.eval(), probe


def attacker(data: ImageSet, fraction: float = 0.1, seed: int = 0) -> AttackerData:
    return build_attacker_data(AttackerBudget(data_fraction=fraction), data, seed=seed)


def scan(
    model: torch.nn.Module, data: AttackerData, method: str = "gan", seed: int = 0, **params: Any
) -> Detection:
    detector = make_detector(method, {"remove": False, **params})
    return detector.detect(model, data, JobContext(), seed)


def method_params(args: argparse.Namespace) -> dict[str, Any]:
    """``--param k=v`` pairs for ``--method`` (values as the CLI would parse them)."""
    params: dict[str, Any] = {"mode": args.mode} if args.method == "gan" else {}
    for pair in args.param:
        name, _, value = pair.partition("=")
        params[name.replace("-", "_")] = value
    return params


def fmt(sizes: list[float]) -> str:
    return " ".join(f"{s:7.3f}" for s in sizes)


def ratio_setup(
    dataset: str, train: int, train_steps: int, device: torch.device, test: int = 500
) -> tuple[torch.nn.Module, AttackerData]:
    """What the ratio scans: lenet5 watermarked with target 7 (trained on the CPU, cached),
    moved to ``device``, and the attacker's 10% of the data there."""
    data = load(dataset, train, test)
    model, _ = train_model(data, target=7, steps=train_steps)
    model.to(device)
    return model, attacker(data.to(device))


def scan_times(
    model: torch.nn.Module,
    full: AttackerData,
    *,
    steps: int,
    mode: str = "universal",
    warmup_steps: int = 5,
    repeats: int = 1,
    methods: tuple[str, ...] = ("gan", "neural-cleanse"),
    **params: Any,
) -> Iterator[tuple[str, dict[str, float]]]:
    """``(method, {"single": s, "batched": s})`` per detector: seconds of a 1-class scan and
    of the batched all-class scan with the same settings, side by side in one process; each
    after a ``warmup_steps`` scan, the fastest of ``repeats``, device work included."""
    device = next(model.parameters()).device
    single = dataclasses.replace(full, num_classes=1)
    for method in methods:
        extra = {"mode": mode, **params} if method == "gan" else dict(params)
        times = {}
        for label, d in (("single", single), ("batched", full)):
            scan(model, d, method, scan_steps=warmup_steps, **extra)  # warm-up
            best = float("inf")
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                # exactly ``steps`` (a window as long as the cap never ends a timed scan
                # early); the scan ends on a host read
                scan(model, d, method, scan_steps=steps, converge_window=steps, **extra)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                best = min(best, time.perf_counter() - t0)
            times[label] = best
        yield method, times


def cmd_ratio(args: argparse.Namespace) -> None:
    """Time the 10-class batched scan against a 1-class scan with the same settings (steps,
    images per class, restarts), side by side in one process, on ``--device``.

    ``per-class`` is what batching buys over scanning the classes one after another
    (10 x the 1-class time / the 10-class time): about 1 where the work per image is the
    bottleneck (a CPU), up to 10 where a step's fixed cost is (a GPU running lenet5)."""
    device = torch.device(args.device)
    model, full = ratio_setup(args.dataset, args.train, args.train_steps, device)
    print(f"# {args.dataset} lenet5, {device}, threads {torch.get_num_threads()}")
    for method, times in scan_times(model, full, steps=args.steps, mode=args.mode):
        ratio = times["batched"] / times["single"]
        print(
            f"{method:15} 1 class {times['single']:.2f}s  10 classes {times['batched']:.2f}s  "
            f"ratio {ratio:.2f}  per-class {10 / ratio:.2f}x  (steps {args.steps})",
            flush=True,
        )


def cmd_table(args: argparse.Namespace) -> None:
    """Table II: sizes per class for watermarks with targets 1, 4, 7, 9 (one command)."""
    data = load(args.dataset, args.train, 1000)
    print(f"# {args.dataset} lenet5, trigger {args.trigger}, {args.method} {args.param}")
    print("target | " + " ".join(f"{c:>7}" for c in range(data.num_classes)) + " | flagged AI")
    for target in TARGETS:
        model, probe = train_model(
            data, target=target, trigger=args.trigger, steps=args.train_steps
        )
        det = scan(model, attacker(data), args.method, scan_steps=args.steps, **method_params(args))
        assert probe is not None
        print(
            f"{target:6} | {fmt(det.sizes)} | {det.flagged_class} {det.anomaly_index:.2f}"
            f"  (wm retention {accuracy(model, probe):.3f})"
        )


def cmd_compare(args: argparse.Namespace) -> None:
    """Universal vs image (paper letter) GAN, and Neural Cleanse, on one watermarked and one
    clean model."""
    data = load(args.dataset, args.train, 1000)
    wm, _ = train_model(data, target=7, trigger=args.trigger, steps=args.train_steps)
    clean, _ = train_model(data, target=None, steps=args.train_steps)
    variants: list[tuple[str, str, dict[str, Any]]] = [
        (v.split("=")[0], v.split("=")[0].split(":")[0], eval("dict(" + v.split("=", 1)[1] + ")"))
        for v in args.variant
    ] or [
        ("gan universal", "gan", {"mode": "universal"}),
        ("gan universal L2 small", "gan", {"size": "l2", "inits": "small", "lr": 0.05}),
        ("gan universal no-D", "gan", {"mode": "universal", "lambda_gan": 0.0}),
        ("gan image (paper)", "gan", {"mode": "image", "lr": 0.001}),
        ("neural-cleanse", "neural-cleanse", {}),
    ]
    for label, method, params in variants:
        for name, model in (("wm t=7", wm), ("clean", clean)):
            t0 = time.perf_counter()
            det = scan(model, attacker(data), method, scan_steps=args.steps, **params)
            print(
                f"{label:20} {name:7} flagged {det.flagged_class!s:4} AI {det.anomaly_index:6.2f}"
                f"  {fmt(det.sizes)}  min-succ {min(det.success):.2f}"
                f"  {time.perf_counter() - t0:.1f}s"
            )


def cmd_clean(args: argparse.Namespace) -> None:
    data = load(args.dataset, args.train, 500)
    for seed in range(args.seeds):
        model, _ = train_model(data, target=None, seed=seed, steps=args.train_steps)
        for method in args.methods.split(","):
            extra = method_params(args) if method == args.method else {}
            det = scan(
                model, attacker(data, seed=seed), method, seed=seed, scan_steps=args.steps, **extra
            )
            print(
                f"seed {seed} {method:15} flagged {det.flagged_class} AI {det.anomaly_index:.2f}"
                f" | sizes {fmt(det.sizes)}",
                flush=True,
            )


def wmtui(*args: str) -> dict[str, Any]:
    """Run a wmtui command as a user would (``--json``); its last JSON line."""
    command = [sys.executable, "-m", "wmtui", *args, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:1])} failed ({done.returncode}): {done.stderr[-400:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cmd_scheme(args: argparse.Namespace) -> None:
    """Table II on models watermarked by ``wmtui embed --scheme pattern`` with its defaults
    (decoys on), scanned by ``wmtui detect`` with 10% of the data; ``--remove`` also unlearns.
    Runs are kept under --work (delete them after changing the scheme)."""
    work = Path(args.work)
    extra = [f"--{k.replace('_', '-')}={v}" for k, v in method_params(args).items()]
    print(
        f"# {args.dataset} lenet5 {args.epochs_embed} epochs, pattern {args.trigger}, "
        f"{args.method} {' '.join(extra)}, 10% of the data"
    )
    targets = [args.target] if args.only_target else TARGETS
    for target in targets:
        run = work / f"{args.dataset}-{args.trigger}-{target}"
        if not (run / "model.safetensors").exists():
            wmtui(
                "embed",
                "--scheme",
                "pattern",
                "--trigger",
                args.trigger,
                "--target-label",
                str(target),
                "--dataset",
                args.dataset,
                "--epochs",
                str(args.epochs_embed),
                "--out",
                str(run),
                "--overwrite",
            )
        embedded = json.loads((run / "summary.json").read_text())
        scan_out = work / f"{run.name}-{args.method}{'-remove' if args.remove else ''}"
        result = wmtui(
            "detect",
            "--method",
            args.method,
            "--run",
            str(run),
            "--out",
            str(scan_out),
            "--overwrite",
            "--data-fraction",
            "0.1",
            *(["--remove"] if args.remove else []),
            *extra,
        )
        sizes = result["perturbation_sizes"]
        others = min(v for c, v in enumerate(sizes) if c != target)
        line = (
            f"target {target}: {sizes[target]:.1f} vs {others:.1f} ({others / sizes[target]:.2f}x)"
            f" AI {result['anomaly_index']:.2f} flagged {result['flagged_class']}"
            f" | test acc {embedded['test_acc']:.4f} retention {embedded['retention']['key']:.4f}"
        )
        if args.remove and "test_acc" in result:
            line += (
                f" -> removal: test acc {result['test_acc']:.4f}"
                f" retention {next(iter(result['retention'].values())):.4f}"
            )
        print(line + f" | sizes {fmt(sizes)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("ratio", "table", "compare", "clean", "scheme"))
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--trigger", default="text", help="text (TEST) or square")
    parser.add_argument("--method", default="gan", choices=("gan", "neural-cleanse"))
    parser.add_argument("--mode", default="universal")
    parser.add_argument(
        "--param", action="append", default=[], help="detector parameter k=v (repeatable)"
    )
    parser.add_argument("--train", type=int, default=6000, help="training images")
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--steps", type=int, default=300, help="scan steps")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--target", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="compare: METHOD[:label]=k=v,k=v (python dict() args)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="ratio: cpu or cuda")
    parser.add_argument("--methods", default="gan,neural-cleanse", help="clean: which detectors")
    parser.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "wmtui-gan-scheme"),
        help="scheme: where the embedded and scanned runs are kept",
    )
    parser.add_argument("--epochs-embed", type=int, default=3, help="scheme: embedding epochs")
    parser.add_argument("--remove", action="store_true", help="scheme: also unlearn")
    parser.add_argument(
        "--only-target", action="store_true", help="scheme: only --target, not 1/4/7/9"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {
        "ratio": cmd_ratio,
        "table": cmd_table,
        "compare": cmd_compare,
        "clean": cmd_clean,
        "scheme": cmd_scheme,
    }[args.what](args)


if __name__ == "__main__":
    main()
