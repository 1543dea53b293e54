"""The query-based attacks in an audit spec: planned by name, run by the evasion family, and their
success- and median-norm-versus-queries curves drawn by the evasion report (the same plot as
Square's success curve)."""

import json

import torch

from advkit.audit.evasion_report import norm_query_plot, query_plot
from advkit.audit.families.evasion import run_scenario, to_scenario_result
from advkit.audit.plan import make_plan
from advkit.audit.report import Report
from advkit.audit.spec import parse_spec


def test_spec_names_them_and_the_report_draws_their_query_curves(breast_cancer_forest):
    target, x, y = breast_cancer_forest
    spec = parse_spec({
        "dataset": "breast_cancer", "model": {"zoo": "mlp"},
        "attacks": [{"name": "hopskipjump", "norm": "linf", "params": {"max_queries": 60}},
                    {"name": "boundary", "params": {"max_queries": 60}},
                    {"name": "simba", "params": {"max_queries": 60}},
                    {"name": "zoo", "params": {"max_queries": 60, "h": 0.2}},
                    {"name": "sign-opt", "params": {"max_queries": 60}},
                    {"name": "square", "eps": [0.1], "params": {"n_queries": 60}}]})
    plan = make_plan(spec)
    assert [sc.id for sc in plan] == ["hopskipjump/Linf", "boundary/L2", "simba/L2", "zoo/L2",
                                      "sign-opt/L2", "square/Linf/eps=0.1"]
    clean_pred = target.labels(x)
    results = []
    for sc in plan:
        rec = run_scenario(sc, target, x, y, clean_pred, seed=0)
        json.dumps(rec["extra"], allow_nan=False)  # JSON-able, no inf or NaN
        results.append(to_scenario_result(rec, clean_pred, y))
    report = Report(manifest={}, model={}, dataset={}, scenarios=results)
    success = query_plot(report)
    assert [s.label for s in success.series] == ["hopskipjump (Linf)", "boundary (L2)",
                                                 "simba (L2)", "zoo (L2)", "sign-opt (L2)",
                                                 "square eps=0.1"]
    assert all(len(s.x) == 60 and s.x[0] == 1 for s in success.series)
    norms = norm_query_plot(report)
    # ZOO fools fewer than half of the forest's points within 60 queries (one iteration of 29
    # coordinates): its median norm is never defined, so it has no series here
    assert success.series[3].y[-1] < 0.5
    assert [s.label for s in norms.series] == ["hopskipjump (Linf)", "boundary (L2)",
                                               "simba (L2)", "sign-opt (L2)"]
    hsj = norms.series[0]
    # the median is left out while fewer than half the points have an adversarial point
    assert 0 < len(hsj.x) < 60 and hsj.y[-1] <= hsj.y[0]
    assert hsj.y[-1] == float(torch.tensor(results[0].per_sample["distance"]).median())
