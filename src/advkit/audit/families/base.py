"""What a threat family is to the audit runner (DESIGN §1, §3 "Family").

A family is one module in ``advkit.audit.families`` with one ``Family`` subclass, registered with
``@family``. The runner knows no family by name: it asks each active family (one whose spec
section is present, see ``Family.active``) for its stages, runs every stage through
``Family.run`` in plan order (a stage's ``deps`` are earlier stages whose records it receives),
stores each record as soon as it exists (``advkit.audit.store``), and finally hands each family its
records to turn into scenario results, report sections, findings and verdicts.

A family's spec section is a mapping under the family's ``name`` in the spec (the evasion family
reads the top-level ``attacks`` / ``ensemble`` / ``adapt`` keys it has always had); the family
validates it with its own pydantic model (``Family.parse``), so adding a family adds one module.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ValidationError

from advkit.audit.plan import Scenario
from advkit.audit.report import Report, ScenarioResult
from advkit.errors import AuditSpecError, short


@dataclass
class AuditContext:
    """What every stage of one audit shares: the spec, the loaded subject (data, target, model
    identity) and the evaluation points with their clean predictions."""

    spec: Any
    subject: Any
    x: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    n: int
    state: dict[str, Any] = field(default_factory=dict)  # per-family objects built at plan time

    @property
    def seed(self) -> int:
        return self.spec.seed

    def generator(self, sid: str) -> torch.Generator:
        """The generator of the stage (or check) ``sid``: derived from (seed, sid) alone, so a
        stage draws the same numbers whichever executor runs it and in whatever order."""
        return self.generator_for(self.seed, sid)

    def target_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Dataset inputs (e.g. the training split) in the space the target takes: a tabular
        target's unit scale, else checked against its contract."""
        from advkit.targets.features import FeatureSpaceTarget

        t = self.subject.target
        return t.to_unit(x) if isinstance(t, FeatureSpaceTarget) else t.check_inputs(x)

    @staticmethod
    def generator_for(seed: int, sid: str) -> torch.Generator:
        return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(sid.encode())) % 2**63)


def validation_message(exc: ValidationError, module: str) -> str:
    """A pydantic error as ``field: what is wrong`` parts; an unknown field points at the module
    ``advkit.audit.families.MODULE`` that declares the section."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown field (check the spelling; see advkit.audit.families.{module})"
        elif err["type"].endswith(("_type", "_parsing")):
            msg += f" (got {type(err['input']).__name__} {short(err['input'], 60)})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def validate_section(model: type[BaseModel], data: Any, *, source: str, module: str,
                     expected: str) -> Any:
    """``data`` (a family's raw spec section) validated as ``model``; AuditSpecError naming the
    field otherwise. ``expected`` says what the mapping holds, for the not-a-mapping error."""
    if not isinstance(data, dict):
        raise AuditSpecError(f"{source}: expected a mapping with {expected}, got "
                             f"{type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise AuditSpecError(f"{source}: {validation_message(exc, module)}") from None


class Family:
    """One threat family: its stages, how one runs, and its part of the report."""

    name: ClassVar[str]
    order: ClassVar[int] = 50  # families run and report in this order (supply chain first)
    threat: ClassVar[Any] = None  # its ThreatTag (advkit.threat_tags): on its verdicts and matrix
    gpu: ClassVar[bool] = False  # its stages can use a GPU (the ray executor asks for one)

    # -- the spec ----------------------------------------------------------------------------
    def section(self, spec) -> Any:
        """This family's section of ``spec`` as given (None when absent)."""
        return (getattr(spec, "families", None) or {}).get(self.name)

    def active(self, spec) -> bool:
        return self.section(spec) is not None

    def parse(self, data: Any, *, source: str) -> Any:
        """Validate this family's raw spec section; AuditSpecError naming the field otherwise.
        The default accepts nothing: a family with a section overrides it."""
        raise AuditSpecError(f"{source}: the {self.name} section takes no settings")

    def with_spec_dir(self, section: Any, spec_dir: Path, *, source: str) -> Any:
        """The parsed section once the spec file's folder is known (``load_spec``): relative
        paths resolved against it and the files they name checked now, before any data is
        loaded or model trained. The default has no paths."""
        return section

    # -- the plan ----------------------------------------------------------------------------
    def plan(self, spec) -> list[Scenario]:
        """Stages with stable ids, known before any data is loaded (spec checks use them)."""
        raise NotImplementedError

    def prepare(self, plan: list[Scenario], ctx: AuditContext) -> list[Scenario]:
        """The stages to run once the subject is loaded (e.g. adapted to the target's
        capabilities); the default runs the plan as it is."""
        return plan

    # -- running -----------------------------------------------------------------------------
    def key_inputs(self, sc: Scenario, ctx: AuditContext) -> dict[str, Any]:
        """What this stage's record depends on beyond the stage itself, the model, the data,
        the points evaluated and the seed (hashed into its store key)."""
        return {}

    def run(self, sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
        """Run one stage; return its JSON-able record (``deps``: records of ``sc.deps``)."""
        raise NotImplementedError

    # -- the report (from stored records only) -----------------------------------------------
    def results(self, records: list[dict], ctx: AuditContext) -> list[ScenarioResult]:
        return []

    def report(self, report: Report, records: list[dict], ctx: AuditContext) -> None:
        """Add this family's sections, findings and verdict to ``report``."""


_FAMILIES: dict[str, Family] = {}


def family(cls: type[Family]) -> type[Family]:
    """Class decorator: register a family (one instance) under ``cls.name``."""
    name = cls.name
    if name in _FAMILIES and type(_FAMILIES[name]) is not cls:
        raise ValueError(f"the family name {name!r} is already registered by "
                         f"{type(_FAMILIES[name]).__name__}")
    _FAMILIES[name] = cls()
    return cls


def families() -> list[Family]:
    """Every registered family, in run order."""
    from advkit.audit import families as _pkg  # noqa: F401 - imports the family modules

    _pkg.load_all()
    return sorted(_FAMILIES.values(), key=lambda f: (f.order, f.name))


def get(name: str) -> Family | None:
    families()
    return _FAMILIES.get(name)
