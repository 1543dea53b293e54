"""Execute an audit plan: load data and model, run every scenario, persist each one, build a Report."""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from advkit import registry
from advkit.audit import evasion_report
from advkit.audit.manifest import build_manifest, sha256_state_dict
from advkit.audit.plan import Scenario, make_plan
from advkit.audit.progress import progress_bar
from advkit.audit.report import Report, ScenarioResult
from advkit.audit.spec import AuditSpec
from advkit.audit.store import Store
from advkit.data import Dataset
from advkit.evaluation.metrics import attack_success_rate, proportion
from advkit.targets.base import Target

log = logging.getLogger("advkit.audit")
N_EXAMPLES = 8


@dataclass
class AuditSubject:
    """What an audit runs on: the dataset, the target and the model's identity."""

    dataset: Dataset
    target: Target
    model_info: dict
    model_sha256: str


def load_subject(spec: AuditSpec, *, progress: bool | None = None) -> AuditSubject:
    from advkit.data import load
    from advkit.models.cache import trained_zoo_model
    from advkit.models.io import load_model, target_for

    ds = load(spec.dataset.name or spec.dataset.path, label_column=spec.dataset.label_column)
    if spec.model.zoo is not None:
        model, info = trained_zoo_model(ds, spec.model, seed=spec.seed, progress=progress)
        sha = sha256_state_dict(model.state_dict())
    else:
        loaded = load_model(spec.model.path, trust_pickle=spec.model.trust_pickle)
        model, sha = loaded.model, loaded.sha256
        info = {"source": str(spec.model.path), "kind": loaded.kind, **loaded.config}
    target = target_for(model, ds, batch_size=spec.evaluation.batch_size)
    return AuditSubject(ds, target, info, sha)


def _generator(seed: int, sid: str) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(sid.encode()))


def run_scenario(sc: Scenario, target: Target, x, y, clean_pred, *, seed: int) -> dict:
    """Run one scenario; return its JSON-able record (metrics plus per-sample arrays)."""
    t0 = time.perf_counter()
    if sc.eps == 0:  # no budget: the adversarial point is the input itself
        adv_pred, x_adv = clean_pred, x
        conf = torch.softmax(target.predict_scores(x, check=False), 1).max(1).values
        queries, passes, distance = 0, 0, torch.zeros(x.shape[0])
    else:
        attack = registry.create(sc.attack, **sc.attack_params())
        res = attack.attack(target, x, y, generator=_generator(seed, sc.id))
        adv_pred, x_adv, conf = res.adv_pred, res.x_adv, res.adv_confidence
        queries, passes, distance = res.queries, res.passes, res.distance
    robust = (clean_pred == y) & (adv_pred == y)
    return {
        "id": sc.id, "attack": sc.attack, "norm": sc.norm, "eps": sc.eps, "params": sc.attack_params(),
        "seconds": time.perf_counter() - t0, "queries": queries, "passes": passes,
        "robust": robust.tolist(), "adv_pred": adv_pred.tolist(), "adv_conf": conf.tolist(),
        "distance": distance.tolist(),
        "examples_x_adv": x_adv[:N_EXAMPLES].reshape(min(N_EXAMPLES, x.shape[0]), -1).tolist(),
    }


def to_scenario_result(rec: dict, clean_pred: torch.Tensor, y: torch.Tensor) -> ScenarioResult:
    robust = torch.tensor(rec["robust"], dtype=torch.bool)
    adv_pred = torch.tensor(rec["adv_pred"])
    dist = torch.tensor(rec["distance"])
    return ScenarioResult(
        id=rec["id"], kind="evasion", attack=rec["attack"], params=rec["params"], seconds=rec["seconds"],
        metrics={
            "eps": rec["eps"],
            "clean_accuracy": proportion(clean_pred == y),
            "robust_accuracy": proportion(robust),
            "attack_success_rate": attack_success_rate(clean_pred, adv_pred, y),
            "median_distance": float(dist.median()) if dist.numel() else 0.0,
            "queries": rec["queries"],
            "passes": rec["passes"],
        },
        per_sample={k: rec[k] for k in ("robust", "adv_pred", "adv_conf", "distance", "examples_x_adv")},
    )


def run_audit(spec: AuditSpec, *, out_dir: str | Path, spec_sha256: str, progress: bool | None = None,
              resume: bool = True) -> Report:
    started = time.time()
    subject = load_subject(spec, progress=progress)
    ds, target = subject.dataset, subject.target
    n = spec.evaluation.n_samples or ds.x_test.shape[0]
    x, y = ds.x_test[:n], ds.y_test[:n]
    x = target.check_inputs(x)
    y = target.check_labels(y, x.shape[0])
    with torch.no_grad():
        clean_pred = target.labels(x, check=False)

    plan = make_plan(spec)
    run_key = zlib.crc32(f"{spec_sha256}|{subject.model_sha256}|{ds.sha256()}|{n}".encode())
    store_path = Path(out_dir) / ".advkit-progress.sqlite"
    records = []
    with Store(store_path) as store, progress_bar(progress) as bar:
        task = bar.add_task("attacking", total=len(plan))
        for sc in plan:
            rec = store.get(str(run_key), sc.id) if resume else None
            if rec is None:
                bar.update(task, description=f"{sc.id}")
                rec = run_scenario(sc, target, x, y, clean_pred, seed=spec.seed)
                store.put(str(run_key), sc.id, rec)
                log.info("finished %s in %.2fs", sc.id, rec["seconds"])
            else:
                log.info("resumed %s from %s", sc.id, store_path)
            records.append(rec)
            bar.advance(task)

    scenarios = [to_scenario_result(r, clean_pred, y) for r in records]
    report = Report(
        title=spec.title,
        manifest=build_manifest(seed=spec.seed, model_sha256=subject.model_sha256, data_sha256=ds.sha256(),
                                spec_sha256=spec_sha256, started=started,
                                extra={"n_evaluated": n, "target": type(target).__name__,
                                       "capabilities": sorted(target.capabilities.names())}),
        model=subject.model_info,
        dataset={**ds.info.as_dict(), "n_train": int(ds.x_train.shape[0]), "n_test": int(ds.x_test.shape[0])},
        scenarios=scenarios,
    )
    evasion_report.add_evasion_sections(report, x=x, y=y, clean_pred=clean_pred, target=target,
                                        info=ds.info, generator=_generator(spec.seed, "checks"))
    return report
