"""Progress of long work: a rich bar on a terminal, one log line per finished stage elsewhere.

``stage_progress`` yields a ``Stages`` object; each ``with stages.stage(label):`` block is one stage.
On a terminal the bar names the stage that is *running* (its description is set before the stage
starts) with the elapsed time and an estimate of the time left. Outside a terminal (stderr is not a
TTY, or ``CI`` is set) nothing is drawn and each finished stage is one INFO record on the
``advkit.progress`` logger ("[3/12] pgd/Linf/eps=0.1 done in 4.2 s"). The library never prints:
the command line attaches a stderr handler to that logger (``advkit.cli.output``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("advkit.progress")


class _Quiet:
    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass

    def advance(self, *a, **k):
        pass


def wants_progress(progress: bool | None) -> bool:
    """An explicit choice wins; by default a bar only on a terminal outside CI."""
    if progress is not None:
        return progress
    ci = os.environ.get("CI", "").strip().lower()
    return sys.stderr.isatty() and ci in ("", "0", "false", "no")


def _bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


@contextlib.contextmanager
def progress_bar(progress: bool | None = None):
    """Yield an object with add_task/update/advance; a live rich bar only when wanted."""
    if not wants_progress(progress):
        yield _Quiet()
        return
    with _bar() as bar:
        yield bar


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


class Stages:
    """Numbered stages of one piece of work, shown on ``bar`` and logged when each finishes."""

    def __init__(self, bar, total: int, title: str):
        self.bar, self.total, self.title = bar, total, title
        self.done = 0
        self.task = bar.add_task(title, total=total)
        self._open: tuple[str, str, float] | None = None

    def _tag(self) -> str:
        return f"[{self.done + 1}/{self.total}]"

    @contextlib.contextmanager
    def stage(self, label: str) -> Iterator[None]:
        """Run one stage: the bar names it before it starts; its end is logged with its time."""
        tag = self._tag()
        self.bar.update(self.task, description=f"{self.title} {tag} {label}")
        t0 = time.perf_counter()
        yield
        self.done += 1
        self.bar.update(self.task, advance=1)
        log.info("%s %s done in %s", tag, label, _seconds(time.perf_counter() - t0))

    def begin(self, label: str) -> None:
        """Sequential stages: end the open stage (if any) and start ``label``; the last one ends
        when ``stage_progress`` exits (or at ``end()``)."""
        self.end()
        tag = self._tag()
        self.bar.update(self.task, description=f"{self.title} {tag} {label}")
        self._open = (label, tag, time.perf_counter())

    def end(self) -> None:
        if self._open is None:
            return
        label, tag, t0 = self._open
        self._open = None
        self.done += 1
        self.bar.update(self.task, advance=1)
        log.info("%s %s done in %s", tag, label, _seconds(time.perf_counter() - t0))

    def running(self, labels: list[str]) -> None:
        """Stages that run elsewhere at once (Ray tasks): the bar names how many and the first."""
        if labels:
            more = f" (+{len(labels) - 1} running)" if len(labels) > 1 else ""
            self.bar.update(self.task, description=f"{self.title} {self._tag()} {labels[0]}{more}")

    def finished(self, label: str, seconds: float, where: str = "") -> None:
        """A stage that ran elsewhere (a Ray task) finished after ``seconds``: counted, logged."""
        tag = self._tag()
        self.done += 1
        self.bar.update(self.task, advance=1)
        log.info("%s %s done in %s%s", tag, label, _seconds(seconds), where)

    def skip(self, label: str, why: str = "read from the store") -> None:
        """A stage that needs no work (e.g. its result is stored): counted and logged."""
        tag = self._tag()
        self.done += 1
        self.bar.update(self.task, advance=1, description=f"{self.title} {tag} {label}")
        log.info("%s %s: %s", tag, label, why)


@contextlib.contextmanager
def stage_progress(total: int, title: str, progress: bool | None = None) -> Iterator[Stages]:
    """``Stages`` over a rich bar on a terminal (or when ``progress`` is True), else over nothing."""
    with progress_bar(progress) as bar:
        stages = Stages(bar, total, title)
        yield stages
        stages.end()
