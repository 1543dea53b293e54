"""One mitigation against one poisoned model, for the poisoning family's mitigation stages.

- ``fine_pruning`` (Liu, Dolan-Gavitt & Garg 2018, RAID): prune the channels clean data leaves
  dormant in the last convolution (an MLP: its last hidden layer), fine-tune on clean data.
- ``neural_cleanse`` (Wang et al. 2019, IEEE S&P): reverse-engineer a trigger per class, flag the
  outliers by their MAD anomaly index, then unlearn the flagged classes' triggers on clean data
  (``repair: unlearn``, the default) or prune the neurons they excite (``repair: prune``). Entries
  with the same parameters against the same model share one trigger search (its randomness comes
  from the model's train stage and the parameters, not from the entry).
- ``strip`` (Gao et al. 2019, ACSAC): a test-time filter in front of the poisoned model, not a
  repair: inputs whose blends with clean images keep a low prediction entropy are rejected. The
  model behind the filter is measured on the first ``STRIP_EVAL`` test points (a rejected input
  counts as a clean error and as a failed attack), beside the same model without it on the same
  points; its false-rejection and false-acceptance rates are kept in the record.
- ``activation_clustering`` (Chen et al. 2018, arXiv:1811.03728), ``spectral_signatures``
  (Tran, Li & Madry 2018, NeurIPS) and ``spectre`` (Hayase et al. 2021, ICML) flag training
  samples from the model's activations, ``label_consistency`` those whose label a model trained
  on the defender's clean data rejects (in the classes where that is significantly common); then
  retrain the recipe from scratch without them
  (through the shared cached trainer).

The defender's clean data is the share of the training split held out from poisoning. Detection
is scored against the poison's ground truth (precision and recall with Wilson intervals). Against
the clean reference model (``on_clean``) there is no poison: every flag is a false alarm.
"""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

from advkit import registry
from advkit.audit.poisoning_stages import _rng, default_layer, measure, success_kind, train_id
from advkit.errors import AdvkitWarning

STRIP_FIT = 2000  # defender's clean images STRIP blends with and sets its threshold on
STRIP_EVAL = 2000  # test points measured behind STRIP (each costs n_overlays forward passes)


def _finite(values) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def _neural_cleanse(sc, ctx, model, data: dict, params: dict):
    """The fitted NeuralCleanse of ``sc``'s model and parameters and its record (with the
    warnings of its search), searched once per run for every entry that shares them."""
    from advkit.audit.backdoor_nc import nc_record
    from advkit.audit.families.backdoor import _quiet

    sid = f"{train_id(sc)}#neural_cleanse#{json.dumps(params, sort_keys=True)}"
    held = ctx.state.setdefault("poisoning_nc", {})
    if sid not in held:
        nc, notes = _quiet(registry.create("neural_cleanse", **params).fit, model,
                           data["x_def"], data["y_def"], generator=ctx.generator(sid))
        bounds = ctx.subject.dataset.info.bounds
        held[sid] = (nc, nc_record(nc, bounds=bounds, n_clean=len(data["y_def"]), notes=notes))
    return held[sid]


def _strip(ctx, model, poisoned, data: dict, params: dict, gen) -> tuple[dict, dict]:
    """STRIP fitted on the defender's clean data, then (the model behind it, its details)."""
    from advkit.evaluation.metrics import proportion

    p = {"bounds": tuple(float(b) for b in ctx.subject.dataset.info.bounds), **params}
    strip = registry.create("strip", **p).fit(model, data["x_def"][:STRIP_FIT], generator=gen)
    sub = {"x_test": data["x_test"][:STRIP_EVAL], "y_test": data["y_test"][:STRIP_EVAL]}
    flags = []  # the clean points' flags, then the triggered points' (evaluate_poison's order)

    def reject(x):
        flags.append(strip.detect(x, generator=gen))
        return flags[-1]

    before = measure(model, poisoned, sub)
    after = measure(model, poisoned, sub, reject=reject)
    details = {"threshold": strip.threshold_, "n_fit": len(strip.overlays_),
               "n_eval": len(sub["y_test"]), "frr": proportion(flags[0]).as_dict(), "far": None,
               "undefended": before}
    if len(flags) > 1:  # a trigger: how many triggered inputs the filter let through
        y = sub["y_test"].to(flags[1].device)
        aimed = (y != int(poisoned.target)) if poisoned.label_map is None else (
            poisoned.label_map.to(y.device)[y] >= 0)
        details["far"] = proportion(~flags[1], within=aimed).as_dict()
    return after, details


def run_mitigation(sc, ctx, model, poisoned, data: dict, retrain) -> dict[str, Any]:
    """The record of mitigation ``sc``: its details, then clean accuracy and attack success of
    the mitigated model (``poisoned`` None: the clean reference model, no poison to find).
    ``retrain(x, y)`` trains the recipe on a subset (cached)."""
    name, params = sc.params["mitigation"], dict(sc.params["mitigation_params"])
    gen = ctx.generator(sc.id)
    x_def, y_def = data["x_def"], data["y_def"]
    target = None if poisoned is None else poisoned.target
    details: dict[str, Any] = {}
    measured: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AdvkitWarning)
        if name == "fine_pruning":
            if "layer" not in params and default_layer(model) is not None:
                params["layer"] = default_layer(model)
            fp = registry.create(name, **params).fit(model, x_def, y_def, generator=gen)
            new = fp.model_
            details = {"layer": fp.layer_, "pruned_channels": len(fp.pruned_channels_),
                       "val_accuracy_before": fp.val_acc_before_,
                       "val_accuracy_after": fp.val_acc_after_}
        elif name == "neural_cleanse":
            repair = sc.params.get("repair") or "unlearn"
            nc, nc_rec = _neural_cleanse(sc, ctx, model, data, params)
            flagged = sorted(int(c) for c in nc.flagged_)
            details = {"flagged_classes": flagged, "repair": repair,
                       "target_flagged": None if target is None else target in flagged,
                       "anomaly_index": _finite(nc.anomaly_index_),
                       "mask_norms": _finite(nc.mask_norms_), "threshold": nc.threshold,
                       "neural_cleanse": nc_rec}
            trig = None if poisoned is None else poisoned.trigger
            if trig is not None and hasattr(trig, "mask"):  # an image trigger: shown beside
                details["true_trigger"] = (trig.mask * trig.pattern).cpu().tolist()
            if not flagged:
                new = model
            elif repair == "prune":
                new = nc.prune(model, x_def, y_def, layer=default_layer(model))
            else:
                new = nc.unlearn(model, x_def, y_def, generator=gen)
        elif name == "strip":
            new = model
            measured, details = _strip(ctx, model, poisoned, data, params, gen)
        else:
            x, y = (data["x"], data["y"]) if poisoned is None else (poisoned.x, poisoned.y)
            det = registry.create(name, **params)
            if name == "activation_clustering":
                det = det.fit(model, x, y, rng=_rng(ctx, sc.id))
            elif name == "label_consistency":
                det = det.fit(model, x, y, x_trusted=x_def, y_trusted=y_def, generator=gen)
            else:
                det = det.fit(model, x, y)
            flagged = det.poisoned_mask_.bool().to(y.device)
            keep = ~flagged
            new, facts = retrain(x[keep], y[keep])
            details = {"n_flagged": int(flagged.sum()), "n_retrained_on": int(keep.sum()),
                       "retrained_model_cache": facts["cache"],
                       "retrained_from_cache": not facts["trained_now"]}
            if poisoned is not None:
                precision, recall = poisoned.detection_scores(flagged)
                details.update(precision=precision.as_dict(), recall=recall.as_dict(),
                               poisoned_left=int((poisoned.poisoned_mask & keep).sum()))
            else:
                details.update(precision=None, recall=None, poisoned_left=0)
    notes = sorted({str(w.message) for w in caught} | set(
        details.get("neural_cleanse", {}).get("notes", [])))
    if name == "neural_cleanse" and not details["flagged_classes"] and poisoned is not None:
        notes.append(f"Neural Cleanse flagged no class, so {details['repair']} had nothing to "
                     "remove: the figures are the poisoned model's")
    return {"mitigation": name, "mitigation_params": params, "details": details, "notes": notes,
            "mitigation_key": sc.params.get("mitigation_key", name),
            **(measured if name == "strip" else measure(new, poisoned, data)),
            "success_kind": success_kind(poisoned), "target": target}
