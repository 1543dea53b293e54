"""Report sections and findings for evasion scenarios: curves against eps and example grids."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from advkit.audit.report import Image, Plot, Report, Section, Series
from advkit.evaluation import checks


def curves(report: Report) -> dict[tuple[str, str], list]:
    """Evasion scenarios grouped by (attack, norm), sorted by eps."""
    out = defaultdict(list)
    for s in report.scenarios:
        if s.kind == "evasion":
            out[(s.attack, s.params.get("norm", "inf"))].append(s)
    for v in out.values():
        v.sort(key=lambda s: s.metrics["eps"])
    return dict(out)


def curve_plot(report: Report) -> Plot:
    series = []
    for (attack, norm), scs in curves(report).items():
        ra = [s.metrics["robust_accuracy"] for s in scs]
        series.append(Series(label=f"{attack} ({norm})", x=[s.metrics["eps"] for s in scs],
                             y=[p.value for p in ra], lo=[p.lo for p in ra], hi=[p.hi for p in ra]))
    return Plot(title="Robust accuracy against eps (95 % Wilson bands)", xlabel="eps",
                ylabel="robust accuracy", series=series, ylim=(0.0, 1.0))


def _pixels(flat, shape) -> np.ndarray:
    arr = np.asarray(flat, dtype=np.float32).reshape(shape)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    return arr


def example_grid(report: Report, x, y, clean_pred, target, info) -> Section | None:
    if info.kind != "image":
        return None
    groups = curves(report)
    if not groups:
        return None
    (attack, norm), scs = list(groups.items())[-1]
    eps_values = [s.metrics["eps"] for s in scs if s.metrics["eps"] > 0]
    if not eps_values:
        return None
    pick = min(scs, key=lambda s: abs(s.metrics["eps"] - float(np.median(eps_values))) if s.metrics["eps"] > 0 else 9)
    k = len(pick.per_sample["examples_x_adv"])
    with torch.no_grad():
        conf = torch.softmax(target.predict_scores(x[:k], check=False), 1).max(1).values
    names = info.class_names or tuple(str(i) for i in range(info.n_classes))
    images = []
    for i in range(k):
        images.append(Image(caption=f"true {names[int(y[i])]} · pred {names[int(clean_pred[i])]} ({float(conf[i]):.2f})",
                            pixels=_pixels(x[i].cpu().numpy(), info.shape), group="clean"))
    for i in range(k):
        p = pick.per_sample["adv_pred"][i]
        c = pick.per_sample["adv_conf"][i]
        images.append(Image(caption=f"pred {names[p]} ({c:.2f})",
                            pixels=_pixels(pick.per_sample["examples_x_adv"][i], info.shape),
                            group=f"{pick.attack} {norm} eps={pick.metrics['eps']:g}"))
    return Section(title="Clean and adversarial examples",
                   text=f"The first {k} evaluated points, clean and after {pick.attack} ({norm}, "
                        f"eps={pick.metrics['eps']:g}), with predictions and confidences.",
                   images=images, image_columns=k)


def add_evasion_sections(report: Report, *, x, y, clean_pred, target, info, unbounded: bool = True,
                         generator: torch.Generator | None = None) -> None:
    """Curves, the example grid and the validity checks (``unbounded`` adds one PGD run whose
    ball covers the whole input range)."""
    groups = curves(report)
    report.sections.append(Section(
        title="Accuracy under attack",
        text="Robust accuracy = points still correctly classified after the attack / all N evaluated "
             "points (AutoAttack's convention); eps = 0 is clean accuracy. Bands are 95 % Wilson intervals.",
        plots=[curve_plot(report)]))
    grid = example_grid(report, x, y, clean_pred, target, info)
    if grid is not None:
        report.sections.append(grid)
    by_norm: dict[str, dict[str, dict[float, object]]] = defaultdict(dict)
    for (attack, norm), scs in groups.items():
        by_norm[norm][attack] = {s.metrics["eps"]: s.metrics["robust_accuracy"] for s in scs}
    for i, (norm, results) in enumerate(by_norm.items()):
        report.findings.extend(checks.run_evasion_checks(
            target, x, y, results, target_checks=i == 0, label=norm,
            unbounded=unbounded and i == 0, generator=generator))
