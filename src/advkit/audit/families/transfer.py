"""The transfer family: adversarial examples crafted on surrogate models the attacker trains
itself, scored on the audited model (ATLAS AML.T0043.002 Craft Adversarial Data: Black-Box
Transfer), and the transferability matrix across model families.

Papernot, McDaniel & Goodfellow (2016), "Transferability in Machine Learning: from Phenomena to
Black-Box Attacks using Adversarial Samples"; Papernot et al. (2017), "Practical Black-Box Attacks
against Machine Learning" (substitutes for families without gradients). One stage per budget eps:
:func:`advkit.evaluation.transferability.transferability_matrix` fits one model per family on
(at most ``n_train`` of) the audit's training split, crafts adversarial examples of the evaluation
points on each, and scores them on every family and on the audited model (labels only, every query
counted). The audited model's column is the attack an adversary with the training data but no
access to the weights mounts; the rest of the matrix says how well examples move between
families on this data.

Spec::

    transfer: {eps: [0.1, 0.2], families: [nn, logreg, linear_svm, tree, knn, ensemble],
               attack: pgd, steps: 20, n_seed: 50, n_train: 5000}

Verdict rule (``FOOLED``): vulnerable when, at some budget, some family's examples fool the
audited model on at least half of the evaluation points both classify correctly (the estimate),
the same bar as the evasion verdict's default (an attacker turns half of the correct
predictions into errors).
"""

from __future__ import annotations

import math
import time

import torch
from pydantic import Field

from advkit.attacks.evasion.transfer import BLACK_BOX_TRANSFER, CRAFTERS
from advkit.audit.families.base import AuditContext, Family, family, validate_section
from advkit.audit.plan import Scenario
from advkit.audit.report import Finding, Plot, Report, ScenarioResult, Section, Series, Table, Verdict
from advkit.audit.spec_sections import _Strict
from advkit.errors import AdvkitError, AuditSpecError
from advkit.evaluation.metrics import Proportion
from advkit.evaluation.transferability import AUDITED, FAMILIES, check_families

FOOLED = 0.5


class TransferSpec(_Strict):
    eps: list[float] = Field(default_factory=lambda: [0.1], min_length=1, max_length=10)
    families: list[str] = Field(default_factory=lambda: list(FAMILIES), min_length=1)
    attack: str = "pgd"
    steps: int = Field(default=20, ge=1, le=1000)
    n_seed: int = Field(default=50, ge=2, le=100_000)  # substitutes' seed points
    n_train: int = Field(default=5000, ge=10, le=1_000_000)  # training points the families see


_prop = Proportion.from_dict


@family
class TransferFamily(Family):
    """Transfer attacks from surrogate families, and the transferability matrix."""

    name = "transfer"
    gpu = True  # gradient attacks and training
    order = 22  # after evasion and beside its defenses
    threat = BLACK_BOX_TRANSFER

    def parse(self, data, *, source: str) -> TransferSpec:
        sec = validate_section(TransferSpec, data, source=source, module="transfer",
                               expected="'eps' (and optionally 'families', 'attack', 'steps', "
                                        "'n_seed', 'n_train')")
        try:
            check_families(sec.families)
        except AdvkitError as exc:
            raise AuditSpecError(f"{source}.families: {exc}") from None
        if sec.attack not in CRAFTERS:
            raise AuditSpecError(f"{source}.attack: {sec.attack!r} is not a crafting attack; "
                                 f"use one of {', '.join(CRAFTERS)}")
        for e in sec.eps:
            if not 0 < e <= 1:
                raise AuditSpecError(f"{source}.eps: {e} is outside (0, 1]; budgets are L∞ "
                                     "radii in the input's unit scale")
        if len(set(sec.eps)) != len(sec.eps):
            raise AuditSpecError(f"{source}.eps: {sec.eps} repeats a budget")
        return sec

    def plan(self, spec) -> list[Scenario]:
        sec: TransferSpec = self.section(spec)
        params = {"families": list(sec.families), "attack": sec.attack, "steps": sec.steps,
                  "n_seed": sec.n_seed, "n_train": sec.n_train}
        return [Scenario(f"transfer/Linf/eps={e:g}", sec.attack, "Linf", e, dict(params),
                         kind="transfer", family=self.name) for e in sec.eps]

    def run(self, sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
        from advkit.evaluation.transferability import transferability_matrix

        t0 = time.perf_counter()
        p = sc.params
        ds = ctx.subject.dataset
        g = ctx.generator(sc.id)
        pick = torch.randperm(len(ds.x_train), generator=g)[:p["n_train"]]
        x_train = ctx.target_inputs(ds.x_train[pick]).to(torch.float32)
        m = transferability_matrix(
            x_train, ds.y_train[pick], ctx.x.to(torch.float32), ctx.y, families=p["families"],
            eps=sc.eps, attack=p["attack"], steps=p["steps"], n_seed=p["n_seed"],
            seed=int(torch.randint(0, 2**31 - 1, (1,), generator=g)),
            audited=ctx.subject.target, audited_clean_pred=ctx.clean_pred)
        return {"id": sc.id, "kind": sc.kind, "eps": sc.eps, "params": p, "matrix": m.as_dict(),
                "seconds": time.perf_counter() - t0}

    # -- the report ----------------------------------------------------------------------------
    def results(self, records: list[dict], ctx: AuditContext) -> list[ScenarioResult]:
        out = []
        for r in records:
            src, best = _best(r)
            out.append(ScenarioResult(
                id=r["id"], kind="transfer", attack=r["params"]["attack"],
                params={"eps": r["eps"], "families": r["params"]["families"]},
                metrics={"eps": r["eps"], "best_transfer_success": best, "best_source": src,
                         "audited_queries": r["matrix"]["victim_queries"].get("audited")},
                seconds=r["seconds"], from_store=bool(r.get("from_store"))))
        return out

    def report(self, report: Report, records: list[dict], ctx: AuditContext) -> None:
        records = sorted(records, key=lambda r: r["eps"])
        if not records:
            return
        plots, tables, figures = [], [], []
        for r in records:
            m = r["matrix"]
            rates = [[_prop(c) for c in row] for row in m["rates"]]
            plots.append(Plot(
                title=f"Transfer success, {m['attack']} L∞ eps {r['eps']:g}", xlabel="victim",
                ylabel="source (crafted on)", kind="heatmap",
                series=[Series(label=s, x=list(m["victim_labels"]),
                               y=[None if c.n == 0 else c.value for c in row])
                        for s, row in zip(m["source_labels"], rates, strict=True)]))
            tables.append(Table(title=f"eps {r['eps']:g}: share of each source's examples that "
                                      "fool the victim", columns=["source", *m["victim_labels"]],
                                rows=[[s, *row] for s, row in zip(m["source_labels"], rates,
                                                                 strict=True)]))
            src, best = _best(r)
            vulnerable = best is not None and best.value >= FOOLED
            text = (f"L∞ eps={r['eps']:g}: examples crafted on the {src} fool the audited model "
                    f"on {best.value:.1%} of the points both classify correctly "
                    f"[{best.lo:.3f}, {best.hi:.3f}] (n={best.n})"
                    if best is not None else f"L∞ eps={r['eps']:g}: no point to score")
            figures.append({"text": text, "judged": best is not None,
                            "vulnerable": vulnerable})
            report.findings.append(Finding(
                check="transfer.audited_model", severity="critical" if vulnerable else "info",
                metric="transfer_success", value=None if best is None else best.value,
                threshold=FOOLED, threat=self.name, scenario=r["id"], passed=not vulnerable,
                skipped=best is None, threat_tag=BLACK_BOX_TRANSFER,
                why=text + ("; an attacker with data like the training set but no access to "
                            "the model crafts working examples offline"),
                fix="adversarial training (defenses: pgd-at) raises the cost of transferred "
                    "examples as of white-box ones; limit who can query the model"))
        judged = [f for f in figures if f["judged"]]
        status = ("not assessed" if not judged else "vulnerable"
                  if any(f["vulnerable"] for f in judged) else "robust")
        report.verdicts.append(Verdict(
            threat=self.name, status=status, figures=figures,
            rule={"fooled": FOOLED, "text": "vulnerable when some surrogate family's examples "
                  f"fool the audited model on at least {FOOLED:.0%} of the points both classify "
                  "correctly"},
            reason=("surrogates trained on the same data craft examples that fool the model"
                    if status == "vulnerable" else "no surrogate's examples transferred past "
                    "the bar at the budgets tried" if status == "robust"
                    else "no point could be scored")))
        q = records[-1]["matrix"]["victim_queries"].get("audited")
        report.sections.append(Section(
            title="Transfer attacks across model families", plots=plots, tables=tables,
            text=("One model per family is fitted on the audit's training data; adversarial "
                  "examples of the evaluation points are crafted on each (white-box, or on a "
                  "substitute trained from its labels with Jacobian augmentation for families "
                  "without gradients, marked \"via substitute\") and scored on every family and "
                  f"on the audited model (last column, labels only; {q} queries at the largest "
                  "budget). A cell counts only the points both the source and the victim "
                  "classify correctly; 95 % Wilson intervals. Papernot, McDaniel & Goodfellow "
                  "(2016); Papernot et al. (2017).")))


def _best(r: dict) -> tuple[str | None, Proportion | None]:
    """The source whose examples fool the audited model most often (its rate)."""
    m = r["matrix"]
    if AUDITED not in m["victim_labels"]:
        return None, None
    j = m["victim_labels"].index(AUDITED)
    cells = [(s, _prop(row[j])) for s, row in zip(m["source_labels"], m["rates"], strict=True)]
    cells = [(s, c) for s, c in cells if c.n > 0 and not math.isnan(c.value)]
    return max(cells, key=lambda sc: sc[1].value) if cells else (None, None)
