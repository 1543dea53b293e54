"""The ``defenses`` section of the audit spec: which defenses the evasion scenarios run against.

::

    attacks: [{name: pgd, eps: [0, 0.1, 0.2], params: {steps: 20}}]
    defenses:
      - {name: jpeg, params: {quality: 75}}              # input transforms (adaptive + naive)
      - median-smoothing                                 # a name alone: default parameters
      - {name: gaussian-noise, params: {sigma: 0.1}, eot_samples: 10}
      - {name: output-rounding, params: {decimals: 2}}   # output hardening
      - {name: randomized-smoothing, params: {sigma: 0.25, n0: 100, n: 1000}, points: 100}
      - {name: pgd-at, params: {eps: 0.3, steps: 10}, epochs: 10, warmup_batches: 100}
      - {name: jpeg, label: jpeg-50, params: {quality: 50}}   # a second configuration
      - {name: gaussian-augmentation, params: {sigma: 0.25}, epochs: 3}
      - {name: randomized-smoothing, label: rs-noise, params: {sigma: 0.25},
         base: gaussian-augmentation}      # certify the model that entry trained

Each entry names a registered defense (``advkit list defense``) of one of four kinds:

- ``transform`` (``jpeg``, ``median-smoothing``, ``bit-depth``, ``gaussian-noise``): the model
  behind the input transformation (Guo, Rana, Cisse & van der Maaten 2018, ICLR; Xu, Evans & Qi
  2018, NDSS), attacked adaptively (BPDA and EOT, Athalye, Carlini & Wagner 2018, ICML) and
  naively; ``eot_samples``: draws averaged per gradient for randomized transforms (default 10);
- ``output`` (``output-rounding``, ``output-topk``, ``labels-only``): hardened answers;
- ``certify`` (``randomized-smoothing``): CERTIFY of Cohen, Rosenfeld & Kolter (2019, ICML) on
  the first ``points`` evaluated points (default all of them), with the audited model as the
  base classifier, or (``base: KEY``) the model a training entry of this section trained;
- ``training`` (``pgd-at``, Madry et al. 2018, ICLR; ``fast-fgsm``, Wong, Rice & Kolter 2020,
  ICLR; ``gaussian-augmentation``, Cohen et al. 2019's base classifier): the model's recipe
  trained again with the defense (``epochs``: default the model's; ``warmup_batches``: eps ramp
  of the adversarial ones). Only for a recipe (``model: {zoo: ...}``).

``label`` names the entry's stages (default: the name). Every entry is built here with its
parameters (``advkit.registry.create``), so a bad one fails before anything is loaded or trained.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, ValidationError, model_validator

from advkit.audit.spec_sections import _Strict, require_distinct
from advkit.errors import AdvkitError, AuditSpecError, short

KINDS = ("transform", "output", "certify", "training")
# training defenses the cached trainer takes as batch hooks
TRAINING = ("pgd-at", "fast-fgsm", "gaussian-augmentation")
ADVERSARIAL = ("pgd-at", "fast-fgsm")  # ... of them, those that train on adversarial examples
_FIELDS = {"eot_samples": "transform", "points": "certify", "base": "certify",
           "epochs": "training", "warmup_batches": "training"}
_NOT_HERE = {
    "trades": "TRADES changes the training loss, and the audit's cached trainer takes batch "
              "hooks only: use pgd-at or fast-fgsm here, or train with `advkit train --defense "
              "trades` and audit the saved model",
}


class DefenseEntry(_Strict):
    """One defense: a registered name, its parameters and the settings of its kind."""

    name: str = Field(min_length=1, max_length=60)
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = Field(default=None, min_length=1, max_length=60,
                              pattern=r"^[A-Za-z0-9_.-]+$")
    eot_samples: int | None = Field(default=None, ge=1, le=1000)
    points: int | None = Field(default=None, ge=1)
    epochs: int | None = Field(default=None, ge=1, le=1000)
    warmup_batches: int | None = Field(default=None, ge=0)
    base: str | None = Field(default=None, min_length=1, max_length=60)

    @property
    def key(self) -> str:
        """What its stage ids and the report call it."""
        return self.label or self.name

    @property
    def kind(self) -> str:
        return kind_of(self.name) or "unknown"


class DefensesSection(_Strict):
    defenses: list[DefenseEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self):
        require_distinct([d.key for d in self.defenses], "entries")
        training = [d.key for d in self.defenses if d.kind == "training"]
        for i, d in enumerate(self.defenses):
            if d.base is not None and d.base not in training:
                raise ValueError(f"[{i}].base: {d.base!r} names no training entry of this "
                                 "section; the base classifier to certify is the model a "
                                 "training entry trains (training entries here: "
                                 f"{', '.join(training) or 'none'}), or remove base to certify "
                                 "the audited model")
        return self

    def entry(self, key: str) -> DefenseEntry:
        return next(d for d in self.defenses if d.key == key)

    def of_kind(self, *kinds: str) -> list[DefenseEntry]:
        return [d for d in self.defenses if d.kind in kinds]


def kind_of(name: str) -> str | None:
    """``transform`` / ``output`` / ``certify`` / ``training`` for a defense this family runs;
    None for any other name."""
    from advkit import registry
    from advkit.defenses.certify.smoothing import RandomizedSmoothing
    from advkit.defenses.transforms.base import InputTransform

    if name not in registry.list("defense"):
        return None
    cls = registry.get(name).cls
    if isinstance(cls, type) and issubclass(cls, InputTransform):
        return "transform"
    if callable(getattr(cls, "harden", None)):
        return "output"
    if cls is RandomizedSmoothing:
        return "certify"
    return "training" if name in TRAINING else None


def supported() -> dict[str, list[str]]:
    """The registered defenses this section takes, by kind."""
    from advkit import registry

    out: dict[str, list[str]] = {k: [] for k in KINDS}
    for name in registry.list("defense"):
        k = kind_of(name)
        if k is not None:
            out[k].append(name)
    return out


def _supported_text() -> str:
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in supported().items() if v)


def _message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"][1:])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = ("unknown field (entries take name, params, label, eot_samples, points, "
                   "base, epochs, warmup_batches; see advkit.audit.defenses_section)")
        elif err["type"].endswith(("_type", "_parsing")):
            msg += f" (got {type(err['input']).__name__} {short(err['input'], 60)})"
        parts.append(f"{loc.lstrip('.') or '(the list)'}: {msg}")
    return "; ".join(parts)


def parse_section(data: Any, *, source: str) -> DefensesSection:
    """Validate the raw ``defenses`` section (a list of names or mappings); AuditSpecError naming
    the entry and the field otherwise."""
    if not isinstance(data, list):
        raise AuditSpecError(f"{source}: expected a list of defenses, e.g. [{{name: jpeg, params: "
                             f"{{quality: 75}}}}], got {type(data).__name__}")
    items = [{"name": d} if isinstance(d, str) else d for d in data]
    try:
        sec = DefensesSection.model_validate({"defenses": items})
    except ValidationError as exc:
        raise AuditSpecError(f"{source}: {_message(exc)}") from None
    for i, d in enumerate(sec.defenses):
        _check_entry(d, f"{source}[{i}]")
    return sec


def _check_entry(d: DefenseEntry, where: str) -> None:
    from advkit import registry

    kind = kind_of(d.name)
    if kind is None:
        if d.name in _NOT_HERE:
            why = _NOT_HERE[d.name]
        elif d.name in registry.list("defense"):
            why = (f"{d.name} is not an evasion defense this section runs (detectors and "
                   "backdoor defenses belong to the backdoor and poisoning sections)")
        else:
            why = f"unknown defense {short(d.name)}"
        raise AuditSpecError(f"{where}.name: {why}; defenses this section runs: "
                             f"{_supported_text()}")
    for field, owner in _FIELDS.items():
        if getattr(d, field) is not None and owner != kind:
            raise AuditSpecError(f"{where}.{field}: only {owner} defenses take {field}; "
                                 f"{d.name} is a {kind} defense: remove it")
    if kind == "training" and "bounds" in d.params:
        raise AuditSpecError(f"{where}.params.bounds: the data's bounds are used; remove it")
    if d.warmup_batches is not None and d.name not in ADVERSARIAL:
        raise AuditSpecError(f"{where}.warmup_batches: only adversarial training ramps eps "
                             f"({', '.join(ADVERSARIAL)}); remove it")
    try:
        registry.create(d.name, **d.params)
        if kind == "training":
            training_hook(d, (0.0, 1.0), None)
    except AdvkitError as exc:
        raise AuditSpecError(f"{where} ({d.key}): {exc}") from None


def build(d: DefenseEntry):
    """The defense object of a transform, output or certify entry."""
    from advkit import registry

    return registry.create(d.name, **d.params)


def training_hook(d: DefenseEntry, bounds, generator):
    """The ``batch_hook`` of a training entry (``advkit.defenses.training``) and its description
    (what the model cache's ``tag`` names, since a hook cannot be hashed)."""
    from advkit import registry
    from advkit.defenses.training import adversarial_batch_hook

    if d.name not in ADVERSARIAL:  # gaussian-augmentation: noise, no attack
        defense = registry.create(d.name, **d.params)
        return defense.batch_hook(generator), {"defense": d.name, "params": dict(d.params)}
    eps = registry.create(d.name, **d.params).eps
    params = {k: v for k, v in d.params.items() if k != "eps"}
    bounds = (float(bounds[0]), float(bounds[1]))
    hook = adversarial_batch_hook(d.name, eps, generator=generator,
                                  warmup_batches=d.warmup_batches or 0, bounds=bounds, **params)
    desc = {"defense": d.name, "eps": eps, "params": params, "bounds": list(bounds),
            "warmup_batches": d.warmup_batches or 0}
    return hook, desc


def training_tag(desc: dict) -> str:
    return "defense:" + json.dumps(desc, sort_keys=True)


def entry_dict(d: DefenseEntry) -> dict[str, Any]:
    """The entry as plain data (stage parameters, hashed into the store keys)."""
    return {**d.model_dump(mode="json", exclude_none=True), "key": d.key, "kind": d.kind}


def entry_from(data: dict[str, Any]) -> DefenseEntry:
    return DefenseEntry.model_validate({k: v for k, v in data.items()
                                        if k not in ("key", "kind")})
