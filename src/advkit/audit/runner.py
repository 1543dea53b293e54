"""Run an audit: load the subject, plan every active family's stages, run each stage (or read it
back from the store), and build the Report from the stored records, family by family.

The runner knows no family by name (``advkit.audit.families``): a family plans stages, runs one,
and turns its records into results, sections, findings and a verdict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from pathlib import Path

import torch

from advkit.audit.executors import Executor, Job, get_executor
from advkit.audit.families.base import AuditContext, Family, families
from advkit.audit.manifest import build_manifest
from advkit.audit.plan import Scenario
from advkit.audit.progress import stage_progress
from advkit.audit.report import Report
from advkit.audit.spec import AuditSpec
from advkit.audit.store import Store, check_store
from advkit.audit.subject import AuditSubject, load_subject  # noqa: F401 - public names
from advkit.paths import prepare_out_dir
from advkit.targets.base import check_input_dependence

log = logging.getLogger("advkit.audit")
STORE_VERSION = 6  # bump when the record format of any family changes


def scenario_key(sc: Scenario, *, model_sha256: str, data_sha256: str, n: int, seed: int,
                 batch_size: int, extra: dict | None = None,
                 dep_keys: list[str] | None = None) -> str:
    """The store key of one stage: a hash of everything its record depends on (its family and
    id, which seeds its generator; attack, kind, norm, eps and parameters; its dependencies'
    keys, so a stage reruns when a stage it reads changed; the
    model and data hashes; the number of points evaluated; the seed; the batch size; what the
    family adds in ``extra``) and nothing else, so editing a threshold, the title or another
    stage leaves its stored record valid."""
    blob = json.dumps(
        {"store_version": STORE_VERSION, "family": sc.family, "id": sc.id, "kind": sc.kind,
         "attack": sc.attack, "norm": sc.norm, "eps": sc.eps, "params": sc.params,
         "deps": list(dep_keys or sc.deps), "model": model_sha256, "data": data_sha256, "n": n,
         "seed": seed, "batch_size": batch_size, "extra": extra or {}},
        sort_keys=True, default=repr,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def run_durations(this_run_s: float, earlier: dict[str, tuple[float, float]]) -> dict:
    """``first_run_s``: the earlier run(s) whose stored scenarios this report reuses (this run's
    own time when it reused none); ``resumed_s``: this run's time when it resumed, else None;
    ``total_s``: both together."""
    if not earlier:
        return {"first_run_s": round(this_run_s, 3), "resumed_s": None,
                "total_s": round(this_run_s, 3)}
    first = sum(sec for _, sec in earlier.values())
    return {"first_run_s": round(first, 3), "resumed_s": round(this_run_s, 3),
            "total_s": round(first + this_run_s, 3)}


def active_families(spec: AuditSpec) -> list[Family]:
    return [f for f in families() if f.active(spec)]


def run_audit(
    spec: AuditSpec,
    *,
    out_dir: str | Path,
    spec_sha256: str,
    progress: bool | None = None,
    resume: bool = True,
    executor: Executor | None = None,
) -> Report:
    """Run the audit ``spec`` and return its Report; finished stages are stored in ``out_dir`` as
    they arrive. ``executor``: how the stages run (default: the spec's ``executor`` section, the
    local executor unless it says otherwise; ``advkit.audit.executors``)."""
    if executor is None:
        executor = get_executor(spec.executor.name, address=spec.executor.address,
                                num_cpus=spec.executor.num_cpus)
    started = time.time()
    run_id = uuid.uuid4().hex
    store_path = Path(out_dir) / ".advkit-progress.sqlite"
    prepare_out_dir(out_dir, "out_dir")
    check_store(store_path, fresh=not resume)  # a damaged database fails now, not after training
    subject = load_subject(spec, progress=progress)
    ds, target = subject.dataset, subject.target
    n = min(spec.evaluation.n_samples or ds.x_test.shape[0], ds.x_test.shape[0])
    x, y = subject.test_inputs(n)
    with torch.no_grad():
        clean_pred = target.labels(x, check=False)
    ctx = AuditContext(spec=spec, subject=subject, x=x, y=y, clean_pred=clean_pred, n=n)
    check_input_dependence(target, x, generator=ctx.generator("input-dependence"))
    # every family's stages, checked against the subject before any of them runs
    fams = active_families(spec)
    plans = [(f, f.prepare(f.plan(spec), ctx)) for f in fams]
    plan = [(f, sc) for f, stages in plans for sc in stages]
    data_sha = ds.sha256()
    records: dict[str, dict] = {}
    keys: dict[str, str] = {}
    jobs: list[Job] = []
    with Store(store_path) as store:
        for fam, sc in plan:
            key = scenario_key(sc, model_sha256=subject.model_sha256, data_sha256=data_sha, n=n,
                               seed=spec.seed, batch_size=spec.evaluation.batch_size,
                               extra=fam.key_inputs(sc, ctx),
                               dep_keys=[keys[d] for d in sc.deps])
            keys[sc.id] = key
            rec = store.get(key, sc.id) if resume else None
            if rec is not None:
                rec["from_store"] = True
                records[sc.id] = rec
            jobs.append(Job(fam, sc, key, rec))

        def finish(job: Job, rec: dict) -> None:  # the driver stores each record as it arrives
            rec["run_id"] = run_id
            store.put(job.key, job.scenario.id, rec)
            store.record_run(run_id, started, time.time() - started)
            rec["from_store"] = False
            records[job.scenario.id] = rec

        with stage_progress(len(plan) + 1, "audit", progress) as stages:
            run_info = executor.run(jobs, ctx, records, finish, stages,
                                    f"read from the store {store_path}")
            records = {sc.id: records[sc.id] for _, sc in plan}  # plan order, whatever ran first
            earlier = store.run_seconds(r["run_id"] for r in records.values()
                                        if r["from_store"] and r.get("run_id") != run_id)
            with stages.stage("report"):
                report = _build_report(spec, ctx, plans, records, spec_sha256=spec_sha256,
                                       started=started)
            this_run_s = time.time() - started
            store.record_run(run_id, started, this_run_s)
    durations = run_durations(this_run_s, earlier)
    report.manifest["executor"] = run_info
    report.manifest["duration_s"] = durations["total_s"]
    report.manifest["durations"] = durations
    return report


def _model_info(subject: AuditSubject) -> dict:
    """The report's model section: for a model behind an API, with this run's query accounting."""
    from advkit.audit.subject import query_accounting

    queries = query_accounting(subject.target)
    return subject.model_info if queries is None else {**subject.model_info, "queries": queries}


def _build_report(spec, ctx: AuditContext, plans, records, *, spec_sha256, started) -> Report:
    ds, target = ctx.subject.dataset, ctx.subject.target
    per_family = [(f, [records[sc.id] for sc in stages]) for f, stages in plans]
    scenarios = [r for f, recs in per_family for r in f.results(recs, ctx)]
    from_store = sum(bool(r["from_store"]) for r in records.values())
    report = Report(
        title=spec.title,
        manifest=build_manifest(
            seed=spec.seed,
            model_sha256=ctx.subject.model_sha256,
            data_sha256=ds.sha256(),
            spec_sha256=spec_sha256,
            started=started,
            extra={
                "n_evaluated": ctx.n,
                "scenarios_run": len(records) - from_store,
                "scenarios_from_store": from_store,
                "target": type(target).__name__,
                "capabilities": sorted(target.capabilities.names()),
                "families": [f.name for f, _ in plans],
            },
        ),
        model=_model_info(ctx.subject),
        dataset={
            **ds.info.as_dict(),
            "n_train": int(ds.x_train.shape[0]),
            "n_test": int(ds.x_test.shape[0]),
        },
        scenarios=scenarios,
    )
    for f, recs in per_family:
        first, first_finding = len(report.verdicts), len(report.findings)
        f.report(report, recs, ctx)
        if f.threat is None:
            continue
        for v in report.verdicts[first:]:  # the threat × verdict matrix reads these tags
            if v.tag is None:
                v.tag = f.threat.to_dict()
        for finding in report.findings[first_finding:]:  # a finding without its own: the family's
            if finding.threat_tag is None:
                finding.threat_tag = f.threat
    return report
