"""The local executor: every stage in plan order, in this process (the audit as it always ran)."""

from __future__ import annotations

import os
import time

from advkit.audit.executors import Finish, Job


class LocalExecutor:
    name = "local"

    def run(self, jobs: list[Job], ctx, records: dict[str, dict], finish: Finish, stages,
            skip_why: str) -> dict:
        tasks: dict[str, dict] = {}  # where and how long each stage ran (the report's manifest)
        for job in jobs:
            sc = job.scenario
            if job.stored is not None:
                stages.skip(sc.id, skip_why)
                continue
            with stages.stage(sc.id):
                t0 = time.perf_counter()
                rec = job.family.run(sc, ctx, {d: records[d] for d in sc.deps})
                tasks[sc.id] = {"pid": os.getpid(), "deps": list(sc.deps),
                                "seconds": round(time.perf_counter() - t0, 3)}
                finish(job, rec)
        return {"name": self.name, "tasks": tasks}
