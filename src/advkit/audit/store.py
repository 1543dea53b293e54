"""SQLite store of finished scenarios, so an interrupted audit resumes where it stopped.

Each scenario result is written (and committed) as soon as it finishes, keyed by the scenario's
own key (a hash of everything its result depends on: its attack, parameters, norm and eps, the model
and data hashes, the number of points, the seed; see ``advkit.audit.runner.scenario_key``) and its
id, so editing a threshold, the title or another scenario reruns nothing that did not change. The
``runs`` table holds each audit run's start and running duration, so a resumed report can say how
long the original run took.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from advkit.errors import DataFormatError
from advkit.paths import check_path, path_error

_COLUMNS = ("run_key", "scenario_id", "result", "created")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS scenarios (
    run_key TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_key, scenario_id)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    started REAL NOT NULL,
    seconds REAL NOT NULL
)
"""


def _damaged(path: Path, why: str) -> DataFormatError:
    return DataFormatError(
        f"the progress database {path} is damaged or not advkit's ({why}); rerun with --fresh "
        "(it is replaced) or delete the file")


def check_store(path: str | Path, *, fresh: bool = False) -> None:
    """Check an existing progress database before any work starts, without changing it.

    A file that is not SQLite or lacks the ``scenarios`` table as advkit writes it raises
    DataFormatError naming the fix; with ``fresh=True`` such a file is removed instead.
    """
    path = Path(path)
    if check_path(path, "progress database") is None:
        return
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            cols = tuple(r[1] for r in db.execute("PRAGMA table_info(scenarios)"))
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error as exc:
        why = str(exc)
    else:
        if cols == _COLUMNS or not tables:  # advkit's table, or an empty database
            return
        why = f"its 'scenarios' table has columns {list(cols)}, expected {list(_COLUMNS)}"
    if not fresh:
        raise _damaged(path, why)
    try:
        path.unlink()
    except OSError as exc:
        raise path_error("progress database", path, exc) from None


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_store(self.path)
        try:
            self._db = sqlite3.connect(self.path)
            self._db.executescript(_SCHEMA)
            self._db.commit()
        except sqlite3.Error as exc:
            raise _damaged(self.path, str(exc)) from None

    def get(self, run_key: str, scenario_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT result FROM scenarios WHERE run_key = ? AND scenario_id = ?",
            (run_key, scenario_id),
        ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, run_key: str, scenario_id: str, result: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO scenarios VALUES (?, ?, ?, ?)",
            (run_key, scenario_id, json.dumps(result), time.time()),
        )
        self._db.commit()

    def record_run(self, run_id: str, started: float, seconds: float) -> None:
        """Save (or update) how long the run ``run_id`` has been running; called after each
        scenario, so an interrupted run's time up to its last finished scenario is kept."""
        self._db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?)", (run_id, started, seconds))
        self._db.commit()

    def run_seconds(self, run_ids) -> dict[str, tuple[float, float]]:
        """``{run_id: (started, seconds)}`` of the stored runs among ``run_ids``."""
        out = {}
        for rid in set(run_ids):
            row = self._db.execute(
                "SELECT started, seconds FROM runs WHERE run_id = ?", (rid,)).fetchone()
            if row:
                out[rid] = (float(row[0]), float(row[1]))
        return out

    def count(self, run_key: str) -> int:
        return self._db.execute(
            "SELECT COUNT(*) FROM scenarios WHERE run_key = ?", (run_key,)
        ).fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
