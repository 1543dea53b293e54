"""The backdoor family: is the user's trained model backdoored, and is its training data poisoned?
(MITRE ATLAS AML.T0018 Backdoor ML Model; AML.T0020 Poison Training Data.)

Stages (ids stable; the spec section is ``advkit.audit.backdoor_section``):

- ``backdoor/neural-cleanse/class=K``, one per class, and ``backdoor/neural-cleanse``: Neural
  Cleanse (Wang et al. 2019, IEEE S&P) reverses a minimal trigger per class on clean data (a
  seeded subset of the dataset's training split), one stage per class (in parallel on Ray;
  ``advkit.audit.backdoor_nc``), and the merge stage flags a class whose trigger is anomalously
  small (MAD anomaly index > 2). Its record keeps every class's mask and pattern, so the report
  can show the reversed triggers without the model.
- ``backdoor/neural-cleanse/unlearn`` and ``.../prune``: its mitigations (unlearning: fine-tune
  with the reversed trigger stamped and correct labels; pruning: silence the last conv layer's
  channels the trigger excites, in the spirit of fine-pruning, Liu et al. 2018, RAID).
- ``backdoor/activation-clustering`` (Chen et al. 2018, arXiv:1811.03728),
  ``backdoor/spectral`` (Tran et al. 2018, NeurIPS), ``backdoor/spectre`` (Hayase et al. 2021)
  and ``backdoor/label-consistency`` (against a model trained on the clean data): sanitisers of
  the training data the spec names, scored by precision and recall against the poisoned
  indices when the spec gives them.
- ``backdoor/retrain/<sanitiser>``: a fresh model of the same architecture trained on the
  filtered set, for models advkit can rebuild (a zoo architecture: a ``model.zoo`` or an advkit
  model folder); for any other model the stage is left out and the report says why.

Every model (audited, mitigated, retrained) is measured the same way: clean accuracy on the
evaluation points; success of Neural Cleanse's reversed trigger of each flagged class on the
evaluation points of the other classes; and, with known poisoned indices, the share of those
poisoned training inputs the model sends to their poisoned label (the real trigger).

What cannot run is refused before any stage runs (``prepare``), with the fix: a model that is not
a PyTorch module (the detectors read gradients and activations), Neural Cleanse on inputs that
are not images, ``prune`` on a model without a Conv2d, a sanitiser's layer the model lacks.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advkit.audit import backdoor_report
from advkit.audit.backdoor_nc import (
    CLASS_KIND,
    NC,
    _fitted_nc,
    _num,
    _triggers,
    class_record,
    expand,
    from_record,
    merged_notes,
    nc_record,
)
from advkit.audit.backdoor_section import (
    SANITISERS,
    TrainingData,
    load_training_data,
    parse_section,
    resolve,
    same_file,
)
from advkit.audit.families.base import AuditContext, Family, family
from advkit.audit.plan import Scenario
from advkit.audit.report import Report, ScenarioResult
from advkit.errors import AdvkitWarning, AuditSpecError, InvalidParameterError
from advkit.threat_tags import tag


def slug(name: str) -> str:
    return name.replace("_", "-")


@dataclass
class _State:
    section: object
    clean_x: torch.Tensor | None = None
    clean_y: torch.Tensor | None = None
    training: TrainingData | None = None
    stages: dict[str, Scenario] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _quiet(fn, *a, **kw):
    """``fn``'s result and the AdvkitWarnings it raised (kept in the record, not lost in logs)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AdvkitWarning)
        out = fn(*a, **kw)
    return out, [str(w.message) for w in caught]


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from advkit.defenses.detectors.fine_pruning import predict

    return predict(model, x)


def _evaluate(model: nn.Module, ctx: AuditContext, st: _State, triggers: dict) -> dict:
    """[hits, n] counts: clean accuracy, each flagged class's reversed-trigger success on the
    evaluation points of the other classes, and known poisoned inputs sent to their label."""
    pred = _predict(model, ctx.x)
    out: dict = {"clean": [int((pred == ctx.y).sum()), int(ctx.n)], "reversed_trigger": {}}
    for c, trig in triggers.items():
        other = ctx.y != c
        hits = int((_predict(model, trig.apply(ctx.x[other])) == c).sum())
        out["reversed_trigger"][str(c)] = [hits, int(other.sum())]
    tr = st.training
    if tr is not None and tr.poisoned is not None and len(tr.poisoned):
        p = _predict(model, tr.x[tr.poisoned])
        out["poisoned_to_label"] = [int((p == tr.y[tr.poisoned]).sum()), int(len(tr.poisoned))]
    return out


def _reported(records: list[dict]) -> list[dict]:
    """The records the report reads: Neural Cleanse's merged record holds its class stages'."""
    return [r for r in records if r["kind"] != CLASS_KIND]


def _model(ctx: AuditContext) -> nn.Module:
    return ctx.subject.target.model


def _seed(g: torch.Generator) -> int:
    return int(torch.randint(2**31 - 1, (1,), generator=g))


@family
class BackdoorFamily(Family):
    """Backdoor detection and mitigation on the user's trained model and its training data."""

    name = "backdoor"
    gpu = True  # gradient attacks and training
    order = 30
    threat = tag("AML.T0018", "grey box", related=("AML.T0020", "AML.T0043.004"))

    def parse(self, data, *, source: str):
        return parse_section(data, source=source)

    def with_spec_dir(self, section, spec_dir, *, source: str):
        """``training_data.path`` relative to the spec file, and the file there, now."""
        from advkit.audit.backdoor_section import resolve
        from advkit.paths import is_file

        td = section.training_data
        if td is None:
            return section
        path = resolve(td.path, spec_dir)
        if not is_file(path, "backdoor.training_data.path"):
            raise AuditSpecError(f"{source}: backdoor.training_data.path: {str(path)!r} does not "
                                 "exist; give the .npz of the model's training data (relative "
                                 "paths are read from the spec's folder)")
        return section.model_copy(update={"training_data": td.model_copy(
            update={"path": str(path)})})

    # -- the plan ----------------------------------------------------------------------------
    def plan(self, spec) -> list[Scenario]:
        s = self.section(spec)
        out = []

        def add(sid, attack, kind, params, deps=()):
            out.append(Scenario(sid, attack, "none", None, params, kind=kind, family=self.name,
                                deps=tuple(deps)))

        if s.nc_on:
            add(NC, "neural_cleanse", "neural-cleanse",
                {"params": s.nc_params, "clean_samples": s.clean_samples})
            for m in s.mitigations:
                add(f"{NC}/{m}", f"neural_cleanse.{m}", "mitigation",
                    {"mitigation": m, "clean_samples": s.clean_samples}, [NC])
        retrain = s.retrain_spec
        for name, params in s.sanitiser_params.items():
            sid = f"backdoor/{slug(name)}"
            add(sid, SANITISERS[name], "sanitiser", {"sanitiser": name, "params": params})
            if retrain is not None:
                add(f"backdoor/retrain/{slug(name)}", "retrain", "retrain",
                    {"sanitiser": name, **retrain.model_dump()}, [sid] + ([NC] if s.nc_on else []))
        return out

    def prepare(self, plan, ctx: AuditContext) -> list[Scenario]:
        from advkit.defenses.detectors.activation_clustering import _final_linear
        from advkit.targets.torch import TorchTarget

        s, spec, target = self.section(ctx.spec), ctx.spec, ctx.subject.target
        model = getattr(target, "model", None)
        if ctx.subject.dataset.info.feature_space is not None:
            raise AuditSpecError(
                "backdoor: the backdoor family audits image models; this dataset is a table "
                "(its model sees preprocessed features). Use the poisoning section for tabular "
                "backdoors, or remove the backdoor section")
        if not isinstance(target, TorchTarget) or not isinstance(model, nn.Module):
            raise AuditSpecError(
                f"backdoor: the audited model is a "
                f"{type(getattr(target, 'estimator', None) or model or target).__name__}; the backdoor "
                "detectors read a PyTorch model's gradients and activations. Audit a PyTorch "
                "model (an advkit model folder, or model: {class: ..., weights: ...}) or remove "
                "the backdoor section")
        scripted = isinstance(model, torch.jit.ScriptModule) or type(model).__name__ == \
            "ExportedModule"
        needs_layers = bool(s.mitigations or s.sanitiser_params)
        if scripted and needs_layers:
            raise AuditSpecError(
                "backdoor: mitigations and sanitisers need the model's named layers, which a "
                "TorchScript or exported program does not expose; give the model as safetensors "
                "(an advkit folder or model: {class: ..., weights: ...}) or keep only "
                "neural_cleanse")
        if s.nc_on:  # one search stage per class of the model, then their merge
            plan = expand(plan, target.contract.n_classes)
        st = _State(section=s, stages={sc.id: sc for sc in plan})
        if s.nc_on or "label_consistency" in s.sanitiser_params:
            self._prepare_clean(st, ctx)
        if "prune" in s.mitigations and not any(isinstance(m, nn.Conv2d)
                                                for m in model.modules()):
            raise AuditSpecError("backdoor.mitigations: prune silences channels of the model's "
                                 "last Conv2d layer and this model has none; remove prune")
        for name, params in s.sanitiser_params.items():
            layer = params.get("layer")
            if layer is not None and layer not in dict(model.named_modules()):
                raise AuditSpecError(f"backdoor.sanitisers.{name}.layer: the model has no module "
                                     f"{layer!r}; modules: {[n for n, _ in model.named_modules() if n]}")
            if layer is None:
                try:
                    _final_linear(model)
                except InvalidParameterError:
                    raise AuditSpecError(f"backdoor.sanitisers.{name}: the model has no nn.Linear "
                                         "to read the last hidden layer from; give layer: NAME") \
                        from None
        if s.training_data is not None:
            st.training = load_training_data(s.training_data, spec_dir=spec.model.spec_dir,
                                             target=target)
        cfg = getattr(model, "advkit_config", None)
        if s.retrain_spec is not None and not isinstance(cfg, dict):
            dropped = [sc.id for sc in plan if sc.kind == "retrain"]
            plan = [sc for sc in plan if sc.kind != "retrain"]
            st.notes.append(
                f"Retraining on the filtered sets ({', '.join(dropped)}) was skipped: advkit can "
                "rebuild and train only its zoo architectures (model.zoo or an advkit model "
                "folder), and this model is not one of them. Retrain it on the kept samples "
                "(the sanitiser records list the flagged indices) with your own recipe.")
        ctx.state["backdoor"] = st
        return plan

    def _prepare_clean(self, st: _State, ctx: AuditContext) -> None:
        s, spec, target = st.section, ctx.spec, ctx.subject.target
        if s.nc_on and len(target.contract.shape) != 3:
            raise AuditSpecError(
                f"backdoor.neural_cleanse: Neural Cleanse reverses image triggers and the model "
                f"takes inputs of shape {tuple(target.contract.shape)}; set neural_cleanse: false")
        td = s.training_data
        if td is not None and spec.dataset.path is not None:
            if same_file(resolve(td.path, spec.model.spec_dir), spec.dataset.path):
                raise AuditSpecError(
                    "backdoor: Neural Cleanse and label_consistency need clean data and take it "
                    "from the dataset's training split, but dataset.path is the (poisoned) "
                    "training_data file; point dataset at clean data, or set neural_cleanse: "
                    "false and leave label_consistency out of sanitisers")
        ds = ctx.subject.dataset
        g = ctx.generator("backdoor/clean-data")
        pick = torch.randperm(len(ds.y_train), generator=g)[: s.clean_samples]
        st.clean_x = target.check_inputs(ds.x_train[pick])
        st.clean_y = target.check_labels(ds.y_train[pick], len(pick))

    # -- running -----------------------------------------------------------------------------
    def key_inputs(self, sc: Scenario, ctx: AuditContext) -> dict:
        st: _State = ctx.state["backdoor"]
        deps, todo = {}, list(sc.deps)
        while todo:  # a stage's record depends on its dependencies' parameters too
            d = st.stages[todo.pop()]
            deps[d.id] = d.params
            todo.extend(d.deps)
        td = st.section.training_data
        return {"deps": deps, "training_sha256": st.training.sha256 if st.training else None,
                "training_data": td.model_dump() if td is not None else None}

    def run(self, sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
        st: _State = ctx.state["backdoor"]
        t0 = time.perf_counter()
        g = ctx.generator(sc.id)
        rec = {"id": sc.id, "kind": sc.kind, "params": sc.params}
        run = {CLASS_KIND: self._nc_class, "neural-cleanse": self._neural_cleanse,
               "mitigation": self._mitigation,
               "sanitiser": self._sanitiser, "retrain": self._retrain}[sc.kind]
        rec.update(run(sc, ctx, st, deps, g))
        rec["seconds"] = time.perf_counter() - t0
        return rec

    def _nc_class(self, sc, ctx, st: _State, deps, g) -> dict:
        """One class's trigger search, with the generator of the whole search (see
        ``advkit.audit.backdoor_nc``)."""
        from advkit import registry

        nc = registry.create("neural_cleanse", **sc.params["params"])
        trig, notes = _quiet(nc.search_class, ctx.subject.target, st.clean_x, st.clean_y,
                             sc.params["class"], generator=ctx.generator(NC))
        return {**class_record(trig), "notes": notes}

    def _neural_cleanse(self, sc, ctx, st: _State, deps, g) -> dict:
        """The merge of the class searches: anomaly index, flagged classes, the model measured."""
        from advkit import registry

        target = ctx.subject.target
        classes = [deps[d] for d in sc.deps]
        nc, notes = _quiet(registry.create("neural_cleanse", **sc.params["params"]).from_classes,
                           [from_record(r) for r in classes])
        rec = nc_record(nc, bounds=target.contract.bounds, n_clean=len(st.clean_y),
                        notes=merged_notes(classes, notes))
        rec["model"] = _evaluate(_model(ctx), ctx, st, _triggers(rec))
        return rec

    def _mitigation(self, sc, ctx, st: _State, deps, g) -> dict:
        nc_rec = deps[NC]
        if not nc_rec["flagged"]:
            return {"skipped": "Neural Cleanse flagged no class: there is no reversed trigger "
                               "to unlearn or prune"}
        nc = _fitted_nc(st.stages[NC].params["params"], nc_rec)
        m = sc.params["mitigation"]
        if m == "unlearn":
            new, notes = _quiet(nc.unlearn, _model(ctx), st.clean_x, st.clean_y, generator=g)
            extra = {}
        else:
            new, notes = _quiet(nc.prune, _model(ctx), st.clean_x, st.clean_y)
            extra = {"pruned_layer": nc.pruned_layer_, "pruned_channels": nc.pruned_channels_}
        return {"notes": notes, **extra, "model": _evaluate(new, ctx, st, _triggers(nc_rec))}

    def _sanitiser(self, sc, ctx, st: _State, deps, g) -> dict:
        from advkit import registry

        name, tr = sc.params["sanitiser"], st.training
        det = registry.create(SANITISERS[name], **sc.params["params"])
        if name == "activation_clustering":
            det = det.fit(_model(ctx), tr.x, tr.y, rng=np.random.default_rng(_seed(g)))
            classes = [int(c) for c in det.flagged_classes_]
        elif name == "label_consistency":
            det = det.fit(_model(ctx), tr.x, tr.y, x_trusted=st.clean_x, y_trusted=st.clean_y,
                          generator=g)
            classes = [int(c) for c in det.flagged_classes_]
        else:
            det = det.fit(_model(ctx), tr.x, tr.y)
            classes = sorted(int(c) for c, v in det.per_class_.items() if v["removed"])
        flagged = det.poisoned_mask_.cpu()
        rec = {"n": len(tr.y), "flagged": torch.nonzero(flagged).flatten().tolist(),
               "flagged_classes": classes,
               "per_class": {str(c): {k: (_num(v) if isinstance(v, float) else v)
                                      for k, v in d.items()} for c, d in det.per_class_.items()}}
        if tr.poisoned is not None:
            truth = tr.poisoned_mask
            rec["true_positives"] = int((flagged & truth).sum())
            rec["n_poisoned"] = int(truth.sum())
        return rec

    def _retrain(self, sc, ctx, st: _State, deps, g) -> dict:
        from advkit.models.train import train
        from advkit.models.zoo import build

        san = deps[f"backdoor/{slug(sc.params['sanitiser'])}"]
        tr, cfg = st.training, _model(ctx).advkit_config
        keep = torch.ones(len(tr.y), dtype=torch.bool)
        keep[san["flagged"]] = False
        model = build(cfg["name"], input_shape=tuple(cfg["input_shape"]),
                      n_classes=cfg["n_classes"], generator=g, **cfg.get("kwargs", {}))
        dev = next(_model(ctx).parameters()).device
        model.to(dev)
        train(model, tr.x[keep], tr.y[keep], epochs=sc.params["epochs"], lr=sc.params["lr"],
              batch_size=sc.params["batch_size"], generator=g, progress=False)
        model.eval()
        rec = {"n_train": int(keep.sum()), "removed": int((~keep).sum()),
               "model": _evaluate(model, ctx, st, _triggers(deps.get(NC)))}
        if tr.poisoned is not None:
            rec["poisoned_kept"] = int(keep[tr.poisoned].sum())
        return rec

    # -- the report (from stored records only) -----------------------------------------------
    def results(self, records, ctx: AuditContext) -> list[ScenarioResult]:
        return [backdoor_report.scenario_result(r) for r in _reported(records)]

    def report(self, report: Report, records, ctx: AuditContext) -> None:
        st = ctx.state.get("backdoor")
        backdoor_report.add_backdoor_sections(
            report, _reported(records), example=ctx.x[:1], notes=list(st.notes) if st else [],
            tag=self.threat,
            data_file=Path(st.training.path).name if st and st.training else None)
