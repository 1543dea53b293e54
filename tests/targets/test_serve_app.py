"""The served API (issue 14, item 4) in-process: what it answers (scores, rounded, labels only),
its key, its bounds on what it takes, and the CLI's refusal of a non-local address."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from advkit.cli.main import run
from advkit.errors import InvalidParameterError
from advkit.models.io import target_for
from advkit.serve.model_api import ServeOptions, build_app
from advkit.targets.base import InputContract

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx is what advkit uses
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 4)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(int)
EST = LogisticRegression().fit(X, Y)


def _client(**opts) -> TestClient:
    target = target_for(EST, InputContract(shape=(4,), n_classes=2, bounds=(-1e30, 1e30)))
    return TestClient(build_app(target, ServeOptions(**opts)))


def test_scores_rounded_and_labels_only():
    rows = X[:3].tolist()
    p = _client().post("/predict", json={"inputs": rows}).json()["probabilities"]
    assert np.allclose(p, EST.predict_proba(X[:3]), atol=1e-6)
    r = _client(round=1).post("/predict", json={"inputs": rows}).json()["probabilities"]
    assert r == np.round(np.asarray(p, dtype=np.float32), 1).tolist()
    labels = _client(labels_only=True).post("/predict", json={"inputs": rows}).json()
    assert labels == {"labels": EST.predict(X[:3]).tolist()}


def test_stats_count_rows_and_distinct_rows():
    c = _client()
    c.post("/predict", json={"inputs": X[:3].tolist()})
    c.post("/predict", json={"inputs": X[:2].tolist()})
    assert c.get("/stats").json()["rows"] == 5 and c.get("/stats").json()["distinct_rows"] == 3
    assert c.get("/health").json() == {"status": "ok"}


def test_the_key_is_required_when_set():
    c = _client(api_key="k-123")
    assert c.post("/predict", json={"inputs": X[:1].tolist()}).status_code == 401
    assert c.get("/stats").status_code == 401
    wrong = {"Authorization": "Bearer k-124"}
    assert c.post("/predict", json={"inputs": X[:1].tolist()}, headers=wrong).status_code == 401
    ok = c.post("/predict", json={"inputs": X[:1].tolist()},
                headers={"Authorization": "Bearer k-123"})
    assert ok.status_code == 200 and "k-123" not in ok.text


@pytest.mark.parametrize("body, status", [
    (b"not json", 400),
    (b"[" * 100_000 + b"]" * 100_000, 400),
    (b'{"inputs": []}', 422),
    (b'{"rows": [[1, 2, 3, 4]]}', 422),
    (b'{"inputs": [[1, 2, 3]]}', 422),
    (b'{"inputs": [[1, 2, 3, "x"]]}', 422),
    (b'{"inputs": [[1, 2, 3, NaN]]}', 422),
    (b'{"inputs": [[1, 2, 3, 1e999]]}', 422),
    (json.dumps({"inputs": [[0.0] * 4] * 11}).encode(), 413),
    (json.dumps({"inputs": [[0.0] * 4] * 5000}).encode(), 413),
])
def test_hostile_requests_are_refused(body, status):
    c = _client(max_rows=10, max_body_bytes=50_000 if status != 400 else 1 << 20)
    r = c.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert c.get("/stats").json()["rows"] == 0


def test_faults_are_drawn_from_the_seed():
    def faults(seed):
        c = _client(rate_429=0.5, seed=seed)
        return [c.post("/predict", json={"inputs": X[:1].tolist()}).status_code
                for _ in range(20)]

    a = faults(1)
    assert a == faults(1) and a != faults(2) and {200, 429} == set(a)
    r = _client(rate_429=1.0, retry_after_s=3).post("/predict", json={"inputs": X[:1].tolist()})
    assert r.headers["retry-after"] == "3"


def test_bad_options_are_typed_errors():
    for kw in ({"drop_rate": 1.5}, {"latency_ms": -1}, {"max_rows": 0},
               {"round": 2, "labels_only": True}):
        with pytest.raises(InvalidParameterError):
            ServeOptions(**kw)


def test_a_non_local_host_needs_an_explicit_flag(tmp_path, capsys):
    code = run(["serve-model", str(tmp_path / "m.skops"), "--host", "0.0.0.0"])
    err = capsys.readouterr().err
    assert code == 2 and "--allow-remote" in err and "Traceback" not in err


def test_a_pickle_is_refused_without_the_trust_flag(tmp_path, capsys):
    import joblib

    joblib.dump(EST, tmp_path / "clf.joblib")
    code = run(["serve-model", str(tmp_path / "clf.joblib"), "--port", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "--trust-pickle" in err
