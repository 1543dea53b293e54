"""The audit history: every audit's manifest and headline metrics in one SQLite file.

``advkit audit`` appends one row per finished audit (after its report is written); ``advkit
history`` lists them and ``advkit compare A B`` shows how each metric moved between two audits (two
versions of a model), judged in the metric's direction from :mod:`advkit.audit.gate`.

The file is ``--history PATH``, else ``$ADVKIT_HISTORY``, else ``history.sqlite`` in
``platformdirs.user_data_dir("advkit")``. It holds one table, ``audits``; the database is marked as
advkit's (``PRAGMA application_id``) and versioned (``PRAGMA user_version``), so a foreign or damaged
file, or one written by a newer advkit, is a ``HistoryError`` naming the file and the fix. Appends
are single ``BEGIN IMMEDIATE`` transactions with a busy timeout, so concurrent audits queue instead
of failing.

The headline of an audit (``headline(doc)``, from its report document) keeps, per scenario id, the
proportions the gate knows (clean accuracy, robust accuracy, attack success rate; the worst-case
scenarios give the per-point worst case per norm and budget) as ``{value, lo, hi, k, n}``, each
verdict with its status and judged figures, and the outcome of each CI threshold.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advkit.errors import HistoryError
from advkit.paths import check_path, path_error

SCHEMA_VERSION = 1
APPLICATION_ID = 0x61647648  # "advH": marks the file as an advkit audit history
ENV = "ADVKIT_HISTORY"
FILENAME = "history.sqlite"
TIMEOUT_S = 30.0  # how long an append waits for another process's write to finish

_COLUMNS = ("id", "started", "finished", "recorded", "model_sha256", "data_sha256", "spec_sha256",
            "title", "spec_path", "report_path", "advkit_version", "seed", "manifest", "headline")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS audits (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started TEXT, finished TEXT, recorded REAL NOT NULL,
    model_sha256 TEXT, data_sha256 TEXT, spec_sha256 TEXT,
    title TEXT, spec_path TEXT, report_path TEXT, advkit_version TEXT, seed INTEGER,
    manifest TEXT NOT NULL, headline TEXT NOT NULL
)"""
_FIX = (f"move the file away or delete it (it holds only the audit history), or pass "
        f"--history PATH (or set {ENV}) to use another file")


def default_path() -> Path:
    """``$ADVKIT_HISTORY``, else ``history.sqlite`` in the user data folder for advkit."""
    env = os.environ.get(ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("advkit")) / FILENAME


def history_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path).expanduser() if path is not None else default_path()


# ---------------------------------------------------------------- headline of a report


def _proportion(v: Any) -> dict[str, Any] | None:
    """``{value, lo, hi, k, n}`` from a report's proportion dict; None for anything else."""
    if not isinstance(v, dict) or "value" not in v or "n" not in v:
        return None

    def num(x):
        return float(x) if isinstance(x, int | float) and not isinstance(x, bool) \
            and math.isfinite(x) else None

    return {"value": num(v.get("value")), "lo": num(v.get("ci_low", v.get("lo"))),
            "hi": num(v.get("ci_high", v.get("hi"))), "k": v.get("k"), "n": v.get("n")}


def _is_zero(eps: Any) -> bool:
    return isinstance(eps, int | float) and not isinstance(eps, bool) and eps == 0


def headline(doc: dict[str, Any]) -> dict[str, Any]:
    """The headline metrics of a report document (``report_dict(report)`` or a report.json).

    ``metrics[scenario id][metric]`` for each proportion the gate knows (at eps 0 only the clean
    accuracy: robust accuracy equals it there and the success rate is 0 by definition),
    ``verdicts`` (threat, status, judged figures) and ``gate`` (each threshold and whether it
    passed). Entries that are not shaped like advkit's are skipped."""
    from advkit.audit.gate import PROPORTIONS

    metrics: dict[str, dict[str, Any]] = {}
    for s in doc.get("scenarios") or []:
        if not isinstance(s, dict) or not isinstance(s.get("id"), str):
            continue
        m = s.get("metrics") if isinstance(s.get("metrics"), dict) else {}
        row = {}
        for name in PROPORTIONS:
            p = _proportion(m.get(name))
            if p is not None and (name == "clean_accuracy" or not _is_zero(m.get("eps"))):
                row[name] = p
        if row:
            metrics[s["id"]] = row
    verdicts = []
    for v in doc.get("verdicts") or []:
        if not isinstance(v, dict):
            continue
        judged = [{"norm": f.get("norm"), "eps": f.get("eps"),
                   "robust_accuracy": _proportion(f.get("robust_accuracy")),
                   "clean_accuracy": _proportion(f.get("clean_accuracy")),
                   "required": f.get("required"), "vulnerable": f.get("vulnerable")}
                  for f in v.get("figures") or [] if isinstance(f, dict) and f.get("judged")]
        verdicts.append({"threat": v.get("threat"), "status": v.get("status"), "judged": judged})
    gate = [{"threshold": f.get("metric"), "passed": bool(f.get("passed"))}
            for f in doc.get("findings") or []
            if isinstance(f, dict) and f.get("check") == "threshold"]
    return {"metrics": metrics, "verdicts": verdicts, "gate": gate}


@dataclass
class AuditRecord:
    """One audit as the history (or a report.json) knows it."""

    source: str  # "#3" for a history row, the file path for a report.json
    id: int | None
    started: str | None
    finished: str | None
    model_sha256: str | None
    data_sha256: str | None
    spec_sha256: str | None
    title: str | None
    spec_path: str | None
    report_path: str | None
    advkit_version: str | None
    seed: int | None
    headline: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def record_from_report(doc: dict[str, Any], *, report_path: str | None = None,
                       spec_path: str | None = None, source: str | None = None) -> AuditRecord:
    """The ``AuditRecord`` of a report document (not stored anywhere)."""
    man = doc.get("manifest") if isinstance(doc.get("manifest"), dict) else {}
    sha = man.get("sha256") if isinstance(man.get("sha256"), dict) else {}
    vers = man.get("versions") if isinstance(man.get("versions"), dict) else {}

    def text(x):
        return x if isinstance(x, str) else None

    seed = man.get("seed")
    return AuditRecord(
        source=source or report_path or "report", id=None, started=text(man.get("started")),
        finished=text(man.get("finished")), model_sha256=text(sha.get("model")),
        data_sha256=text(sha.get("data")), spec_sha256=text(sha.get("spec")),
        title=text(doc.get("title")), spec_path=spec_path, report_path=report_path,
        advkit_version=text(vers.get("advkit")),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        headline=headline(doc))


# ---------------------------------------------------------------- the SQLite file


def _error(path: Path, exc: sqlite3.Error) -> HistoryError:
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return HistoryError(f"the audit history {path} is locked by another process (waited "
                            f"{TIMEOUT_S:g} s); retry when it has finished, or pass --history PATH")
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_FULL",
                        "SQLITE_IOERR", "SQLITE_AUTH")):
        return HistoryError(f"cannot use the audit history {path} ({exc}); make its folder "
                            f"writable and free space, or pass --history PATH (or set {ENV})")
    return HistoryError(f"the audit history {path} is damaged or not advkit's ({exc}); {_FIX}")


class History:
    """The audit history in the SQLite file ``path`` (see :func:`history_path`).

    ``create=False`` opens for reading only: a missing file is an empty history and is not
    created. Use as a context manager or call ``close()``."""

    def __init__(self, path: str | os.PathLike | None = None, *, create: bool = True):
        self.path = history_path(path)
        self._db: sqlite3.Connection | None = None
        st = check_path(self.path, "--history")
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise HistoryError(f"the audit history {self.path} is a folder, not a file; pass "
                               f"--history with a file path, e.g. {self.path / FILENAME}")
        if st is None and not create:
            return  # nothing recorded yet
        try:
            if st is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            if create:
                self._db = sqlite3.connect(self.path, timeout=TIMEOUT_S, isolation_level=None)
            else:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, timeout=TIMEOUT_S, isolation_level=None)
            self._check(create)
        except OSError as exc:
            self.close()
            raise path_error("--history", self.path, exc) from None
        except sqlite3.Error as exc:
            self.close()
            raise _error(self.path, exc) from None
        except BaseException:
            self.close()
            raise

    def _state(self, begin: str) -> tuple[set[str], int, int]:
        """Tables, schema version and application id, read in one transaction so that another
        process creating the file cannot be seen half done. The transaction stays open."""
        db = self._db
        db.execute(begin)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return (tables, db.execute("PRAGMA user_version").fetchone()[0],
                db.execute("PRAGMA application_id").fetchone()[0])

    def _check(self, create: bool) -> None:
        db = self._db
        try:
            tables, version, app = self._state("BEGIN")
        finally:
            if db.in_transaction:
                db.execute("COMMIT")
        if not tables and not version and not app:  # a new (or empty) file
            if not create:  # an empty file read only: an empty history
                self.close()
                return
            try:  # another process may be creating it too: look again under the write lock
                tables, version, app = self._state("BEGIN IMMEDIATE")
                if not tables and not version and not app:
                    db.execute(_SCHEMA)
                    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    tables, version, app = {"audits"}, SCHEMA_VERSION, APPLICATION_ID
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        if app != APPLICATION_ID or "audits" not in tables:
            raise HistoryError(f"{self.path} is an SQLite file but not an advkit audit history "
                               f"(tables: {', '.join(sorted(tables)) or 'none'}); {_FIX}")
        if version > SCHEMA_VERSION:
            raise HistoryError(f"the audit history {self.path} was written by a newer advkit "
                               f"(history schema {version}, this advkit reads up to "
                               f"{SCHEMA_VERSION}); upgrade advkit, or {_FIX}")
        cols = tuple(r[1] for r in db.execute("PRAGMA table_info(audits)"))
        if version < SCHEMA_VERSION or not set(_COLUMNS) <= set(cols):
            raise HistoryError(f"the audit history {self.path} is damaged (schema {version}, "
                               f"columns {list(cols)}); {_FIX}")

    def _run(self, fn):
        try:
            return fn()
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None

    def append(self, record: AuditRecord, manifest: dict[str, Any] | None = None) -> int:
        """Append one audit; its new id."""
        if self._db is None:
            raise HistoryError(f"the audit history {self.path} was opened for reading only")
        values = (record.started, record.finished, time.time(), record.model_sha256,
                  record.data_sha256, record.spec_sha256, record.title, record.spec_path,
                  record.report_path, record.advkit_version, record.seed,
                  json.dumps(manifest or {}, allow_nan=False, default=str),
                  json.dumps(record.headline, allow_nan=False))

        def insert() -> int:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    f"INSERT INTO audits ({', '.join(_COLUMNS[1:])}) "
                    f"VALUES ({', '.join('?' * len(values))})", values)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return int(cur.lastrowid)

        return self._run(insert)

    def _record(self, row: tuple) -> AuditRecord:
        d = dict(zip(_COLUMNS, row, strict=True))
        try:
            head = json.loads(d["headline"])
        except (TypeError, ValueError):
            raise HistoryError(f"the audit history {self.path} is damaged (audit #{d['id']} has "
                               f"unreadable metrics); {_FIX}") from None
        return AuditRecord(
            source=f"#{d['id']}", id=d["id"], started=d["started"], finished=d["finished"],
            model_sha256=d["model_sha256"], data_sha256=d["data_sha256"],
            spec_sha256=d["spec_sha256"], title=d["title"], spec_path=d["spec_path"],
            report_path=d["report_path"], advkit_version=d["advkit_version"], seed=d["seed"],
            headline=head if isinstance(head, dict) else {})

    def list(self, limit: int | None = None) -> list[AuditRecord]:
        """The recorded audits, newest first (at most ``limit``)."""
        if self._db is None:
            return []
        sql = f"SELECT {', '.join(_COLUMNS)} FROM audits ORDER BY id DESC"
        rows = self._run(lambda: self._db.execute(
            sql + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall())
        return [self._record(r) for r in rows]

    def get(self, audit_id: int) -> AuditRecord:
        row = None
        if self._db is not None:
            row = self._run(lambda: self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM audits WHERE id = ?", (audit_id,)).fetchone())
        if row is None:
            raise HistoryError(f"no audit #{audit_id} in the audit history {self.path}; "
                               "`advkit history` lists the recorded ids (pass the same "
                               "--history), or pass the path of a report.json instead")
        return self._record(row)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def record_audit(doc: dict[str, Any], *, path: str | os.PathLike | None = None,
                 report_path: str | None = None, spec_path: str | None = None) -> tuple[int, Path]:
    """Append the audit of the report document ``doc``; ``(id, history file)``."""
    rec = record_from_report(doc, report_path=report_path, spec_path=spec_path)
    with History(path) as h:
        return h.append(rec, doc.get("manifest") if isinstance(doc.get("manifest"), dict)
                        else None), h.path


def short_sha(sha: str | None) -> str:
    return sha[:8] if isinstance(sha, str) and sha else "-"


__all__ = ["History", "AuditRecord", "HistoryError", "headline", "record_from_report",
           "record_audit", "history_path", "default_path", "short_sha", "ENV", "SCHEMA_VERSION"]
