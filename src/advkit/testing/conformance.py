"""The conformance suite every registered evasion attack must pass (DESIGN §7).

``check_evasion_attack(name, target, x, y)`` builds the attack with its defaults and checks: the
output's shape, dtype and device equal the input's; the perturbation lies within the threat model and
the bounds; the same seed gives the same output; bad parameters raise InvalidParameterError; the
model's mode and weights are unchanged; queries are counted.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from advkit import registry
from advkit.errors import InvalidParameterError
from advkit.targets.torch import TorchTarget

# generic bad values tried for parameters an attack has (each must raise at construction)
BAD_VALUES = {
    "eps": [-0.1, float("nan")],
    "steps": [0, -3, 2.5],
    "max_iter": [0, -1],
    "restarts": [0],
    "step_size": [-1.0, 0.0],
    "norm": ["l3", 7],
    "batch_size": [0],
    "n_restarts": [0],
}


class ConformanceFailure(AssertionError):
    pass


def _fail(name: str, msg: str):
    raise ConformanceFailure(f"{name}: {msg}")


def _state(target):
    if isinstance(target, TorchTarget):
        return target.model.training, {
            k: v.detach().clone() for k, v in target.model.state_dict().items()
        }
    return None


def check_evasion_attack(
    name: str, target, x: torch.Tensor, y: torch.Tensor, *, params=None, seed: int = 0
):
    """Run every conformance check on the registered attack ``name``; raise ConformanceFailure."""
    entry = registry.get(name)
    params = dict(params or {})
    attack = entry.cls(**params)
    if not dataclasses.is_dataclass(attack) or not attack.__dataclass_params__.frozen:
        _fail(name, "attacks must be frozen dataclasses")

    before = _state(target)
    q0 = target.queries
    res = attack.attack(target, x, y, generator=torch.Generator(device=x.device).manual_seed(seed))
    xa = res.x_adv
    if xa.shape != x.shape or xa.dtype != x.dtype or xa.device != x.device:
        _fail(
            name,
            f"output {tuple(xa.shape)} {xa.dtype} {xa.device} differs from input "
            f"{tuple(x.shape)} {x.dtype} {x.device}",
        )
    lo, hi = target.contract.bounds
    if xa.min() < lo - 1e-6 or xa.max() > hi + 1e-6:
        _fail(name, f"output leaves the bounds {target.contract.bounds}")
    threat = attack.threat
    if threat is not None:
        d = threat.distance(xa, x)
        tol = 1e-5 * max(1.0, threat.eps)
        if (d > threat.eps + tol).any():
            _fail(name, f"perturbation norm {d.max().item():.6g} exceeds eps {threat.eps}")
    if res.queries <= 0 or target.queries - q0 != res.queries:
        _fail(
            name,
            f"queries not counted (result says {res.queries}, target counted {target.queries - q0})",
        )
    for field in ("clean_pred", "adv_pred", "success", "distance"):
        if getattr(res, field).shape[0] != x.shape[0]:
            _fail(name, f"result.{field} is not per-sample")
    if attack.minimum_norm and not torch.isfinite(res.distance).all():
        _fail(name, "a minimum-norm attack must report finite per-sample norms")

    res2 = attack.attack(target, x, y, generator=torch.Generator(device=x.device).manual_seed(seed))
    if not torch.equal(res2.x_adv, xa):
        _fail(name, "the same seed gave different outputs")

    after = _state(target)
    if before is not None:
        if before[0] != after[0]:
            _fail(name, "the model's train/eval mode changed")
        for k, v in before[1].items():
            if not torch.equal(v, after[1][k]):
                _fail(name, f"the model's weights changed ({k})")

    field_names = {f.name for f in dataclasses.fields(entry.cls)}
    for pname, values in BAD_VALUES.items():
        if pname not in field_names:
            continue
        for v in values:
            try:
                entry.cls(**{**params, pname: v})
            except InvalidParameterError as exc:
                if pname not in str(exc):
                    _fail(name, f"the error for {pname}={v!r} does not name the parameter: {exc}")
                continue
            _fail(name, f"{pname}={v!r} was accepted; it must raise InvalidParameterError")
    try:
        registry.create(name, no_such_parameter=1)
    except InvalidParameterError:
        pass
    else:
        _fail(name, "an unknown parameter was accepted")
    if math.isnan(float(res.seconds)):
        _fail(name, "no timing recorded")
    return res
