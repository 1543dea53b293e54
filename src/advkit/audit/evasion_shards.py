"""Data shards of one evasion attack (issue 17, Deliver 5): ``evaluation: {shards: S}`` splits
the points of each shard-safe attack scenario into S stages (``<id>/shard=i``, run in parallel
on Ray) and a merge stage under the scenario's own id whose record equals, per point and in
every figure the report shows, the record of the attack run on all points at once.

That equality holds only for an attack whose result for one point depends on that point alone:

- **no randomness**: an attack that draws random starts or random search directions draws them
  for the whole batch from one generator, so a point's draw depends on the points before it
  (PGD's and APGD's random starts, Square, SimBA, the decision-based attacks, ZOO): not sharded;
- **no batch-level steps**: an attack that drops finished points from its batch (PGD and APGD's
  early stop, DeepFool, C&W's search) changes which points share each forward pass, and a
  forward pass's round-off depends on its batch; a universal perturbation or a patch is one
  result for all points: not sharded;
- **the same forward batches**: shards are cut at multiples of ``evaluation.batch_size``, the
  chunk size the target forwards, so every chunk a shard forwards is a chunk the whole run
  forwards, with the same rows (bit-identical logits and gradients).

``SHARDABLE`` lists the attacks that meet all three: FGSM (one gradient step) and BIM (a fixed
number of steps; a point already adversarial stops moving but stays in the batch). Any other
attack runs as one stage whatever ``shards`` says (checked: PGD split into shards gives a
different report, its random starts being drawn per batch). Per-point lists are concatenated
in order, queries add up, ``passes`` (the same on every shard) is kept, ``examples_x_adv`` are
the first points', and a tabular attack's feature changes add up (points changed, one-hot
groups broken) or take the maximum (largest change).
"""

from __future__ import annotations

import dataclasses
import time

from advkit.audit.plan import Scenario

SHARDABLE = frozenset({"fgsm", "bim"})
SHARD_KIND = "shard"
STATE = "evasion_shards"
_PER_POINT = ("adv_pred", "adv_conf", "distance", "success", "robust")


def shard_id(sid: str, i: int) -> str:
    return f"{sid}/shard={i}"


def bounds(n: int, shards: int, batch_size: int) -> list[tuple[int, int]]:
    """Point ranges of the shards: whole batches of ``batch_size`` (the last may be short),
    spread as evenly as they go; fewer shards than asked when there are fewer batches."""
    nb = -(-n // batch_size)
    s = max(1, min(shards, nb))
    cuts = [min(n, (i * nb // s) * batch_size) for i in range(s + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(s)]


def expand(stages: list[Scenario], ctx) -> list[Scenario]:
    """``stages`` with every shard-safe attack split into shard stages and their merge (which
    keeps the attack's id, so the checks and the report read it unchanged)."""
    shards = ctx.spec.evaluation.shards
    ranges = bounds(ctx.n, shards, ctx.spec.evaluation.batch_size)
    if shards <= 1 or len(ranges) <= 1:
        return stages
    where = ctx.state.setdefault(STATE, {})
    out = []
    for sc in stages:
        if sc.kind != "attack" or sc.attack not in SHARDABLE or sc.eps == 0:
            out.append(sc)
            continue
        ids = []
        for i, r in enumerate(ranges):
            sid = shard_id(sc.id, i)
            where[sid] = r
            ids.append(sid)
            out.append(dataclasses.replace(sc, id=sid, kind=SHARD_KIND))
        out.append(dataclasses.replace(sc, deps=tuple(ids)))
    return out


def key_inputs(sc: Scenario, ctx) -> dict:
    """A shard's points (part of its store key)."""
    if sc.kind != SHARD_KIND:
        return {}
    return {"points": list(ctx.state[STATE][sc.id])}


def run_shard(sc: Scenario, ctx, run_scenario) -> dict:
    """The attack on the shard's points, with the whole scenario's generator."""
    lo, hi = ctx.state[STATE][sc.id]
    parent = sc.id.rsplit("/shard=", 1)[0]
    rec = run_scenario(dataclasses.replace(sc, id=parent, kind="attack"), ctx.subject.target,
                       ctx.x[lo:hi], ctx.y[lo:hi], ctx.clean_pred[lo:hi], seed=ctx.seed)
    return {**rec, "id": sc.id, "kind": SHARD_KIND, "points": [lo, hi]}


def merge(sc: Scenario, deps: dict[str, dict], n_examples: int) -> dict:
    """The record of the whole scenario from its shards' records, in point order."""
    t0 = time.perf_counter()
    parts = [deps[d] for d in sc.deps]
    first = parts[0]
    rec = {k: first[k] for k in ("attack", "label", "norm", "eps", "params", "passes",
                                 "minimum_norm", "distance_norm", "extra") if k in first}
    rec.update(id=sc.id, kind=sc.kind, queries=sum(p["queries"] for p in parts))
    for k in _PER_POINT:
        rec[k] = [v for p in parts for v in p[k]]
    rec["examples_x_adv"] = [v for p in parts for v in p["examples_x_adv"]][:n_examples]
    if "feature_changes" in first:
        fc = [p["feature_changes"] for p in parts]
        rec["feature_changes"] = {
            "changed": [sum(c) for c in zip(*(f["changed"] for f in fc), strict=True)],
            "max_abs": [max(c) for c in zip(*(f["max_abs"] for f in fc), strict=True)],
            "one_hot_broken": sum(f["one_hot_broken"] for f in fc)}
    rec["seconds"] = sum(p["seconds"] for p in parts) + time.perf_counter() - t0
    return rec
