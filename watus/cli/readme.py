"""Keeps the README's configuration reference equal to the settings classes (`watus config --readme`)."""

from __future__ import annotations

from pathlib import Path

from watus.cli.settings_catalog import markdown_reference

START, END = "<!-- config:start -->", "<!-- config:end -->"


def with_reference(readme: str) -> str:
    """The README text with the generated reference between the markers."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{markdown_reference()}{END}{tail}"


def update(path: Path) -> bool:
    """Rewrite the reference in `path`; True if it changed."""
    old = path.read_text(encoding="utf-8")
    new = with_reference(old)
    if new != old:
        path.write_text(new, encoding="utf-8")
    return new != old
