"""What the CLI prints, made safe for a terminal.

Spec titles, file names, model names and error messages come from the user or from files of unknown
origin; a terminal escape sequence among them would retitle, clear or rewrite the terminal. Every
line the CLI prints goes through ``clean`` (:func:`advkit.errors.visible`).
"""

from __future__ import annotations

import typer

from advkit.errors import visible as clean


def echo(text: object = "", *, err: bool = False) -> None:
    """``typer.echo`` of ``clean(text)``: control characters shown as escapes."""
    typer.echo(clean(text), err=err)


__all__ = ["clean", "echo"]
