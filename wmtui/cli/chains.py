"""Stacked attacks on the command line: ``--attack a,b,c`` or a preset chain's name, with
each step's own flags as ``--STEP.FLAG VALUE``.

    wmtui attack --attack weight-shifting,fine-prune,gaussian-smoothing --run RUN \\
        --fine-prune.ratio 0.9 --gaussian-smoothing.sigma 0.25
    wmtui attack --attack prune,ft-basic,prune --2.lr 0.01 --3.ratio 0.8 --run RUN
    wmtui attack --attack sok-combined-2 --run RUN --steps 500

``STEP`` is the step's attack name, or its position from 1 when an attack appears twice; a
flag is parsed by that step's params dataclass (the same parser as a single attack's flags),
so a flag no step has is one line naming the step and its real flags. The budget flags
(``--data-fraction``, ``--steps``...) are the whole chain's: every training step gets them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from engine.attacks import ATTACKS
from engine.errors import UserError, closest
from engine.jobs.chain import is_chain_text
from engine.jobs.success import yes_no
from engine.metrics import percent
from engine.registry import Plugin
from engine.studies.chains import chain_names, expand_chain, is_chain_name, load_chain

#: how one attack's flags are parsed (``wmtui.cli.attacks.attack_flags``, passed in: that
#: module builds on this one)
FlagParser = Callable[[list[str], Plugin[Any]], dict[str, str]]


def chain_from_cli(name: str, args: list[str], parse: FlagParser) -> list[dict[str, Any]] | None:
    """The steps ``--attack NAME`` means with their flags, or None when it names one attack."""
    if name in ATTACKS or not (is_chain_text(name) or is_chain_name(name)):
        return None
    _, raw = expand_chain(name)
    steps = [
        {"attack": s, "params": {}} if isinstance(s, str) else {"params": {}, **s} for s in raw
    ]
    names = [str(step.get("attack", "")) for step in steps]
    for index, flags in enumerate(step_flag_groups(args, names)):
        if flags:
            own = _parsed(flags, index, names, parse)
            steps[index]["params"] = {**steps[index]["params"], **own}
    return steps


def _parsed(flags: list[str], index: int, names: list[str], parse: FlagParser) -> dict[str, str]:
    """One step's flags, parsed by its attack's params (its own messages, the step named)."""
    name = names[index]
    try:
        return parse(flags, ATTACKS.get(name, kind="attack"))
    except UserError as exc:
        raise UserError(f"chain step {index + 1} ({name}): {exc}") from None


def step_flag_groups(args: list[str], names: list[str]) -> list[list[str]]:
    """``--STEP.FLAG [VALUE]`` tokens sorted into one ``--FLAG [VALUE]`` list per step."""
    groups: list[list[str]] = [[] for _ in names]
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise UserError(f"unexpected argument {token!r}")
        flag, has_value, value = token.partition("=")
        step, dot, field = flag[2:].partition(".")
        if not dot or not field:
            example = f"--{names[0]}.{step}" if names else flag
            raise UserError(
                f"{flag}: in a chain, say which step a flag is for ({example}, or --1.{step})"
            )
        group = groups[step_index(step, names, flag)]
        group.append(f"--{field}" + (f"={value}" if has_value else ""))
        if not has_value and i + 1 < len(args) and not args[i + 1].startswith("--"):
            group.append(args[i + 1])
            i += 1
        i += 1
    return groups


def step_index(step: str, names: list[str], flag: str) -> int:
    """The position (from 0) of the step ``--STEP.FLAG`` means: a number from 1, or an
    attack's name that appears once in the chain."""
    listed = ", ".join(f"{i}:{n}" for i, n in enumerate(names, 1))
    if step.isdigit():
        if 1 <= int(step) <= len(names):
            return int(step) - 1
        raise UserError(f"{flag}: the chain has no step {step} (its steps: {listed})")
    found = [i for i, name in enumerate(names) if name == step]
    if not found:
        raise UserError(
            f"{flag}: no step {step!r} in the chain{closest(step, names)} (its steps: {listed})"
        )
    if len(found) > 1:
        numbers = " and ".join(str(i + 1) for i in found)
        raise UserError(
            f"{flag}: {step!r} is steps {numbers}; name the step by its number "
            f"(--{found[0] + 1}.{flag.partition('.')[2]})"
        )
    return found[0]


def chain_lines(summary: Mapping[str, Any], width: int = 80) -> list[str]:
    """One line per step of a chain's summary (none for one attack): its test accuracy,
    the owner's key accuracy and the SoK verdict after it, within ``width`` columns."""
    lines = []
    for row in summary.get("chain") or []:
        key = row.get("wm_accuracy")
        line = (
            f"{row.get('phase', '?'):<24} test acc {percent(row.get('test_acc')):>6}  "
            f"key {percent(key):>6}  removed {yes_no(row.get('removed'))}"
        )
        lines.append(line[:width])
    return lines


def chain_listing(json_mode: bool, width: int = 80) -> list[str]:
    """The preset chains under a header of their own, one line each (its steps in order),
    or one JSON row each: ``wmtui attack --list`` ends with them."""
    presets = [load_chain(name) for name in chain_names()]
    if json_mode:
        return [
            json.dumps({"name": p.name, "family": "chain", "summary": p.title, "steps": p.steps})
            for p in presets
        ]
    header = "CHAINS: stacked attacks in one job (--attack a,b,c or a name; --STEP.FLAG)"
    lines = [header[:width]]
    for preset in presets:
        steps = " > ".join(step_text(step) for step in preset.steps)
        line = f"{preset.name:<15} {steps}"
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    return lines


def step_text(step: Mapping[str, Any]) -> str:
    """``fine-prune(ratio=0.96)``: a preset step as the listing shows it."""
    params = ",".join(f"{k}={v}" for k, v in (step.get("params") or {}).items())
    return f"{step.get('attack', '?')}({params})" if params else str(step.get("attack", "?"))
