"""``wmtui keygen``: the owner's RSA key pair for dual embedding.

The passphrase that encrypts the private key comes from ``WMTUI_KEY_PASSPHRASE`` or a
prompt (``--encrypt``), never from a flag: flags end up in shell history and in every
process list on the machine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from engine.errors import ConfigError
from engine.watermarks.claims import (
    DEFAULT_BITS,
    PASSPHRASE_ENV,
    PRIVATE_PEM,
    PUBLIC_PEM,
    create_key_pair,
    passphrase_from_env,
)
from wmtui.cli.common import JsonFlag, guarded


def keygen(
    out: Annotated[Path, typer.Option("--out", help="folder for the key pair (made 0700)")],
    bits: Annotated[int, typer.Option("--bits", help="RSA modulus size")] = DEFAULT_BITS,
    encrypt: Annotated[
        bool,
        typer.Option(
            "--encrypt",
            help=f"encrypt the private key with a passphrase (from {PASSPHRASE_ENV}, or "
            "asked for; never a flag)",
        ),
    ] = False,
    json_mode: JsonFlag = False,
) -> None:
    """Make an RSA key pair: private.pem (0600, never copied into a run) and public.pem.

    Sign a claim with it: wmtui embed --scheme dual --signing-key DIR --owner NAME ...
    """
    passphrase = passphrase_from_env()
    if encrypt and passphrase is None:
        typed = typer.prompt("passphrase", hide_input=True, confirmation_prompt=True)
        passphrase = typed.encode()
        if not passphrase:
            raise ConfigError("an empty passphrase encrypts nothing")
    folder = create_key_pair(out, bits, passphrase)
    if json_mode:
        typer.echo(
            json.dumps(
                {
                    "event": "keygen",
                    "private_key": str(folder / PRIVATE_PEM),
                    "public_key": str(folder / PUBLIC_PEM),
                    "bits": bits,
                    "encrypted": passphrase is not None,
                }
            )
        )
    else:
        typer.echo(
            f"key pair written to {folder}: {PRIVATE_PEM} (mode 0600"
            f"{', encrypted' if passphrase else ''}) and {PUBLIC_PEM}, RSA {bits} bits"
        )


def register(app: typer.Typer) -> None:
    if "keygen" not in {info.name for info in app.registered_commands}:
        app.command("keygen")(guarded(keygen))
