"""Executors run an audit's stages: ``local`` (one after the other, in this process) or ``ray``
(each stage a Ray task, on a local Ray instance or an existing cluster).

The runner (``advkit.audit.runner``) hands an executor every planned stage as a ``Job`` in plan
order, with its store key and its stored record when the store already holds one. The executor
runs the others once their dependencies' records exist and hands each finished record back through
``finish`` at once: the runner (the driver) writes it to the store then, so an audit interrupted
under either executor resumes under either. A stage's generator derives from (seed, stage id)
alone (``AuditContext.generator``), so neither the order nor the process changes a result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from advkit.audit.plan import Scenario
from advkit.errors import AuditSpecError

EXECUTORS = ("local", "ray")


@dataclass
class Job:
    """One planned stage: its family, its scenario, its store key and its stored record (None
    when it must run)."""

    family: Any
    scenario: Scenario
    key: str
    stored: dict | None = None


Finish = Callable[[Job, dict], None]


class Executor(Protocol):
    name: str

    def run(self, jobs: list[Job], ctx, records: dict[str, dict], finish: Finish, stages,
            skip_why: str) -> dict:
        """Run every job without a stored record (``records`` holds each finished stage's record
        by id; ``finish(job, record)`` stores a new one) and return what the report's manifest
        says about the run (``{"name": ..., ...}``)."""


def get_executor(name: str, *, address: str | None = None, num_cpus: int | None = None) -> Executor:
    """The executor ``name`` (``local`` or ``ray``); AuditSpecError naming the choices otherwise."""
    if name == "local":
        if address is not None:
            raise AuditSpecError(f"--address {address!r} applies to the ray executor only; pass "
                                 "--executor ray too, or drop --address")
        from advkit.audit.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        from advkit.audit.executors.ray_executor import RayExecutor

        return RayExecutor(address=address, num_cpus=num_cpus)
    raise AuditSpecError(f"unknown executor {name!r}; executors: {', '.join(EXECUTORS)} "
                         "(local runs the stages here one by one, ray runs them as Ray tasks)")
