"""An audit of a model behind an API (issue 14, Done when, first point): `advkit serve-model`
serves a random forest on 127.0.0.1 and `model: {url: ...}` audits it through HttpTarget with the
same verdicts as in-process at the same seed, also through dropped connections, 429s and latency
with an exact query count; an audit killed with SIGKILL and rerun sends no answered query again
(the server counts); the API key appears in no log, report or output; a dead URL is exit 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from advkit.audit.spec import parse_spec
from advkit.cli.main import run
from advkit.errors import AuditSpecError
from audit_helpers import audit_file as _audit
from audit_helpers import outcome as _outcome
from serve_helpers import env, free_port, save_forest, servers

KEY = "sk-audit-93b1e0d2-secret"
BODY = ("seed: 0\ndataset: breast_cancer\nevaluation: {n_samples: 12}\n"
        "attacks:\n  - {name: square, eps: [0.05, 0.2], params: {n_queries: 30}}\n")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """The forest saved with skops, served twice: with faults (10 % drops, 10 % 429s, 20 ms) and
    with an API key and 250 ms of latency (time to kill an audit mid-request)."""
    folder = tmp_path_factory.mktemp("http-audit")
    save_forest(folder / "rf.skops")
    with servers(
        (folder / "rf.skops", ["--drop-rate", "0.1", "--429-rate", "0.1", "--latency-ms", "20",
                               "--seed", "1"], folder / "faulty.log", None),
        (folder / "rf.skops", ["--api-key-env", "SERVE_KEY", "--latency-ms", "250"],
         folder / "keyed.log", {"SERVE_KEY": KEY}),
    ) as (faulty, keyed):
        yield folder, faulty, keyed


def _write(path, model: str) -> str:
    path.write_text(f"model: {model}\n{BODY}")
    return str(path)


@pytest.fixture(scope="module")
def in_process(lab):
    folder, _, _ = lab
    spec = _write(folder / "local.yaml", f"{{path: {folder / 'rf.skops'}, trust_pickle: true}}\n"
                  "supply_chain: false")  # (a url model has no file to scan)
    return _audit(spec, folder / "local-out").to_dict()


def test_through_a_faulty_api_the_verdicts_equal_in_process(lab, in_process, monkeypatch):
    folder, faulty, _ = lab
    monkeypatch.setattr("advkit.targets.http.time.sleep", lambda s: None)  # Retry-After: 1 s
    spec = _write(folder / "faulty.yaml", f'{{url: "{faulty.url}/predict", query_log: '
                  'faulty.jsonl, retries: 10, budget: 100000}')
    before = faulty.stats()
    report = _audit(spec, folder / "faulty-out").to_dict()
    after = faulty.stats()
    assert _outcome(report) == _outcome(in_process)
    assert [v["status"] for v in report["verdicts"]] == ["vulnerable"]  # something to compare
    q = report["model"]["queries"]
    assert after["dropped"] > before["dropped"] and after["throttled"] > before["throttled"]
    assert q["sent"] == after["rows"] - before["rows"] > 0  # the count is exact
    assert after["distinct_rows"] - before["distinct_rows"] == q["sent"]  # none paid twice
    assert q["sent"] + q["cached"] == q["queries"] and q["logged_before_run"] == 0
    faults = after["dropped"] - before["dropped"] + after["throttled"] - before["throttled"]
    assert q["retries"] == faults and q["requests"] == after["requests"] - before["requests"] + faults
    lines = (folder / "faulty.jsonl").read_text().splitlines()
    assert len(lines) == 1 + q["sent"]
    offline = _write(folder / "offline.yaml", f'{{url: "{faulty.url}/predict", query_log: '
                     'faulty.jsonl, offline: true}')
    replay = _audit(offline, folder / "offline-out").to_dict()  # no server needed
    assert _outcome(replay) == _outcome(in_process) and faulty.stats()["rows"] == after["rows"]
    assert replay["model"]["queries"]["sent"] == 0


def _lines(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_killed_mid_audit_the_rerun_sends_no_answered_query_again(lab, in_process):
    folder, _, keyed = lab
    log = folder / "keyed.jsonl"
    spec = _write(folder / "keyed.yaml", f'{{url: "{keyed.url}/predict", query_log: keyed.jsonl, '
                  "api_key_env: SERVE_KEY}")
    out = folder / "keyed-out"
    cmd = [sys.executable, "-m", "advkit", "audit", spec, "--out", str(out), "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env(SERVE_KEY=KEY))
    try:
        deadline = time.monotonic() + 120
        while not (_lines(log) > 40 and keyed.stats()["in_flight"] > 0):
            assert first.poll() is None, "the audit ended before it could be killed"
            assert time.monotonic() < deadline, "the audit made no progress"
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)  # while a request waits on the server
    finally:
        if first.poll() is None:
            first.kill()
        outs = first.communicate(timeout=30)
    assert first.returncode == -signal.SIGKILL
    time.sleep(0.5)  # the server notices the closed connection after its latency
    logged = _lines(log) - 1
    answered = keyed.stats()
    assert answered["rows"] == logged  # the request cut off by the kill was not answered
    second = subprocess.run(cmd, capture_output=True, env=env(SERVE_KEY=KEY), timeout=300)
    assert second.returncode == 0, second.stderr.decode()[-3000:]
    final = keyed.stats()
    report = json.loads((out / "report.json").read_text())
    q = report["model"]["queries"]
    assert q["logged_before_run"] == logged > 0
    assert final["rows"] == final["distinct_rows"]  # no row answered twice across both runs
    assert final["rows"] - answered["rows"] == q["sent"] and _lines(log) - 1 == final["rows"]
    assert _outcome(report) == _outcome(in_process)
    # the key: in no log, report or output of either run
    texts = [log.read_text(), (out / "report.json").read_text(),
             (out / "report.html").read_text(), *[o.decode() for o in (*outs, second.stdout,
                                                                      second.stderr)]]
    assert all(KEY not in t for t in texts)
    assert report["model"]["api_key"] == "from env"


def test_a_wrong_key_is_exit_2_naming_the_fix_not_the_key(lab, tmp_path, capsys, monkeypatch):
    _, _, keyed = lab
    monkeypatch.setenv("WRONG_KEY", "sk-wrong-7d1e")
    spec = _write(tmp_path / "s.yaml", f'{{url: "{keyed.url}/predict", api_key_env: WRONG_KEY}}')
    code = run(["audit", spec, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "sk-wrong-7d1e" not in err
    assert "RemoteTargetError" in err and "HTTP 401" in err and "api_key_env" in err


def test_an_unreachable_url_is_exit_2_with_the_url_and_the_fix(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/predict"
    spec = _write(tmp_path / "s.yaml", f'{{url: "{url}", retries: 1, backoff_s: 0}}')
    code = run(["audit", spec, "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"the API at {url} did not answer" in err and "advkit serve-model" in err


@pytest.mark.parametrize("model, needle", [
    ({"url": "http://127.0.0.1:1/p", "path": "m.skops"}, "give no zoo, path"),
    ({"path": "m.skops", "budget": 10}, "budget only apply to a model behind an API"),
    ({"url": "http://127.0.0.1:1/p", "output": "logits"}, "output must be"),
    ({"url": "http://127.0.0.1:1/p", "api_key_env": "A", "api_key_file": "k"}, "not both"),
    ({"url": "http://127.0.0.1:1/p", "budget": 0}, "budget"),
])
def test_the_url_model_section_is_validated(model, needle):
    with pytest.raises(AuditSpecError, match=needle):
        parse_spec({"dataset": "breast_cancer", "model": model,
                    "attacks": [{"name": "square", "eps": [0.1]}]})


def test_an_input_shape_other_than_the_datas_is_refused(tmp_path):
    spec = _write(tmp_path / "s.yaml", '{url: "http://127.0.0.1:1/p", input_shape: [8, 8]}')
    with pytest.raises(AuditSpecError, match=r"model.input_shape \[8, 8\] is not the dataset's"):
        _audit(spec, tmp_path / "out")
