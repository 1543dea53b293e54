"""Data shards of one evasion attack (issue 17, Deliver 5): with ``evaluation.shards`` the points
of FGSM and BIM are split into stages of whole batches and merged; the report equals the unsplit
run's (timings and run identities aside), attacks that draw random starts run unsplit, and the
split follows the batches."""

from __future__ import annotations

import json

import pytest

from advkit.audit import runner
from advkit.audit.evasion_shards import bounds
from advkit.audit.executors import get_executor
from advkit.audit.spec import parse_spec
from advkit.errors import AuditSpecError
from advkit.report.json import report_dict
from report_keys import run_independent

SPEC = {
    "title": "shards",
    "seed": 2,
    "dataset": "digits",
    "model": {"zoo": "mlp", "epochs": 2, "kwargs": {"hidden": [32]}},
    "evaluation": {"n_samples": 100, "batch_size": 16},
    "attacks": [{"name": "fgsm", "eps": [0.05, 0.2]},
                {"name": "bim", "norm": "l2", "eps": [0.5], "params": {"steps": 4}},
                {"name": "pgd", "eps": [0.1], "params": {"steps": 3}}],
}


def test_shards_are_whole_batches_spread_evenly():
    assert bounds(100, 3, 16) == [(0, 32), (32, 64), (64, 100)]
    assert bounds(100, 1, 16) == [(0, 100)]
    assert bounds(10, 4, 16) == [(0, 10)]  # one batch: nothing to split
    assert bounds(64, 8, 16) == [(0, 16), (16, 32), (32, 48), (48, 64)]


def _run(out, shards: int) -> dict:
    spec = parse_spec({**SPEC, "evaluation": {**SPEC["evaluation"], "shards": shards}})
    rep = runner.run_audit(spec, out_dir=out, spec_sha256="same", progress=False,
                           executor=get_executor("local"))
    return json.loads(json.dumps(report_dict(rep)))


def test_sharded_report_equals_the_unsharded_one(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")
    whole, split = _run(tmp_path / "one", 1), _run(tmp_path / "three", 3)
    assert run_independent(split) == run_independent(whole)
    tasks = split["manifest"]["executor"]["tasks"]
    for sid in ("fgsm/Linf/eps=0.05", "fgsm/Linf/eps=0.2", "bim/L2/eps=0.5"):
        assert tasks[sid]["deps"] == [f"{sid}/shard={i}" for i in range(3)]
    assert "pgd/Linf/eps=0.1/shard=0" not in tasks  # random start: one stage
    assert not any("shard" in s["id"] for s in split["scenarios"])
    # the comparison is not empty: the attacks moved points
    fgsm = next(s for s in split["scenarios"] if s["id"] == "fgsm/Linf/eps=0.2")
    assert len(fgsm["per_sample"]["adv_pred"]) == 100
    assert fgsm["metrics"]["attack_success_rate"]["value"] > 0


@pytest.mark.parametrize("bad", [0, -1, 2.5, "four"])
def test_bad_shards_are_refused_naming_the_field(bad):
    with pytest.raises(AuditSpecError, match="shards"):
        parse_spec({**SPEC, "evaluation": {"shards": bad}})
