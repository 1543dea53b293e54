"""The audit spec: what to audit (data, model) and how (attacks × budgets), from YAML or built in.

A spec file is read with ``yaml.safe_load`` and validated with pydantic; every problem becomes one
``AuditSpecError`` naming the field and the fix. Example::

    seed: 0
    dataset: digits                 # a built-in name, or {path: data.npz} / {path: d.csv, label_column: y}
    model: {zoo: cnn-small, epochs: 30}   # or {path: model_dir_or_file, trust_pickle: false}
    evaluation: {n_samples: 360, batch_size: 256}
    attacks:
      - {name: fgsm, norm: inf, eps: [0.0, 0.05, 0.1, 0.2, 0.3]}
      - {name: pgd, norm: inf, eps: [0.0, 0.05, 0.1, 0.2, 0.3], params: {steps: 40}}
    fail_under: {clean_accuracy: 0.9, "robust_accuracy@0.1": 0.5}
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from advkit.errors import AuditSpecError

DEFAULT_EPS = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    name: str | None = None
    path: str | None = None
    label_column: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of 'name' (a built-in dataset) or 'path' (a user file)")
        return self


class ModelSpec(_Strict):
    zoo: str | None = None
    path: str | None = None
    trust_pickle: bool = False
    epochs: int = Field(default=30, ge=1, le=1000)
    lr: float = Field(default=1e-3, gt=0, le=1)
    batch_size: int = Field(default=64, ge=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self):
        if (self.zoo is None) == (self.path is None):
            raise ValueError("give exactly one of 'zoo' (train a zoo model) or 'path' (a saved model)")
        return self


class AttackSpec(_Strict):
    name: str
    norm: str = "inf"
    eps: list[float] = Field(default_factory=lambda: list(DEFAULT_EPS))
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("eps")
    @classmethod
    def _eps(cls, v):
        if not v:
            raise ValueError("eps needs at least one value")
        if any(e < 0 for e in v):
            raise ValueError("eps values must be >= 0")
        return sorted(set(float(e) for e in v))


class EvaluationSpec(_Strict):
    n_samples: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=256, ge=1)


class AuditSpec(_Strict):
    title: str = "advkit audit"
    seed: int = 0
    dataset: DatasetSpec
    model: ModelSpec
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    attacks: list[AttackSpec]
    fail_under: dict[str, float] = Field(default_factory=dict)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, v):
        return {"name": v} if isinstance(v, str) else v

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, v):
        if not v:
            raise ValueError("name at least one attack")
        return v

    def sha256(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def default_spec() -> AuditSpec:
    """The built-in audit: digits, a cnn-small trained on the fly, FGSM and PGD L∞ over an eps sweep."""
    return AuditSpec(
        title="advkit default audit: digits / cnn-small",
        seed=0,
        dataset=DatasetSpec(name="digits"),
        model=ModelSpec(zoo="cnn-small", epochs=30),
        attacks=[
            AttackSpec(name="fgsm", norm="inf", eps=DEFAULT_EPS),
            AttackSpec(name="pgd", norm="inf", eps=DEFAULT_EPS, params={"steps": 40, "restarts": 1}),
        ],
    )


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the example in advkit.audit.spec)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, *, source: str = "spec") -> AuditSpec:
    if not isinstance(data, dict):
        raise AuditSpecError(f"{source}: the spec must be a YAML mapping (key: value), got {type(data).__name__}")
    try:
        spec = AuditSpec.model_validate(data)
    except ValidationError as exc:
        raise AuditSpecError(f"{source} is not a valid audit spec:\n{_format_errors(exc)}") from None
    from advkit import registry

    known = set(registry.list("evasion"))
    for a in spec.attacks:
        if a.name not in known:
            raise AuditSpecError(f"{source}: unknown attack {a.name!r}; known evasion attacks: {', '.join(sorted(known))}")
    return spec


def load_spec(path: str | Path) -> tuple[AuditSpec, str]:
    """Read and validate a YAML spec; returns the spec and the SHA-256 of the file's bytes."""
    p = Path(path)
    if not p.is_file():
        raise AuditSpecError(f"spec file {str(p)!r} does not exist; pass the path of a YAML audit spec")
    raw = p.read_bytes()
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise AuditSpecError(f"{p} is not valid YAML: {exc}") from None
    spec = parse_spec(data, source=str(p))
    if spec.model.path is not None and not Path(spec.model.path).is_absolute():
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"path": str(p.parent / spec.model.path)})})
    if spec.dataset.path is not None and not Path(spec.dataset.path).is_absolute():
        spec = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"path": str(p.parent / spec.dataset.path)})})
    return spec, hashlib.sha256(raw).hexdigest()
