"""What the CLI prints, made safe for a terminal.

Spec titles, file names, model names and error messages come from the user or from files of unknown
origin; a terminal escape sequence among them would retitle, clear or rewrite the terminal. Every
line the CLI prints goes through ``clean`` (:func:`advkit.errors.visible`).
"""

from __future__ import annotations

import logging
import sys

import typer

from advkit.errors import visible as clean


def echo(text: object = "", *, err: bool = False) -> None:
    """``typer.echo`` of ``clean(text)``: control characters shown as escapes."""
    typer.echo(clean(text), err=err)


class _StageHandler(logging.Handler):
    """Writes each record, cleaned, as one line to the *current* ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(clean(self.format(record)) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never stop the audit
            self.handleError(record)


def log_stages(progress: bool | None) -> None:
    """Where no progress bar is drawn (not a terminal, CI, or --no-progress), log one line per
    finished stage to stderr ("advkit: [3/12] pgd/Linf/eps=0.1 done in 4.2 s"); on a terminal the
    bar shows the stages instead."""
    from advkit.audit.progress import log as stage_log
    from advkit.audit.progress import wants_progress

    for h in [h for h in stage_log.handlers if isinstance(h, _StageHandler)]:
        stage_log.removeHandler(h)
    if wants_progress(progress):
        stage_log.propagate = True
        return
    handler = _StageHandler()
    handler.setFormatter(logging.Formatter("advkit: %(message)s"))
    stage_log.addHandler(handler)
    stage_log.setLevel(logging.INFO)
    stage_log.propagate = False  # not twice when ADVKIT_LOG=info also logs to the root


__all__ = ["clean", "echo", "log_stages"]
