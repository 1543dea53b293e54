"""Execute an audit plan: load data and model, run every scenario, persist each one, build a Report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from advkit import registry
from advkit.audit import evasion_report
from advkit.audit.capabilities import check_subject
from advkit.audit.manifest import build_manifest, sha256_state_dict
from advkit.audit.plan import Scenario, check_budgets, make_plan, norm_label
from advkit.audit.progress import stage_progress
from advkit.audit.report import Report, ScenarioResult
from advkit.audit.spec import AuditSpec, requested_budgets
from advkit.audit.store import Store, check_store
from advkit.audit.tabular_report import add_tabular_section, feature_changes
from advkit.data import Dataset
from advkit.evaluation.metrics import attack_success_rate, proportion
from advkit.paths import check_path, prepare_out_dir
from advkit.targets.base import Target, check_input_dependence
from advkit.targets.features import FeatureSpaceTarget
from advkit.threats import LpBall

log = logging.getLogger("advkit.audit")
N_EXAMPLES = 8
STORE_VERSION = 4  # bump when the scenario record format changes


@dataclass
class AuditSubject:
    """What an audit runs on: the dataset, the target and the model's identity."""

    dataset: Dataset
    target: Target
    model_info: dict
    model_sha256: str

    def test_inputs(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` test points and labels, as the target takes them (tabular data: in
        per-feature unit space), checked against its contract."""
        t, ds = self.target, self.dataset
        x = ds.x_test[:n]
        x = t.to_unit(x) if isinstance(t, FeatureSpaceTarget) else t.check_inputs(x)
        return x, t.check_labels(ds.y_test[:n], x.shape[0])


def load_subject(spec: AuditSpec, *, progress: bool | None = None) -> AuditSubject:
    from advkit.data import load
    from advkit.models.cache import trained_zoo_model
    from advkit.models.io import load_model, target_for

    d = spec.dataset
    ds = load(d.name or d.path, label_column=d.label_column, preprocessing=d.preprocessing,
              features=d.features.model_dump() if d.features is not None else None)
    space = ds.info.feature_space  # tabular: attacks work in per-feature unit space
    check_budgets(make_plan(spec), ds.info if space is None else
                  dataclasses.replace(ds.info, bounds=(0.0, 1.0)))  # before any training
    if spec.model.path is not None:
        check_path(spec.model.path, "model.path")
    if spec.model.zoo is not None:
        model, info = trained_zoo_model(ds, spec.model, seed=spec.seed, progress=progress)
        sha = sha256_state_dict(model.state_dict())
    else:
        if spec.model.class_ is not None:  # the user's own code, imported from the spec's folder
            from advkit.models.user_class import load_user_model

            loaded = load_user_model(spec.model.class_, spec.model.kwargs, spec.model.weights,
                                     code_dir=spec.model.spec_dir)
        else:
            loaded = load_model(spec.model.path, trust_pickle=spec.model.trust_pickle,
                                allow_dangerous=spec.model.allow_dangerous,
                                search_paths=[d for d in [spec.model.spec_dir] if d])
        model, sha = loaded.model, loaded.sha256
        name = spec.model.class_.rpartition(":")[2] if spec.model.class_ else None
        info = {
            "name": name or Path(spec.model.path).name,
            "source": str(spec.model.weights or spec.model.path),
            "kind": loaded.kind,
            **loaded.config,
        }
    target = target_for(model, ds, batch_size=spec.evaluation.batch_size)
    if space is not None:
        target = FeatureSpaceTarget(target)
    return AuditSubject(ds, target, info, sha)


def _generator(seed: int, sid: str) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(sid.encode())) % 2**63)


# small extra outputs of attacks worth keeping in the report (images, query traces)
_KEEP_EXTRA = ("perturbation", "patch", "fooling_rate", "success_by_query")


def _plain_extra(extra: dict) -> dict:
    out = {}
    for k in _KEEP_EXTRA:
        v = extra.get(k)
        if v is not None:
            out[k] = v.detach().cpu().tolist() if isinstance(v, torch.Tensor) else v
    return out


def _ensemble_record(sc: Scenario, target: Target, x, y, seed: int) -> dict:
    from advkit.evaluation.ensemble import run_ensemble

    res = run_ensemble(
        target,
        x,
        y,
        eps=sc.eps,
        norm=sc.norm.lower(),
        attacks=sc.params["attacks"],
        version=sc.params["version"],
        generator=_generator(seed, sc.id),
    )
    summary = res.summary()
    conf = torch.softmax(target.predict_scores(res.x_adv, check=False), 1).max(1)
    return {
        "robust": res.robust.tolist(),
        "adv_pred": conf.indices.tolist(),
        "adv_conf": conf.values.tolist(),
        "broken_by": res.broken_by.tolist(),
        "stages": summary["stages"],
        "x_adv": res.x_adv,
        "queries": sum(st.queries for st in res.stages),
        "passes": sum(st.passes for st in res.stages),
        "distance": LpBall(norm=sc.norm.lower(), eps=0).distance(res.x_adv, x).tolist(),
    }


def run_scenario(sc: Scenario, target: Target, x, y, clean_pred, *, seed: int) -> dict:
    """Run one scenario; return its JSON-able record (metrics plus per-sample arrays)."""
    t0 = time.perf_counter()
    rec: dict = {
        "id": sc.id,
        "kind": sc.kind,
        "attack": sc.attack,
        "norm": sc.norm,
        "eps": sc.eps,
        "params": sc.attack_params(),
    }
    if sc.kind == "ensemble":
        rec.update(_ensemble_record(sc, target, x, y, seed))
    elif sc.eps == 0:  # no budget: the adversarial point is the input itself
        conf = torch.softmax(target.predict_scores(x, check=False), 1).max(1).values
        rec.update(
            adv_pred=clean_pred.tolist(),
            adv_conf=conf.tolist(),
            x_adv=x,
            queries=0,
            passes=0,
            distance=[0.0] * x.shape[0],
        )
    else:
        attack = registry.create(sc.attack, **sc.attack_params())
        res = attack.attack(target, x, y, generator=_generator(seed, sc.id))
        rec.update(
            adv_pred=res.adv_pred.tolist(),
            adv_conf=res.adv_confidence.tolist(),
            x_adv=res.x_adv,
            queries=res.queries,
            passes=res.passes,
            distance=res.distance.tolist(),
            success=res.success.tolist(),
            minimum_norm=attack.minimum_norm,
            distance_norm=norm_label(res.norm),
            extra=_plain_extra(res.extra),
        )
    if "robust" not in rec:
        adv = torch.tensor(rec["adv_pred"])
        rec["robust"] = ((clean_pred == y) & (adv == y)).tolist()
    x_adv = rec.pop("x_adv")
    changes = feature_changes(target, x, x_adv)
    if changes is not None:
        rec["feature_changes"] = changes
    rec["examples_x_adv"] = x_adv[:N_EXAMPLES].reshape(min(N_EXAMPLES, x.shape[0]), -1).tolist()
    rec["seconds"] = time.perf_counter() - t0
    return rec


def scenario_key(
    sc: Scenario, *, model_sha256: str, data_sha256: str, n: int, seed: int, batch_size: int
) -> str:
    """The store key of one scenario: a hash of everything its record depends on (its id, which
    seeds its generator; attack, kind, norm, eps and parameters; the model and data hashes; the
    number of points evaluated; the seed; the batch size) and nothing else, so editing a threshold,
    the title or another scenario leaves its stored result valid."""
    blob = json.dumps(
        {"store_version": STORE_VERSION, "id": sc.id, "kind": sc.kind, "attack": sc.attack,
         "norm": sc.norm, "eps": sc.eps, "params": sc.params, "model": model_sha256,
         "data": data_sha256, "n": n, "seed": seed, "batch_size": batch_size},
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


def to_scenario_result(rec: dict, clean_pred: torch.Tensor, y: torch.Tensor) -> ScenarioResult:
    robust = torch.tensor(rec["robust"], dtype=torch.bool)
    adv_pred = torch.tensor(rec["adv_pred"])
    dist = torch.tensor(rec["distance"])
    fooled = (adv_pred != y) & (clean_pred == y)
    metrics = {
        "eps": rec["eps"],
        "clean_accuracy": proportion(clean_pred == y),
        "robust_accuracy": proportion(robust),
        "attack_success_rate": attack_success_rate(clean_pred, adv_pred, y),
        # median norm of the successful perturbations (what minimum-norm attacks are judged by)
        "median_distance": float(dist[fooled].median()) if fooled.any() else None,
        "queries": rec["queries"],
        "passes": rec["passes"],
    }
    keep = (
        "robust",
        "adv_pred",
        "adv_conf",
        "distance",
        "examples_x_adv",
        "stages",
        "broken_by",
        "extra",
        "minimum_norm",
        "distance_norm",
        "feature_changes",
    )
    params = {**rec["params"], "norm": rec["norm"]}
    return ScenarioResult(
        id=rec["id"],
        kind="ensemble" if rec["kind"] == "ensemble" else "evasion",
        attack=rec["attack"],
        params=params,
        seconds=rec["seconds"],
        metrics=metrics,
        per_sample={k: rec[k] for k in keep if k in rec},
        from_store=bool(rec.get("from_store")),
    )


def run_audit(
    spec: AuditSpec,
    *,
    out_dir: str | Path,
    spec_sha256: str,
    progress: bool | None = None,
    resume: bool = True,
) -> Report:
    started = time.time()
    run_id = uuid.uuid4().hex
    store_path = Path(out_dir) / ".advkit-progress.sqlite"
    prepare_out_dir(out_dir, "out_dir")
    check_store(store_path, fresh=not resume)  # a damaged database fails now, not after training
    subject = load_subject(spec, progress=progress)
    # the plan against what the target answers, before any scenario runs (advkit.audit.capabilities)
    capability_plan = check_subject(spec, subject)
    ds, target = subject.dataset, subject.target
    n = min(spec.evaluation.n_samples or ds.x_test.shape[0], ds.x_test.shape[0])
    x, y = subject.test_inputs(n)
    with torch.no_grad():
        clean_pred = target.labels(x, check=False)
    check_input_dependence(target, x, generator=_generator(spec.seed, "input-dependence"))

    plan = capability_plan.plan
    data_sha = ds.sha256()
    records = []
    with Store(store_path) as store, stage_progress(len(plan) + 1, "audit", progress) as stages:
        for sc in plan:
            key = scenario_key(sc, model_sha256=subject.model_sha256, data_sha256=data_sha, n=n,
                               seed=spec.seed, batch_size=spec.evaluation.batch_size)
            rec = store.get(key, sc.id) if resume else None
            if rec is None:
                with stages.stage(sc.id):
                    rec = run_scenario(sc, target, x, y, clean_pred, seed=spec.seed)
                    rec["run_id"] = run_id
                    store.put(key, sc.id, rec)
                    store.record_run(run_id, started, time.time() - started)
                rec["from_store"] = False
            else:
                stages.skip(sc.id, f"read from the store {store_path}")
                rec["from_store"] = True
            records.append(rec)
        earlier = store.run_seconds(
            r["run_id"] for r in records if r["from_store"] and r.get("run_id") != run_id)
        with stages.stage("report and validity checks"):
            report = _build_report(spec, subject, records, x, y, clean_pred, n=n,
                                   spec_sha256=spec_sha256, started=started)
            capability_plan.add_to(report)
        this_run_s = time.time() - started
        store.record_run(run_id, started, this_run_s)
    durations = run_durations(this_run_s, earlier)
    report.manifest["duration_s"] = durations["total_s"]
    report.manifest["durations"] = durations
    return report


def _build_report(spec, subject, records, x, y, clean_pred, *, n, spec_sha256, started) -> Report:
    ds, target = subject.dataset, subject.target
    scenarios = [to_scenario_result(r, clean_pred, y) for r in records]
    from_store = sum(s.from_store for s in scenarios)
    report = Report(
        title=spec.title,
        manifest=build_manifest(
            seed=spec.seed,
            model_sha256=subject.model_sha256,
            data_sha256=ds.sha256(),
            spec_sha256=spec_sha256,
            started=started,
            extra={
                "n_evaluated": n,
                "scenarios_run": len(scenarios) - from_store,
                "scenarios_from_store": from_store,
                "target": type(target).__name__,
                "capabilities": sorted(target.capabilities.names()),
            },
        ),
        model=subject.model_info,
        dataset={
            **ds.info.as_dict(),
            "n_train": int(ds.x_train.shape[0]),
            "n_test": int(ds.x_test.shape[0]),
        },
        scenarios=scenarios,
    )
    evasion_report.add_evasion_sections(
        report,
        x=x,
        y=y,
        clean_pred=clean_pred,
        target=target,
        info=ds.info,
        generator=_generator(spec.seed, "checks"),
        rules=spec.verdicts.evasion,
        extra_eps=requested_budgets(spec),
    )
    add_tabular_section(report)
    return report
