"""``wmtui attack``: run a removal attack on a run's model under an explicit attacker budget.

    wmtui attack --attack ft-basic --run RUN --data-fraction 0.2 --out RUN2 [--json]
    wmtui attack --attack prune --method neuron --run RUN --sweep 0,0.2,0.4,0.6,0.8
    wmtui attack --attack weight-shifting,fine-prune --fine-prune.ratio 0.9 --run RUN
    wmtui attack --attack sok-combined-2 --run RUN
    wmtui attack --list

Budget flags (``--data-fraction``, ``--unlabeled``, ``--steps``...) are generated from
:class:`AttackerBudget`; each attack's own flags (``--lr``, ``--mode``, ``--ratio``...) come
from its params dataclass and are parsed after ``--attack`` is known, so a flag that does not
belong to the chosen attack is one clear error line (exit 2), not a silent no-op. A chain
(``a,b,c`` or a preset's name) runs stacked attacks in one job; its steps' flags are
``--STEP.FLAG`` (:mod:`wmtui.cli.chains`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from engine.attacks import ATTACKS, FAMILIES
from engine.attacks.registry import FAMILY_TITLES
from engine.errors import UserError, closest, unknown_name
from engine.jobs import JOB_KINDS, JobSpec
from engine.jobs.success import check_fraction, verdict_lines, yes_no
from engine.metrics import percent
from engine.registry import Plugin, as_typed, describe_params, scalar_type
from engine.studies.chains import chain_names
from wmtui.cli.chains import chain_from_cli, chain_lines, chain_listing
from wmtui.cli.common import DeviceOption, JsonFlag, ThreadsOption
from wmtui.cli.options import LIST_WIDTH, listing, register_plugin_command

COMMAND = "attack"

AttackName = Annotated[
    str | None,
    typer.Option(
        "--attack",
        help="attack to run, a chain a,b,c or a preset chain (see --list)",
        show_default=False,
    ),
]
RunOption = Annotated[
    Path | None,
    typer.Option("--run", help="run directory holding the suspect model", show_default=False),
]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="run directory to create (default: runs/attack-<time>)"),
]
SweepOption = Annotated[
    str | None,
    typer.Option(
        "--sweep",
        help="comma-separated ratios: run the attack at each and print a table (prune, fine-prune)",
        show_default=False,
    ),
]
EvalEvery = Annotated[
    int, typer.Option("--eval-every", help="steps between the referee's measurements")
]
OverwriteFlag = Annotated[bool, typer.Option("--overwrite", help="replace a run already in --out")]
ListFlag = Annotated[bool, typer.Option("--list", help="list the attacks and their flags")]
ThresholdOption = Annotated[
    str | None,
    typer.Option(
        "--threshold",
        help="key accuracy at or below which the mark counts as removed (default: the cached "
        "threshold of wmtui threshold)",
        show_default=False,
    ),
]
ReferenceOption = Annotated[
    str | None,
    typer.Option(
        "--reference-acc",
        help="the unmarked model's test accuracy the SoK rule compares with (default: the "
        "null models' mean)",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add the ``attack`` command to ``app``; a second call is a no-op."""
    register_plugin_command(app, COMMAND, attack)


def attack(
    ctx: typer.Context,
    given: dict[str, str],
    attack_name: AttackName = None,
    run_dir: RunOption = None,
    out: OutOption = None,
    json_mode: JsonFlag = False,
    sweep: SweepOption = None,
    device: DeviceOption = "auto",
    eval_every: EvalEvery = 100,
    overwrite: OverwriteFlag = False,
    list_attacks: ListFlag = False,
    threads: ThreadsOption = None,
    threshold: ThresholdOption = None,
    reference_acc: ReferenceOption = None,
) -> None:
    """Remove a watermark: fine-tune, prune or distill a run's model within a budget.

    The attack's own flags follow --attack (see --list); the engine measures test accuracy
    and retention with the owner's key, before, during and after. --attack a,b,c (or a
    preset chain) runs the attacks one after another; a step's flags are --STEP.FLAG.
    """
    from wmtui.cli.common import default_out, run_spec

    if list_attacks:
        print_attacks(json_mode)
        return
    kind = JOB_KINDS.get(COMMAND).factory
    if not attack_name:
        names = ", ".join(p.name for p in kind.plugins())
        raise UserError(f"--attack is required; choose one of: {names}")
    chain = chain_from_cli(attack_name, ctx.args, attack_flags)  # None: one attack, not a chain
    if chain is None and attack_name not in ATTACKS:  # suggest removal attacks and chains
        raise unknown_name("attack", attack_name, kind_names(kind) + chain_names())
    spec = JobSpec(
        COMMAND,
        attack_name,
        attack_flags(ctx.args, kind.plugin(attack_name)) if chain is None else None,
        chain=chain,
        budget=given,
        source=run_dir,
        out=out or default_out(COMMAND),
        device=device,
        eval_every=eval_every,
        sweep=tuple(parse_ratios(sweep)) if sweep is not None else None,
        overwrite=overwrite,
        threshold=check_fraction("--threshold", threshold),
        reference_acc=check_fraction("--reference-acc", reference_acc),
    )
    code, run = run_spec(spec, json_mode, threads)
    if code == 0 and run is not None:
        print_results(run.summary(), json_mode)
    raise typer.Exit(code)


def kind_names(kind: Any) -> list[str]:
    return [p.name for p in kind.plugins()]


def attack_flags(args: list[str], plugin: Plugin[Any]) -> dict[str, str]:
    """``--name value`` / ``--name=value`` pairs for the chosen attack; anything else is an
    error naming the attack's real flags. A bool flag alone means true."""
    assert plugin.params is not None
    hints = get_type_hints(plugin.params)
    fields = {f.name for f in dataclasses.fields(plugin.params)}
    flags = [f"--{name.replace('_', '-')}" for name in fields]
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise UserError(f"unexpected argument {token!r}")
        flag, has_value, value = token.partition("=")
        key = flag[2:].replace("-", "_")
        if key not in fields:
            raise UserError(
                f"{flag} is not an option of attack {plugin.name!r}{closest(flag, flags)}; "
                f"its options: {' '.join(sorted(flags)) or '(none)'}"
            )
        if not has_value:
            alone = i + 1 == len(args) or args[i + 1].startswith("--")
            if alone and scalar_type(hints[key]) is bool:
                value = "true"
            elif alone:
                raise UserError(f"{flag} needs a value")
            else:
                value = args[i + 1]
                i += 1
        values[key] = value
        i += 1
    return values


def parse_ratios(text: str) -> list[float]:
    """``0,0.25,0.5`` -> floats; bounds are checked by the attack's own ``ratio`` field."""
    ratios = []
    for part in text.split(","):
        try:
            ratios.append(float(part))
        except ValueError:
            raise UserError(f"--sweep: expected comma-separated numbers, got {part!r}") from None
    return ratios


def print_results(summary: dict[str, Any], json_mode: bool) -> None:
    """The sweep table, or before/after; JSON rows instead with --json (the before/after
    numbers are already in the ``done`` event's summary there)."""
    rows = summary.get("sweep")
    if rows is not None:
        keys = sorted({k for row in rows for k in row.get("retention", {})})
        if json_mode:
            for row in rows:
                typer.echo(json.dumps({"event": "sweep_row", **row}))
            return
        bers = any("ber" in row for row in rows)  # a white-box key: its BER per ratio
        head = ["ratio ", "  pruned", "sparsity", "test acc", "removed", *keys]
        typer.echo("  ".join(head + (["   BER"] if bers else [])))
        for row in rows:
            cells = [f"{row['ratio']:<6g}", f"{percent(row.get('pruned')):>8}"]
            cells.append(f"{percent(row.get('sparsity')):>8}")
            cells.append(f"{percent(row.get('test_acc')):>8}")
            cells.append(f"{yes_no(row.get('removed')):>7}")
            cells += [f"{percent(row['retention'].get(k)):>{len(k)}}" for k in keys]
            cells += [f"{shown_ber(row.get('ber')):>6}"] if bers else []
            typer.echo("  ".join(cells))
        return
    if json_mode:
        return
    before, after = summary.get("before", {}), summary.get("after", {})
    keys = sorted(set(before.get("retention", {})) | set(after.get("retention", {})))
    marks = sorted(set(before.get("white_box", {})) | set(after.get("white_box", {})))
    typer.echo("  ".join(["      ", "test acc", *keys, *(f"{k} BER" for k in marks)]))
    for label, scores in (("before", before), ("after ", after)):
        cells = [label, f"{percent(scores.get('test_acc')):>8}"]
        cells += [f"{percent(scores.get('retention', {}).get(k)):>{len(k)}}" for k in keys]
        read = scores.get("white_box", {})
        cells += [f"{shown_ber(read.get(k, {}).get('ber')):>{len(k) + 4}}" for k in marks]
        typer.echo("  ".join(cells))
    for line in chain_lines(summary) + verdict_lines(summary):
        typer.echo(line)


def shown_ber(value: Any) -> str:
    """A white-box key's bit error rate in a table cell; "-" when it was not read."""
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def by_family() -> list[tuple[str, list[Plugin[Any]]]]:
    """The attacks grouped by the SoK's families, in :data:`FAMILIES`' order (a plugin's
    own family comes after them), each group in registration order."""
    plugins = list(ATTACKS)
    names = list(FAMILIES) + sorted({p.family for p in plugins} - set(FAMILIES))
    groups = [(name, [p for p in plugins if p.family == name]) for name in names]
    return [(name, members) for name, members in groups if members]


def one_line(text: str, width: int = LIST_WIDTH) -> str:
    """``text`` within ``width`` columns, cut at a word with ``...`` (the whole line is in
    ``--json``): a listing keeps one line per attack, so the families stay visible."""
    text = text.rstrip()
    if len(text) <= width:
        return text
    cut = text[: width - 3].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + "..."


def print_attacks(json_mode: bool) -> None:
    """One line per attack under a header per family, its flags below it."""
    for family, plugins in by_family():
        if not json_mode:
            typer.echo(one_line(f"{family.upper()}: {FAMILY_TITLES.get(family, '')}"))
        for plugin in plugins:
            print_attack(plugin, json_mode)
    for line in chain_listing(json_mode):
        typer.echo(line)


def print_attack(plugin: Plugin[Any], json_mode: bool) -> None:
    """The attack's line and its flags below, or its JSON row (with its family)."""
    rows = describe_params(plugin.params) if plugin.params else []
    if json_mode:
        named = {"name": plugin.name, "family": plugin.family, "summary": plugin.summary}
        typer.echo(json.dumps({**named, "params": rows}))
        return
    width = max(len(p.name) for p in ATTACKS)  # the summaries in one column
    lines = [one_line(f"{plugin.name:<{width}} {plugin.summary}")]
    for row in rows:
        flag = f"    --{row['name'].replace('_', '-')}"
        default = as_typed(row["default"])
        lines += listing(flag, f"{row.get('help', '')} (default: {default})", 29)
    typer.echo("\n".join(lines))
