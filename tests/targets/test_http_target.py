"""HttpTarget (issue 14, item 3): against `advkit serve-model` with injected faults (dropped
connections, 429s, latency) nothing is lost and the query count is exact; an identical input is
never paid for twice; hostile answers, refused keys and dead APIs are typed errors; the query log
resumes, replays offline and refuses what it did not write."""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest
import torch

from advkit.errors import (
    DataFormatError,
    InvalidParameterError,
    ModelBehaviorError,
    RemoteTargetError,
)
from advkit.targets.base import InputContract
from advkit.targets.http import HttpTarget
from advkit.targets.query_log import row_digests
from serve_helpers import save_forest, servers

KEY = "sk-test-4f1c9a77-never-shown"


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("http-target")
    data, est = save_forest(folder / "rf.skops")
    return folder, data, est


@pytest.fixture(scope="module")
def faulty(forest):
    """The forest served with 10 % dropped connections, 10 % 429 (Retry-After: 1 s) and 20 ms
    of added latency per request."""
    folder, _, _ = forest
    with servers((folder / "rf.skops", ["--drop-rate", "0.1", "--429-rate", "0.1",
                                        "--latency-ms", "20", "--seed", "3"],
                  folder / "faulty.log", None)) as (server,):
        yield server


def _contract(data):
    c = data.contract()
    return InputContract(shape=c.shape, n_classes=c.n_classes, bounds=(-1e30, 1e30))


def _target(data, url, **kw):
    return HttpTarget(contract=_contract(data), url=url, **kw)


def test_faults_lose_nothing_and_the_count_is_exact(forest, faulty, monkeypatch):
    _, data, est = forest
    waits = []
    monkeypatch.setattr("advkit.targets.http.time.sleep", waits.append)  # no real waiting
    x = data.x_train[:150]
    before = faulty.stats()
    t = _target(data, faulty.url + "/predict", max_batch=8, concurrency=3, backoff_s=0.01)
    p1 = t.probabilities(x)
    p2 = t.probabilities(torch.cat([x[:40], x[100:]]))  # asked again: answered from the cache
    after = faulty.stats()
    expect = torch.as_tensor(est.predict_proba(x.numpy()), dtype=torch.float32)
    assert torch.equal(p1, expect)  # exact: float32 answers survive the JSON round trip
    assert torch.equal(p2, torch.cat([expect[:40], expect[100:]]))
    faults = after["dropped"] - before["dropped"] + after["throttled"] - before["throttled"]
    assert after["dropped"] > before["dropped"] and after["throttled"] > before["throttled"]
    distinct = len(set(row_digests(x.numpy())))
    assert after["rows"] - before["rows"] == t.sent == distinct  # the server counts what was paid
    assert after["distinct_rows"] - before["distinct_rows"] == distinct  # none answered twice
    assert t.cached == 240 - distinct and t.queries == 240
    assert t.requests == math.ceil(distinct / 8) + faults and t.retried == faults
    assert sum(w >= 1.0 for w in waits) >= after["throttled"] - before["throttled"]  # Retry-After


def test_retry_after_is_capped_by_max_wait(forest, faulty, monkeypatch):
    _, data, _ = forest
    waits = []
    monkeypatch.setattr("advkit.targets.http.time.sleep", waits.append)
    before = faulty.stats()
    t = _target(data, faulty.url + "/predict", max_batch=1, backoff_s=0.0, max_wait_s=0.25)
    t.labels(data.x_train[150:190])
    throttled = faulty.stats()["throttled"] - before["throttled"]
    assert throttled > 0 and max(waits) <= 0.25 and sum(w == 0.25 for w in waits) == throttled


def test_identical_rows_in_one_batch_are_sent_once(forest, faulty):
    _, data, _ = forest
    row = data.x_train[200:201]
    before = faulty.stats()["rows"]
    t = _target(data, faulty.url + "/predict")
    t.probabilities(row.repeat(5, 1))
    assert faulty.stats()["rows"] - before == 1 == t.sent and t.cached == 4


def test_the_query_log_resumes_and_replays_offline(forest, faulty, tmp_path):
    _, data, _ = forest
    log = tmp_path / "q.jsonl"
    x = data.x_train[210:240]
    t = _target(data, faulty.url + "/predict", query_log=str(log))
    p = t.probabilities(x)
    lines = log.read_text().splitlines()
    assert len(set(row_digests(x.numpy()))) == 30  # (the test assumes distinct rows)
    assert len(lines) == 31 and json.loads(lines[0])["format"] == "advkit-query-log"
    assert {json.loads(ln)["digest"] for ln in lines[1:]} == set(row_digests(x.numpy()))
    log.write_text("\n".join(lines) + "\n" + lines[5][:40])  # a last line cut short by a crash
    before = faulty.stats()["rows"]
    again = _target(data, faulty.url + "/predict", query_log=str(log))
    assert again.from_log == 30 and torch.equal(again.probabilities(x), p)
    assert again.sent == 0 and faulty.stats()["rows"] == before
    offline = _target(data, "http://127.0.0.1:9/predict", query_log=str(log), offline=True)
    assert torch.equal(offline.probabilities(x), p) and offline.sent == 0
    with pytest.raises(RemoteTargetError, match="offline replay: the query log .* has no answer"):
        offline.probabilities(data.x_train[:1])
    again.probabilities(data.x_train[:2])  # appended after the cut-off line was dropped
    assert _target(data, faulty.url, query_log=str(log), offline=True).from_log == 32


def test_a_log_for_another_model_or_a_damaged_one_is_refused(forest, tmp_path):
    _, data, _ = forest
    log = tmp_path / "q.jsonl"
    _target(data, "http://127.0.0.1:9/p", query_log=str(log), output="labels",
            transport=_mock(lambda r: httpx.Response(200, json={"labels": [1]}))
            ).labels(data.x_train[:1])
    with pytest.raises(DataFormatError, match="written for other answers"):
        _target(data, "http://127.0.0.1:9/p", query_log=str(log))  # probabilities, not labels
    log.write_text(log.read_text().splitlines()[0] + "\n{\"digest\": 1}\n")
    with pytest.raises(DataFormatError, match="line 2: not an answer line"):
        _target(data, "http://127.0.0.1:9/p", query_log=str(log), output="labels")
    with pytest.raises(InvalidParameterError, match="query_log"):
        _target(data, "http://127.0.0.1:9/p", offline=True)


def _mock(handler):
    return httpx.MockTransport(handler)


@pytest.mark.parametrize("answer, needle", [
    (b"<html>busy</html>", "not JSON"),
    (b'{"probabilities": [[0.5, 0.5]]}', "answered 1 answers for 3 inputs"),
    (b'{"scores": [[0.5, 0.5]]}', "no list at 'probabilities'"),
    (b'{"probabilities": [[NaN, 0.5], [0.5, 0.5], [0.5, 0.5]]}', "expected 2 finite"),
    (b'{"probabilities": [[0.2, 0.3, 0.5], [0.5, 0.5], [0.5, 0.5]]}', "expected 2 finite"),
    (b'{"probabilities": [[7, 0.5], [0.5, 0.5], [0.5, 0.5]]}', "in \\[0, 1\\]"),
])
def test_hostile_answers_are_typed_errors(forest, answer, needle):
    _, data, _ = forest
    t = _target(data, "http://api.test/predict",
                transport=_mock(lambda r: httpx.Response(200, content=answer)))
    with pytest.raises(ModelBehaviorError, match=needle):
        t.probabilities(data.x_train[:3])


def test_a_huge_answer_is_refused(forest, monkeypatch):
    _, data, _ = forest
    monkeypatch.setattr("advkit.targets.http.MAX_RESPONSE_BYTES", 1 << 20)
    t = _target(data, "http://api.test/predict",
                transport=_mock(lambda r: httpx.Response(200, content=b" " * (2 << 20))))
    with pytest.raises(ModelBehaviorError, match="more than 1 MiB"):
        t.probabilities(data.x_train[:1])


def test_the_key_is_sent_as_a_header_and_never_shown(forest, monkeypatch):
    _, data, _ = forest
    monkeypatch.setenv("MY_API_KEY", KEY)
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(401, text=f"bad key {KEY}")

    t = _target(data, "http://api.test/predict", api_key_env="MY_API_KEY",
                transport=_mock(handler))
    with pytest.raises(RemoteTargetError, match="HTTP 401") as err:
        t.probabilities(data.x_train[:1])
    assert seen == [f"Bearer {KEY}"]  # refused at once: a 401 is not retried
    assert KEY not in str(err.value) and KEY not in repr(t) and KEY not in json.dumps(t.describe())
    monkeypatch.delenv("MY_API_KEY")
    with pytest.raises(RemoteTargetError, match="MY_API_KEY is not set"):
        _target(data, "http://api.test/predict", api_key_env="MY_API_KEY")


def test_5xx_is_retried_then_a_typed_error_naming_the_url(forest, monkeypatch):
    _, data, _ = forest
    monkeypatch.setattr("advkit.targets.http.time.sleep", lambda s: None)
    calls = []
    t = _target(data, "http://user:pw@api.test/predict?key=secret", retries=3,
                transport=_mock(lambda r: calls.append(1) or httpx.Response(503)))
    with pytest.raises(RemoteTargetError, match=r"api.test/predict did not answer after 4 "
                                                r"attempts \(last: HTTP 503\)") as err:
        t.probabilities(data.x_train[:1])
    assert len(calls) == 4 and "secret" not in str(err.value) and "pw" not in str(err.value)


def test_an_unreachable_api_is_a_typed_error_with_the_fix(forest):
    _, data, _ = forest
    from serve_helpers import free_port

    url = f"http://127.0.0.1:{free_port()}/predict"
    t = _target(data, url, retries=1, backoff_s=0.0)
    with pytest.raises(RemoteTargetError, match="advkit serve-model") as err:
        t.labels(data.x_train[:1])
    assert url in str(err.value) and "ConnectError" in str(err.value)


@pytest.mark.parametrize("kw", [{"url": "ftp://x/y"}, {"url": "predict"}, {"max_batch": 0},
                                {"concurrency": 0}, {"output": "logits"}, {"timeout_s": 0},
                                {"rate_limit": -1.0}])
def test_bad_parameters_are_typed_errors(forest, kw):
    _, data, _ = forest
    with pytest.raises(InvalidParameterError):
        HttpTarget(contract=_contract(data), **{"url": "http://127.0.0.1:9/p", **kw})


def test_the_digest_is_of_the_exact_float32_bytes():
    a = np.array([[0.1, 0.2]], dtype=np.float64)
    assert row_digests(a) == row_digests(a.astype(np.float32))
    assert row_digests(a) != row_digests(np.nextafter(a.astype(np.float32), 1))



def test_the_key_can_come_from_a_file(forest, tmp_path):
    _, data, _ = forest
    (tmp_path / "key").write_text(KEY + "\n")
    seen = []

    def handler(request):
        seen.append(request.headers.get("x-api-key"))
        return httpx.Response(200, json={"labels": [0]})

    t = _target(data, "http://api.test/predict", api_key_file=str(tmp_path / "key"),
                api_key_header="X-API-Key", api_key_prefix="", output="labels",
                transport=_mock(handler))
    assert t.labels(data.x_train[:1]).tolist() == [0] and seen == [KEY]
    with pytest.raises(RemoteTargetError, match="is missing, unreadable or empty"):
        _target(data, "http://api.test/predict", api_key_file=str(tmp_path / "nothing"))
