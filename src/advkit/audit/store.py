"""SQLite store of finished scenarios, so an interrupted audit resumes where it stopped.

Each scenario result is written (and committed) as soon as it finishes, keyed by the run key
(hash of spec, model, data and advkit version) and the scenario id.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scenarios (
    run_key TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (run_key, scenario_id)
)
"""


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute(_SCHEMA)
        self._db.commit()

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
