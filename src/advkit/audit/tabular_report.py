"""The report's tabular section: per-feature bounds, constraints, preprocessing, and what the
attacks changed, feature by feature (so a reader can check that no attack moved an immutable
feature or broke a one-hot group)."""

from __future__ import annotations

import torch

from advkit.audit.report import Report, Section, Table
from advkit.data.features import EPS_UNIT


def feature_changes(target, x: torch.Tensor, x_adv: torch.Tensor) -> dict | None:
    """Per feature: how many points the attack changed, and the largest change in raw units;
    plus how many adversarial points break a one-hot group. None unless tabular."""
    space = target.feature_space
    if space is None:
        return None
    raw, raw_adv = target.to_raw(x), target.to_raw(x_adv)
    delta = (raw_adv.double() - raw.double()).abs()
    broken = torch.zeros(x.shape[0], dtype=torch.bool)
    for g in space.one_hot:
        block = raw_adv[:, list(g)]
        broken |= ~(((block == 0) | (block == 1)).all(1) & (block.sum(1) == 1))
    return {"changed": (delta > 0).sum(0).tolist(), "max_abs": delta.max(0).values.tolist(),
            "one_hot_broken": int(broken.sum())}


def tabular_section(report: Report) -> Section | None:
    """The features table (bounds, constraint, points changed over all attack scenarios, largest
    change in raw units) and the eps unit; None unless the data are tabular."""
    features = report.dataset.get("features")
    if not features:
        return None
    names, bounds = list(report.dataset["feature_names"]), features["bounds"]
    labels: dict[str, list[str]] = {n: [] for n in names}
    for n in features["immutable"]:
        labels[n].append("immutable")
    for n in features["integer"]:
        labels[n].append("integer")
    for i, g in enumerate(features["one_hot"]):
        for n in g:
            labels[n].append(f"one-hot group {i + 1}")
    kind = {n: ", ".join(v) for n, v in labels.items() if v}
    changed, largest, broken, runs = [0] * len(names), [0.0] * len(names), 0, 0
    for s in report.scenarios:
        fc = s.per_sample.get("feature_changes")
        if not fc:
            continue
        runs += 1
        broken += fc["one_hot_broken"]
        for j in range(len(names)):
            changed[j] += fc["changed"][j]
            largest[j] = max(largest[j], fc["max_abs"][j])
    rows = [[n, bounds[j][0], bounds[j][1], kind.get(n, "continuous"),
             changed[j], largest[j]] for j, n in enumerate(names)]
    pre = report.dataset.get("preprocessing") or {"kind": "none"}
    moved = sum(changed[j] for j, n in enumerate(names) if "immutable" in labels[n])
    text = (f"Tabular data: eps is in {EPS_UNIT}: "
            "a feature j may move by at most eps × (hi_j − lo_j) in L∞, and every attack clips "
            "each feature to its own bounds after every step. Preprocessing before the model: "
            f"{pre['kind']}" + (f" (fit on the {pre['fit_on']})" if "fit_on" in pre else "") +
            f". Over {runs} attack scenario(s) the attacks changed immutable features {moved} "
            f"time(s) and left {broken} point(s) with a broken one-hot group. 'points changed' "
            "counts, per feature, the evaluated points whose value an attack changed, summed "
            "over scenarios; 'largest change' is in the feature's own (preprocessed) units.")
    return Section(title="Features, bounds and constraints", text=text, tables=[Table(
        columns=["feature", "lo", "hi", "constraint", "points changed", "largest change"],
        rows=rows, title="Per-feature bounds and what the attacks changed")])


def add_tabular_section(report: Report) -> None:
    section = tabular_section(report)
    if section is not None:
        report.sections.append(section)
