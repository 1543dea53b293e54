"""Report sections and findings for evasion scenarios.

Curves of robust accuracy against eps per attack and for the worst case (ensemble), curves derived
from minimum-norm attacks' per-point norms, the distribution of those norms, success and median
norm against queries (query-based attacks), the universal perturbation and patch as images, the
ensemble's per-stage contributions, an example grid, and the validity checks of
``advkit.evaluation.checks``.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from advkit.audit.report import Image, Plot, Report, ScenarioResult, Section, Series, Table
from advkit.evaluation import checks
from advkit.evaluation.metrics import proportion
from advkit.evaluation.worst_case import broken_within, group_scenarios, worst_case_points
from advkit.report.markdown import eps_header


def _norm(s) -> str:
    """The norm a scenario is measured in: a minimum-norm attack's distance norm (cw-l2 is L2
    whatever the spec's norm field says), else the scenario's norm."""
    if s.per_sample.get("minimum_norm"):
        return distance_norm(s)
    return s.params.get("norm", "Linf")


def distance_norm(s) -> str:
    from advkit.audit.plan import attack_norm

    return s.per_sample.get("distance_norm") or attack_norm(s.attack.split("#")[0], s.params)


def curves(report: Report) -> dict[tuple[str, str], list]:
    """Budgeted scenarios (attacks and the ensemble) grouped by (attack, norm), sorted by eps."""
    out = defaultdict(list)
    for s in report.scenarios:
        if s.kind in ("evasion", "ensemble") and s.metrics.get("eps") is not None:
            out[(s.attack, _norm(s))].append(s)
    for v in out.values():
        v.sort(key=lambda s: s.metrics["eps"])
    return dict(out)


def minimum_norm_scenarios(report: Report) -> list:
    return [s for s in report.scenarios if s.kind == "evasion" and s.per_sample.get("minimum_norm")]


def derived_curve(s, eps_grid: list[float], y: torch.Tensor, clean_pred: torch.Tensor) -> list:
    """Robust accuracy at each eps implied by a minimum-norm attack's per-point norms: a point is
    broken at eps when the attack fooled it with a perturbation of norm <= eps."""
    correct = clean_pred == y
    fooled = correct & (torch.tensor(s.per_sample["adv_pred"]) != y)
    return [proportion(correct & ~broken_within(s.per_sample["distance"], fooled, e))
            for e in eps_grid]


def add_worst_case(report: Report, y, clean_pred, extra_eps=None) -> list[ScenarioResult]:
    """Append one ``worst_case`` scenario per (norm, eps) where the worst case over attacks was
    measured (``advkit.evaluation.worst_case``); returns them."""
    budgeted, minimum_norm = group_scenarios(report.scenarios, distance_norm)
    out = []
    for pt in worst_case_points(budgeted, minimum_norm, y, clean_pred, extra_eps=extra_eps):
        out.append(ScenarioResult(
            id=f"worst-case/{pt.norm}/eps={pt.eps:g}", kind="worst_case", attack="worst case",
            params={"norm": pt.norm, "attacks": pt.attacks,
                    "minimum_norm_only": pt.minimum_norm_only, "requested": pt.requested},
            metrics={"eps": pt.eps, "clean_accuracy": proportion(pt.correct),
                     "robust_accuracy": proportion(pt.robust),
                     "attack_success_rate": proportion(~pt.robust, within=pt.correct)},
            seconds=0.0, per_sample={"robust": pt.robust.tolist()}))
    report.scenarios.extend(out)
    return out


def curve_plots(report: Report, y: torch.Tensor, clean_pred: torch.Tensor) -> list[Plot]:
    groups = curves(report)
    by_norm: dict[str, list[Series]] = defaultdict(list)
    grids: dict[str, set] = defaultdict(set)
    for (attack, norm), scs in groups.items():
        ra = [s.metrics["robust_accuracy"] for s in scs]
        label = "ensemble (cascade)" if attack == "ensemble" else attack
        by_norm[norm].append(
            Series(
                label=label,
                x=[s.metrics["eps"] for s in scs],
                y=[p.value for p in ra],
                lo=[p.lo for p in ra],
                hi=[p.hi for p in ra],
            )
        )
        grids[norm].update(s.metrics["eps"] for s in scs)
    for s in minimum_norm_scenarios(report):
        norm = _norm(s)
        dist = np.asarray(s.per_sample["distance"], dtype=float)
        if grids[norm]:  # the eps grid of the budgeted attacks of the same norm
            grid = sorted(grids[norm] | {0.0})
        elif (dist > 0).any():
            grid = [0.0, *np.quantile(dist[dist > 0], [0.25, 0.5, 0.75, 1.0]).tolist()]
        else:
            grid = [0.0]
        ra = derived_curve(s, grid, y, clean_pred)
        by_norm[norm].append(
            Series(
                label=f"{s.attack} (minimum norm)",
                x=grid,
                y=[p.value for p in ra],
                lo=[p.lo for p in ra],
                hi=[p.hi for p in ra],
            )
        )
    for norm in list(by_norm):  # the per-point worst case, only where it was measured
        pts = [s for s in report.scenarios if s.kind == "worst_case" and s.params["norm"] == norm]
        if pts:
            ra = [s.metrics["robust_accuracy"] for s in pts]
            by_norm[norm].append(Series(label="worst case (all attacks)",
                                        x=[s.metrics["eps"] for s in pts], y=[p.value for p in ra],
                                        lo=[p.lo for p in ra], hi=[p.hi for p in ra]))
    return [
        Plot(
            title=f"Robust accuracy against {norm} eps (95 % Wilson bands)",
            xlabel=eps_header(report.dataset),
            ylabel="robust accuracy",
            series=series,
            ylim=(0.0, 1.0),
        )
        for norm, series in by_norm.items()
    ]


def norm_distribution(report: Report, y, clean_pred) -> Plot | None:
    series = []
    for s in minimum_norm_scenarios(report):
        dist = torch.tensor(s.per_sample["distance"])
        fooled = (clean_pred == y) & (torch.tensor(s.per_sample["adv_pred"]) != y)
        if fooled.any():
            series.append(Series(label=f"{s.attack} ({_norm(s)})", x=[], y=dist[fooled].tolist()))
    if not series:
        return None
    return Plot(
        title="Minimum perturbation norms found (fooled points)",
        xlabel="norm",
        ylabel="points",
        series=series,
        kind="hist",
    )


def _query_series(report: Report, key: str) -> list[Series]:
    """One series per scenario whose attack recorded the per-query trace ``key`` (points where
    the trace is None, e.g. no median norm yet, are left out)."""
    series = []
    for s in report.scenarios:
        trace = s.per_sample.get("extra", {}).get(key)
        if not trace:
            continue
        eps = s.metrics.get("eps")
        label = f"{s.attack} eps={eps:g}" if eps is not None else f"{s.attack} ({_norm(s)})"
        pts = [(q, v) for q, v in enumerate(trace, start=1) if v is not None]
        if pts:
            series.append(Series(label=label, x=[q for q, _ in pts], y=[v for _, v in pts]))
    return series


def query_plot(report: Report) -> Plot | None:
    """Success against queries for the query-based attacks (Square, SimBA, HopSkipJump,
    Boundary)."""
    series = _query_series(report, "success_by_query")
    if not series:
        return None
    return Plot(
        title="Success against queries (black-box attacks)",
        xlabel="queries per point",
        ylabel="share of points fooled",
        series=series,
        ylim=(0.0, 1.0),
    )


def norm_query_plot(report: Report) -> Plot | None:
    """The median norm of the best adversarial point against queries (the query-based
    minimum-norm attacks: HopSkipJump, Boundary, SimBA)."""
    series = _query_series(report, "median_norm_by_query")
    if not series:
        return None
    return Plot(
        title="Median perturbation norm against queries (black-box minimum-norm attacks)",
        xlabel="queries per point",
        ylabel="median norm over the attacked points",
        series=series,
    )


def _pixels(flat, shape) -> np.ndarray:
    arr = np.asarray(flat, dtype=np.float32).reshape(shape)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    return arr


def perturbation_images(report: Report, info) -> list[Image]:
    images = []
    for s in report.scenarios:
        extra = s.per_sample.get("extra", {})
        if "perturbation" in extra and info.kind == "image":
            v = np.asarray(extra["perturbation"], dtype=np.float32).reshape(info.shape)
            scale = max(float(np.abs(v).max()), 1e-12)
            fr = extra.get("fooling_rate")
            cap = f"eps={s.metrics['eps']:g}" + (f", fooled {fr:.2f}" if fr is not None else "")
            images.append(
                Image(
                    caption=cap,
                    pixels=_pixels(0.5 + 0.5 * v / scale, info.shape),
                    group="universal",
                )
            )
        if "patch" in extra:
            p = np.asarray(extra["patch"], dtype=np.float32)
            images.append(
                Image(caption=f"patch ({s.id})", pixels=_pixels(p, p.shape), group="patch")
            )
    return images


def ensemble_table(report: Report) -> Table | None:
    rows = []
    for s in report.scenarios:
        if s.kind != "ensemble":
            continue
        for st in s.per_sample.get("stages", []):
            rows.append(
                [
                    s.metrics["eps"],
                    st["label"],
                    st["attacked"],
                    st["broken"],
                    st["marginal"]["value"],
                    st["robust_after"]["value"],
                    st["seconds"],
                ]
            )
    if not rows:
        return None
    return Table(
        columns=[
            eps_header(report.dataset),
            "attack",
            "points attacked",
            "points broken",
            "marginal share of N",
            "worst-case robust accuracy after",
            "seconds",
        ],
        rows=rows,
        title="Worst-case cascade: each attack runs only on the points still robust",
    )


def example_confidences(target, x, k: int = 8) -> list[float]:
    """The model's confidence on the first ``k`` points (the clean row of the example grid)."""
    with torch.no_grad():
        return torch.softmax(target.predict_scores(x[:k], check=False), 1).max(1).values.tolist()


def evasion_checks(report: Report, *, x, y, target, unbounded: bool = True,
                   generator: torch.Generator | None = None) -> list:
    """The validity checks (``advkit.evaluation.checks``) for the attack results in ``report``:
    per norm, the curve checks; on the first norm, the target checks and (``unbounded``) one PGD
    run whose ball covers the whole input range."""
    out = []
    by_norm: dict[str, dict[str, dict[float, object]]] = defaultdict(dict)
    for (attack, norm), scs in curves(report).items():
        by_norm[norm][attack] = {s.metrics["eps"]: s.metrics["robust_accuracy"] for s in scs}
    for i, (norm, results) in enumerate(by_norm.items()):
        out.extend(checks.run_evasion_checks(
            target, x, y, results, target_checks=i == 0, label=norm,
            unbounded=unbounded and i == 0, generator=generator))
    if unbounded and not target.capabilities.gradients and by_norm:
        out.append(checks.skipped(
            "not_zero_at_unbounded", "the target offers no gradients, so the unbounded PGD "
            "check could not run"))
    return out


def example_grid(report: Report, x, y, clean_pred, target, info,
                 clean_conf: list[float] | None = None) -> Section | None:
    if info.kind != "image":
        return None
    groups = curves(report)
    key = next((k for k in groups if k[0] == "ensemble"), None) or (
        list(groups)[-1] if groups else None
    )
    if key is None:
        return None
    scs = [s for s in groups[key] if s.metrics["eps"] > 0]
    if not scs:
        return None
    median = float(np.median([s.metrics["eps"] for s in scs]))
    pick = min(scs, key=lambda s: abs(s.metrics["eps"] - median))
    k = len(pick.per_sample["examples_x_adv"])
    conf = clean_conf if clean_conf is not None else example_confidences(target, x, k)
    names = info.class_names or tuple(str(i) for i in range(info.n_classes))
    images = [
        Image(
            caption=f"true {names[int(y[i])]} · pred {names[int(clean_pred[i])]} ({float(conf[i]):.2f})",
            pixels=_pixels(x[i].cpu().numpy(), info.shape),
            group="clean",
        )
        for i in range(k)
    ]
    label = f"{pick.attack} {key[1]} eps={pick.metrics['eps']:g}"
    images += [
        Image(caption=f"pred {names[p]} ({c:.2f})", pixels=_pixels(v, info.shape), group=label)
        for p, c, v in zip(
            pick.per_sample["adv_pred"][:k],
            pick.per_sample["adv_conf"][:k],
            pick.per_sample["examples_x_adv"],
            strict=True,
        )
    ]
    return Section(
        title="Clean and adversarial examples",
        text=f"The first {k} evaluated points, clean and after {label}, with predictions "
        "and confidences.",
        images=images,
        image_columns=k,
    )


def add_evasion_sections(
    report: Report,
    *,
    x,
    y,
    clean_pred,
    target,
    info,
    unbounded: bool = True,
    generator: torch.Generator | None = None,
    rules=None,
    extra_eps: dict[str, set[float]] | None = None,
    findings: list | None = None,
    clean_conf: list[float] | None = None,
) -> None:
    """The per-point worst case at each measured budget (``worst_case`` scenarios), curves,
    distributions, images, the example grid, the validity checks (``unbounded`` adds one PGD run
    whose ball covers the whole input range) and the evasion verdict (``rules``: the spec's
    ``verdicts.evasion``; ``extra_eps[norm]``: budgets asked for by thresholds or the rules).
    ``findings`` and ``clean_conf``: the validity checks' findings and the clean confidences of
    the example points, computed by the audit's checks stage (then nothing here queries the
    model); computed here when None."""
    from advkit.audit.verdicts import evasion_verdict

    n_findings = len(report.findings)
    points = add_worst_case(report, y, clean_pred, extra_eps)
    plots = curve_plots(report, y, clean_pred)
    for extra_plot in (norm_distribution(report, y, clean_pred), query_plot(report),
                       norm_query_plot(report)):
        if extra_plot is not None:
            plots.append(extra_plot)
    table = ensemble_table(report)
    report.sections.append(
        Section(
            title="Accuracy under attack",
            text="Robust accuracy = points still correctly classified after the attack / all N evaluated "
            "points (AutoAttack's convention); eps = 0 is clean accuracy. The worst case (all attacks) "
            "counts a point robust at eps only if it survives every attack run at that eps, "
            "minimum-norm attacks included; it is drawn only at the eps values where it was "
            "measured. The ensemble counts a point robust only if it survives every attack of its "
            "cascade. Minimum-norm attacks run once; their curve counts a point broken at eps when "
            "the norm they needed is at most eps. Bands are 95 % Wilson intervals.",
            plots=plots,
            tables=[table] if table else [],
        )
    )
    images = perturbation_images(report, info)
    if images:
        report.sections.append(
            Section(
                title="Universal perturbations and patches",
                text="Universal perturbations are shown scaled to [0, 1] (grey = no change).",
                images=images,
                image_columns=4,
            )
        )
    grid = example_grid(report, x, y, clean_pred, target, info, clean_conf)
    if grid is not None:
        report.sections.append(grid)
    report.findings.extend(findings if findings is not None else evasion_checks(
        report, x=x, y=y, target=target, unbounded=unbounded, generator=generator))
    report.verdicts.append(evasion_verdict(points, report.findings[n_findings:], rules,
                                           requested=extra_eps))
