"""`advkit convert SRC OUT`: a trusted pickle-based model, converted once, never needs trust again."""

import os
import pickle
import posix

import joblib
import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from advkit.cli.main import run
from advkit.models import build, load_model, save_model
from advkit.models.scan import scan_model_file


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


EVIL = pickle.dumps(_Payload())


@pytest.fixture
def calls(monkeypatch) -> list:
    recorded = []
    monkeypatch.setattr(posix, "system", lambda cmd: recorded.append(cmd) or 0)
    return recorded


def _zoo(name="cnn-small", seed=1, **kw):
    shape = {"cnn-small": (1, 8, 8), "mlp": (4,)}[name]
    return build(name, input_shape=shape, n_classes=3, generator=torch.Generator().manual_seed(seed),
                 **kw)


def _x(shape, n=16):
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(7))


def _convert(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run(["convert", *map(str, args)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _same_outputs(a, b, shape) -> bool:
    with torch.no_grad():
        return torch.equal(a(_x(shape)), b(_x(shape)))


def test_a_pickled_zoo_model_becomes_a_safe_folder_with_equal_outputs(tmp_path, capsys):
    model = _zoo()
    torch.save(model, tmp_path / "m.pt")
    out = tmp_path / "safe"
    code, stdout, err = _convert(capsys, tmp_path / "m.pt", out, "--trust-pickle")
    assert code == 0, err
    assert "verdict SAFE" in stdout and "trust_pickle=True" in err  # the load's warning is shown
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert scan_model_file(out).verdict == "safe"
    loaded = load_model(out)  # no trust needed any more
    assert loaded.kind == "torch" and _same_outputs(loaded.model, model, (1, 8, 8))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_a_state_dict_needs_its_architecture(tmp_path, capsys):
    model = _zoo("mlp", hidden=(6,))
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    code, _, err = _convert(capsys, tmp_path / "sd.pt", tmp_path / "o", "--trust-pickle")
    assert code == 2 and "--zoo NAME --input-shape" in err and not (tmp_path / "o").exists()
    code, _, err = _convert(capsys, tmp_path / "sd.pt", tmp_path / "o", "--trust-pickle",
                            "--zoo", "mlp", "--input-shape", "4", "--n-classes", "3")
    assert code == 2 and "do not fit" in err  # default hidden sizes: other shapes
    code, stdout, _ = _convert(capsys, tmp_path / "sd.pt", tmp_path / "o", "--trust-pickle",
                               "--zoo", "mlp", "--input-shape", "4", "--n-classes", "3",
                               "--zoo-kwargs", '{"hidden": [6]}')
    assert code == 0 and "verdict SAFE" in stdout
    assert _same_outputs(load_model(tmp_path / "o").model, model, (4,))


def test_a_state_dict_beside_its_config_keeps_the_dataset_info(tmp_path, capsys):
    model = _zoo()
    folder = save_model(model, tmp_path / "m", dataset_info={"shape": [1, 8, 8], "n_classes": 3},
                        extra={"note": "kept"})
    torch.save({"state_dict": model.state_dict()}, folder / "ckpt.pt")
    out = tmp_path / "converted"
    assert _convert(capsys, folder / "ckpt.pt", out, "--trust-pickle")[0] == 0
    loaded = load_model(out)
    assert loaded.config["extra"] == {"note": "kept"} and loaded.config["dataset"]["n_classes"] == 3
    assert _same_outputs(loaded.model, model, (1, 8, 8))


def test_a_module_that_is_not_a_plain_zoo_model_is_refused(tmp_path, capsys):
    model = _zoo()
    model.classifier.append(torch.nn.ReLU())  # same weights, other outputs
    torch.save(model, tmp_path / "m.pt")
    code, _, err = _convert(capsys, tmp_path / "m.pt", tmp_path / "o", "--trust-pickle")
    assert code == 2 and "other outputs" in err and not (tmp_path / "o").exists()


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    return x, (x[:, 0] + x[:, 1] > 0).astype(int)


def test_a_pickled_sklearn_model_becomes_a_safe_skops_file(tmp_path, capsys):
    x, y = _data()
    est = LogisticRegression().fit(x, y)
    (tmp_path / "lr.pkl").write_bytes(pickle.dumps(est))
    out = tmp_path / "lr.skops"
    code, stdout, _ = _convert(capsys, tmp_path / "lr.pkl", out, "--trust-pickle")
    assert code == 0 and "skops, verdict SAFE" in stdout
    res = scan_model_file(out)
    assert (res.format, res.verdict) == ("skops", "safe")
    loaded = load_model(out)  # skops, no trust needed
    np.testing.assert_array_equal(loaded.model.predict(x), est.predict(x))
    np.testing.assert_array_equal(loaded.model.predict_proba(x), est.predict_proba(x))


def test_a_joblib_forest_becomes_skops_with_its_types_listed(tmp_path, capsys):
    x, y = _data()
    est = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)
    joblib.dump(est, tmp_path / "rf.joblib")
    out = tmp_path / "rf.skops"
    code, stdout, _ = _convert(capsys, tmp_path / "rf.joblib", out, "--trust-pickle")
    assert code == 0 and "REQUIRES-TRUST" in stdout and "sklearn.tree._tree.Tree" in stdout
    res = scan_model_file(out)
    assert res.format == "skops" and res.dangerous == {} and "sklearn.tree._tree.Tree" in res.globals
    with pytest.warns(UserWarning, match="trust_pickle"):
        loaded = load_model(out, trust_pickle=True)
    np.testing.assert_array_equal(loaded.model.predict(x), est.predict(x))


def test_without_trust_pickle_nothing_is_loaded_and_it_exits_2(tmp_path, capsys, calls):
    torch.save(_zoo(), tmp_path / "m.pt")
    code, _, err = _convert(capsys, tmp_path / "m.pt", tmp_path / "o")
    assert code == 2 and "--trust-pickle" in err and "runs whatever code" in err
    assert not (tmp_path / "o").exists()
    (tmp_path / "evil.pkl").write_bytes(EVIL)
    code, _, err = _convert(capsys, tmp_path / "evil.pkl", tmp_path / "o", "--allow-dangerous")
    assert code == 2 and "--trust-pickle" in err
    assert calls == []


def test_a_dangerous_source_needs_allow_dangerous(tmp_path, capsys, calls):
    (tmp_path / "evil.pkl").write_bytes(EVIL)
    code, _, err = _convert(capsys, tmp_path / "evil.pkl", tmp_path / "o", "--trust-pickle")
    assert code == 2 and "posix.system" in err and "--allow-dangerous" in err
    assert calls == [] and not (tmp_path / "o").exists()
    code, _, err = _convert(capsys, tmp_path / "evil.pkl", tmp_path / "o", "--trust-pickle",
                            "--allow-dangerous")
    assert "WARNING: --allow-dangerous" in err and calls == ["true"]  # the flag reached the load
    assert code == 2 and "neither a PyTorch model" in err and not (tmp_path / "o").exists()


def test_an_existing_output_is_replaced_only_with_force(tmp_path, capsys):
    torch.save(_zoo(seed=1), tmp_path / "a.pt")
    torch.save(_zoo(seed=2), tmp_path / "b.pt")
    out = tmp_path / "o"
    assert _convert(capsys, tmp_path / "a.pt", out, "--trust-pickle")[0] == 0
    before = (out / "model.safetensors").read_bytes()
    code, _, err = _convert(capsys, tmp_path / "b.pt", out, "--trust-pickle")
    assert code == 2 and "--force" in err and (out / "model.safetensors").read_bytes() == before
    assert _convert(capsys, tmp_path / "b.pt", out, "--trust-pickle", "--force")[0] == 0
    assert (out / "model.safetensors").read_bytes() != before
    (out / "notes.txt").write_text("mine")  # a folder with other content is never removed
    code, _, err = _convert(capsys, tmp_path / "a.pt", out, "--trust-pickle", "--force")
    assert code == 2 and "notes.txt" in err and (out / "notes.txt").exists()
    code, _, err = _convert(capsys, tmp_path / "a.pt", tmp_path / "a.pt", "--trust-pickle",
                            "--force")
    assert code == 2 and "source" in err


def test_a_file_already_safe_is_not_converted(tmp_path, capsys):
    folder = save_model(_zoo(), tmp_path / "m")
    code, _, err = _convert(capsys, folder / "model.safetensors", tmp_path / "o", "--trust-pickle")
    assert code == 2 and "already safetensors" in err
