"""CLI options generated from a params dataclass: the declaration is the single source.

Every generated option is read as text and validated by ``engine.registry.parse_params``, so
a bad value gets the same one-line message whether it came from a flag, a TOML file or a
form. Only the options the user actually gave are passed on.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import textwrap
from collections.abc import Callable
from typing import Annotated, Any, get_type_hints

import typer
from typer.core import TyperCommand

from engine.config import TrainConfig
from engine.jobs import JOB_KINDS
from engine.registry import as_typed, describe_params


def dataclass_options(
    cls: type, *, exclude: tuple[str, ...] = (), panel: str | None = None
) -> list[inspect.Parameter]:
    params = []
    for row in describe_params(cls):
        if row["name"] in exclude:
            continue
        option = typer.Option(
            f"--{row['name'].replace('_', '-')}",
            help=option_help(row),
            show_default=False,
            metavar=row["type"].upper(),
            rich_help_panel=panel,
        )
        params.append(
            inspect.Parameter(
                row["name"],
                inspect.Parameter.KEYWORD_ONLY,
                default=None,
                annotation=Annotated[str | None, option],
            )
        )
    return params


def option_help(row: dict[str, Any]) -> str:
    """A field's help line as ``--help`` shows it: help, choices, default."""
    help_text = row.get("help", "")
    if row.get("choices"):
        help_text += f" ({'|'.join(row['choices'])})"
    if row["default"] not in ("", None):
        help_text += f" (default: {as_typed(row['default'])})"
    return help_text


#: listings (``attack --list``, ``run --list``, ``data list``) fit an 80-column terminal
LIST_WIDTH = 80


def listing(head: str, text: str, indent: int) -> list[str]:
    """``head`` padded to ``indent`` columns, then ``text`` wrapped to :data:`LIST_WIDTH`
    with its continuation lines indented under it: a long description stays readable on a
    classroom projector or an 80-column SSH window instead of running off the edge."""
    first = head.ljust(indent) if len(head) < indent else head + " "
    lines = textwrap.wrap(
        text,
        LIST_WIDTH,
        initial_indent=first,
        subsequent_indent=" " * indent,
        break_on_hyphens=False,  # names such as ft-basic stay whole
    )
    return lines or [head.rstrip()]


def with_dataclass_options(
    *classes: type, exclude: tuple[str, ...] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--field`` options for every dataclass field to a typer command.

    The wrapped command receives them as one dict, ``given``, holding only the flags used.
    """

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = get_type_hints(func, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(func).parameters.values()
            if p.name != "given"
        ]
        names = {p.name for p in own}
        extra: list[inspect.Parameter] = []
        field_names: set[str] = set()
        for cls in classes:
            for param in dataclass_options(cls, exclude=exclude):
                if param.name not in names and param.name not in field_names:
                    extra.append(param)
                    field_names.add(param.name)

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            given = {k: kwargs.pop(k) for k in list(kwargs) if k in field_names}
            return func(given={k: v for k, v in given.items() if v is not None}, **kwargs)

        wrapper.__signature__ = inspect.Signature(own + extra)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {}
        return wrapper

    return decorate


def field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def plugin_listing(kind: str) -> type[TyperCommand]:
    """A command class whose ``--help`` ends with the plugins of job ``kind`` as registered
    when the help is shown: a scheme, attack or detector added by one new module appears
    here with no CLI module to edit."""

    class PluginListing(TyperCommand):
        def format_options(self, ctx: Any, formatter: Any) -> None:
            """Options in groups: the command's own, the training flags, then one section
            per plugin with the flags that plugin takes (a flag several schemes share
            shows in each, with that scheme's help), so ``embed --help`` says which flag
            belongs to which scheme."""
            plugins = [p for p in JOB_KINDS.get(kind).factory.plugins() if p.params]
            plugin_fields = {name for p in plugins for name in field_names(p.params)}
            train_fields = field_names(TrainConfig)
            own: list[tuple[str, str]] = []
            train: list[tuple[str, str]] = []
            declared = set()
            for param in self.get_params(ctx):
                record = param.get_help_record(ctx)
                if record is None:
                    continue
                if param.name in plugin_fields:
                    declared.add(param.name)
                else:
                    (train if param.name in train_fields else own).append(record)
            sections = [("Options", own), ("Training options ([train] table)", train)]
            for plugin in plugins:
                rows = [row for row in describe_params(plugin.params) if row["name"] in declared]
                records = [
                    (f"--{row['name'].replace('_', '-')} {row['type'].upper()}", option_help(row))
                    for row in rows
                ]
                sections.append((f"{plugin.name} flags", records))
            for title, records in sections:
                if records:
                    with formatter.section(title):
                        formatter.write_dl(records)

        def format_epilog(self, ctx: Any, formatter: Any) -> None:
            super().format_epilog(ctx, formatter)
            plugins = JOB_KINDS.get(kind).factory.plugins()
            with formatter.section(f"{kind} plugins (their own flags follow the name)"):
                formatter.write_dl([(p.name, p.summary) for p in plugins])

    return PluginListing


#: plugin flags follow the plugin's name and are parsed once it is known
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def register_plugin_command(app: typer.Typer, kind: str, func: Callable[..., Any]) -> None:
    """Add ``func`` as the command of job ``kind`` (budget flags generated, the plugin's own
    flags passed through, the registered plugins listed in ``--help``); once only."""
    if any(info.name == kind for info in app.registered_commands):
        return
    from engine.attacks import AttackerBudget
    from wmtui.cli.common import guarded

    command = guarded(with_dataclass_options(AttackerBudget)(func))
    app.command(kind, context_settings=EXTRA_ARGS, cls=plugin_listing(kind))(command)
