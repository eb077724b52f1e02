"""``wmtui threshold``: the SoK's decision threshold of a scheme, from null models.

Trains (or reuses, from the cache) K unmarked models on the given train config, measures
fresh keys of the scheme on them and prints the key accuracy at or below which a model
counts as unmarked. ``wmtui verify`` then shows the threshold verdict beside its p-value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.config import TrainConfig
from engine.events import Done, Event
from engine.jobs import JobSpec
from engine.jobs.threshold import ThresholdParams
from engine.metrics import percent
from engine.threads import apply_threads
from wmtui.cli.common import (
    ConfigOption,
    JsonFlag,
    ThreadsOption,
    guarded,
    run_headless,
    train_values,
)
from wmtui.cli.options import field_names, with_dataclass_options


def threshold(
    given: dict[str, str],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="also keep the job as a run folder (events, summary)"),
    ] = None,
    json_mode: JsonFlag = False,
    config: ConfigOption = None,
    threads: ThreadsOption = None,
) -> None:
    """The SoK's decision threshold: train or reuse K null models, measure fresh keys of
    --scheme on them, cache the key accuracy at or below which a model counts as unmarked.

    Example: wmtui threshold --scheme pattern --dataset fashion-mnist --model lenet5
    """
    own = field_names(ThresholdParams)
    params = {k: v for k, v in given.items() if k in own}
    train = train_values({k: v for k, v in given.items() if k not in own}, config)
    spec = JobSpec("threshold", params=params, config=train, out=out)
    note = apply_threads(threads)
    built = spec.validate().build()
    done: list[dict[str, Any]] = []

    def catch(event: Event) -> None:  # the summary, whether or not a run folder keeps it
        if isinstance(event, Done):
            done.append(event.summary)

    code = run_headless(built.job, built.run, json_mode, [catch], note=note)
    if code == 0 and done:
        summary = done[-1]
        if json_mode:
            typer.echo(json.dumps({"event": "threshold", **summary}))
        else:
            typer.echo(describe(summary))
    raise typer.Exit(code)


def describe(summary: dict[str, Any]) -> str:
    """The threshold, the null accuracies it rests on, and where it is cached."""
    if "record" not in summary:  # a white-box scheme: judged by its BER, no null models
        return f"threshold {summary['scheme']}: {summary['why']}"
    record = summary["record"]
    size = (
        f"{record['key_size']} key images"
        if record["key_size"]
        else f"every held-out key sample ({record['samples']} queried)"
    )
    accs = ", ".join(percent(a) for a in record["null_key_acc"])
    return (
        f"threshold {record['scheme']} on {record['dataset']} / {record['arch']}: "
        f"{percent(record['threshold'])} key accuracy (p {record['p']:g}; a model at or below "
        "it counts as unmarked)\n"
        f"  key size: {size}; estimator: {record['estimator']}\n"
        f"  null key accuracies ({record['null_models']} models x {record['keys']} keys): "
        f"{accs}\n"
        f"  null models' test accuracy {percent(record['null_test_acc_mean'])} (mean); "
        f"{summary['null_models_trained']} trained, {summary['null_models_reused']} reused\n"
        f"  cached at {summary['cached_at']}"
    )


def register(app: typer.Typer) -> None:
    if "threshold" not in {info.name for info in app.registered_commands}:
        command = with_dataclass_options(ThresholdParams, TrainConfig, exclude=("cache", "seed"))
        app.command("threshold")(guarded(command(threshold)))
