"""The local executor: every stage in plan order, in this process (the audit as it always ran)."""

from __future__ import annotations

from advkit.audit.executors import Finish, Job


class LocalExecutor:
    name = "local"

    def run(self, jobs: list[Job], ctx, records: dict[str, dict], finish: Finish, stages,
            skip_why: str) -> dict:
        for job in jobs:
            sc = job.scenario
            if job.stored is not None:
                stages.skip(sc.id, skip_why)
                continue
            with stages.stage(sc.id):
                rec = job.family.run(sc, ctx, {d: records[d] for d in sc.deps})
                finish(job, rec)
        return {"name": self.name}
