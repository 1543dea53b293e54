"""`advkit export` and export_onnx: scikit-learn models (logistic regression, random forest) and a
saved zoo model become ONNX files whose onnxruntime scores match the original's; the contract goes
into the metadata; a file that does not reproduce its model is refused and not written; bad input
is exit 2 without a traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("skl2onnx")
from sklearn.ensemble import RandomForestClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

from advkit.cli.main import run  # noqa: E402
from advkit.data import load  # noqa: E402
from advkit.errors import InvalidParameterError, ModelBehaviorError  # noqa: E402
from advkit.models import build  # noqa: E402
from advkit.models.io import save_model  # noqa: E402
from advkit.models.onnx_export import export_onnx, verify  # noqa: E402
from advkit.targets.onnx import OnnxTarget  # noqa: E402


@pytest.fixture(scope="module")
def cancer():
    return load("breast_cancer")


@pytest.mark.parametrize("est", [LogisticRegression(max_iter=500),
                                 RandomForestClassifier(n_estimators=8, max_depth=4,
                                                        random_state=0)])
def test_sklearn_models_export_with_matching_probabilities(tmp_path, cancer, est):
    x, y = cancer.x_train.numpy(), cancer.y_train.numpy()
    est.fit(x, y)
    res = export_onnx(est, tmp_path / "m.onnx", cancer.contract(), dataset="breast_cancer",
                      samples=cancer.x_test[:50], n_random=20)
    assert res.kind == "sklearn" and res.scores == "probabilities" and res.n_checked == 70
    t = OnnxTarget.from_file(res.path)
    assert t.capabilities.names() == {"probabilities", "labels"}
    assert t.contract.shape == (x.shape[1],) and t.contract.n_classes == 2
    xt = cancer.x_test
    want = est.predict_proba(xt.numpy())
    assert np.abs(t.probabilities(xt).numpy() - want).max() < 1e-5
    assert np.array_equal(t.labels(xt).numpy(), est.predict(xt.numpy()))
    assert t.describe()["dataset"] == "breast_cancer"


def test_an_export_that_does_not_reproduce_its_model_is_refused(tmp_path, cancer):
    x, y = cancer.x_train.numpy(), cancer.y_train.numpy()
    a = LogisticRegression(max_iter=500).fit(x, y)
    res = export_onnx(a, tmp_path / "a.onnx", cancer.contract(), n_random=8)
    b = LogisticRegression(C=1e-3, max_iter=500).fit(x, y)  # another model: other scores
    with pytest.raises(ModelBehaviorError, match="differs from the original model"):
        verify(b, res.path, cancer.contract(), n_random=8)


def test_export_refuses_an_existing_file_and_a_name_without_onnx(tmp_path, cancer):
    est = LogisticRegression(max_iter=200).fit(cancer.x_train.numpy(), cancer.y_train.numpy())
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(InvalidParameterError, match="does not exist yet"):
        export_onnx(est, tmp_path / "m.onnx", cancer.contract())
    with pytest.raises(InvalidParameterError, match=r"ending in \.onnx"):
        export_onnx(est, tmp_path / "m.bin", cancer.contract())
    assert (tmp_path / "m.onnx").read_bytes() == b"x"
    export_onnx(est, tmp_path / "m.onnx", cancer.contract(), force=True, n_random=4)
    c, want = OnnxTarget.from_file(tmp_path / "m.onnx").contract, cancer.contract()
    assert (c.shape, c.n_classes, c.bounds) == (want.shape, want.n_classes, want.bounds)


def test_the_cli_exports_a_saved_zoo_model_and_a_skops_forest(tmp_path, capsys):
    import skops.io as sio

    torch.manual_seed(0)
    digits = load("digits")
    model = build("mlp", input_shape=digits.info.shape, n_classes=10)
    save_model(model, tmp_path / "mlp", dataset_info=digits.info)
    assert run(["export", str(tmp_path / "mlp"), "--out", str(tmp_path / "mlp.onnx"),
                "--n-check", "8"]) == 0
    out = capsys.readouterr().out
    assert "verified with onnxruntime on 8 inputs" in out and "labels agree on 100.0%" in out
    t = OnnxTarget.from_file(tmp_path / "mlp.onnx")
    x = digits.x_test[:20]
    with torch.no_grad():
        assert torch.allclose(t.logits(x), model.eval()(x), atol=1e-5)
    assert t.describe()["dataset"] == "digits" and t.describe()["source"] == "advkit zoo mlp"

    cancer = load("breast_cancer")
    rf = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0)
    sio.dump(rf.fit(cancer.x_train.numpy(), cancer.y_train.numpy()), tmp_path / "rf.skops")
    code = run(["export", str(tmp_path / "rf.skops"), "--out", str(tmp_path / "rf.onnx"),
                "--trust-pickle"])  # skops does not trust a forest's types by default
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "--dataset" in err
    assert run(["export", str(tmp_path / "rf.skops"), "--out", str(tmp_path / "rf.onnx"),
                "--dataset", "breast_cancer", "--trust-pickle"]) == 0
    assert "on 128 inputs" in capsys.readouterr().out  # 64 test points and 64 random ones
    assert run(["scan", str(tmp_path / "rf.onnx")]) == 0
    assert "onnx, verdict SAFE" in capsys.readouterr().out


def test_the_cli_export_refuses_a_model_it_cannot_export_with_exit_2(tmp_path, capsys):
    code = run(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "an existing model file or folder" in err
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07garbage")
    code = run(["export", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "n.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "ONNX" in err
