"""The tables and plots of the defenses family's report section (raw values; renderers format)."""

from __future__ import annotations

import torch

from advkit.audit.report import Plot, Section, Series, Table
from advkit.evaluation.metrics import Proportion, proportion

TEXT = (
    "Every budgeted evasion scenario (eps > 0) ran against the undefended model (the evasion "
    "family) and against each defended one; eps 0 is the clean accuracy. Robust accuracy is the "
    "per-point worst case over the attacks run at that budget (DESIGN §4), against the defended "
    "model's own clean predictions. Input transforms are attacked adaptively: BPDA (the identity "
    "gradient) through non-differentiable transforms and EOT over draws of randomized ones "
    "(Athalye, Carlini & Wagner 2018; Athalye, Engstrom, Ilyas & Kwok 2018), and naively "
    "(autograd through the transform, one draw) where the two differ; the table shows the "
    "adaptive figure. Output hardening changes answers, not decisions: its figure is the worst "
    "case of the attacks that still run through the hardened outputs (score-based ones replace "
    "gradient attacks) and of the undefended model's adversarial examples (transfer). Randomized "
    "smoothing (Cohen, Rosenfeld & Kolter 2019) shows the certified accuracy at the L2 radius "
    "whose ball contains the budget's (eps in L2 and L1, eps·sqrt(d) in L∞; abstentions count as "
    "wrong): a lower bound, with probability 1 - alpha, on the smoothed model's robust accuracy. "
    "Training defenses (Madry et al. 2018; Wong, Rice & Kolter 2020) retrain the model's recipe. "
    "Cost: clean-accuracy drop, inference time per point against the undefended model, queries "
    "per point and training time. Intervals are 95 % Wilson intervals.")


def _bt(b) -> str:
    return f"{b[0]} eps={b[1]:g}"


def _points(a: Proportion | None, b: Proportion | None) -> float | None:
    if a is None or b is None or not a.n or not b.n:
        return None
    return 100.0 * (a.value - b.value)


def section(defs, budgets, undefended: dict, base_clean: Proportion) -> Section:
    from advkit.audit.defenses_report import curve_plots

    cols = ["defense", "kind", "clean accuracy", "clean-acc drop (points)",
            *(f"robust {_bt(b)}" for b in budgets), "verdict", "inference s/point",
            "× undefended time", "queries/point", "training s"]
    rows = [["none (undefended)", "", base_clean, 0.0, *(undefended.get(b) for b in budgets),
             "see the evasion verdict", None, 1.0, 1.0, None]]
    for d in defs:
        c = d.cost
        rows.append([d.key, d.kind, d.clean, _points(d.base, d.clean),
                     *(d.robust.get(b) for b in budgets), d.status,
                     c.get("seconds_per_point"), c.get("times_undefended"),
                     c.get("queries_per_point"), c.get("train_seconds")])
    tables = [Table(columns=cols, rows=rows, title="Before and after: each defense")]
    plots = curve_plots(defs, budgets, undefended, base_clean)
    for make in (_naive_table, _hardened_table, _training_table):
        t = make(defs)
        if t is not None:
            tables.append(t)
    cert = [d for d in defs if d.kind == "certify"]
    if cert:
        tables.append(_certify_table(cert))
        plots.append(_certify_plot(cert))
    return Section(title="Defenses: before and after", text=TEXT, tables=tables, plots=plots)


def _naive_table(defs) -> Table | None:
    rows = []
    for d in defs:
        grads = next((r["gradients"] for r in d.records if r.get("mode") == "adaptive"
                      and r.get("gradients")), None)
        note = ""
        if grads:
            note = (f"BPDA ({', '.join(grads['bpda'])})" if grads["bpda"] else "exact gradients")
            note += f" + EOT x{grads['eot_samples']}" if grads["eot_samples"] > 1 else ""
        for b in sorted(d.naive):
            rows.append([d.key, _bt(b), d.naive[b], d.robust.get(b),
                         _points(d.naive[b], d.robust.get(b)), note])
    if not rows:
        return None
    return Table(columns=["defense", "budget", "robust (naive)", "robust (adaptive)",
                          "naive minus adaptive (points)", "adaptive gradients"], rows=rows,
                 title="Input transforms: naive against adaptive attacks")


def _hardened_table(defs) -> Table | None:
    rows = []
    for d in defs:
        for r in d.records:
            if r["stage"] != "hardened":
                continue
            ch = r.get("change") or {}
            direct = (proportion(torch.tensor(r["direct_robust"]))
                      if r["direct_robust"] is not None else None)
            through = (r["label"].split(" + ")[0] if r["direct_robust"] is not None
                       else "none runs")
            rows.append([d.key, r["source"], through, ", ".join(ch.get("missing", [])),
                         ch.get("action", "as planned"),
                         proportion(torch.tensor(r["transfer"]["robust"])), direct,
                         proportion(torch.tensor(r["robust"]))])
    if not rows:
        return None
    return Table(columns=["defense", "planned scenario", "attack through the outputs",
                          "outputs lack", "action", "robust (transfer)",
                          "robust (through the outputs)", "worst case"], rows=rows,
                 title="Output hardening: attacks through the hardened outputs and transfer")


def _training_table(defs) -> Table | None:
    rows = []
    for d in defs:
        r = next((r for r in d.records if r["stage"] == "train"), None)
        if r is None:
            continue
        t = r["training"]
        rows.append([d.key, t["defense"], t.get("eps"), t["params"] or "", r["recipe"]["zoo"],
                     r["recipe"]["epochs"], r["train_seconds"], not r["trained_now"],
                     r["sha256"]])
    if not rows:
        return None
    return Table(columns=["defense", "training", "eps", "params", "architecture", "epochs",
                          "train seconds", "from cache", "model SHA-256"], rows=rows,
                 title="Training defenses: the recipe retrained")


def _certify_table(cert) -> Table:
    from advkit.audit.defenses_report import l2_radius

    rows = []
    for d in cert:
        r = next(r for r in d.records if r["stage"] == "certify")
        abstain = proportion(torch.tensor(r["prediction"]) == -1)
        base = f"model of {r['base']}" if r.get("base") else "the audited model"
        head = [d.key, base, r["sigma"], r["n_samples"], r["alpha"], r["points"], abstain,
                d.clean]
        if not d.robust:
            rows.append(head + ["", None, None])
        for b in sorted(d.robust):
            rows.append(head + [_bt(b), l2_radius(b[0], b[1], r["input_dim"]), d.robust[b]])
    return Table(columns=["defense", "base classifier", "sigma", "n", "alpha", "points",
                          "abstain rate",
                          "certified at r=0", "budget", "L2 radius", "certified accuracy"],
                 rows=rows, title="Randomized smoothing: certified accuracy (abstain = wrong)")


def _certify_plot(cert) -> Plot:
    series = [Series(d.key, [r for r, _ in d.curve], [p.value for _, p in d.curve],
                     [p.lo for _, p in d.curve], [p.hi for _, p in d.curve])
              for d in cert if d.curve]
    return Plot(title="Certified accuracy against L2 radius", xlabel="L2 radius",
                ylabel="certified accuracy", series=series, ylim=(0.0, 1.0))
