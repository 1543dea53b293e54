"""The corpus's entry record and the writer that numbers and places its files.

A leaf module: every case module writes through :class:`_Writer`, and ``__init__`` re-exports
:class:`CorpusEntry`, so keeping both here avoids an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CorpusEntry:
    """One file (or folder) of the corpus. ``expected``: ``"malicious"`` or ``"benign"``;
    ``format``: one of :data:`FORMATS`; ``technique``: the trick it uses (several files may share
    one); ``source``: the advisory or write-up it comes from, when there is one."""

    path: Path
    name: str
    technique: str
    expected: str
    format: str
    source: str = ""


class _Writer:
    def __init__(self, folder: Path):
        self.folder, self.entries = folder, []

    def path(self, fmt: str, expected: str, name: str, suffix: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
        sub = self.folder / expected / fmt
        sub.mkdir(parents=True, exist_ok=True)
        return sub / f"{len(self.entries):03d}-{safe}{suffix}"

    def add(self, path: Path, name: str, technique: str, expected: str, fmt: str,
            source: str = "") -> Path:
        self.entries.append(CorpusEntry(path, name, technique, expected, fmt, source))
        return path

    def write(self, data: bytes, name: str, technique: str, fmt: str, suffix: str,
              source: str = "", expected: str = "malicious") -> Path:
        p = self.path(fmt, expected, name, suffix)
        p.write_bytes(data)
        return self.add(p, name, technique, expected, fmt, source)
