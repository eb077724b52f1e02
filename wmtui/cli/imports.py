"""``wmtui import``: a model trained elsewhere becomes a run every attack, scan and verify can
target.

    wmtui import weights.safetensors --model lenet5 --dataset mnist --out runs/theirs
    wmtui import weights.pt --model mymodels:tiny --dataset synthetic --out runs/mine --json

The file is a state dict (safetensors, or a ``.pt``/``.pth`` that loads with
``weights_only=True``); ``--model`` names a registered architecture or a ``module:factory``.
Nothing is written unless the weights fit that architecture on the dataset's input shape.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from engine.jobs.importer import import_state_dict
from wmtui.cli.common import JsonFlag

COMMAND = "import"

ModelFile = Annotated[
    Path,
    typer.Argument(metavar="MODEL_FILE", help="state dict: .safetensors, .pt or .pth"),
]
ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        help="architecture name (lenet5, digit-cnn...) or package.module:factory",
        show_default=False,
    ),
]
DatasetOption = Annotated[
    str, typer.Option("--dataset", help="dataset the model classifies", show_default=False)
]
RunOut = Annotated[Path, typer.Option("--out", help="run directory to create", show_default=False)]
DataDirOption = Annotated[
    str, typer.Option("--data-dir", help="where datasets live (empty: the default)")
]
TrainSize = Annotated[
    int, typer.Option("--train-size", help="training images attacks on this run use (0: all)")
]
TestSize = Annotated[
    int, typer.Option("--test-size", help="test images attacks on this run use (0: all)")
]
OverwriteFlag = Annotated[bool, typer.Option("--overwrite", help="replace a run already in --out")]


def register(app: typer.Typer) -> None:
    """Add ``import`` to ``app``; a second call is a no-op."""
    if any(info.name == COMMAND for info in app.registered_commands):
        return
    from wmtui.cli.common import guarded

    app.command(COMMAND)(guarded(import_model))


def import_model(
    model_file: ModelFile,
    model: ModelOption,
    dataset: DatasetOption,
    out: RunOut,
    data_dir: DataDirOption = "",
    train_size: TrainSize = 0,
    test_size: TestSize = 0,
    overwrite: OverwriteFlag = False,
    json_mode: JsonFlag = False,
) -> None:
    """Import a state dict trained elsewhere as a run (a target for attack, detect, verify)."""
    run = import_state_dict(
        model_file,
        model,
        dataset,
        out,
        data_dir=data_dir,
        train_size=train_size,
        test_size=test_size,
        overwrite=overwrite,
    )
    summary = run.summary()
    if json_mode:
        row = {
            "event": "imported",
            "run": str(run.path),
            "model": summary["model"],
            "dataset": summary["dataset"],
            "outputs": summary["outputs"],
        }
        typer.echo(json.dumps(row))
        return
    typer.echo(
        f"imported {model_file} as {summary['model']} on {summary['dataset']} "
        f"({summary['outputs']} outputs) into {run.path}"
    )
