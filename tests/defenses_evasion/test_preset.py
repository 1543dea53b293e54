"""The evasion-defense lab preset: report structure, caching, findings (tiny config), and the
quick run's bars (slow)."""

from __future__ import annotations

import json

import pytest

from advkit.audit.presets import evasion_defense as lab
from advkit.audit.report import Report
from advkit.evaluation.metrics import proportion_of

TINY = dict(model="lenet", n_train=400, batch_size=64, lr=1e-3, lr_schedule="constant", std_epochs=1,
            adv=dict(kind="fast-fgsm", params={}, warmup_batches=0, epochs=1),
            noise_epochs=1, n_eval=12, attack=dict(steps=3, restarts=1), eot=2,
            noise_sigma=0.1, certify=dict(points=6, n0=8, n=40, batch_size=64))


def _mnist_or_skip():
    from advkit.data import available

    if not available().get("mnist"):
        pytest.skip("MNIST (advkit[data]) is not installed")


def test_gap_finding_fires_only_beyond_one_point():
    desc = {"bpda": ["jpeg(quality=75)"], "eot_samples": 1}
    fired = lab._gap_finding("jpeg", proportion_of(45, 50), proportion_of(5, 50),
                             "jpeg/adaptive", desc)
    assert fired.severity == "critical" and not fired.passed
    assert fired.value == pytest.approx(0.8) and fired.threshold == pytest.approx(1 / 50)
    held = lab._gap_finding("jpeg", proportion_of(26, 50), proportion_of(25, 50),
                            "jpeg/adaptive", desc)
    assert held.passed and held.severity == "info"
    odd = lab._gap_finding("jpeg", proportion_of(5, 50), proportion_of(25, 50),
                           "jpeg/adaptive", desc)
    assert odd.check == "adaptive_attack_weaker_than_naive" and not odd.passed


def test_tiny_lab_report_and_cache(tmp_path, monkeypatch):
    _mnist_or_skip()
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(lab, "QUICK", TINY)
    report = lab.run(seed=0, quick=True, progress=False, device="cpu")
    assert isinstance(report, Report)
    ids = [s.id for s in report.scenarios]
    for name in ("jpeg", "median-smoothing", "bit-depth", "gaussian-noise"):
        assert f"{name}/naive" in ids and f"{name}/adaptive" in ids
    assert "standard" in ids and "adv-trained" in ids and "smoothing/certify" in ids
    gaps = [f for f in report.findings if f.scenario and f.scenario.endswith("/adaptive")]
    assert len(gaps) == 4
    adaptive = report.scenario("jpeg/adaptive")
    assert adaptive.params["bpda"] == ["jpeg(quality=75)"]
    assert report.scenario("gaussian-noise/adaptive").params["eot_samples"] == 2
    cert = report.scenario("smoothing/certify")
    assert len(cert.per_sample["radius"]) == 6
    json.dumps(report.to_dict())
    assert report.manifest["seed"] == 0 and report.manifest["sha256"]["data"]
    assert not any(row[-1] for row in report.sections[2].tables[0].rows)
    again = lab.run(seed=0, quick=True, progress=False, device="cpu")
    assert all(row[-1] for row in again.sections[2].tables[0].rows)  # all from the cache
    assert again.model["sha256"] == report.model["sha256"]


@pytest.mark.slow
def test_quick_lab_meets_the_transform_bars(tmp_path, monkeypatch):
    _mnist_or_skip()
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path))
    report = lab.run(seed=0, quick=True, progress=False, device="cpu")
    for name in ("jpeg", "median-smoothing", "bit-depth", "gaussian-noise"):
        naive = report.scenario(f"{name}/naive").metrics["robust_accuracy"]
        adaptive = report.scenario(f"{name}/adaptive").metrics["robust_accuracy"]
        assert adaptive.k <= naive.k + 1, name  # one point of slack for random starts
        if name != "bit-depth":
            assert adaptive.value <= 0.10, name
    assert next(f for f in report.findings if f.check == "certified_curve_rises").passed
