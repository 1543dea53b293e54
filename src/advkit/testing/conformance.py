"""The conformance suite: what every registered attack and defense must pass (DESIGN §7).

``check_entry(name)`` holds for every registered name, whatever its family (evasion and poisoning
attacks, transforms, output hardening, detectors, certifiers, training defenses): every
constructor parameter is declared (``advkit.params``), the defaults build, every value that breaks
a declaration raises InvalidParameterError in the one message format (both through
``registry.create`` and the class itself), an unknown parameter is refused, and the entry carries
a threat tag and describes itself as JSON.

``check_evasion_attack(name, target, x, y)`` builds an evasion attack with its defaults and checks
on top: the output's shape, dtype and device equal the input's; the perturbation lies within the
threat model and the bounds; the same seed gives the same output; the model's mode and weights are
unchanged; queries are counted.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import torch

from advkit import params as _params
from advkit import registry
from advkit.errors import InvalidParameterError, UnknownParameterError, short
from advkit.targets.torch import TorchTarget
from advkit.threat_tags import ThreatTag


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

    check_parameters(name)
    if math.isnan(float(res.seconds)):
        _fail(name, "no timing recorded")
    return res


def expected_message(cls: type, pname: str, decl: _params.Param, value) -> str:
    """The one message format for ``value`` breaking the declaration of ``pname``."""
    return (f"{cls.__name__}: parameter {pname!r} must be {decl.describe()}; "
            f"got {short(value)} ({type(value).__name__})")


def _raises_format(name: str, build, pname: str, value, want: str, how: str) -> None:
    try:
        build(**{pname: value})
    except InvalidParameterError as exc:
        if str(exc) != want:
            _fail(name, f"{how} with {pname}={short(value)} raised {exc!s}; expected {want}")
        return
    except Exception as exc:  # noqa: BLE001 - any other error is a conformance failure
        _fail(name, f"{how} with {pname}={short(value)} raised {type(exc).__name__}: {exc}; "
                    "expected InvalidParameterError")
    _fail(name, f"{how} accepted {pname}={short(value)}; it breaks the declaration "
                f"({want})")


def check_parameters(name: str) -> int:
    """Every declared parameter of ``name`` refuses each value that breaks its declaration, in
    the one format, through ``registry.create`` and through the class; returns how many values
    were tried."""
    entry = registry.get(name)
    missing = _params.undeclared(entry.cls)
    if missing:
        _fail(name, f"parameters without a declaration (use advkit.params.param): {missing}")
    tried = 0
    for pname, decl in entry.declarations().items():
        bad = _params.invalid_values(decl)
        if not bad:
            _fail(name, f"no invalid value can be generated for {pname}")
        for v in bad:
            want = expected_message(entry.cls, pname, decl, v)
            _raises_format(name, functools.partial(registry.create, name), pname, v, want,
                           "registry.create")
            _raises_format(name, entry.cls, pname, v, want, entry.cls.__name__)
            tried += 1
    try:
        registry.create(name, no_such_parameter=1)
    except UnknownParameterError as exc:
        if "no_such_parameter" not in str(exc):
            _fail(name, f"the unknown-parameter error does not name it: {exc}")
    else:
        _fail(name, "an unknown parameter was accepted")
    return tried


def check_entry(name: str) -> None:
    """The checks every registered name passes, whatever its family (see the module doc)."""
    from advkit.catalog import describe_entry

    entry = registry.get(name)
    if not dataclasses.is_dataclass(entry.cls):
        _fail(name, "registered classes must be dataclasses (their fields are the parameters)")
    if not isinstance(entry.threat, ThreatTag) or entry.cls.threat_tag is not entry.threat:
        _fail(name, "no threat tag: register it with @register(..., threat=tag(...))")
    if (entry.family == "defense") != entry.threat.mitigates:
        _fail(name, "a defense's threat tag says what it mitigates (mitigates=True), an "
                    "attack's does not")
    try:
        registry.create(name)
    except Exception as exc:  # noqa: BLE001
        _fail(name, f"the defaults do not build: {type(exc).__name__}: {exc}")
    json.dumps(describe_entry(entry), allow_nan=False)
    check_parameters(name)
