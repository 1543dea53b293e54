"""One mitigation against one poisoned model, for the poisoning family's mitigation stages.

- ``fine_pruning`` (Liu, Dolan-Gavitt & Garg 2018, RAID): prune the channels clean data leaves
  dormant in the last convolution (an MLP: its last hidden layer), fine-tune on clean data.
- ``neural_cleanse`` (Wang et al. 2019, IEEE S&P): reverse-engineer a trigger per class, flag the
  outliers by their MAD anomaly index, unlearn the flagged classes' triggers on clean data.
- ``activation_clustering`` (Chen et al. 2018, arXiv:1811.03728) and ``spectral_signatures``
  (Tran, Li & Madry 2018, NeurIPS): flag training samples from the model's activations, then
  retrain the recipe from scratch without them (through the shared cached trainer).

The defender's clean data is the share of the training split held out from poisoning. Detection
is scored against the poison's ground truth (precision and recall with Wilson intervals).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from advkit import registry
from advkit.audit.poisoning_stages import _rng, default_layer, measure, success_kind
from advkit.errors import AdvkitWarning


def _finite(values) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def run_mitigation(sc, ctx, model, poisoned, data: dict, retrain) -> dict[str, Any]:
    """The record of mitigation ``sc``: its details, then clean accuracy and attack success of
    the mitigated model. ``retrain(x, y)`` trains the recipe on a subset (cached)."""
    name, params = sc.params["mitigation"], dict(sc.params["mitigation_params"])
    gen = ctx.generator(sc.id)
    x_def, y_def = data["x_def"], data["y_def"]
    details: dict[str, Any] = {}
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
            nc = registry.create(name, **params).fit(model, x_def, y_def, generator=gen)
            flagged = sorted(int(c) for c in nc.flagged_)
            target = poisoned.target
            details = {"flagged_classes": flagged,
                       "target_flagged": None if target is None else target in flagged,
                       "anomaly_index": _finite(nc.anomaly_index_),
                       "mask_norms": _finite(nc.mask_norms_), "threshold": nc.threshold}
            new = nc.unlearn(model, x_def, y_def, generator=gen) if flagged else model
        else:
            det = registry.create(name, **params)
            if name == "activation_clustering":
                det = det.fit(model, poisoned.x, poisoned.y, rng=_rng(ctx, sc.id))
            else:
                det = det.fit(model, poisoned.x, poisoned.y)
            flagged = det.poisoned_mask_.bool().to(poisoned.y.device)
            precision, recall = poisoned.detection_scores(flagged)
            keep = ~flagged
            new, facts = retrain(poisoned.x[keep], poisoned.y[keep])
            details = {"n_flagged": int(flagged.sum()), "precision": precision.as_dict(),
                       "recall": recall.as_dict(), "n_retrained_on": int(keep.sum()),
                       "poisoned_left": int((poisoned.poisoned_mask & keep).sum()),
                       "retrained_model_cache": facts["cache"],
                       "retrained_from_cache": not facts["trained_now"]}
    notes = sorted({str(w.message) for w in caught})
    if name == "neural_cleanse" and not details["flagged_classes"]:
        notes.append("Neural Cleanse flagged no class, so unlearning had nothing to remove: the "
                     "figures are the poisoned model's")
    return {"mitigation": name, "mitigation_params": params, "details": details, "notes": notes,
            **measure(new, poisoned, data), "success_kind": success_kind(poisoned),
            "target": poisoned.target}
