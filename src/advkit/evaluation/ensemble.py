"""Worst-case robust accuracy over an ensemble of attacks (a cascade, AutoAttack-style).

Croce & Hein (2020), "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML: APGD with the cross-entropy loss, then targeted APGD-DLR (APGD-T) on
the points that survived, then any further attacks, each only on the survivors. A point is robust
only if it survives every attack run on it (DESIGN §4); an attack's success counts only when its
example is misclassified and lies within the ensemble's ball (minimum-norm attacks may leave it).

Each stage records its marginal contribution: the points it broke among those still robust when it
ran. With ``run_all=True`` every attack runs on every clean-correct point, so each single attack's
robust accuracy is known too (and the worst case is their per-point AND).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from advkit import registry
from advkit.attacks.base import EvasionAttack
from advkit.errors import IncompatibleTargetError, InvalidParameterError, check_choice
from advkit.evaluation.metrics import Proportion, proportion, proportion_of
from advkit.targets.base import Target
from advkit.threats import LpBall, parse_norm

VERSIONS = ("standard", "custom")


@dataclass
class StageResult:
    """One attack of the cascade. Counts are over all N evaluated points."""

    label: str
    attack: str
    params: dict[str, Any]
    attacked: int  # points this attack was run on
    broken: int  # points it broke among those still robust when it ran (marginal contribution)
    marginal: Proportion  # broken / N
    robust_after: Proportion  # worst-case robust accuracy after this stage
    single_robust: Proportion | None  # robust accuracy of this attack alone (run_all only)
    queries: int
    passes: int
    seconds: float


@dataclass
class EnsembleResult:
    """Per-point worst case over the attacks of the cascade, with each stage's contribution."""

    eps: float
    norm: float
    version: str
    run_all: bool
    y: torch.Tensor
    clean_pred: torch.Tensor
    robust: torch.Tensor  # per point: correct before and after every attack
    x_adv: torch.Tensor  # per point: the first successful example, else the input
    broken_by: torch.Tensor  # per point: index of the first stage that broke it, -1 if none
    stages: list[StageResult]
    single_masks: dict[str, torch.Tensor] = field(default_factory=dict)  # run_all only

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def clean_correct(self) -> torch.Tensor:
        return self.clean_pred == self.y

    def clean_accuracy(self) -> Proportion:
        return proportion(self.clean_correct)

    def robust_accuracy(self) -> Proportion:
        """Worst-case robust accuracy: points robust to every attack / all N."""
        return proportion(self.robust)

    def summary(self) -> dict[str, Any]:
        """Raw numbers (no formatting) for reports."""
        return {
            "eps": self.eps, "norm": self.norm, "version": self.version, "run_all": self.run_all,
            "clean_accuracy": self.clean_accuracy().as_dict(),
            "robust_accuracy": self.robust_accuracy().as_dict(),
            "stages": [
                {**{k: v for k, v in dataclasses.asdict(s).items() if not isinstance(v, dict)},
                 "params": s.params, "marginal": s.marginal.as_dict(),
                 "robust_after": s.robust_after.as_dict(),
                 "single_robust": None if s.single_robust is None else s.single_robust.as_dict()}
                for s in self.stages
            ],
        }


def _fields(cls) -> set[str]:
    if not dataclasses.is_dataclass(cls):
        return set()
    return {f.name for f in dataclasses.fields(cls) if f.init}


def _build(spec, eps: float, p: float) -> EvasionAttack:
    """An attack instance from a registry name, a mapping ``{"name": ..., "params": {...}}`` (a
    registry name with parameters other than eps and norm) or an instance (which must share eps
    and norm)."""
    if isinstance(spec, str | dict):
        name, params = (spec, {}) if isinstance(spec, str) else _named(spec)
        entry = registry.get(name)
        if entry.family != "evasion":
            raise InvalidParameterError("attacks", spec, "names of evasion attacks")
        names = _fields(entry.cls)
        kw = {k: v for k, v in (("eps", eps), ("norm", p)) if k in names}
        attack = registry.create(name, **params, **kw)
    elif isinstance(spec, EvasionAttack):
        attack = spec
    else:
        raise InvalidParameterError("attacks", spec, "registry names or EvasionAttack instances")
    threat = attack.threat
    if threat is not None and (threat.p != p or not math.isclose(threat.eps, eps)):
        ours = LpBall(norm=p, eps=eps).label
        raise InvalidParameterError(
            "attacks", f"{attack.name}(eps={threat.eps}, norm={threat.label})",
            f"attacks bounded by the ensemble's ball (eps={eps}, norm={ours})",
        )
    return attack


def _named(spec: dict) -> tuple[str, dict]:
    params = spec.get("params") or {}
    if set(spec) - {"name", "params"} or not isinstance(spec.get("name"), str) \
            or not isinstance(params, dict) or {"eps", "norm"} & set(params):
        raise InvalidParameterError(
            "attacks", spec, "a mapping {'name': NAME, 'params': {...}} whose params leave eps "
            "and norm to the ensemble")
    return spec["name"], dict(params)


def _label(attack: EvasionAttack, taken: set[str]) -> str:
    base = f"apgd-{attack.loss}" if attack.name == "apgd" else attack.name
    label, i = base, 2
    while label in taken:
        label, i = f"{base}#{i}", i + 1
    taken.add(label)
    return label


def standard_stages(capabilities=None, norm=math.inf) -> list[str]:
    """Registry names of the standard version's first stages on a target with ``capabilities``
    (any target when None): APGD-CE and APGD-T with gradients; without gradients but with scores,
    at L∞ or L2, Square (score-based, the black-box stage of AutoAttack itself); else none (on a
    labels-only target no registered attack runs yet)."""
    from advkit.attacks.support import capability_names, requires

    if capabilities is None or requires("apgd") | requires("apgd-t") <= capability_names(
            capabilities):
        return ["apgd", "apgd-t"]
    if requires("square") <= capability_names(capabilities) and parse_norm(norm) in (math.inf,
                                                                                    2.0):
        return ["square"]
    return []


def default_attacks(eps: float, norm, version: str = "standard",
                    capabilities=None) -> list[EvasionAttack]:
    """The ensemble's fixed first stages (``standard_stages``): APGD-CE, then APGD-T (targeted
    DLR); Square instead on a target with ``capabilities`` that has scores but no gradients."""
    check_choice("version", version, VERSIONS)
    if version == "custom":
        return []
    extra = {"apgd": {"loss": "ce"}}
    return [registry.create(name, eps=eps, norm=norm, **extra.get(name, {}))
            for name in standard_stages(capabilities, norm)]


def _check_stages(target: Target, stages: list[EvasionAttack], version: str, p: float) -> None:
    """Every stage can run on ``target`` (checked before any runs); IncompatibleTargetError
    naming the attacks that would work otherwise."""
    from advkit.attacks.support import alternatives, describe, runnable_attacks

    if not stages and version == "standard":
        caps = target.capabilities
        tip = ("use norm inf or l2 (Square's), or a model with gradients"
               if runnable_attacks(caps) and p not in (math.inf, 2.0) else alternatives(caps))
        raise IncompatibleTargetError(
            f"the ensemble's standard stages need gradients (APGD-CE, APGD-T) or scores at L∞ "
            f"or L2, but {target.model_name} offers only {describe(caps)} (norm "
            f"{LpBall(norm=p, eps=0).label}); {tip}")
    for attack in stages:
        target.require(attack.requires, f"the ensemble's {attack.name} stage",
                       hint=attack.suggestion)


def run_ensemble(target: Target, x, y, *, eps: float, norm="inf", attacks=None,
                 generator: torch.Generator | None = None, version: str = "standard",
                 run_all: bool = False) -> EnsembleResult:
    """Run the cascade on (x, y) and return the per-point worst case.

    ``version="standard"`` runs APGD-CE and APGD-T first (Square instead on a target with scores
    but no gradients: ``standard_stages``), then ``attacks`` (registry names or
    ``{"name", "params"}`` mappings, built with the ensemble's ``eps`` and ``norm``, or instances
    with the same ball); ``"custom"`` runs ``attacks`` only. Every stage is checked against the
    target's capabilities before any runs. Each attack runs only on the points still robust, or
    on every clean-correct point when ``run_all`` is true.
    """
    ball = LpBall(norm=parse_norm(norm), eps=eps)
    p = ball.p
    specs = list(attacks or [])
    stages_attacks = (default_attacks(eps, p, version, target.capabilities)
                      + [_build(s, eps, p) for s in specs])
    _check_stages(target, stages_attacks, version, p)
    if not stages_attacks:
        raise InvalidParameterError("attacks", attacks, "at least one attack with version='custom'")
    x = target.check_inputs(x).detach()
    y = target.check_labels(y, x.shape[0]).to(x.device)
    n = x.shape[0]
    with torch.no_grad():
        clean_pred = target.labels(x, check=False).to(y.device)
    correct = clean_pred == y
    robust = correct.clone()
    x_adv = x.clone()
    broken_by = torch.full((n,), -1, dtype=torch.long, device=y.device)
    tol = 1e-5 * max(1.0, eps)
    stages, singles, taken = [], {}, set()
    for i, attack in enumerate(stages_attacks):
        label = _label(attack, taken)
        idx = torch.nonzero(correct if run_all else robust).squeeze(1)
        broke = torch.zeros(n, dtype=torch.bool, device=y.device)
        queries = passes = 0
        seconds = 0.0
        if idx.numel() > 0:
            res = attack.attack(target, x[idx], y[idx], generator=generator)
            ok = (res.adv_pred != res.y) & (ball.distance(res.x_adv, res.x) <= eps + tol)
            broke[idx] = ok.to(y.device)
            new = broke & robust
            x_adv[new] = res.x_adv[new[idx]].to(x.dtype)
            queries, passes, seconds = res.queries, res.passes, res.seconds
        else:
            new = broke
        broken_by[new] = i
        robust &= ~broke
        single = None
        if run_all:
            singles[label] = correct & ~broke
            single = proportion(singles[label])
        stages.append(StageResult(
            label=label, attack=attack.name, params=attack.params(), attacked=int(idx.numel()),
            broken=int(new.sum()), marginal=proportion_of(int(new.sum()), n),
            robust_after=proportion(robust), single_robust=single, queries=queries, passes=passes,
            seconds=seconds,
        ))
    return EnsembleResult(eps=eps, norm=p, version=version, run_all=run_all, y=y,
                          clean_pred=clean_pred, robust=robust, x_adv=x_adv, broken_by=broken_by,
                          stages=stages, single_masks=singles)
