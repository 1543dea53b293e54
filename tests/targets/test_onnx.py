"""OnnxTarget: exported zoo models answer the torch model's logits without gradients; hostile ONNX
files (external data outside the folder, absolute or through a symbolic link, truncated protobuf,
custom-op domains, unknown operators, local functions, the wrong input rank) are refused with
typed errors before onnxruntime sees them, in the library, `advkit scan` and `advkit audit`."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from advkit.attacks.evasion.pgd import PGD  # noqa: E402
from advkit.cli.main import run  # noqa: E402
from advkit.errors import (  # noqa: E402
    IncompatibleTargetError,
    InputContractError,
    UnsafeModelError,
)
from advkit.models import build  # noqa: E402
from advkit.models.io import load_model, target_for  # noqa: E402
from advkit.models.onnx_export import export_onnx  # noqa: E402
from advkit.models.onnx_scan import inspect_onnx  # noqa: E402
from advkit.models.scan import scan_model_file  # noqa: E402
from advkit.targets.base import InputContract  # noqa: E402
from advkit.targets.onnx import OnnxTarget  # noqa: E402

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10


def _affine(path, *, external: str | None = None, domain: str = "", op: str = "MatMul",
            batch: int | str = "batch", rank: int = 2, functions=(), write_data=True):
    """A model scores = input @ W (W inline, or as external data at ``external``) written to
    ``path``; ``domain``/``op`` name the operator (a custom domain is declared in its opsets)."""
    dims = [batch, 4] if rank == 2 else [batch, 2, 2]
    w = helper.make_tensor("W", TensorProto.FLOAT, W.shape, W.ravel().tolist())
    if external is not None:
        w.ClearField("float_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", external), ("offset", "0"), ("length", str(W.nbytes))):
            w.external_data.add(key=k, value=v)
        if write_data:
            (path.parent / external).write_bytes(W.tobytes())
    node = helper.make_node(op, ["input", "W"], ["scores"], domain=domain)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch, 3])], [w])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


CONTRACT = InputContract((4,), 3)


def test_external_data_inside_the_folder_is_read_and_answers_right(tmp_path):
    t = OnnxTarget(contract=CONTRACT, path=str(_affine(tmp_path / "m.onnx", external="w.bin")))
    x = torch.rand(5, 4)
    assert torch.allclose(t.logits(x), x @ torch.from_numpy(W), atol=1e-6)
    assert t.capabilities.names() == {"logits", "probabilities", "labels"}  # no gradients
    assert scan_model_file(tmp_path / "m.onnx").verdict == "safe"


def test_a_graph_with_a_fixed_batch_is_fed_in_chunks(tmp_path):
    t = OnnxTarget(contract=CONTRACT, path=str(_affine(tmp_path / "m.onnx", batch=2)))
    x = torch.rand(5, 4)
    assert torch.allclose(t.logits(x), x @ torch.from_numpy(W), atol=1e-6)


def _escape_link(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"s" * 64)
    (tmp_path / "model").mkdir()
    os.symlink(outside, tmp_path / "model" / "w.bin")
    return tmp_path / "model" / "m.onnx", "w.bin"


@pytest.mark.parametrize("case, needle", [
    ("../../etc/passwd", "climbs out of the model's folder"),
    ("/etc/passwd", "an absolute path"),
    ("symlink", "through a symbolic link"),
])
def test_external_data_outside_the_folder_is_refused(tmp_path, case, needle):
    if case == "symlink":
        path, loc = _escape_link(tmp_path)
    else:
        path, loc = tmp_path / "m.onnx", case
    _affine(path, external=loc, write_data=False)
    with pytest.raises(UnsafeModelError, match=needle):
        OnnxTarget(contract=CONTRACT, path=str(path))
    with pytest.raises(UnsafeModelError, match=needle):
        load_model(path)
    res = scan_model_file(path)
    assert res.format == "onnx" and res.verdict == "dangerous"


@pytest.mark.parametrize("kwargs, needle", [
    ({"domain": "com.evil", "op": "RunShell"}, "from a custom domain"),
    ({"op": "NoSuchOp"}, "unknown operator"),
    ({"functions": [helper.make_function("local.fn", "F", ["a"], ["b"],
                                         [helper.make_node("Identity", ["a"], ["b"])],
                                         [helper.make_opsetid("", 17)])]},
     "a model-local function"),
])
def test_operators_outside_the_standard_are_refused(tmp_path, kwargs, needle):
    path = _affine(tmp_path / "m.onnx", **kwargs)
    with pytest.raises(UnsafeModelError, match=needle):
        OnnxTarget(contract=CONTRACT, path=str(path))
    assert scan_model_file(path).verdict == "dangerous"


def test_a_truncated_file_and_the_size_limit_are_input_errors(tmp_path):
    good = _affine(tmp_path / "m.onnx").read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(InputContractError, match="truncated"):
        OnnxTarget(contract=CONTRACT, path=str(cut))
    res = scan_model_file(cut)
    assert res.verdict == "unknown" and "truncated" in res.issues[0]
    assert "over the" in inspect_onnx(tmp_path / "m.onnx", max_bytes=16).problem


def test_the_input_rank_and_classes_are_checked_against_the_contract(tmp_path):
    path = str(_affine(tmp_path / "m.onnx", rank=3))
    with pytest.raises(InputContractError, match=r"has shape \(\?, 2, 2\) .* needs \(batch, 4\)"):
        OnnxTarget(contract=CONTRACT, path=path)
    with pytest.raises(InputContractError, match="answers 3 scores per input but the data has 5"):
        OnnxTarget(contract=InputContract((4,), 5), path=str(_affine(tmp_path / "n.onnx")))


@pytest.mark.parametrize("zoo", ["cnn-small", "mlp"])
def test_an_exported_zoo_model_answers_its_logits_and_no_gradients(tmp_path, zoo):
    torch.manual_seed(0)
    model = build(zoo, input_shape=(1, 8, 8), n_classes=10).eval()
    contract = InputContract((1, 8, 8), 10)
    res = export_onnx(model, tmp_path / "m.onnx", contract, dataset="digits", n_random=16)
    assert res.max_abs_diff < 1e-4 and res.labels_agree == 1.0 and res.n_checked == 16
    loaded = load_model(tmp_path / "m.onnx")
    assert loaded.kind == "onnx" and loaded.config["input_shape"] == [1, 8, 8]
    t = target_for(loaded, contract)
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(t.logits(x), model(x), atol=1e-5)
    assert torch.equal(t.labels(x), model(x).argmax(1))
    with pytest.raises(IncompatibleTargetError, match="needs gradients"):
        PGD(eps=0.1).attack(t, x, t.labels(x))
    labels_only = OnnxTarget.from_file(tmp_path / "m.onnx", output="labels")
    assert labels_only.capabilities.names() == {"labels"}
    assert labels_only.contract == contract  # from the file's metadata
    with pytest.raises(InputContractError, match="exported for bounds"):
        target_for(loaded, InputContract((1, 8, 8), 10, bounds=(0.0, 255.0)))
    from advkit.cli.serve import _contract  # `advkit serve-model m.onnx` keeps its bounds

    assert target_for(loaded, _contract(loaded, None, None)).contract == contract


def test_the_cli_refuses_a_hostile_onnx_without_a_traceback(tmp_path, capsys):
    path = _affine(tmp_path / "m.onnx", external="../../etc/passwd", write_data=False)
    assert run(["scan", str(path)]) == 1
    out = capsys.readouterr().out
    assert "DANGEROUS" in out and "climbs out" in out and "outside the model's folder" in out
    spec = tmp_path / "s.yaml"
    spec.write_text(f"dataset: breast_cancer\nmodel: {{path: {path}}}\nsupply_chain: false\n"
                    "attacks:\n  - {name: square, eps: [0.1]}\n")
    code = run(["audit", str(spec), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "UnsafeModelError" in err and "climbs out of the model's folder" in err


def test_advkit_audit_model_audits_an_onnx_file_with_the_specs_data(tmp_path, capsys):
    import json

    from sklearn.linear_model import LogisticRegression

    from advkit.data import load

    data = load("breast_cancer")
    est = LogisticRegression(max_iter=300).fit(data.x_train.numpy(), data.y_train.numpy())
    export_onnx(est, tmp_path / "lr.onnx", data.contract(), dataset="breast_cancer", n_random=4)
    spec = tmp_path / "s.yaml"
    spec.write_text("dataset: breast_cancer\nmodel: {zoo: mlp}\nevaluation: {n_samples: 10}\n"
                    "attacks:\n  - {name: square, eps: [0.2], params: {n_queries: 10}}\n")
    code = run(["audit", str(spec), "--model", str(tmp_path / "lr.onnx"), "--out",
                str(tmp_path / "out"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"]["kind"] == "onnx" and "gradients" not in report["manifest"][
        "capabilities"]  # (in per-feature unit space: FeatureSpaceTarget over the OnnxTarget)
    assert report["model"]["source"] == "scikit-learn LogisticRegression"
