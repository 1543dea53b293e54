"""How each stage of the privacy family runs (``advkit.audit.families.privacy``).

- **the split** (computed once per run from the generator of ``privacy/split``): ``members``
  points drawn from the training split (the audited model trained on all of it), as many
  non-members drawn from the test split, and the test points left over as RMIA's population.
- **references**: ``n_reference`` models of the recipe trained together on random halves of the
  pool (the whole training split and the non-members), from the cache when present. The record
  holds the cache folder, the training time and the references' mean accuracy on their members.
- **membership**: the attack's scores of members and non-members against the audited target
  (its probabilities only: a score-only remote target works; ``label-only`` asks its labels only
  and records the queries), every score variant measured; the judged score also per true class
  and on the points the target misclassifies and classifies correctly (``slices``; the
  predictions are the argmax of the same answers, or the labels ``label-only`` asked).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from advkit.audit.families.base import AuditContext
from advkit.audit.plan import Scenario
from advkit.errors import AuditSpecError

STATE = "privacy"
FPRS = (0.001, 0.01)


def split(ctx: AuditContext, members: int) -> dict:
    key = (STATE, members)
    if key in ctx.state:
        return ctx.state[key]
    ds = ctx.subject.dataset
    g = ctx.generator("privacy/split")
    tr = torch.randperm(ds.x_train.shape[0], generator=g)[:members].sort().values
    te = torch.randperm(ds.x_test.shape[0], generator=g)
    non, pop = te[:members].sort().values, te[members:].sort().values
    ctx.state[key] = {
        "x_in": ds.x_train[tr], "y_in": ds.y_train[tr], "in_idx": tr,
        "x_out": ds.x_test[non], "y_out": ds.y_test[non],
        "x_pop": ds.x_test[pop], "y_pop": ds.y_test[pop],
        # the reference models' pool: the whole training split, then the non-members
        "x_pool": torch.cat([ds.x_train, ds.x_test[non]]),
        "y_pool": torch.cat([ds.y_train, ds.y_test[non]]),
    }
    return ctx.state[key]


def check_data(plan: list[Scenario], ctx: AuditContext) -> None:
    """Refuse, before any stage runs, more members than the splits hold."""
    ds = ctx.subject.dataset
    n_tr, n_te = ds.x_train.shape[0], ds.x_test.shape[0]
    for sc in plan:
        m = sc.params["members"]
        if m > n_tr or m >= n_te:
            raise AuditSpecError(
                f"privacy.members: {m} members and as many non-members need {m} training and "
                f"more than {m} test points; the data {ds.info.name!r} has {n_tr} and {n_te}: "
                f"lower members to at most {min(n_tr, n_te - 1)}")
        if sc.attack == "rmia":
            pop = sc.params["settings"].get("n_population")
            if pop is not None and pop > n_te - m:
                raise AuditSpecError(
                    f"privacy: {sc.id}: n_population {pop} is more than the {n_te - m} test "
                    f"points left after the {m} non-members; lower it or remove it")


def _target_probs(ctx: AuditContext, x: torch.Tensor, y: torch.Tensor,
                  target=None) -> torch.Tensor:
    """The probabilities ``target`` (default: the audited one) answers for dataset inputs ``x``;
    a labels-only target's labels as one-hot rows (what its answers reveal); rounded or top-k
    answers read as distributions (``advkit.audit.privacy_answers``)."""
    from advkit.attacks.privacy.common import query
    from advkit.audit.privacy_answers import as_distribution, hardening

    xt = ctx.target_inputs(x)
    t = ctx.subject.target if target is None else target
    if not t.capabilities.probabilities:
        k = ctx.subject.dataset.info.n_classes
        return query(lambda v: torch.nn.functional.one_hot(t.labels(v), k).double(), xt, y)[0]
    if hardening(t) is not None:
        return query(lambda v: as_distribution(t.probabilities(v)), xt, y)[0]
    p, _ = query(t, xt, y)
    return p


def _recipe(sc: Scenario):
    """The references' recipe: ``reference_recipe`` when the stage names one (a defended recipe,
    ``advkit.audit.families.privacy_defenses``), else the audited model's ``recipe``."""
    from advkit.models.cache import Recipe

    return Recipe(**(sc.params.get("reference_recipe") or sc.params["recipe"]))


def _train(r, make, d: dict, n_models: int, generator: torch.Generator):
    """Train the references of recipe ``r``: all together in one vmap pass (Adam), or one by
    one with DP-SGD when the recipe trains with it."""
    from advkit.attacks.privacy.shadow import ShadowTrainer, train_separately

    if r.dp is None:
        trainer = ShadowTrainer(n_models=n_models, epochs=r.epochs, batch_size=r.batch_size,
                                lr=r.lr, weight_decay=r.weight_decay)
        return trainer.train(make, d["x_pool"], d["y_pool"], generator=generator)
    dp = r.dp_sgd()

    def fit(net, x, y, g):
        dp.train(net, x, y, epochs=r.epochs, batch_size=r.batch_size, lr=r.lr,
                 weight_decay=r.weight_decay, optimizer=r.optimizer, generator=g)

    return train_separately(make, fit, d["x_pool"], d["y_pool"], n_models=n_models,
                            generator=generator)


def references(sc: Scenario, ctx: AuditContext, n_models: int):
    """(ShadowModels, facts) of ``n_models`` references of the recipe: cached, else trained.
    ``sc.params["references"]`` names the references stage (default ``privacy/references/n=M``):
    its generator draws them, and stages naming the same one share them."""
    import advkit
    from advkit.audit.families.privacy import load_references, store_references
    from advkit.models.cache import _data_hash, cache_folder
    from advkit.models.zoo import build, kwargs_for_data

    sid = sc.params.get("references") or f"privacy/references/n={n_models}"
    key = (STATE, "refs", sid)
    if key in ctx.state:
        return ctx.state[key]
    d = split(ctx, sc.params["members"])
    info = ctx.subject.dataset.info
    r = _recipe(sc)
    kwargs = kwargs_for_data(r.zoo, r.kwargs, info)
    config = {"recipe": {**r.as_dict(), "kwargs": kwargs}, "n_models": n_models,
              "seed": ctx.seed, "stage": sid, "advkit": advkit.__version__,
              "pool_sha256": _data_hash(d["x_pool"], d["y_pool"])}
    folder = cache_folder("references", r.zoo, config)
    refs, t0, trained_now = load_references(folder), time.perf_counter(), False
    if refs is None:
        def make(g):
            return build(r.zoo, input_shape=tuple(info.shape), n_classes=info.n_classes,
                         generator=g, **kwargs)

        refs = _train(r, make, d, n_models, ctx.generator(sid))
        store_references(refs, folder, info, {"references": config})
        trained_now = True
    notes = []
    if r.dp is not None:
        notes.append("reference models of a DP-SGD recipe are trained with DP-SGD, one by one")
    elif r.optimizer != "adam" or r.lr_schedule != "constant":
        notes.append(f"reference models are trained with Adam at a constant rate {r.lr:g} (the "
                     f"recipe says {r.optimizer}, {r.lr_schedule})")
    facts = {"cache": str(folder), "trained_now": trained_now,
             "seconds_train_or_load": time.perf_counter() - t0, "notes": notes}
    ctx.state[key] = (refs, facts)
    return refs, facts


def _member_accuracy(refs, d) -> float:
    pred = refs.logits(d["x_pool"]).argmax(-1)  # (M, N)
    ok = (pred == d["y_pool"][None]) & refs.masks
    return float(ok.sum() / refs.masks.sum())


def _thin_roc(roc: dict) -> dict:
    """At most ROC_POINTS points of a ROC curve, log-spaced in FPR (its low end matters)."""
    from advkit.audit.families.privacy import ROC_POINTS

    fpr, tpr = np.asarray(roc["fpr"], float), np.asarray(roc["tpr"], float)
    if fpr.size <= ROC_POINTS:
        return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    lo = max(float(fpr[fpr > 0].min()) if (fpr > 0).any() else 1e-6, 1e-6)
    grid = np.unique(np.concatenate([[0.0], np.geomspace(lo, 1.0, ROC_POINTS - 1)]))
    idx = np.unique(np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, fpr.size - 1))
    return {"fpr": fpr[idx].tolist(), "tpr": tpr[idx].tolist()}


def _metrics(scores: torch.Tensor, n_in: int) -> dict:
    from advkit.evaluation.privacy import membership_metrics

    s = scores.detach().cpu().double()
    m = membership_metrics(s[:n_in], s[n_in:], fprs=FPRS, keep_roc=True).to_dict()
    m["roc"] = _thin_roc(m["roc"])
    return m


def _slices(ctx: AuditContext, scores: torch.Tensor, y: torch.Tensor, correct: torch.Tensor,
            n_in: int) -> dict:
    """The judged score's leakage per true class and on the misclassified / correctly classified
    points (``advkit.evaluation.privacy_slices``), from the answers already in hand."""
    from advkit.evaluation.privacy_slices import membership_slices

    is_in = torch.arange(y.shape[0]) < n_in
    return membership_slices(scores, is_in, y.cpu(), correct.cpu(),
                             class_names=ctx.subject.dataset.info.class_names, fpr=FPRS[1])


def run_stage(sc: Scenario, ctx: AuditContext) -> dict:
    d = split(ctx, sc.params["members"])
    if sc.kind == "references":
        refs, facts = references(sc, ctx, sc.params["n_reference"])
        return {"n_reference": refs.n_models, "pool": int(d["x_pool"].shape[0]),
                "member_accuracy": _member_accuracy(refs, d), **facts}
    return _membership(sc, ctx, d)


def _membership(sc: Scenario, ctx: AuditContext, d: dict, target=None) -> dict:
    """One membership attack's record against ``target`` (default: the audited model)."""
    from advkit.attacks.privacy.common import logit_confidence
    from advkit.audit.families.privacy import _algorithms
    from advkit.audit.privacy_answers import reference_confidence, reference_probabilities

    algo_cls, _ = _algorithms()[sc.attack]
    algo = algo_cls(**sc.params["algorithm"])
    settings = sc.params["settings"]
    x = torch.cat([d["x_in"], d["x_out"]])
    y = torch.cat([d["y_in"], d["y_out"]])
    n_in = int(d["y_in"].shape[0])
    t = ctx.subject.target if target is None else target
    rec = {"label": sc.params["label"], "params": {**sc.params["algorithm"], **settings},
           "n_members": n_in, "n_nonmembers": int(d["y_out"].shape[0]), "notes": []}
    if sc.attack == "label-only":  # its labels only: the probabilities are never asked
        lo = _label_only(sc, ctx, algo, x, y, target)
        pred, rec["queries"], rec["notes"] = lo.pred, lo.queries, rec["notes"] + lo.notes
    else:
        p = _target_probs(ctx, x, y, t)
        pred = p.argmax(1)
    correct = pred == y
    rec["train_accuracy"] = float(correct[:n_in].double().mean())
    rec["test_accuracy"] = float(correct[n_in:].double().mean())
    if sc.attack == "label-only":
        variants, headline = {lo.variant: lo.scores}, lo.variant
    elif sc.attack in ("loss", "entropy"):
        variants = {sc.attack: algo.scores_from_probabilities(p, y)}
        headline = sc.attack
    else:
        refs, facts = references(sc, ctx, settings["n_reference"])
        n_tr = ctx.subject.dataset.x_train.shape[0]
        idx = torch.cat([d["in_idx"], n_tr + torch.arange(rec["n_nonmembers"])])
        mask = refs.masks.cpu()[:, idx]
        rec["reference_cache"] = facts["cache"]
        rec["notes"] += facts["notes"]
        if sc.attack == "lira":
            res = algo.scores_from_confidences(
                logit_confidence(p, y), reference_confidence(refs, x, y, t), mask)
            variants, rec["notes"] = dict(res.scores), rec["notes"] + res.notes
        elif sc.attack == "shadow":
            fitted = algo.fit(torch.softmax(refs.logits(d["x_pool"]).double(), -1), d["y_pool"],
                              refs.masks, generator=ctx.generator(sc.id))
            variants = {"shadow": fitted.scores_from_probabilities(p, y)}
            rec["notes"] += fitted.notes
        else:
            n_pop = settings.get("n_population") or int(d["y_pop"].shape[0])
            z, yz = d["x_pop"][:n_pop], d["y_pop"][:n_pop]
            pz = _target_probs(ctx, z, yz, target)
            rx = reference_probabilities(refs, x, t)
            rz = reference_probabilities(refs, z, t)

            def true(q, lab):
                return q.gather(-1, lab.expand(*q.shape[:-1])[..., None]).squeeze(-1)

            variants = algo.scores_from_probabilities(true(p, y), true(rx, y), true(pz, yz),
                                                      true(rz, yz), mask)
            rec["n_population"] = n_pop
        headline = settings.get("variant", sc.attack)
        if headline not in variants:
            fallback = next(iter(variants))
            rec["notes"].append(f"variant {headline} could not be computed; judged: {fallback}")
            headline = fallback
    rec["headline"] = headline
    rec["variants"] = {k: _metrics(v, n_in) for k, v in variants.items()}
    rec["slices"] = _slices(ctx, variants[headline], y, correct, n_in)
    for k, v in rec["variants"].items():
        if not math.isfinite(v["auc"]):
            rec["notes"].append(f"{k}: AUC undefined")
    return rec


def _label_only(sc: Scenario, ctx: AuditContext, algo, x, y, target=None):
    """The label-only attack's scores of dataset points ``(x, y)`` against ``target`` (default:
    the audited one), through its labels only; the queries it spent are counted."""
    t = ctx.subject.target if target is None else target
    return algo.scores(t, ctx.target_inputs(x), y, generator=ctx.generator(sc.id))
