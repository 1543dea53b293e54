"""How the privacy family's model-inversion stages run (``advkit.audit.families.privacy``).

- **inversion** (image data, a target with input gradients): MI-Face (Fredrikson et al. 2015)
  reconstructs each asked class from the all-zeros input; the reconstructions are scored by a
  classifier fitted on the test split (data the model never trained on) and by their similarity
  to the training split's class means (``advkit.evaluation.inversion``). The record keeps the
  reconstructions and the class means (pixels) for the report.
- **attribute** (tabular data, any target): for the sensitive feature, the members and
  non-members of the privacy split (``privacy_stages.split``) are completed with every candidate
  value and the model is asked; both methods (Fredrikson et al. 2014 MAP, Yeom et al. 2018 lowest
  loss) are measured against the marginal baseline, whose marginal is the training split's. A
  labels-only target is given its confusion matrix, measured on test points outside the split.
"""

from __future__ import annotations

import torch

from advkit.audit.families.base import AuditContext
from advkit.audit.plan import Scenario
from advkit.errors import AuditSpecError, short

MAX_VALUES = 20  # a sensitive feature that is not a one-hot group: at most this many values


def _feature(ctx: AuditContext, name: str) -> tuple[list[int], torch.Tensor, list[str]]:
    """(columns, candidate raw values (V, g), value names) of the sensitive feature ``name``."""
    info = ctx.subject.dataset.info
    fs = info.feature_space
    names = list(info.feature_names)
    for g in fs.one_hot:
        cols = list(g)
        if names[cols[0]].split("=", 1)[0] == name and all("=" in names[j] for j in cols):
            return cols, torch.eye(len(cols), dtype=torch.float64), [
                names[j].split("=", 1)[1] for j in cols]
    if name in names:
        j = names.index(name)
        values = torch.unique(ctx.subject.dataset.x_train[:, j].double())
        if len(values) < 2 or len(values) > MAX_VALUES:
            raise AuditSpecError(
                f"privacy.attribute: the feature {name!r} takes {len(values)} distinct values in "
                f"the training split; attribute inference needs 2 to {MAX_VALUES} (a categorical "
                "or a small ordinal feature)")
        return [j], values[:, None], [f"{float(v):g}" for v in values]
    groups = sorted({names[g[0]].split("=", 1)[0] for g in fs.one_hot})
    raise AuditSpecError(
        f"privacy.attribute: no feature or categorical column named {short(name)} in "
        f"{info.name!r}; its categorical columns are: {', '.join(groups) or 'none'} (or name a "
        f"feature with at most {MAX_VALUES} distinct values)")


def check(plan: list[Scenario], ctx: AuditContext) -> None:
    """Refuse, before any stage runs, what the data or the target cannot do."""
    ds, target = ctx.subject.dataset, ctx.subject.target
    for sc in plan:
        if sc.kind == "inversion":
            if ds.info.feature_space is not None or ds.info.kind != "image":
                raise AuditSpecError(
                    "privacy.inversion: MI-Face reconstructs images and this dataset is a table; "
                    "use privacy.attribute to infer a sensitive feature, or remove inversion")
            caps = target.capabilities
            if not (caps.gradients and caps.logits):
                has = ", ".join(sorted(caps.names())) or "nothing"
                raise AuditSpecError(
                    f"privacy.inversion: MI-Face needs the model's input gradients and logits; "
                    f"the target {type(target).__name__} offers {has}. Audit a PyTorch model, "
                    "or remove inversion (membership and attribute inference need only scores)")
            k = ds.info.n_classes
            bad = [c for c in sc.params["classes"] or [] if c >= k]
            if bad:
                raise AuditSpecError(f"privacy.inversion.classes: {bad} are not classes of "
                                     f"{ds.info.name!r} (0..{k - 1})")
        elif sc.kind == "attribute":
            if ds.info.feature_space is None:
                raise AuditSpecError(
                    "privacy.attribute: attribute inference reads a table's features and this "
                    "dataset is images; use privacy.inversion, or remove attribute")
            _feature(ctx, sc.params["feature"])


def run_stage(sc: Scenario, ctx: AuditContext) -> dict:
    return _inversion(sc, ctx) if sc.kind == "inversion" else _attribute(sc, ctx)


def _pixels(x: torch.Tensor) -> list:
    return x.detach().double().round(decimals=4).tolist()


def _inversion(sc: Scenario, ctx: AuditContext) -> dict:
    from advkit.attacks.privacy.mi_face import MIFace
    from advkit.evaluation.inversion import class_means, score_reconstructions

    ds, target = ctx.subject.dataset, ctx.subject.target
    k = ds.info.n_classes
    classes = torch.tensor(sc.params["classes"] or list(range(k)), dtype=torch.long)
    attack = MIFace(**sc.params["algorithm"])
    res = attack.invert(target, classes)
    scores = score_reconstructions(res.x.double(), classes, x_private=ds.x_train,
                                   y_private=ds.y_train, x_held_out=ds.x_test,
                                   y_held_out=ds.y_test, n_classes=k)
    means = class_means(ds.x_train, ds.y_train, k)[classes].reshape(len(classes), *ds.info.shape)
    names = list(ds.info.class_names) or [str(c) for c in range(k)]
    return {"classes": classes.tolist(), "class_names": [names[c] for c in classes.tolist()],
            "all_class_names": names,
            "params": {**vars(attack)}, "shape": list(ds.info.shape),
            "bounds": list(target.contract.bounds),
            "reconstructions": _pixels(res.x), "class_means": _pixels(means),
            "confidence": res.confidence.tolist(), "steps_run": res.steps_run.tolist(),
            "best_step": res.best_step.tolist(), "queries": res.queries,
            "scores": scores.to_dict(), "n_held_out": int(ds.x_test.shape[0])}


def _values(x: torch.Tensor, cols: list[int], cand: torch.Tensor) -> torch.Tensor:
    """Index of each row's candidate value (rows matching none: the nearest candidate)."""
    block = x[:, cols].double()
    return torch.cdist(block, cand.double()).argmin(1)


def _attribute(sc: Scenario, ctx: AuditContext) -> dict:
    from advkit.attacks.privacy.attribute_inference import AttributeInference, confusion_matrix
    from advkit.audit import privacy_stages
    from advkit.evaluation.inversion import attribute_metrics

    ds, target = ctx.subject.dataset, ctx.subject.target
    cols, cand, value_names = _feature(ctx, sc.params["feature"])
    d = privacy_stages.split(ctx, sc.params["members"])
    counts = torch.bincount(_values(ds.x_train, cols, cand), minlength=len(cand)).double()
    base_rows = d["x_in"][:1].repeat(len(cand), 1)
    base_rows[:, cols] = cand.to(base_rows.dtype)
    cand_t = ctx.target_inputs(base_rows)[:, cols]
    confusion = None
    if not target.capabilities.probabilities:
        xp, yp = d["x_pop"], d["y_pop"]
        confusion = confusion_matrix(target.labels(ctx.target_inputs(xp)), yp, ds.info.n_classes)
    rec = {"feature": sc.params["feature"], "values": value_names, "prior": counts.tolist(),
           "judged": sc.params["method"], "methods": {}, "queries": 0,
           "confusion_from": None if confusion is None else int(d["y_pop"].shape[0])}
    for method in ("fredrikson", "yeom"):
        attack = AttributeInference(method=method)
        out = {}
        for part, x, y in (("members", d["x_in"], d["y_in"]), ("nonmembers", d["x_out"],
                                                                 d["y_out"])):
            truth = _values(x, cols, cand)
            g = attack.infer(target, ctx.target_inputs(x), y, columns=cols, candidates=cand_t,
                             prior=counts, confusion=confusion)
            out[part] = attribute_metrics(g.guess, g.baseline, truth)
            rec["queries"] += g.queries
            rec["used"] = g.used
        rec["methods"][method] = out
    return rec
