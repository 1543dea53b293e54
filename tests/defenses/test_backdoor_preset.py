"""The backdoor preset end to end in quick mode (digits, an MLP, a 2x2 patch): every defense runs,
the report holds the figures DESIGN §4 asks for, renders, and a second run reads the model cache."""

from __future__ import annotations

import json

import pytest

from advkit.audit.presets import backdoor
from advkit.evaluation.metrics import Proportion


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("cache")
    mp.setenv("ADVKIT_CACHE_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def reports(cache_dir):
    return backdoor.run(seed=0, quick=True, progress=False), None


def test_report_has_every_scenario_with_intervals(reports):
    r, _ = reports
    ids = {s.id for s in r.scenarios}
    for want in ("clean/none", "backdoored/none", "backdoored/fine-pruning",
                 "backdoored/activation clustering + retraining",
                 "backdoored/spectral signatures + retraining",
                 "clean/neural-cleanse", "backdoored/neural-cleanse"):
        assert want in ids
    bd = r.scenario("backdoored/none").metrics
    assert isinstance(bd["backdoor_success"], Proportion) and bd["backdoor_success"].value > 0.9
    assert bd["backdoor_success"].lo <= bd["backdoor_success"].value <= bd["backdoor_success"].hi
    nc = r.scenario("backdoored/neural-cleanse")
    assert len(nc.per_sample["mask_norm"]) == 10 and len(nc.per_sample["anomaly_index"]) == 10
    if nc.metrics["flagged_target"]:
        assert "backdoored/NC unlearning" in ids and "backdoored/NC pruning" in ids
    for s in r.scenarios:
        if s.kind == "poisoning" and s.defense:
            drop = s.metrics["clean_accuracy_drop"]
            base = r.scenario("backdoored/none").metrics["clean_accuracy"].value
            assert drop == pytest.approx(base - s.metrics["clean_accuracy"].value)


def test_report_sections_findings_and_rendering(reports):
    r, _ = reports
    titles = [s.title for s in r.sections]
    assert "Neural Cleanse: per-class trigger norms" in titles
    trig = next(s for s in r.sections if s.title.startswith("Reversed triggers"))
    assert len(trig.images) == 2 + 10 + 2
    assert trig.images[0].pixels.shape == (8, 8)
    checks = {f.check for f in r.findings}
    assert {"backdoor.removed", "neural_cleanse.detects_backdoor",
            "neural_cleanse.false_positive"} <= checks
    assert all(f.severity in ("info", "warning", "critical") for f in r.findings)
    assert r.manifest["seed"] == 0 and r.manifest["sha256"]["data"]
    json.dumps(r.to_dict())


def test_trained_models_are_cached(reports, cache_dir):
    r, _ = reports
    assert r.manifest["models_from_cache"] == {"clean": False, "backdoored": False}
    assert len(list((cache_dir / "backdoor").glob("clean-*/config.json"))) == 1
    from advkit.data import load

    ds = load("digits")
    x, y, _, _ = backdoor._split(ds, backdoor.QUICK, 0)
    model, secs, cached = backdoor._train(backdoor.QUICK, ds.info, x, y, 0, "clean")
    assert cached and secs == 0.0


@pytest.mark.slow
def test_second_run_reads_the_cache_agrees_and_renders(reports):
    a, _ = reports
    b = backdoor.run(seed=0, quick=True, progress=False)
    assert b.manifest["models_from_cache"] == {"clean": True, "backdoored": True}
    for s in a.scenarios:
        assert b.scenario(s.id).metrics == s.metrics
    from advkit.report.html import render_html

    html = render_html(b)
    assert "Neural Cleanse" in html and "data:image/png;base64" in html
