"""The layout's import rules, as tests (docs/architecture.md, "Layers and their import rules"):

* ``engine`` never imports ``wmtui``, textual, rich or typer: every engine module is imported
  in a fresh interpreter, none excepted;
* ``engine.attacks`` never imports ``engine.watermarks``: an attack never sees the key (the
  referee in ``engine.jobs`` does), checked on every import statement, lazy ones included;
* no import cycles inside ``engine`` or ``wmtui``, lazy imports included (a cycle patched
  with an import inside a function is still a cycle);
* no module over 500 lines;
* ``wmtui.cli`` imports textual only inside the commands that start the app;
* the layers: ``engine.jobs`` (one job) never imports ``engine.studies`` (many jobs); the
  building blocks (data, models, training, watermarks, attacks) import neither.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import engine

ROOT = Path(__file__).resolve().parents[2]
UI_LIBRARIES = ("wmtui", "textual", "rich", "typer")


def module_files(package: str) -> dict[str, Path]:
    """Every module of ``package`` (dotted name -> file)."""
    base = ROOT / package.replace(".", "/")
    out = {}
    for path in base.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imported_names(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported module, at module level?) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.append((base, id(node) in top))
            found += [(f"{base}.{alias.name}", id(node) in top) for alias in node.names]
    return found


def test_every_engine_module_imports_no_ui_library() -> None:
    names = sorted(m.name for m in pkgutil.walk_packages(engine.__path__, "engine.") if not m.ispkg)
    assert "engine.studies.scenarios" in names and "engine.attacks.gan" in names
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(','.join(m for m in {UI_LIBRARIES!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == ""


def test_attacks_never_import_the_watermark_schemes() -> None:
    offenders = [
        f"{module} imports {name}"
        for module, path in module_files("engine.attacks").items()
        for name, _ in imported_names(path, module)
        if name == "engine.watermarks" or name.startswith("engine.watermarks.")
    ]
    assert offenders == []


#: (lower layer, the layers above it that it must never import); lazy imports count too
LAYERS = {
    "engine.jobs": ("engine.studies",),
    "engine.data": ("engine.jobs", "engine.studies", "engine.runs", "engine.models"),
    "engine.models": ("engine.jobs", "engine.studies"),
    "engine.training": ("engine.jobs", "engine.studies"),
    "engine.watermarks": ("engine.jobs", "engine.studies"),
    "engine.attacks": ("engine.jobs", "engine.studies"),
}


def test_lower_layers_never_import_higher_ones() -> None:
    modules = module_files("engine")
    offenders = [
        f"{module} imports {name}"
        for module, path in modules.items()
        for layer, above in LAYERS.items()
        if module == layer or module.startswith(layer + ".")
        for name, _ in imported_names(path, module)
        if any(name == top or name.startswith(top + ".") for top in above)
    ]
    assert offenders == []
    assert "engine.studies.presets" in modules and "engine.jobs.importer" in modules


def test_engine_never_imports_wmtui_even_lazily() -> None:
    offenders = [
        f"{module} imports {name}"
        for module, path in module_files("engine").items()
        for name, _ in imported_names(path, module)
        if name.split(".")[0] in UI_LIBRARIES
    ]
    assert offenders == []


@pytest.mark.parametrize("package", ["engine", "wmtui"])
def test_no_import_cycles(package: str) -> None:
    modules = module_files(package)
    graph = {
        module: {
            target
            for name, _ in imported_names(path, module)
            for target in [name if name in modules else name.rpartition(".")[0]]
            if target in modules and target != module
        }
        for module, path in modules.items()
    }
    # a package imports its own submodules to register them; that is an edge, not a cycle
    # unless a submodule imports the package back (then the package is on a loop)
    cycles = strongly_connected(graph)
    assert [c for c in cycles if len(c) > 1] == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of mutually reachable modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def test_cli_imports_textual_only_inside_commands() -> None:
    """Headless commands start without loading Textual; a module-level import would load it."""
    top_level = [
        f"{module} imports {name}"
        for module, path in module_files("wmtui.cli").items()
        for name, at_top in imported_names(path, module)
        if at_top and (name.split(".")[0] == "textual" or name.startswith("wmtui.tui"))
    ]
    assert top_level == []
    code = "import sys, wmtui.cli\nprint('textual' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "False"


#: modules the CLI's start and a train phase's set-up must not load: none of them is needed
#: before the first step, and each cost the playground's first plotted point (torchvision,
#: read only for the manifest's versions, was 2 s of 3.8 s); the synthetic renderer (and
#: Pillow through it) only draws on a cold cache; the UI and plotting stacks only in the app
LAZY_AT_START = (
    "torchvision",
    "engine.data.synthetic_render",
    "textual",
    "textual_plot",
    "matplotlib",
    "scipy",
)


def test_cli_start_and_a_train_spec_load_nothing_heavy(tmp_path: Path) -> None:
    """``import wmtui.cli.main``, then a train job on synthetic data checked and built (its
    run folder and manifest written, versions included), in a fresh interpreter."""
    code = (
        "import sys, wmtui.cli.main\n"
        "from engine.jobs import JobSpec\n"
        f"spec = JobSpec.train(dataset='synthetic', model='lenet5', out={str(tmp_path / 'r')!r})\n"
        "built = spec.validate().build()\n"
        "assert (built.run.path / 'manifest.json').is_file()\n"
        f"print(','.join(m for m in {LAZY_AT_START!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == ""


#: one job per module: past this a module is split by job (the layout's rule)
MAX_MODULE_LINES = 500


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for package in ("engine", "wmtui")
        for path in module_files(package).values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
