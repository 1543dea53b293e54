"""Neural Cleanse in the backdoor family as one stage per class plus a merge stage, so an
executor that runs stages in parallel (Ray) searches the classes in parallel.

- ``backdoor/neural-cleanse/class=K`` (kind ``neural-cleanse-class``): the trigger search of
  class K alone (``NeuralCleanse.search_class``). Its generator is the one the whole search would
  get, ``ctx.generator("backdoor/neural-cleanse")``: the search derives class K's own generator
  from it and K alone (``advkit.defenses.detectors.nc_search``), so a class's record does not
  depend on which other classes ran, where, or in which order; each is stored (and resumed) by
  itself.
- ``backdoor/neural-cleanse`` (kind ``neural-cleanse``, the id the single search had, so its
  mitigations and the report read it unchanged): depends on every class stage and merges their
  records (``NeuralCleanse.from_classes``): norms, MAD anomaly index, flagged classes, verdict,
  and the audited model measured with the flagged classes' reversed triggers.

The class stages are added once the subject is loaded (``expand``): the number of classes is the
model's. Their records stay in the store; the report reads the merged record only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from advkit.audit.plan import Scenario

NC = "backdoor/neural-cleanse"
CLASS_KIND = "neural-cleanse-class"


def class_id(k: int) -> str:
    return f"{NC}/class={k}"


def expand(plan: list[Scenario], n_classes: int) -> list[Scenario]:
    """``plan`` with one search stage per class before the Neural Cleanse stage, which becomes
    their merge (it depends on them)."""
    out = []
    for sc in plan:
        if sc.id == NC:
            ids = [class_id(k) for k in range(n_classes)]
            out += [dataclasses.replace(sc, id=cid, kind=CLASS_KIND,
                                        params={**sc.params, "class": k})
                    for k, cid in enumerate(ids)]
            sc = dataclasses.replace(sc, deps=tuple(ids))
        out.append(sc)
    return out


def _num(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None


def nc_record(nc, *, bounds, n_clean: int, notes: list[str]) -> dict:
    """A fitted NeuralCleanse as plain data: per-class norms, anomaly indices, convergence and
    the reversed masks and patterns (what its report section and its mitigations read)."""
    return {"classes": int(nc.n_classes_), "threshold": float(nc.threshold),
            "mask_norm": [_num(v) for v in nc.mask_norms_],
            "anomaly_index": [_num(v) for v in nc.anomaly_index_],
            "flagged": [int(c) for c in nc.flagged_],
            "reached": [bool(v) for v in nc.reached_],
            "success": [_num(v) for v in nc.success_],
            "failed": [int(c) for c in nc.failed_], "epochs": nc.epochs_.tolist(),
            "masks": nc.masks_.cpu().tolist(), "patterns": nc.patterns_.cpu().tolist(),
            "bounds": [float(b) for b in bounds], "n_clean": int(n_clean),
            "notes": list(notes), "search_seconds": nc.seconds_}


def _triggers(nc_rec: dict | None) -> dict[int, object]:
    """The reversed triggers of the classes Neural Cleanse flagged, rebuilt from its record."""
    from advkit.attacks.poisoning.base import ImageTrigger

    if not nc_rec:
        return {}
    return {c: ImageTrigger(mask=torch.tensor(nc_rec["masks"][c]),
                            pattern=torch.tensor(nc_rec["patterns"][c]))
            for c in nc_rec["flagged"]}


def _fitted_nc(params: dict, rec: dict):
    """A NeuralCleanse carrying the learned triggers of its stored record (what its mitigations
    read), so a mitigation can run in a later process than the search."""
    from advkit import registry

    nc = registry.create("neural_cleanse", **params)
    for name, value in (("masks_", torch.tensor(rec["masks"])),
                        ("patterns_", torch.tensor(rec["patterns"])),
                        ("flagged_", np.array(rec["flagged"], dtype=np.int64)),
                        ("n_classes_", len(rec["masks"]))):
        object.__setattr__(nc, name, value)
    return nc


def class_record(trig) -> dict:
    """One class's search (a single-class ``nc_search.Triggers``) as plain data; float32 masks
    and patterns round-trip exactly through their lists."""
    return {"class": int(trig.classes[0]), "mask": trig.masks[0].cpu().tolist(),
            "pattern": trig.patterns[0].cpu().tolist(), "norm": _num(trig.norms[0]),
            "reached": bool(trig.reached[0]), "success": float(trig.success[0]),
            "epochs": int(trig.epochs[0]), "resets": int(trig.resets[0]),
            "failed": bool(trig.failed[0]), "final_success": _num(trig.final_success[0]),
            "steps": int(trig.steps), "rows": int(trig.rows), "search_seconds": trig.seconds}


def from_record(rec: dict):
    """The ``nc_search.Triggers`` of a stored class record."""
    from advkit.defenses.detectors.nc_search import Triggers

    def arr(key, dtype, none=np.nan):
        return np.array([none if rec[key] is None else rec[key]], dtype=dtype)

    return Triggers(classes=[int(rec["class"])], masks=torch.tensor([rec["mask"]]),
                    patterns=torch.tensor([rec["pattern"]]), norms=arr("norm", np.float64),
                    reached=arr("reached", bool), success=arr("success", np.float64),
                    epochs=arr("epochs", np.int64), resets=arr("resets", np.int64),
                    failed=arr("failed", bool), final_success=arr("final_success", np.float64),
                    steps=int(rec["steps"]), rows=int(rec["rows"]),
                    seconds=float(rec["search_seconds"]))


def merged_notes(class_records: list[dict], notes: list[str]) -> list[str]:
    """The classes' warnings (each once: every class warns of the same clean data) and then
    the merge's."""
    out: list[str] = []
    for n in [n for r in class_records for n in r["notes"]] + list(notes):
        if n not in out:
            out.append(n)
    return out
