"""The query log of a model behind an API (``advkit.targets.http``): one JSON line per answered
input row, ``{"digest": sha256 of the row's float32 bytes, "answer": [...], "latency_ms": ...}``.

It is the response cache's memory on disk: an audit interrupted at any point (kill -9 included)
re-reads it on start and never pays for an answered row again, and an audit can be replayed from
it with no API at all. Each line is flushed as soon as its answer arrives; a last line cut short by
a crash is dropped on reading (and cut off the file before anything is appended). The first line
says what the answers are (output kind, classes, input shape), so a log written for another model
is refused rather than mixed in. Inputs are not logged (only their digests), nor any credential.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np

from advkit.errors import DataFormatError

FORMAT = "advkit-query-log"
_DIGEST = re.compile(r"[0-9a-f]{64}")
MAX_LINE = 1 << 20  # one answer line; a longer one is not a line advkit wrote


def row_digests(rows: np.ndarray) -> list[str]:
    """SHA-256 of each row's exact float32 bytes (C order): the cache and log key of an input."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return [hashlib.sha256(r.tobytes()).hexdigest() for r in rows.reshape(rows.shape[0], -1)]


def check_answer(answer, output: str, n_classes: int) -> bool:
    """True when ``answer`` is a valid answer of kind ``output`` for ``n_classes`` classes: a
    label in 0..n_classes-1, or ``n_classes`` finite probabilities in [0, 1]."""
    if output == "labels":
        return isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < n_classes
    return (isinstance(answer, list) and len(answer) == n_classes
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    and -1e-6 <= v <= 1 + 1e-6 for v in answer))


class QueryLog:
    """An append-only JSONL log of answers, read back into ``answers`` (digest -> answer)."""

    def __init__(self, path: str | Path, *, output: str, n_classes: int, shape: tuple[int, ...]):
        self.path = Path(path)
        self.header = {"format": FORMAT, "version": 1, "output": output, "n_classes": n_classes,
                       "shape": list(shape)}
        self.answers: dict[str, object] = {}
        self._file = None

    def read(self) -> dict[str, object]:
        """Every answer already logged (none when the file does not exist yet)."""
        if not self.path.exists():
            return self.answers
        if not self.path.is_file():
            raise DataFormatError(f"query log {str(self.path)!r} is not a file; give model."
                                  "query_log a file path (it is created when missing)")
        good_end = 0
        with self.path.open("rb") as f:
            for number, line in enumerate(iter(lambda: f.readline(MAX_LINE + 1), b""), 1):
                if not line.endswith(b"\n"):  # the last line, cut short by a crash: dropped
                    if len(line) > MAX_LINE:
                        raise self._bad(number, "a line longer than 1 MiB")
                    break
                self._take(number, line)
                good_end += len(line)
        if good_end < self.path.stat().st_size:
            with self.path.open("r+b") as f:  # appends must start on a line of their own
                f.truncate(good_end)
        return self.answers

    def _take(self, number: int, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise self._bad(number, "not JSON") from None
        if number == 1:
            if entry != self.header:
                raise DataFormatError(
                    f"query log {str(self.path)!r} was written for other answers ({entry!r:.200}; "
                    f"this model answers {self.header['output']} for {self.header['n_classes']} "
                    f"classes and inputs of shape {tuple(self.header['shape'])}); give model."
                    "query_log a new file for this model")
            return
        if not (isinstance(entry, dict) and isinstance(entry.get("digest"), str)
                and _DIGEST.fullmatch(entry["digest"])
                and check_answer(entry.get("answer"), self.header["output"],
                                 self.header["n_classes"])):
            raise self._bad(number, "not an answer line (digest, answer, latency_ms)")
        self.answers[entry["digest"]] = entry["answer"]

    def _bad(self, number: int, what: str) -> DataFormatError:
        return DataFormatError(f"query log {str(self.path)!r}, line {number}: {what}; the file "
                               "is damaged or not an advkit query log: move it away (its answers "
                               "are then queried again) or point model.query_log at another file")

    def append(self, entries: list[tuple[str, object, float]]) -> None:
        """Log (digest, answer, latency in ms) entries and flush them to the operating system
        (which keeps them when the process is killed; a machine crash may lose the last ones,
        which are then queried again)."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._file = self.path.open("ab")
            if new:
                self._file.write(json.dumps(self.header).encode() + b"\n")
        lines = [json.dumps({"digest": d, "answer": a, "latency_ms": round(ms, 3)}) + "\n"
                 for d, a, ms in entries]
        self._file.write("".join(lines).encode())
        self._file.flush()
        for d, a, _ in entries:
            self.answers[d] = a

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
