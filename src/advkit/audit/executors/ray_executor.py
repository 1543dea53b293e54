"""The ``ray`` executor: each stage of the audit is a Ray task (https://docs.ray.io).

- **Dependencies**: a stage is submitted once the records of its ``deps`` exist; it receives them
  as its arguments, as the local executor passes them.
- **The subject goes into the object store once**: the whole ``AuditContext`` (spec, dataset
  tensors, the target with its model, the evaluation points and what each family prepared) is
  put there with ``ray.put`` and every task gets its reference. A worker process unpickles it on
  its first task and keeps it for the next ones (``_context``), so the per-run memos in
  ``ctx.state`` (a split, reference models) serve every task of that worker as they serve every
  stage of a local run. Shipping the loaded context, rather than rebuilding the subject from the
  spec in each worker, keeps a worker from loading (or training) the model again and keeps it from
  needing the spec's files; a subject that cannot be pickled (a model behind an HTTP API holds a
  live client) is refused with ``ExecutorError`` naming the local executor.
- **Identical results**: each stage's generator derives from (seed, stage id) alone, so where and
  in which order a stage runs changes nothing it computes; each task computes with the driver's
  number of torch threads (float round-off depends on it) and reserves that many CPUs.
- **GPUs**: a task asks for one GPU when the cluster has GPUs and its family says it can use one
  (``Family.gpu``); the stage runs on the device the subject was loaded on.
- **Faults**: a task whose worker dies is run again (``max_retries``); an exception raised by a
  stage is not retried (it would raise again) and reaches the caller as itself. The driver stores
  each record the moment it arrives, so a killed driver resumes with either executor.
- **Progress and logs**: the driver's one bar counts the stages of the whole cluster; each task
  reports its node, worker, process and the files its output and log lines went to, and the report
  lists them under ``manifest.executor.tasks``.

Without an address a local Ray instance is started, sized to this machine (or ``num_cpus``), with
no dashboard and no usage statistics, and shut down when the audit ends. Ray itself decides where
its processes listen: Ray 2.60 turns a 127.0.0.1 node address into the machine's own address
(``ray._private.services.resolve_ip_for_localhost``) and its GCS server listens on every
interface, protected by the cluster token it generates (Ray's token authentication); on a
machine whose ports must not be reachable, firewall them or use the local executor; with an address (``auto``,
``ray://host:10001``) the audit joins that cluster, whose workers need advkit installed. When Ray is
already initialised in this process, the executor uses that instance and leaves it running.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from typing import Any

from advkit.audit.executors import Finish, Job
from advkit.errors import AdvkitError, ExecutorError, MissingDependencyError

log = logging.getLogger("advkit.audit")

_CONTEXTS: dict[str, Any] = {}  # in a worker process: the context of the audit it serves


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("the ray executor (--executor ray)", "ray", extra="ray") \
            from None
    return ray


def _stream(fd: int) -> str | None:
    """The file a worker's stdout (1) or stderr (2) goes to (Ray's per-worker log files)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _context(box: list):
    """The AuditContext behind the object reference in ``box``, unpickled once per worker; the
    worker computes with the driver's number of torch threads (``box[1]``), since training results
    differ between thread counts (Ray would give a one-CPU task one thread)."""
    import ray
    import torch

    ref, threads = box
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    key = ref.hex()
    if key not in _CONTEXTS:
        _CONTEXTS.clear()  # a worker serves one audit at a time: drop the previous one
        _CONTEXTS[key] = ray.get(ref)
    return _CONTEXTS[key]


def run_stage(box: list, family: str, sc, deps: dict[str, dict]) -> tuple[dict, dict]:
    """A Ray task: run the stage ``sc`` of ``family``; return its record and where it ran."""
    import ray

    from advkit.audit.families.base import get

    if not logging.getLogger("advkit").handlers:  # the worker's log file gets advkit's lines
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ctx = _context(box)
    log.info("stage %s: started", sc.id)
    t0 = time.perf_counter()
    rec = get(family).run(sc, ctx, deps)
    seconds = time.perf_counter() - t0
    log.info("stage %s: done in %.1f s", sc.id, seconds)
    rt = ray.get_runtime_context()
    where = {"node_id": rt.get_node_id(), "worker_id": rt.get_worker_id(), "pid": os.getpid(),
             "task_id": rt.get_task_id(), "stdout": _stream(1), "stderr": _stream(2),
             "deps": list(sc.deps), "seconds": round(seconds, 3)}
    return rec, where


def _task_cpus(threads: int, nodes: list[dict]) -> int:
    """The CPUs a task reserves: the torch threads it computes with (the driver's, for equal
    results), so that Ray never runs more threads than a node has cores (one CPU per task put two
    2-thread tasks on 2 cores: the full preset ran past 19 minutes, against 5.4 minutes local);
    at most the largest node's CPUs, so that every task stays schedulable. Run the audit with
    fewer torch threads (``OMP_NUM_THREADS``) for more tasks at once."""
    largest = max((n.get("Resources", {}).get("CPU", 0) for n in nodes if n.get("Alive")),
                  default=1)
    return max(1, min(int(threads), int(largest)))


class RayExecutor:
    name = "ray"

    def __init__(self, *, address: str | None = None, num_cpus: int | None = None,
                 max_retries: int = 3):
        self.address, self.num_cpus, self.max_retries = address, num_cpus, max_retries

    def _connect(self, ray) -> bool:
        """Initialise Ray; True when this call started it (and so shuts it down)."""
        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing leaves this machine
        try:
            if self.address is None:
                ray.init(num_cpus=self.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         log_to_driver=False)
            else:
                ray.init(address=self.address, log_to_driver=False)
        except Exception as exc:  # noqa: BLE001 - Ray raises bare Exception on a slow start
            ray.shutdown()  # what it started of the instance
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray"
            raise ExecutorError(f"could not start or reach {where}: {exc}; check the address "
                                "(ray status on the head node prints it), retry on a less busy "
                                "machine, or run with --executor local") from None
        return True

    def _put(self, ray, ctx):
        try:
            return ray.put(ctx)
        except (TypeError, pickle.PicklingError, AttributeError) as exc:
            raise ExecutorError(
                f"the ray executor ships the loaded model and data to its workers, and this "
                f"audit's cannot be pickled ({type(exc).__name__}: {str(exc)[:200]}); run it with "
                "--executor local") from None

    def run(self, jobs: list[Job], ctx, records: dict[str, dict], finish: Finish, stages,
            skip_why: str) -> dict:
        for job in jobs:
            if job.stored is not None:
                stages.skip(job.scenario.id, skip_why)
        waiting = [j for j in jobs if j.stored is None]
        tasks: dict[str, dict] = {}
        info = {"name": self.name, "address": self.address, "tasks": tasks}
        if not waiting:
            return info
        import torch

        ray = _ray()
        started_here = self._connect(ray)
        pending: dict[Any, Job] = {}
        try:
            gpus = float(ray.cluster_resources().get("GPU", 0))
            info["cluster"] = {"nodes": len([n for n in ray.nodes() if n.get("Alive")]),
                               "cpus": float(ray.cluster_resources().get("CPU", 0)), "gpus": gpus}
            # a list: Ray hands the task the reference, not the value
            box = [self._put(ray, ctx), torch.get_num_threads()]
            cpus = _task_cpus(box[1], ray.nodes())
            remote = ray.remote(run_stage)
            while waiting or pending:
                for job in [j for j in waiting if all(d in records for d in j.scenario.deps)]:
                    waiting.remove(job)
                    sc = job.scenario
                    opts = {"num_cpus": cpus, "max_retries": self.max_retries,
                            "retry_exceptions": False,
                            "num_gpus": 1 if gpus and getattr(job.family, "gpu", False) else 0}
                    ref = remote.options(**opts).remote(box, job.family.name, sc,
                                                        {d: records[d] for d in sc.deps})
                    pending[ref] = job
                if not pending:
                    raise ExecutorError("stages wait for dependencies that never run: "
                                        + ", ".join(j.scenario.id for j in waiting))
                stages.running([j.scenario.id for j in pending.values()])
                done, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done[0])
                rec, where = self._result(ray, done[0], job)
                finish(job, rec)
                tasks[job.scenario.id] = where
                stages.finished(job.scenario.id, where["seconds"],
                                f" (node {where['node_id'][:8]}, pid {where['pid']})")
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started_here:
                ray.shutdown()
        return info

    def _result(self, ray, ref, job: Job) -> tuple[dict, dict]:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the stage itself raised: that error
            cause = getattr(exc, "cause", None)
            if isinstance(cause, AdvkitError):
                raise cause from None
            raise
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as exc:
            raise ExecutorError(f"stage {job.scenario.id}: its Ray worker died {self.max_retries + 1} "
                                f"times ({type(exc).__name__}); the stages finished so far are "
                                "stored: rerun the audit to resume") from None
