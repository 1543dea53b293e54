"""The audit spec: what to audit (data, model) and how (attacks × budgets), from YAML or built in.

A spec file is read with PyYAML's safe loader within size limits (``audit.yaml_limits``: no alias
bombs) and validated with pydantic; every problem becomes one
``AuditSpecError`` naming the field and the fix. Example::

    seed: 0
    dataset: digits                 # a built-in name, or {path: data.npz} / {path: d.csv, label_column: y}
    # {name: mnist, n_train: 20000}: a random 20,000 of the training split (drawn from the seed)
    # tabular data: {path: d.csv, label_column: y, preprocessing: none,   # or minmax / standard
    #                features: {immutable: [age], integer: [children], one_hot: [[a, b, c]],
    #                           bounds: {income: [0, 1000000]}}}
    model: {zoo: cnn-small, epochs: 30}   # a recipe (also lr, batch_size, optimizer, weight_decay,
                                          # lr_schedule: constant | cyclic | step + lr_milestones)
                                          # or {path: model_dir_or_file, trust_pickle: false}
                                          # (allow_dangerous: true, with trust_pickle, also loads
                                          # a file the scan calls dangerous: never by default)
                                          # or {class: "my_net:Net", kwargs: {...},
                                          #     weights: w.safetensors}: YOUR code, imported
                                          #     from the spec's folder (advkit.models.user_class)
                                          # or {url: http://127.0.0.1:8000/predict, budget: 5000,
                                          #     api_key_env: MY_KEY, query_log: queries.jsonl}:
                                          #     a model behind an API (advkit.targets.http; black
                                          #     box: score- or decision-based attacks only)
    evaluation: {n_samples: 360, batch_size: 256}   # shards: 4 splits FGSM/BIM's points into
                                                    # 4 stages (parallel on Ray, same results)
    attacks:
      - {name: fgsm, norm: inf, eps: [0.0, 0.05, 0.1, 0.2, 0.3]}
      - {name: pgd, norm: inf, eps: [0.0, 0.05, 0.1, 0.2, 0.3], params: {steps: 40}}
      - {name: deepfool, norm: l2}      # minimum-norm attacks run once; eps is not used
    ensemble: {norm: inf, eps: [0.1, 0.3], attacks: [pgd]}   # APGD-CE, APGD-T, then these
    adapt: false    # true (the built-in default audit): attacks the target cannot run are replaced
                    # (square) or dropped and the report says so; false: refused before anything
                    # runs. {enabled: true, params: {square: {n_queries: 5000}}}: replacements' params
    verdicts:                         # the headline verdict (advkit.audit.verdicts); defaults shown
      evasion: {min_ratio_to_clean: 0.5, min_robust_accuracy: 0.0, bound: value, budgets: {}}
    fail_under:                       # CI thresholds (advkit.audit.gate): METRIC[@EPS[/NORM]][:BOUND]
      clean_accuracy: 0.9
      "robust_accuracy@0.1:lower": 0.5      # at least (the interval's lower bound)
      "attack_success_rate@0.1": 0.3        # at most
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from advkit.audit.spec_sections import (  # noqa: F401 - re-exported: the spec's sections
    DatasetSpec,
    EvasionVerdictSpec,
    FeaturesSpec,
    ModelSpec,
    VerdictsSpec,
    _Strict,
)
from advkit.audit.yaml_limits import MAX_BYTES, load_yaml
from advkit.errors import MAX_SEED, AdvkitError, AuditSpecError, short
from advkit.paths import is_file, path_error

DEFAULT_EPS = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]


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


class EnsembleSpec(_Strict):
    """The worst-case verdict: APGD-CE, then targeted APGD-DLR on survivors, then ``attacks``."""

    norm: str = "inf"
    eps: list[float] = Field(default_factory=lambda: [e for e in DEFAULT_EPS if e > 0])
    attacks: list[str] = Field(default_factory=list)
    version: str = "standard"

    @field_validator("eps")
    @classmethod
    def _eps(cls, v):
        if not v or any(e <= 0 for e in v):
            raise ValueError("ensemble eps values must be > 0 (at least one)")
        return sorted(set(float(e) for e in v))

    @field_validator("version")
    @classmethod
    def _version(cls, v):
        if v not in ("standard", "custom"):
            raise ValueError("version must be 'standard' (APGD-CE, APGD-T first) or 'custom'")
        return v


class AdaptSpec(_Strict):
    """Adapting the plan to the target's capabilities (``advkit.audit.capabilities``): when
    ``enabled``, a scenario whose attack the target cannot run is replaced by one it can run at
    the same budget, or dropped, and the report says which and why; ``params`` holds parameters
    (other than eps and norm) of the replacement attacks by name."""

    enabled: bool = False
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)


class EvaluationSpec(_Strict):
    """``shards``: shard-safe evasion attacks' points in this many merged stages (for Ray)."""

    n_samples: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=256, ge=1)
    shards: int = Field(default=1, ge=1, le=1024)


class ExecutorSpec(_Strict):
    """How the stages run (``advkit.audit.executors``): ``local`` (here, one by one) or ``ray``
    (Ray tasks; ``address`` an existing cluster, e.g. ``ray://head:10001`` or ``auto``, else a
    local Ray instance with ``num_cpus`` CPUs, default all of this machine's). ``executor: ray``
    is short for ``executor: {name: ray}``. Results do not depend on the executor."""

    name: Literal["local", "ray"] = "local"
    address: str | None = Field(default=None, min_length=1, max_length=500)
    num_cpus: int | None = Field(default=None, ge=1, le=4096)

    @model_validator(mode="after")
    def _address_needs_ray(self):
        if self.name != "ray" and (self.address is not None or self.num_cpus is not None):
            raise ValueError("address and num_cpus apply to the ray executor only; set name: ray "
                             "or remove them")
        return self


class AuditSpec(_Strict):
    title: str = Field(default="advkit audit", max_length=500)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    dataset: DatasetSpec
    model: ModelSpec
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    attacks: list[AttackSpec] = Field(default_factory=list)
    ensemble: EnsembleSpec | None = None
    adapt: AdaptSpec = Field(default_factory=AdaptSpec)
    verdicts: VerdictsSpec = Field(default_factory=VerdictsSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)
    fail_under: dict[str, float] = Field(default_factory=dict)
    # one section per threat family (advkit.audit.families); each family validates its own
    supply_chain: bool | None = None  # default: on whenever the model comes from a file
    backdoor: dict[str, Any] | None = None
    poisoning: dict[str, Any] | None = None
    defenses: Any = None
    privacy: dict[str, Any] | None = None
    extraction: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None
    privacy_defenses: dict[str, Any] | None = None
    watermark: dict[str, Any] | None = None

    _families: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def families(self) -> dict[str, Any]:
        """Each family section given, as its family parsed it (set by ``parse_spec``)."""
        return self._families

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, v):
        return {"name": v} if isinstance(v, str) else v

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_shorthand(cls, v):
        return {"name": v} if isinstance(v, str) else v

    @field_validator("adapt", mode="before")
    @classmethod
    def _adapt_shorthand(cls, v):
        return {"enabled": v} if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _something_to_run(self):
        from advkit.audit.families import SECTIONS

        if not self.attacks and self.ensemble is None and all(
                getattr(self, s) in (None, False) for s in SECTIONS if s != "supply_chain"):
            raise ValueError("name at least one attack (attacks: [...]), an ensemble, or a "
                             f"threat family section ({', '.join(SECTIONS)})")
        return self

    def sha256(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def default_spec() -> AuditSpec:
    """The built-in audit: digits, a cnn-small trained on the fly, FGSM and PGD L∞ over an eps sweep,
    and the worst-case ensemble (APGD-CE, APGD-T, then PGD) as the verdict; adapted to the target
    (``adapt``: on a model without gradients, Square replaces what needs them)."""
    return AuditSpec(
        title="advkit default audit: digits / cnn-small",
        seed=0,
        dataset=DatasetSpec(name="digits"),
        model=ModelSpec(zoo="cnn-small", epochs=30),
        attacks=[
            AttackSpec(name="fgsm", norm="inf", eps=DEFAULT_EPS),
            AttackSpec(
                name="pgd", norm="inf", eps=DEFAULT_EPS, params={"steps": 40, "restarts": 1}
            ),
        ],
        ensemble=EnsembleSpec(norm="inf", eps=[0.05, 0.1, 0.2, 0.3], attacks=["pgd"]),
        adapt=AdaptSpec(enabled=True),
    )


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p)[:60] for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the example in advkit.audit.spec)"
        elif err["type"].endswith(("_type", "_parsing", "finite_number")):
            msg += f" (got {type(err['input']).__name__} {short(err['input'], 60)})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_spec(data: Any, *, source: str = "spec") -> AuditSpec:
    if not isinstance(data, dict):
        raise AuditSpecError(
            f"{source}: the spec must be a YAML mapping (key: value), got {type(data).__name__}"
        )
    try:
        spec = AuditSpec.model_validate(data)
    except ValidationError as exc:
        raise AuditSpecError(
            f"{source} is not a valid audit spec:\n{_format_errors(exc)}"
        ) from None
    from advkit import registry

    known = set(registry.list("evasion"))
    names = [a.name for a in spec.attacks] + (spec.ensemble.attacks if spec.ensemble else [])
    for name in names:
        if name not in known:
            raise AuditSpecError(
                f"{source}: unknown attack {short(name)}; known evasion attacks: "
                f"{', '.join(sorted(known))}"
            )
    _check_adapt(spec, source)
    _parse_families(spec, source)
    _check_scenarios(spec, source)
    return spec


def _parse_families(spec: AuditSpec, source: str) -> None:
    """Each family section through its family's own validator (a reserved name without its
    module is one clear error)."""
    from advkit.audit import families as fam_pkg
    from advkit.audit.families.base import families, get

    for name in fam_pkg.SECTIONS:
        raw = getattr(spec, name)
        if raw is None:
            continue
        fam = get(name)
        if fam is None:
            raise AuditSpecError(
                f"{source}: {name}: the {name} family is not available in this version of "
                "advkit (the name is reserved for it); remove the section")
        spec._families[name] = fam.parse(raw, source=f"{source}: {name}")
    for fam in families():  # every family's stages are planned once now: a bad request fails
        if fam.active(spec):  # before any data is loaded or model trained
            try:
                fam.plan(spec)
            except AuditSpecError:
                raise
            except AdvkitError as exc:
                raise AuditSpecError(f"{source}: {fam.name}: {exc}") from None


def _check_adapt(spec: AuditSpec, source: str) -> None:
    """Each ``adapt.params`` entry names an evasion attack and builds with its parameters."""
    from advkit import registry

    known = set(registry.list("evasion"))
    for name, params in spec.adapt.params.items():
        if name not in known:
            raise AuditSpecError(f"{source}: adapt.params: unknown attack {short(name)}; known "
                                 f"evasion attacks: {', '.join(sorted(known))}")
        if {"eps", "norm"} & set(params):
            raise AuditSpecError(f"{source}: adapt.params.{name}: eps and norm come from the "
                                 "scenario it replaces; remove them")
        try:
            registry.create(name, **params)
        except AdvkitError as exc:
            raise AuditSpecError(f"{source}: adapt.params.{name}: {exc}") from None


def _check_scenarios(spec: AuditSpec, source: str) -> None:
    """Build every scenario's attack once, so a bad norm or parameter (or zoo name) fails before
    any work."""
    from advkit import registry
    from advkit.audit.plan import make_plan
    from advkit.models.zoo import ZOO_NAMES

    if spec.model.zoo is not None and spec.model.zoo not in ZOO_NAMES:
        raise AuditSpecError(f"{source}: model.zoo: unknown zoo model {short(spec.model.zoo)}; "
                             f"zoo models: {', '.join(ZOO_NAMES)}")
    try:
        plan = make_plan(spec)
    except AdvkitError as exc:
        raise AuditSpecError(f"{source}: {exc}") from None
    for sc in plan:
        if sc.kind != "attack":
            continue
        try:
            registry.create(sc.attack, **sc.attack_params())
        except AdvkitError as exc:
            raise AuditSpecError(f"{source}: attack {sc.id}: {exc}") from None
    check_gates(spec, plan, source)


def check_gates(spec: AuditSpec, plan=None, source: str = "spec") -> None:
    """Every ``fail_under`` threshold and verdict budget names a known metric and a budget the plan
    measures (``advkit.audit.gate``); AuditSpecError otherwise, before anything runs."""
    from advkit.audit.gate import check_thresholds, parse_thresholds
    from advkit.audit.plan import make_plan, plan_budgets

    plan = make_plan(spec) if plan is None else plan
    thresholds = parse_thresholds(spec.fail_under, source=f"{source}: fail_under")
    check_thresholds(thresholds, plan, source=f"{source}: fail_under")
    budgets = plan_budgets(plan)
    for norm, eps in spec.verdicts.evasion.budgets.items():
        if norm not in budgets.norms or not budgets.answers(norm, eps):
            raise AuditSpecError(
                f"{source}: verdicts.evasion.budgets: {norm} eps {eps:g} is not a budget of the "
                f"plan (measured: {budgets.describe()})")


def requested_budgets(spec: AuditSpec) -> dict[str, set[float]]:
    """Budgets asked for per norm by thresholds and verdict budgets (for norms measured by
    minimum-norm attacks only, the worst case is computed at these)."""
    from advkit.audit.gate import parse_thresholds
    from advkit.audit.plan import make_plan, plan_budgets

    norms = plan_budgets(make_plan(spec)).norms
    out: dict[str, set[float]] = {}
    for t in parse_thresholds(spec.fail_under):
        if t.eps is not None:
            for norm in [t.norm] if t.norm else norms:
                out.setdefault(norm, set()).add(t.eps)
    for norm, eps in spec.verdicts.evasion.budgets.items():
        out.setdefault(norm, set()).add(eps)
    return out


def load_spec(path: str | Path) -> tuple[AuditSpec, str]:
    """Read and validate a YAML spec; returns the spec and the SHA-256 of the file's bytes."""
    p = Path(path)
    if not is_file(p, "spec"):
        raise AuditSpecError(
            f"spec file {str(p)!r} does not exist; pass the path of a YAML audit spec"
        )
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)  # the spec's hash is of these bytes
    except OSError as exc:
        raise path_error("spec", p, exc) from None
    data = load_yaml(raw, source=str(p))
    spec = parse_spec(data, source=str(p))
    for part in ("model", "dataset"):  # relative paths are relative to the spec file
        sub = getattr(spec, part)
        if sub.path is not None and not Path(sub.path).is_absolute():
            sub = sub.model_copy(update={"path": str(p.parent / sub.path)})
            spec = spec.model_copy(update={part: sub})
    model = spec.model
    for name in ("weights", "query_log", "api_key_file"):
        value = getattr(model, name)
        if value is not None and not Path(value).is_absolute():
            model = model.model_copy(update={name: str(p.parent / value)})
    model._spec_dir = str(p.parent.resolve())
    spec = spec.model_copy(update={"model": model})
    from advkit.audit.families.base import get

    spec._families = {name: get(name).with_spec_dir(sec, p.parent.resolve(), source=str(p))
                      for name, sec in spec._families.items()}
    return spec, hashlib.sha256(raw).hexdigest()
