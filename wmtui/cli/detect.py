"""``wmtui detect``: find (and with ``--remove``, remove) a watermark by trigger search.

    wmtui detect --method METHOD --run RUN [--remove [BOOL]] --out RUN2 [--json]
                 [--data-fraction F] [--epochs N] [detector flags: --scan-steps, --mode, ...]

``--remove`` is the detector's own ``remove`` flag, parsed with its other flags, so it has
one meaning everywhere: alone or ``true``, unlearn the reversed trigger; ``false``, detect
only. Only its default differs: a scenario or recipe phase removes unless told not to, while
this command detects only unless ``--remove`` is given (a scan is the question a user types
``detect`` for; removal changes the model).

Budget flags come from :class:`AttackerBudget`; the detector's own flags (see
``wmtui attack --list``) follow ``--method`` and are parsed once it is known, so a flag of
the other detector is one clear error line (exit 2). With ``--json`` the last line is the
result: ``perturbation_sizes`` (by class), ``flagged_class``, ``anomaly_index``, the scan's
``steps``, ``cap`` and ``stopped_because`` (converged, or the cap reached) and, with
``--remove``, before/after ``test_acc`` and ``retention``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.errors import UserError
from engine.jobs import JOB_KINDS, JobSpec
from engine.jobs.verdicts import shown_p
from engine.metrics import percent
from wmtui.cli.attacks import shown_ber
from wmtui.cli.common import DeviceOption, JsonFlag, ThreadsOption
from wmtui.cli.options import register_plugin_command

COMMAND = "detect"


def register(app: typer.Typer) -> None:
    """Add the ``detect`` command to ``app``; a second call is a no-op."""
    register_plugin_command(app, COMMAND, detect)


def detect(
    ctx: typer.Context,
    given: dict[str, str],
    method: Annotated[
        str | None, typer.Option("--method", help="detector (listed below)", show_default=False)
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run", help="run holding the suspect model", show_default=False)
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="run directory to create (default: runs/detect-<time>)"),
    ] = None,
    json_mode: JsonFlag = False,
    device: DeviceOption = "auto",
    eval_every: Annotated[
        int, typer.Option("--eval-every", help="removal steps between the referee's measurements")
    ] = 100,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace a run already in --out")
    ] = False,
    threads: ThreadsOption = None,
) -> None:
    """Detect a watermark's target class by per-class trigger search; optionally remove it.

    --remove [BOOL]: also unlearn a flagged class's reversed trigger (fine-tuning with
    true labels). Alone or true: remove; false or left out: detect only. (A scenario's
    detect phase removes unless given remove = false.)

    The detector's own flags follow --method (wmtui attack --list shows them).

    """
    from wmtui.cli.attacks import attack_flags
    from wmtui.cli.common import default_out, run_spec

    kind = JOB_KINDS.get(COMMAND).factory
    if not method:
        names = ", ".join(p.name for p in kind.plugins())
        raise UserError(f"--method is required; choose one of: {names}")
    flags = {"remove": "false", **attack_flags(ctx.args, kind.plugin(method))}
    spec = JobSpec(
        COMMAND,
        method,
        flags,
        budget=given,
        source=run_dir,
        out=out or default_out(COMMAND),
        device=device,
        eval_every=eval_every,
        overwrite=overwrite,
    )
    code, run = run_spec(spec, json_mode, threads)
    if code == 0 and run is not None:
        print_result(run.summary(), json_mode)
    raise typer.Exit(code)


RESULT_KEYS = (
    "method",
    "perturbation_sizes",
    "size_kind",
    "flagged_class",
    "anomaly_index",
    "anomaly_indices",
    "success",
    "threshold",
    "rule",
    "gap",
    "gap_ratio",
    "steps",
    "cap",
    "stopped_because",
    "trigger_files",
    "test_acc_before",
    "test_acc",
    "retention_before",
    "retention",
)


def number(value: float | None) -> str:
    """Two decimals; ``n/a`` for what JSON records as null: not finite (an index over a MAD
    of 0, a gap over a size of 0)."""
    return "n/a" if value is None else f"{value:.2f}"


def print_result(summary: dict[str, Any], json_mode: bool) -> None:
    """The result as one JSON line (``--json``) or a small bar chart of sizes per class."""
    row = {k: summary[k] for k in RESULT_KEYS if k in summary}
    if json_mode:
        typer.echo(json.dumps({"event": "detection", **row}))
        return
    sizes = summary.get("perturbation_sizes") or []
    indices = summary.get("anomaly_indices") or [0.0] * len(sizes)
    top = max(sizes, default=1.0) or 1.0
    typer.echo(f"{summary.get('size_kind', 'size')} per class:")
    for c, (size, index) in enumerate(zip(sizes, indices, strict=False)):
        mark = "  <- flagged" if c == summary.get("flagged_class") else ""
        bar = "#" * max(1, round(30 * size / top))
        typer.echo(f"  {c:3d} {size:9.3f} {bar:30} AI {number(index):>5}{mark}")
    if summary.get("stopped_because"):
        typer.echo(f"scan: {summary['stopped_because']}")
    flagged = summary.get("flagged_class")
    typer.echo(
        f"anomaly index of the smallest: {number(summary.get('anomaly_index'))}, next class "
        f"{number(summary.get('gap_ratio'))}x its size (needs 2 and "
        f"{summary.get('gap', 1.0):g}x) -> "
        + (f"class {flagged} flagged" if flagged is not None else "nothing flagged")
    )
    if "test_acc" in summary:
        typer.echo(
            f"test acc  {percent(summary.get('test_acc_before'))} -> "
            f"{percent(summary.get('test_acc'))}"
        )
        before = summary.get("retention_before") or {}
        for key, value in (summary.get("retention") or {}).items():
            typer.echo(f"{key:9} {percent(before.get(key))} -> {percent(value)}")
        # a white-box key is read from the weights: its bit error rate before and after
        read_before = (summary.get("before") or {}).get("white_box") or {}
        for key, read in ((summary.get("after") or {}).get("white_box") or {}).items():
            was = read_before.get(key, {})
            typer.echo(
                f"{key:9} BER {shown_ber(was.get('ber'))} -> {shown_ber(read.get('ber'))} "
                f"of {read.get('bits', '?')} bits, p {shown_p(read)}"
            )
