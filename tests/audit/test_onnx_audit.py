"""An exported ONNX model audited with black-box attacks gives the in-process verdicts within their
intervals (issue 14, Done when): a zoo MLP trained on digits is saved, exported with
`advkit export`, and both files are audited by the same spec (Square, SimBA, HopSkipJump, one
seed). The verdicts are equal, the clean accuracy is the same count, and each scenario's attack
success rate (each attack's, and the worst case's at each budget) lies inside the other's 95 %
interval."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")
from advkit.cli.main import run  # noqa: E402
from advkit.data import load  # noqa: E402
from advkit.models import build  # noqa: E402
from advkit.models.io import save_model  # noqa: E402
from advkit.models.train import train  # noqa: E402
from audit_helpers import audit_file  # noqa: E402

ATTACKS = ("attacks:\n"
           "  - {name: square, eps: [0.1, 0.3], params: {n_queries: 40}}\n"
           "  - {name: simba, eps: [0.5], params: {max_queries: 80}}\n"
           "  - {name: hopskipjump, norm: l2, params: {max_queries: 60, init_evals: 10}}\n")


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx-audit")
    digits = load("digits")
    torch.manual_seed(0)
    model = build("mlp", input_shape=digits.info.shape, n_classes=10)
    train(model, digits.x_train, digits.y_train, epochs=3, progress=False)
    save_model(model, folder / "mlp", dataset_info=digits.info)
    assert run(["export", str(folder / "mlp"), "--out", str(folder / "mlp.onnx")]) == 0
    out = {}
    for name in ("mlp", "mlp.onnx"):
        spec = folder / f"{name}.yaml"
        spec.write_text(f"seed: 3\ndataset: digits\nmodel: {{path: {folder / name}}}\n"
                        f"evaluation: {{n_samples: 30}}\n{ATTACKS}")
        out[name] = audit_file(spec, folder / f"out-{name}").to_dict()
    return out["mlp"], out["mlp.onnx"]


def _attacks(report: dict) -> dict:
    """Every evasion scenario (the attacks and the worst case over them at each budget)."""
    return {s["id"]: s["metrics"] for s in report["scenarios"]
            if not s["id"].startswith("supply-chain/")}


def test_the_onnx_audit_gives_the_in_process_verdicts_within_their_intervals(reports):
    local, exported = reports
    assert exported["manifest"]["target"] == "OnnxTarget"
    assert "gradients" not in exported["manifest"]["capabilities"]
    assert [(v["threat"], v["status"]) for v in exported["verdicts"]] == \
        [(v["threat"], v["status"]) for v in local["verdicts"]]
    assert ("evasion", "vulnerable") in [(v["threat"], v["status"]) for v in local["verdicts"]]
    a, b = _attacks(local), _attacks(exported)
    assert sorted(a) == sorted(b)
    assert {"square/Linf/eps=0.1", "square/Linf/eps=0.3", "simba/L2", "hopskipjump/L2"} <= set(a)
    for sid in a:
        assert a[sid]["clean_accuracy"]["k"] == b[sid]["clean_accuracy"]["k"], sid
        sa, sb = a[sid]["attack_success_rate"], b[sid]["attack_success_rate"]
        assert sb["ci_low"] <= sa["value"] <= sb["ci_high"], (sid, sa, sb)
        assert sa["ci_low"] <= sb["value"] <= sa["ci_high"], (sid, sa, sb)
