"""Scan a model file or every file under a folder, by content (what ``advkit scan PATH`` runs).

A save_model folder (``config.json`` + ``model.safetensors``) counts as one entry, checked with
:func:`advkit.models.scan.scan_model_file`; every other file is scanned on its own, whatever its
name. Symbolic links are not followed out of the folder (nor into folders: their targets inside it
are scanned where they are), and anything that is not a regular file (a pipe, a device) is not
opened: those are listed in ``skipped`` with the reason.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from advkit.errors import InvalidParameterError
from advkit.models.scan import CONFIG_NAME, WEIGHTS_NAME, ScanResult, scan_model_file

UNSAFE = ("dangerous", "requires-trust")


@dataclass(frozen=True)
class TreeScan:
    """The scan of each file (or save_model folder) found, in path order, and what was skipped."""

    results: tuple[ScanResult, ...]
    skipped: tuple[tuple[Path, str], ...] = ()

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in ("safe", "requires-trust", "dangerous", "unknown")}
        for r in self.results:
            out[r.verdict] += 1
        return out


def scan_tree(path) -> TreeScan:
    """Scan the file at ``path``, or every file under the folder at ``path`` (recursively)."""
    root = Path(path)
    if not root.exists():
        raise InvalidParameterError("path", str(root), "an existing model file or folder")
    if not root.is_dir():
        return TreeScan((scan_model_file(root),))
    base = root.resolve()
    results: list[ScanResult] = []
    skipped: list[tuple[Path, str]] = []
    stack = [root]
    while stack:  # iterative: a deeply nested folder cannot exhaust the recursion limit
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            results.append(ScanResult(folder, "unknown", "", False, issues=(
                f"the folder cannot be read ({exc}); check its permissions",)))
            continue
        plain = {e.name for e in entries if e.is_file(follow_symlinks=False)}
        covered = {CONFIG_NAME, WEIGHTS_NAME} if {CONFIG_NAME, WEIGHTS_NAME} <= plain else set()
        if covered:
            results.append(scan_model_file(folder))
        subfolders = []
        for entry in entries:
            if entry.name in covered:
                continue
            p = Path(entry.path)
            why = _skip_reason(entry, p, base)
            if why:
                skipped.append((p, why))
            elif entry.is_dir(follow_symlinks=False):
                subfolders.append(p)
            else:
                results.append(scan_model_file(p))
        stack.extend(reversed(subfolders))
    results.sort(key=lambda r: str(r.path))
    return TreeScan(tuple(results), tuple(skipped))


def _skip_reason(entry: os.DirEntry, p: Path, base: Path) -> str | None:
    """Why ``entry`` is not scanned, or None."""
    if entry.is_symlink():
        try:
            target = p.resolve(strict=True)
        except (OSError, RuntimeError):
            return "a broken symbolic link"
        if not target.is_relative_to(base):
            return f"a symbolic link to {target}, outside the scanned folder (scan it on its own)"
        if target.is_dir():
            return "a symbolic link to a folder inside the scanned folder (scanned there)"
    try:
        mode = os.stat(p).st_mode
    except OSError as exc:
        return f"cannot be examined ({exc})"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file (a pipe, socket or device), never opened"
    return None


def reasons(res: ScanResult) -> list[str]:
    """Why ``res`` has its verdict, in short phrases (empty for a safe file without notes)."""
    out = [f"{name}: {why}" if why else name for name, why in res.dangerous.items()]
    if res.verdict == "requires-trust":
        if res.format == "skops":
            out.append("types skops does not trust by default: " + ", ".join(res.globals))
        else:
            kind = "" if res.format == "pickle" else f" ({res.format})"
            out.append(f"pickle-based{kind}: loading it runs its code (needs --trust-pickle)")
        if res.unknown and res.format != "skops":
            out.append("imports not known to be harmless: " + ", ".join(res.unknown))
    if res.verdict != "safe" or res.issues:
        out.extend(res.issues)
    return out
