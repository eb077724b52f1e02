"""The README and the docs pages stay true to each other and to the code they quote.

These run in milliseconds (no training, no MkDocs): `make docs` builds the site strictly, but
the suite alone must already catch a README link to a page that moved, a page left out of the
site's navigation, or a quoted file drifting from the one that ships.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def links(path: Path) -> list[str]:
    """Relative link targets of a Markdown file, without their #anchor."""
    text = path.read_text(encoding="utf-8")
    targets = [m.group(1).split("#", 1)[0] for m in LINK.finditer(text)]
    return [t for t in targets if t and "://" not in t]


def nav_pages() -> set[str]:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    return set(re.findall(r":\s*(\S+\.md)\s*$", text, re.M))


def test_every_readme_link_resolves_inside_the_repository() -> None:
    targets = links(ROOT / "README.md")
    assert any(t.startswith("docs/") for t in targets)
    for target in targets:
        resolved = (ROOT / target).resolve()
        assert resolved.is_relative_to(ROOT), f"README links outside the repository: {target}"
        assert resolved.exists(), f"README links to a missing file: {target}"


def test_every_docs_page_is_in_the_site_and_links_only_to_docs() -> None:
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages == nav_pages()
    for page in pages:
        for target in links(DOCS / page):
            resolved = (DOCS / page).parent.joinpath(target).resolve()
            assert resolved.is_relative_to(DOCS), f"{page} links outside docs/: {target}"
            assert resolved.exists(), f"{page} links to a missing file: {target}"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


def test_the_python_page_shows_the_example_the_readme_runs() -> None:
    """tests/test_readme_python.py runs README's block; the docs page must show that one."""
    readme = python_blocks(ROOT / "README.md")
    assert readme and readme[0] in python_blocks(DOCS / "python.md")


def test_the_sweeps_page_quotes_the_minimal_grid_that_ships() -> None:
    shipped = (ROOT / "engine/studies/presets/sweeps/minimal.toml").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", (DOCS / "sweeps.md").read_text("utf-8"), re.S)
    assert shipped in blocks
