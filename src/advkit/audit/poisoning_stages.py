"""How each stage of the poisoning family runs (``advkit.audit.families.poisoning``).

- **train**: the training split minus the defender's held-out share is poisoned by the attack
  (the samples drawn from the train stage's own generator) and the recipe's model is trained on
  it through ``advkit.models.cache.train_recipe`` (cached by a hash of data, recipe and seed). The
  record carries the cache folder and the model's SHA-256; a later stage rebuilds the same
  poisoned data and asks the cache again, which retrains deterministically if the entry vanished.
- **measure**: clean accuracy on the evaluated test points and the attack's success (DESIGN §4:
  backdoor success for a trigger; for a class-targeted flip, source points sent to the target;
  none for random flips). On the clean reference, the success of each attack's trigger.
- **mitigation**: one defense against one poisoned model, then the same two numbers.

Every model of the family is trained from the spec's seed (same initial weights and batch order),
so clean and poisoned models differ by their data alone.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from advkit import registry
from advkit.audit.families.base import AuditContext
from advkit.audit.plan import Scenario
from advkit.errors import AdvkitError, AuditSpecError

log = logging.getLogger("advkit.audit")
STATE = "poisoning"


# -- shared data ---------------------------------------------------------------------------------
def _state(ctx: AuditContext, share: float) -> dict:
    """The split of the training data (attacker's part, defender's clean part) and the test
    points, computed once per run from the generator of ``poisoning/defender-split``."""
    key = (STATE, share)
    if key not in ctx.state:
        ds = ctx.subject.dataset
        n = ds.x_train.shape[0]
        perm = torch.randperm(n, generator=ctx.generator("poisoning/defender-split"))
        n_def = max(1, int(round(share * n)))
        dfn, trn = perm[:n_def].sort().values, perm[n_def:].sort().values
        ctx.state[key] = {"x": ds.x_train[trn], "y": ds.y_train[trn], "x_def": ds.x_train[dfn],
                          "y_def": ds.y_train[dfn], "x_test": ds.x_test[:ctx.n],
                          "y_test": ds.y_test[:ctx.n]}
    return ctx.state[key]


def _rng(ctx: AuditContext, sid: str) -> np.random.Generator:
    seed = int(torch.randint(0, 2**62, (1,), generator=ctx.generator(sid)))
    return np.random.default_rng(seed)


def _attack(name: str, params: dict, info):
    """The attack built with ``params``; its ``bounds`` default to the data's."""
    from dataclasses import fields

    p = dict(params)
    cls = registry.get(name).cls
    if "bounds" in {f.name for f in fields(cls)} and "bounds" not in p:
        p["bounds"] = tuple(float(b) for b in info.bounds)
    return registry.create(name, **p)


def _recipe(sc: Scenario):
    from advkit.models.cache import Recipe

    return Recipe(**sc.params["recipe"])


def train_id(sc: Scenario) -> str:
    return sc.id.rsplit("/", 1)[0] + "/train"


def poisoned_data(sc: Scenario, ctx: AuditContext, data: dict):
    """The PoisonedData of ``sc``'s attack and rate (None for the clean reference), drawn from
    its train stage's generator: the same in every stage and every run."""
    if sc.attack == "none":
        return None
    info = ctx.subject.dataset.info
    attack = _attack(sc.attack, sc.params["attack_params"], info)
    return attack.poison(data["x"], data["y"], rng=_rng(ctx, train_id(sc)),
                         n_classes=info.n_classes)


def _train(x, y, sc: Scenario, ctx: AuditContext):
    from advkit.models.cache import train_recipe

    # no bar of its own: the audit's stage bar is live (rich allows one live display)
    return train_recipe(x, y, _recipe(sc), info=ctx.subject.dataset.info, seed=ctx.seed,
                        progress=False)


def _sha(model: nn.Module) -> str:
    from advkit.audit.manifest import sha256_state_dict

    return sha256_state_dict(model.state_dict())


def trained(sc: Scenario, ctx: AuditContext, deps: dict[str, dict] | None = None):
    """(model, poisoned data or None, train facts) of ``sc``'s train stage: from the cache, or
    trained again (deterministically) when the cache entry is gone."""
    data = _state(ctx, sc.params["defender_share"])
    poisoned = poisoned_data(sc, ctx, data)
    x, y = (data["x"], data["y"]) if poisoned is None else (poisoned.x, poisoned.y)
    model, facts = _train(x, y, sc, ctx)
    rec = (deps or {}).get(train_id(sc))
    if rec is not None and rec.get("model_sha256") not in (None, _sha(model)):
        log.warning("%s: the model trained again differs from the one first trained (SHA-256 "
                    "%s, was %s): training is not bit-reproducible on this machine; the figures "
                    "are the retrained model's", sc.id, _sha(model)[:12], rec["model_sha256"][:12])
    return model, poisoned, facts


# -- measuring ---------------------------------------------------------------------------------
def measure(model, poisoned, data: dict, *, reject=None) -> dict:
    """Clean accuracy and attack success (Proportion dicts; success None for random flips);
    ``reject``: an input filter in front of the model (``evaluate_poison``)."""
    from advkit.attacks.poisoning.train import evaluate_poison, predict

    xt, yt = data["x_test"], data["y_test"]
    if poisoned is None:
        from advkit.evaluation.metrics import clean_accuracy

        pred = predict(model, xt)
        if reject is not None:
            pred = torch.where(reject(xt).to(pred.device), -1, pred)
        return {"clean_accuracy": clean_accuracy(pred, yt).as_dict(), "attack_success": None}
    acc, succ = evaluate_poison(model, poisoned, xt, yt, reject=reject)
    return {"clean_accuracy": acc.as_dict(),
            "attack_success": None if succ is None else succ.as_dict()}


def success_kind(poisoned) -> str | None:
    """What ``attack_success`` counts for this attack (DESIGN §4)."""
    if poisoned is None:
        return None
    if poisoned.trigger is not None:
        return "backdoor_success"
    return "targeted_flip_success" if poisoned.label_map is not None else None


# -- the stages ----------------------------------------------------------------------------------
def run_stage(sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
    t0 = time.perf_counter()
    rec: dict[str, Any] = {"id": sc.id, "kind": sc.kind, "attack": sc.attack,
                           "label": sc.params.get("label", "clean"),
                           "params": dict(sc.params.get("attack_params", {}))}
    if sc.kind == "train":
        rec.update(_train_stage(sc, ctx))
    elif sc.kind == "measure":
        rec.update(_measure_stage(sc, ctx, deps))
    else:
        from advkit.audit.poisoning_mitigations import run_mitigation

        model, poisoned, _ = trained(sc, ctx, deps)
        rec.update(run_mitigation(sc, ctx, model, poisoned, _state(ctx, sc.params["defender_share"]),
                                  lambda x, y: _train(x, y, sc, ctx)))
    rec["seconds"] = time.perf_counter() - t0
    return rec


def _train_stage(sc: Scenario, ctx: AuditContext) -> dict:
    model, poisoned, facts = trained(sc, ctx)
    data = _state(ctx, sc.params["defender_share"])
    hist = facts.get("history") or {}
    return {"n_train": int(data["y"].shape[0]), "n_defender": int(data["y_def"].shape[0]),
            "n_poisoned": 0 if poisoned is None else poisoned.n_poisoned,
            "target": None if poisoned is None else poisoned.target,
            "success_kind": success_kind(poisoned),
            "model_sha256": _sha(model), "model_cache": facts["cache"],
            "model_from_cache": not facts["trained_now"], "train_seconds": facts["train_seconds"],
            "train_loss": (hist.get("loss") or [None])[-1],
            "train_accuracy": (hist.get("accuracy") or [None])[-1],
            "recipe": facts["recipe"], "train_seed": ctx.seed}


def _measure_stage(sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
    model, poisoned, _ = trained(sc, ctx, deps)
    data = _state(ctx, sc.params["defender_share"])
    out = {**measure(model, poisoned, data), "success_kind": success_kind(poisoned),
           "target": None if poisoned is None else poisoned.target}
    if poisoned is None:  # the clean reference: how often each attack's trigger fires anyway
        info = ctx.subject.dataset.info
        out["trigger_success"] = {}
        for label, a in sc.params["triggers"].items():
            p = _attack(a["name"], a["params"], info).poison(
                data["x"], data["y"], rng=_rng(ctx, sc.id), n_classes=info.n_classes)
            out["trigger_success"][label] = {**measure(model, p, data),
                                             "success_kind": success_kind(p)}
    return out


def check_data(plan: list[Scenario], ctx: AuditContext) -> None:
    """Refuse, before any stage runs, an attack or mitigation the data or model cannot take:
    image triggers on tables, the tabular backdoor on images, a layer the model lacks."""
    from advkit.models.zoo import build, kwargs_for_data

    info = ctx.subject.dataset.info
    image = len(tuple(info.shape)) == 3
    data_kind = "image" if image else f"tabular (shape {tuple(info.shape)})"
    for sc in plan:
        if sc.kind == "train" and sc.attack != "none":
            if (sc.attack in ("badnets", "blended") and not image) or (
                    sc.attack == "tabular_backdoor" and len(tuple(info.shape)) != 1):
                fits = "badnets, blended, label_flip" if image else "tabular_backdoor, label_flip"
                raise AuditSpecError(
                    f"poisoning: {sc.attack} does not fit the {data_kind} data {info.name!r}; "
                    f"attacks for it: {fits}")
            data = _state(ctx, sc.params["defender_share"])
            try:  # a dry run: the patch fits, the target exists, enough samples to poison
                _attack(sc.attack, sc.params["attack_params"], info).poison(
                    data["x"], data["y"], rng=np.random.default_rng(0), n_classes=info.n_classes)
            except AdvkitError as exc:
                raise AuditSpecError(f"poisoning: {sc.id} on the data {info.name!r}: {exc}"
                                     ) from None
        if sc.kind != "mitigation":
            continue
        name, params = sc.params["mitigation"], sc.params["mitigation_params"]
        if name in ("neural_cleanse", "strip") and not image:
            why = ("reverse-engineers image triggers" if name == "neural_cleanse" else
                   "superimposes images on the inputs it checks")
            raise AuditSpecError(f"poisoning: {name} {why}; the data {info.name!r} is "
                                 f"{data_kind}: remove it")
        r = _recipe(sc)
        net = build(r.zoo, input_shape=tuple(info.shape), n_classes=info.n_classes,
                    **kwargs_for_data(r.zoo, r.kwargs, info))
        layer = params.get("layer", default_layer(net) if name == "fine_pruning" else None)
        named = dict(net.named_modules())
        if layer is not None and (layer not in named
                                  or not isinstance(named[layer], nn.Linear | nn.Conv2d)):
            layers = [n for n, m in named.items() if isinstance(m, nn.Linear | nn.Conv2d)]
            raise AuditSpecError(f"poisoning: mitigation {name}: layer {layer!r} is not a Linear "
                                 f"or Conv2d module of {r.zoo}; its layers: {', '.join(layers)}")
        if name == "fine_pruning" and layer is None and not any(
                isinstance(m, nn.Conv2d) for m in named.values()):
            raise AuditSpecError(f"poisoning: fine_pruning needs a hidden layer to prune and "
                                 f"{r.zoo} has none: give the mlp a hidden layer")


def default_layer(model: nn.Module) -> str | None:
    """Fine-pruning's layer: None (its default, the last Conv2d) for a convolutional model,
    else the last hidden Linear layer (the one before the output layer)."""
    named = list(model.named_modules())
    if any(isinstance(m, nn.Conv2d) for _, m in named):
        return None
    linear = [n for n, m in named if isinstance(m, nn.Linear)]
    return linear[-2] if len(linear) >= 2 else None
