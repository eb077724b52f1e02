"""``wmtui embed`` and ``wmtui verify``: watermark a model headless, and claim ownership.

Scheme flags are generated from every registered scheme's params dataclass (the same
declaration that gives TOML keys and TUI forms); a flag of another scheme than the chosen
one is refused by name. ``verify`` exits 0 when the key verifies, 1 when it does not, and 2
on bad input (missing run or key, a key made for other data).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.config import TrainConfig, check_table, load_toml, toml_table
from engine.errors import ConfigError, closest
from engine.jobs import JobSpec
from engine.jobs.verdicts import failing_condition, shown_p
from engine.metrics import percent
from engine.session import JobContext
from engine.watermarks import SCHEMES
from wmtui.cli.common import (
    ConfigOption,
    DeviceOption,
    JsonFlag,
    OutOption,
    ThreadsOption,
    default_out,
    guarded,
    run_spec,
)
from wmtui.cli.options import field_names, plugin_listing, with_dataclass_options

SCHEME_PARAMS = sorted(
    (plugin.params for plugin in SCHEMES if plugin.params is not None),
    key=lambda cls: cls.__name__ != "PatternParams",  # its help shows for shared flags
)


def split_config(
    given: dict[str, str], config_file: Path | None, scheme: str | None
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(train values, scheme values, scheme name) from TOML ``[train]``/``[scheme]`` tables
    overridden by flags."""
    train_names = field_names(TrainConfig)
    train: dict[str, Any] = {}
    scheme_values: dict[str, Any] = {}
    name = scheme
    if config_file is not None:
        table = load_toml(config_file)
        unknown = set(table) - {"train", "scheme"}
        if unknown:
            raise ConfigError(
                f"{config_file}: unknown table {sorted(unknown)[0]!r}; use [train] and [scheme]"
            )
        train.update(toml_table(table, "train", config_file))
        check_table(train, TrainConfig, f"{config_file} [train]")
        from_file = toml_table(table, "scheme", config_file)
        file_name = from_file.pop("name", None)
        name = name or (None if file_name is None else str(file_name))
        scheme_values.update(from_file)
    train.update({k: v for k, v in given.items() if k in train_names})
    flags = {k: v for k, v in given.items() if k not in train_names}
    check_scheme_flags(flags, name or "pattern")
    scheme_values.update(flags)
    return train, scheme_values, name or "pattern"


def check_scheme_flags(flags: dict[str, Any], name: str) -> None:
    """Every scheme's flags are options of the command: one of another scheme is refused
    here, as a flag (the engine's message names TOML keys)."""
    if name not in SCHEMES:
        return  # the engine names an unknown scheme
    params = SCHEMES.get(name).params
    own = {f.name for f in dataclasses.fields(params)} if params is not None else set()
    for given in flags:
        if given not in own:
            names = ["--" + f.replace("_", "-") for f in sorted(own)]
            flag = "--" + given.replace("_", "-")
            raise ConfigError(
                f"{flag} does not apply to scheme {name!r}{closest(flag, names)} "
                f"(its flags: {', '.join(names)})"
            )


def embed(
    given: dict[str, str],
    scheme: Annotated[
        str | None,
        typer.Option(
            "--scheme", help=f"watermark scheme ({'|'.join(SCHEMES.names())}; default: pattern)"
        ),
    ] = None,
    out: OutOption = None,
    from_run: Annotated[
        Path | None, typer.Option("--from", help="start from this run's model, not from scratch")
    ] = None,
    json_mode: JsonFlag = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace a run (and its key) already in --out")
    ] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="TOML file with [train] and [scheme] tables")
    ] = None,
    threads: ThreadsOption = None,
) -> None:
    """Train while embedding a watermark; the key goes to RUN/key/ (0600), apart from the
    model."""
    train, scheme_values, name = split_config(given, config, scheme)
    spec = JobSpec(
        "embed",
        name,
        scheme_values,
        train,
        source=from_run,
        out=out or default_out("embed"),
        overwrite=overwrite,
    )
    raise typer.Exit(run_spec(spec, json_mode, threads)[0])


def verify(
    run_dir: Annotated[Path, typer.Option("--run", help="run whose model is queried")],
    key: Annotated[
        Path | None, typer.Option("--key", help="key directory (default: RUN/key)")
    ] = None,
    claim: Annotated[
        Path | None,
        typer.Option("--claim", help="a dual-embedding claim (RUN/claim.json) instead of a key"),
    ] = None,
    alpha: Annotated[
        float, typer.Option("--alpha", help="significance: verified when p-value < alpha")
    ] = 1e-3,
    json_mode: JsonFlag = False,
    device: DeviceOption = "auto",
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="where datasets live")] = None,
    white_box: Annotated[
        bool,
        typer.Option("--white-box", help="read a white-box key (uchida) from the model's weights"),
    ] = False,
) -> None:
    """Claim ownership: retention on held-out key samples (or, --white-box, the bit error
    rate of the signature read from the weights), its p-value, the decision.

    Exit 0 verified, 1 not verified, 2 bad input.
    """
    spec = JobSpec.verify(
        run=run_dir,
        key=key,
        claim=claim,
        alpha=alpha,
        device=device,
        data_dir=str(data_dir) if data_dir else None,
        white_box=white_box,
    )
    result = spec.build().job(JobContext())
    if json_mode:
        typer.echo(json.dumps(result))
    else:
        shown = shown_p(result)
        acc = result["test_acc"]
        what = f"{result['scheme']} key {result['key']}"
        # the decision and what decided it first: the numbers behind it follow
        head = (
            f"VERIFIED: {what}"
            if result["verified"]
            else f"NOT VERIFIED: {failing_condition(result)} ({what})"
        )
        read = (
            f"  bit error rate {100 * result['ber']:.2f}% ({result['n_key'] - result['matches']}"
            f"/{result['bits']} bits read wrong from the weights)\n"
            if result.get("white_box")
            else f"  retention {100 * result['retention']:.2f}% ({result['matches']}/"
            f"{result['n_key']} held-out key samples)\n"
        )
        typer.echo(
            f"{head}\n"
            f"{read}"
            f"  p-value {shown} under null rate {result['null_rate']:.4g} "
            f"({result['null_reason']}), alpha {alpha:g}\n"
            f"  test accuracy {percent(acc)}"
        )
        if result.get("signature_valid") is not None:
            typer.echo(
                f"  signature {'valid' if result['signature_valid'] else 'NOT valid'}; "
                f"null accuracy {percent(result['null_acc'])}, true accuracy "
                f"{percent(result['true_acc'])}"
            )
        if not result.get("white_box"):
            typer.echo(sok_line(result))
    raise typer.Exit(0 if result["verified"] else 1)


def sok_line(result: dict[str, Any]) -> str:
    """The SoK's threshold verdict, beside the p-value's (which alone sets the exit code)."""
    if result.get("threshold_verified") is None:
        return f"  SoK threshold: none cached; {result.get('threshold_hint', '')}"
    verdict = "marked" if result["threshold_verified"] else "unmarked"
    return (
        f"  SoK threshold: {verdict} (key accuracy {percent(result['threshold_key_acc'])} "
        f"vs threshold {percent(result['sok_threshold'])}; {result['threshold_source']})"
    )


def register(app: typer.Typer) -> None:
    """Add ``embed`` and ``verify`` to ``app`` (once; a second call does nothing)."""
    existing = {info.name for info in app.registered_commands}
    if "embed" not in existing:
        command = guarded(with_dataclass_options(TrainConfig, *SCHEME_PARAMS)(embed))
        app.command("embed", cls=plugin_listing("embed"))(command)
    if "verify" not in existing:
        app.command("verify")(guarded(verify))


__all__ = ["ConfigOption", "embed", "register", "verify"]
