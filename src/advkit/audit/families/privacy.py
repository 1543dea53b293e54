"""The privacy family: membership inference against the audited model (AML.T0024.000).

The audited model's training split gives the members, the held-out test split the non-members:
``members`` of each are drawn (from the generator of ``privacy/split``) and every attack of the
section scores them; each is measured with ``advkit.evaluation.privacy`` (ROC AUC, TPR at 0.1 %
and 1 % FPR with Clopper-Pearson intervals, membership advantage, the empirical ε lower bound of
Jagielski et al. 2020). Attacks:

- ``loss``: LOSS / confidence threshold (Yeom et al. 2018, IEEE CSF);
- ``entropy``: modified entropy (Song & Mittal 2021, USENIX Security);
- ``lira``: the likelihood ratio attack (Carlini et al. 2022, IEEE S&P), every variant scored,
  ``variant`` the one judged (default ``online``);
- ``rmia``: RMIA (Zarifzadeh et al. 2024, ICML), ``online`` or ``offline``; its population points
  are test points that are neither scored nor trained on by any model;
- ``label-only``: label-only attacks (Choquette-Choo et al. 2021, ICML) that ask the model's
  predicted labels only (a labels-only API is attacked too), ``variant: augmentation`` (share of
  translated or noisy copies still labelled right) or ``boundary`` (HopSkipJump's distance to the
  decision boundary within ``max_queries`` label queries a point); the record holds the queries;
- ``shadow``: Shokri et al. (2017, IEEE S&P) shadow-model attack, one attack model per class
  trained on the reference models' sorted probability vectors (IN/OUT labels from their masks).

LiRA, RMIA and shadow need reference models: ``n_reference`` models of the spec's model recipe,
trained together (``advkit.attacks.privacy.shadow``: one vmap pass, Adam at the recipe's rate,
batch size, weight decay and epochs) on random halves of a pool made of the whole training split
and the non-members (each pool point IN exactly half the models), cached by a hash of pool,
recipe and seed under the model cache. Example::

    model: {zoo: mlp, kwargs: {hidden: [256]}, epochs: 60}
    privacy:
      members: 200
      membership:
        - {name: loss}
        - {name: entropy}
        - {name: lira, params: {n_reference: 8}}
        - {name: rmia, params: {n_reference: 8, variant: offline}}
        - {name: shadow, params: {n_reference: 8}}
        - {name: label-only, params: {variant: boundary, max_queries: 500}}

Model inversion (AML.T0024.001, ``advkit.audit.inversion_stages``): ``inversion`` runs MI-Face
(Fredrikson et al. 2015) once per class on an image model with input gradients and scores the
reconstructions; ``attribute`` infers each named sensitive feature of a table (a categorical
column's one-hot group, or a feature with at most 20 distinct values) from the model's answers and
the record's other features (Fredrikson et al. 2014; Yeom et al. 2018), on the same members and
non-members, against the baseline that guesses the marginal's most common value::

    privacy:
      inversion: {classes: [0, 1, 2], params: {steps: 1000, denoise: 0.5}}
      attribute: {features: [sex, race], method: fredrikson}

At least one of ``membership``, ``inversion`` and ``attribute`` is needed.

Stages (stable ids): ``privacy/references/n=M`` per distinct reference count,
``privacy/membership/LABEL`` per attack (``label`` defaults to the name), ``privacy/inversion``
and ``privacy/attribute/FEATURE``. Each record holds the metrics of every score variant of its
attack (JSON), so the report is built from records alone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, model_validator

from advkit.audit.families.base import AuditContext, Family, family, validate_section
from advkit.audit.plan import Scenario
from advkit.audit.spec_sections import Entry, _Strict, require_distinct
from advkit.errors import AdvkitError, AuditSpecError, UnknownParameterError, short
from advkit.params import check_values, declarations, param
from advkit.threat_tags import tag

log = logging.getLogger("advkit.audit")
THREAT = tag("AML.T0024.000", "black box")
LIRA_VARIANTS = ("online", "online-fixed-var", "offline", "offline-fixed-var",
                 "offline-density", "offline-density-fixed-var")
ROC_POINTS = 300  # ROC points kept per variant (log-spaced in FPR) for the report's plot


@dataclass(frozen=True, kw_only=True)
class LiraSettings:
    """The audit's settings of a LiRA entry (beside LiRA's own ``min_std``)."""

    n_reference: int = param(8, int, lo=2, hi=256, doc="reference models (half IN per point)")
    variant: str = param("online", str, choices=LIRA_VARIANTS, doc="the score judged")


@dataclass(frozen=True, kw_only=True)
class RmiaSettings:
    """The audit's settings of an RMIA entry (beside RMIA's ``gamma`` and ``offline_a``)."""

    n_reference: int = param(4, int, lo=2, hi=256, doc="reference models (half IN per point)")
    variant: str = param("online", str, choices=("online", "offline"), doc="the score judged")
    n_population: int | None = param(None, int, lo=1, optional=True,
                                     doc="population points z (None: every unused test point)")


@dataclass(frozen=True, kw_only=True)
class ShadowSettings:
    """The audit's settings of a Shokri shadow-model entry (beside the attack model's own)."""

    n_reference: int = param(8, int, lo=2, hi=256, doc="shadow (reference) models")


def _algorithms() -> dict[str, tuple[type, type | None]]:
    from advkit.attacks.privacy.entropy import ModifiedEntropy
    from advkit.attacks.privacy.label_only import LabelOnly
    from advkit.attacks.privacy.lira import LiRA
    from advkit.attacks.privacy.loss_threshold import LossThreshold
    from advkit.attacks.privacy.rmia import RMIA
    from advkit.attacks.privacy.shokri import Shokri

    return {"loss": (LossThreshold, None), "entropy": (ModifiedEntropy, None),
            "lira": (LiRA, LiraSettings), "rmia": (RMIA, RmiaSettings),
            "label-only": (LabelOnly, None), "shadow": (Shokri, ShadowSettings)}


ATTACKS = ("loss", "entropy", "lira", "rmia", "label-only", "shadow")
NEEDS_REFERENCES = ("lira", "rmia", "shadow")
ATTRIBUTE_METHODS = ("fredrikson", "yeom")


def split_params(name: str, params: dict) -> tuple[dict, dict]:
    """(the algorithm's parameters, the audit settings) of one entry, each checked against its
    declarations (unknown names and bad values raise the one parameter-error format)."""
    algo, settings = _algorithms()[name]
    own = set(declarations(settings)) if settings is not None else set()
    known = sorted(set(declarations(algo)) | own)
    for k, v in params.items():
        if k not in known:
            raise UnknownParameterError(name, k, v, known)
    a = {k: v for k, v in params.items() if k not in own}
    s = {k: v for k, v in params.items() if k in own}
    check_values(algo, a)
    algo(**a)
    if settings is not None:
        check_values(settings, s)
        s = vars(settings(**s))
    return a, s


class MembershipSpec(Entry):
    pass


class InversionSpec(_Strict):
    classes: list[int] | None = Field(default=None, min_length=1, max_length=1000)  # None: all
    params: dict[str, Any] = Field(default_factory=dict)  # MIFace's parameters


class AttributeSpec(_Strict):
    features: list[str] = Field(min_length=1, max_length=50)
    method: str = "fredrikson"  # the method judged (both are measured)

    @model_validator(mode="after")
    def _check(self):
        require_distinct(self.features, "attribute features")
        if self.method not in ATTRIBUTE_METHODS:
            raise ValueError(f"method must be one of {', '.join(ATTRIBUTE_METHODS)}, got "
                             f"{short(self.method)}")
        return self


class PrivacySpec(_Strict):
    membership: list[MembershipSpec] = Field(default_factory=list)
    inversion: InversionSpec | None = None
    attribute: AttributeSpec | None = None
    members: int = Field(default=200, ge=10, le=100_000)  # members scored (and non-members)

    @model_validator(mode="after")
    def _distinct(self):
        if not (self.membership or self.inversion or self.attribute):
            raise ValueError("give at least one of membership, inversion and attribute")
        require_distinct([m.key for m in self.membership], "membership attacks")
        return self


def recipe_for(spec, source: str = "privacy"):
    from advkit.models.cache import Recipe

    try:
        return Recipe.from_spec(spec.model)
    except AdvkitError as exc:
        raise AuditSpecError(f"{source}: the model recipe: {exc}") from None


@family
class PrivacyFamily(Family):
    """Membership inference (AML.T0024.000 Infer Training Data Membership) and model inversion
    (AML.T0024.001 Invert ML Model)."""

    name = "privacy"
    gpu = True  # gradient attacks and training
    order = 60
    threat = THREAT

    def parse(self, data, *, source: str) -> PrivacySpec:
        sec = validate_section(PrivacySpec, data, source=source, module="privacy",
                               expected="'membership', 'inversion' or 'attribute' (and "
                                        "optionally 'members')")
        if sec.inversion is not None:
            from advkit.attacks.privacy.mi_face import MIFace

            try:
                for k, v in sec.inversion.params.items():
                    if k not in declarations(MIFace):
                        raise UnknownParameterError("mi_face", k, v, sorted(declarations(MIFace)))
                check_values(MIFace, sec.inversion.params)
                MIFace(**sec.inversion.params)
            except AdvkitError as exc:
                raise AuditSpecError(f"{source}.inversion: {exc}") from None
            if any(c < 0 for c in sec.inversion.classes or []):
                raise AuditSpecError(f"{source}.inversion.classes: class indices are >= 0, got "
                                     f"{short(sec.inversion.classes)}")
        for i, m in enumerate(sec.membership):
            if m.name not in ATTACKS:
                raise AuditSpecError(f"{source}.membership[{i}].name: unknown membership attack "
                                     f"{short(m.name)}; membership attacks: {', '.join(ATTACKS)}")
            try:
                split_params(m.name, m.params)
            except AdvkitError as exc:
                raise AuditSpecError(f"{source}.membership[{i}] ({m.key}): {exc}") from None
        return sec

    def plan(self, spec) -> list[Scenario]:
        sec: PrivacySpec = self.section(spec)
        needs_refs = [m for m in sec.membership if m.name in NEEDS_REFERENCES]
        recipe = None
        if needs_refs:
            if spec.model.zoo is None:
                given = short(spec.model.path or spec.model.class_)
                raise AuditSpecError(
                    f"privacy: {needs_refs[0].key} needs reference models trained like the "
                    f"audited one, and the model comes from {given}, which advkit cannot "
                    "retrain: give a recipe (model: {zoo: NAME, epochs: N}) or keep to the loss, "
                    "entropy and label-only attacks")
            recipe = recipe_for(spec).as_dict()
        common = {"members": sec.members}
        out, refs = [], {}
        for m in needs_refs:
            n = split_params(m.name, m.params)[1]["n_reference"]
            if n not in refs:
                refs[n] = f"privacy/references/n={n}"
                out.append(Scenario(refs[n], "references", "none", None,
                                    {**common, "recipe": recipe, "n_reference": n},
                                    kind="references", family=self.name))
        if sec.inversion is not None:
            out.append(Scenario("privacy/inversion", "mi_face", "none", None,
                                {**common, "classes": sec.inversion.classes,
                                 "algorithm": dict(sec.inversion.params)},
                                kind="inversion", family=self.name))
        for f in (sec.attribute.features if sec.attribute else []):
            out.append(Scenario(f"privacy/attribute/{f}", "attribute", "none", None,
                                {**common, "feature": f, "method": sec.attribute.method},
                                kind="attribute", family=self.name))
        for m in sec.membership:
            algo, settings = split_params(m.name, m.params)
            deps = (refs[settings["n_reference"]],) if "n_reference" in settings else ()
            p = {**common, "label": m.key, "algorithm": algo, "settings": settings}
            if deps:
                p.update(recipe=recipe)
            out.append(Scenario(f"privacy/membership/{m.key}", m.name, "none", None, p,
                                kind="membership", family=self.name, deps=deps))
        return out

    def prepare(self, plan, ctx: AuditContext) -> list[Scenario]:
        from advkit.audit import inversion_stages, privacy_stages

        privacy_stages.check_data(plan, ctx)
        inversion_stages.check(plan, ctx)
        return plan

    def run(self, sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
        from advkit.audit import privacy_stages

        t0 = time.perf_counter()
        if sc.kind in ("inversion", "attribute"):
            from advkit.audit import inversion_stages

            rec = inversion_stages.run_stage(sc, ctx)
        else:
            rec = privacy_stages.run_stage(sc, ctx)
        return {"id": sc.id, "kind": sc.kind, "attack": sc.attack, **rec,
                "seconds": time.perf_counter() - t0}

    def results(self, records, ctx: AuditContext):
        from advkit.audit import inversion_report, privacy_report

        return privacy_report.results(records) + inversion_report.results(records)

    def report(self, report, records, ctx: AuditContext) -> None:
        from advkit.audit import inversion_report, privacy_report

        privacy_report.add_to(report, records)
        inversion_report.add_to(report, records)


# -- reference models, cached --------------------------------------------------------------------
def load_references(folder):
    """The ShadowModels saved in ``folder`` (None when absent or damaged)."""
    from torch.func import stack_module_state

    from advkit.attacks.privacy.shadow import ShadowModels
    from advkit.models.cache import load_cached

    meta = folder / "masks.json"
    if not meta.is_file():
        return None
    try:
        masks = torch.tensor(json.loads(meta.read_text())["masks"], dtype=torch.bool)
        models = [load_cached(folder / f"m{i}") for i in range(masks.shape[0])]
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring damaged reference-model cache %s: %s", folder, exc)
        models = [None]
    if any(m is None for m in models):
        shutil.rmtree(folder, ignore_errors=True)
        return None
    nets = [m.model.eval() for m in models]
    params, buffers = stack_module_state(nets)
    params = {k: v.detach() for k, v in params.items()}
    import copy

    return ShadowModels(copy.deepcopy(nets[0]).to("meta"), params, buffers, masks)


def store_references(refs, folder, info, extra: dict) -> None:
    from advkit.models.io import save_model

    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for i in range(refs.n_models):
            save_model(refs.model(i), tmp / f"m{i}", dataset_info=info, extra=extra)
        (tmp / "masks.json").write_text(json.dumps({"masks": refs.masks.tolist()}))
        tmp.rename(folder)
    except OSError as exc:  # a read-only or raced cache only costs time
        log.warning("could not cache reference models in %s: %s", folder, exc)
        shutil.rmtree(tmp, ignore_errors=True)
