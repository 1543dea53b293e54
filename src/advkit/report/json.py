"""The JSON rendering of a ``Report``: ``report.to_dict()`` with ``schema_version`` first.

The document is strict JSON (RFC 8259): NaN and ±inf become ``null``. ``load_json`` reads a document
back as a plain dict and refuses one whose ``schema_version`` is missing or unknown.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from advkit.audit.report import SCHEMA_VERSION, Report
from advkit.errors import ReportFormatError

#: Schema versions this advkit can read back.
SUPPORTED_SCHEMA_VERSIONS: frozenset[str] = frozenset({"1.0", SCHEMA_VERSION})


def report_dict(report: Report) -> dict[str, Any]:
    """``report.to_dict()``, ``schema_version`` first, non-finite floats replaced by None."""
    body = report.to_dict()
    body.pop("schema_version", None)
    head = {"schema_version": report.schema_version, "title": body.pop("title"),
            "verdicts": body.pop("verdicts")}  # the headline first
    return _finite({**head, **body})


def to_json(report: Report) -> str:
    """The report as a JSON string (indent 2, UTF-8 text, NaN/inf written as ``null``)."""
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(report: Report, path: str | os.PathLike) -> Path:
    """Write ``to_json(report)`` to ``path`` atomically (parent folders are created); return it."""
    return write_text_atomic(Path(path), to_json(report))


def load_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a report JSON document back as a dict, checking its ``schema_version``.

    Raises ``ReportFormatError`` (an ``AdvkitError``) when the file cannot be read, is not JSON,
    is not a JSON object, or has a missing or unsupported ``schema_version``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ReportFormatError(f"cannot read report file {str(path)!r}: {e.strerror or e}; "
                                "pass the path of a report.json written by advkit") from e
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except (json.JSONDecodeError, ValueError) as e:
        raise ReportFormatError(f"{str(path)!r} is not valid JSON ({e}); "
                                "pass a report.json written by advkit") from e
    if not isinstance(doc, dict):
        raise ReportFormatError(f"{str(path)!r} holds a JSON {type(doc).__name__}, not a report "
                                "object; pass a report.json written by advkit")
    version = doc.get("schema_version")
    if version is None:
        raise ReportFormatError(f"{str(path)!r} has no 'schema_version', so it is not an advkit "
                                "report (or predates versioned reports); regenerate it with "
                                "`advkit audit`")
    if not isinstance(version, str) or version not in SUPPORTED_SCHEMA_VERSIONS:
        known = ", ".join(sorted(SUPPORTED_SCHEMA_VERSIONS))
        raise ReportFormatError(f"{str(path)!r} has schema_version {version!r}, which this advkit "
                                f"cannot read (it reads {known}); upgrade advkit or regenerate "
                                "the report")
    return doc


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file and a rename, so a crash never
    leaves a half-written report behind."""
    return write_texts_atomic({Path(path): text})[0]


def write_texts_atomic(files: dict[Path, str]) -> list[Path]:
    """Write each text (UTF-8) to its path, all or nothing: every text first goes to a temporary
    file in its path's folder, and only when all are written is each renamed over its path
    (``os.replace``). On a failure the temporary files are removed, and so are the files this
    call already renamed into place, so no mixed set of old and new files is left behind."""
    temps: dict[Path, str] = {}
    placed: list[Path] = []
    try:
        for path, text in files.items():
            temps[path] = _write_temp(path, text)
        for path, tmp in temps.items():
            os.replace(tmp, path)
            placed.append(path)
    except BaseException:
        for path, tmp in temps.items():
            if path not in placed:
                Path(tmp).unlink(missing_ok=True)
        for path in placed:
            path.unlink(missing_ok=True)
        raise
    return list(files)


def _write_temp(path: Path, text: str) -> str:
    """``text`` in a new temporary file next to ``path`` (parent folders created); its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _finite(obj: Any) -> Any:
    """Recursively replace non-finite floats (NaN, ±inf) by None; other values are unchanged."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


__all__ = ["SUPPORTED_SCHEMA_VERSIONS", "ReportFormatError", "report_dict", "to_json", "write_json",
           "load_json", "write_text_atomic", "write_texts_atomic"]
