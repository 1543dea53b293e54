"""Audits started from the browser: one at a time per server, in a background thread.

A run is a preset (``advkit.audit.presets``, optionally its quick version) or an uploaded spec
(validated by :func:`advkit.serve.web.uploads.parse_spec_upload`). It runs the same runner as
``advkit audit`` (``run_audit``), writes its report into its own folder under the server's runs
folder, and is recorded in the audit history exactly as ``advkit audit`` records it. Its state
(status, stage lines, the history id) lives in the server, not in the page, so a reloaded page
picks the run up again; the page follows it through server-sent events.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advkit.errors import AdvkitError, WebRequestError

log = logging.getLogger("advkit.serve")


@dataclass
class Run:
    id: str
    name: str
    out_dir: Path
    status: str = "running"  # running | done | failed
    lines: list[str] = field(default_factory=list)
    error: str | None = None
    audit_id: int | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "status": self.status, "lines": self.lines,
                "error": self.error, "audit_id": self.audit_id,
                "seconds": round((self.finished or time.time()) - self.started, 1)}


class _Lines(logging.Handler):
    """The runner's stage lines (``advkit.progress``) of one thread, appended to a run."""

    def __init__(self, run: Run, thread_id: int):
        super().__init__(logging.INFO)
        self.run, self.thread_id = run, thread_id

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread_id:
            self.run.lines.append(record.getMessage()[:300])


class Runs:
    """The runs of one server; at most ``max_parallel`` at once (1 unless configured)."""

    def __init__(self, runs_dir: Path, history: Path | None, *, max_parallel: int = 1):
        self.runs_dir, self.history, self.max_parallel = Path(runs_dir), history, max_parallel
        self.runs: dict[str, Run] = {}
        self._lock = threading.Lock()

    def running(self) -> list[Run]:
        return [r for r in self.runs.values() if r.status == "running"]

    def latest(self) -> Run | None:
        return max(self.runs.values(), key=lambda r: r.started, default=None)

    def get(self, run_id: Any) -> Run:
        r = self.runs.get(run_id) if isinstance(run_id, str) else None
        if r is None:
            raise WebRequestError("no such run on this server (runs are kept until it stops)", 404)
        return r

    def start(self, spec, sha: str, *, name: str, spec_bytes: bytes | None = None,
              preset: str | None = None) -> Run:
        """Start ``spec`` in the background; an uploaded spec's bytes are kept in the run's
        folder as ``spec.yaml`` (the history names it). 409 while another audit runs."""
        with self._lock:
            if len(self.running()) >= self.max_parallel:
                busy = self.running()[0]
                raise WebRequestError(f"an audit is already running ({busy.name}); wait for it "
                                      "to finish (this server runs one at a time)", 409)
            rid = uuid.uuid4().hex[:12]
            run = Run(rid, name, self.runs_dir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{rid}")
            self.runs[rid] = run
        spec_path = None
        if spec_bytes is not None:
            try:
                run.out_dir.mkdir(parents=True, exist_ok=True)
                spec_path = run.out_dir / "spec.yaml"
                spec_path.write_bytes(spec_bytes)
            except OSError as exc:
                run.status, run.error = "failed", f"cannot write {run.out_dir}: {exc}"
                return run
        thread = threading.Thread(target=self._work, args=(run, spec, sha, spec_path, preset),
                                  name=f"advkit-run-{rid}", daemon=True)
        thread.start()
        return run

    def _work(self, run: Run, spec, sha: str, spec_path: Path | None, preset: str | None) -> None:
        from advkit.audit.progress import log as stage_log
        from advkit.audit.runner import run_audit
        from advkit.cli.history import record
        from advkit.report import write_report

        handler = _Lines(run, threading.get_ident())
        stage_log.addHandler(handler)
        if stage_log.level == logging.NOTSET or stage_log.level > logging.INFO:
            stage_log.setLevel(logging.INFO)
        try:
            run.out_dir.mkdir(parents=True, exist_ok=True)
            report = run_audit(spec, out_dir=run.out_dir, spec_sha256=sha, progress=False)
            paths = write_report(report, run.out_dir)
            run.lines.append(f"report written: {paths['html'].name}")
            run.audit_id = record(report, paths["json"], self.history, spec=spec_path,
                                  preset=preset)
            if run.audit_id is None:
                raise WebRequestError("the report is written but the audit history could not "
                                      f"record it; see the server's log ({run.out_dir})", 500)
            run.status = "done"
        except AdvkitError as exc:
            run.error, run.status = f"{type(exc).__name__}: {exc}", "failed"
        except Exception as exc:  # noqa: BLE001 - a failed run is shown, never crashes the server
            log.exception("audit run %s failed", run.id)
            run.error, run.status = f"{type(exc).__name__}: {str(exc)[:300]}", "failed"
        finally:
            run.finished = time.time()
            stage_log.removeHandler(handler)
