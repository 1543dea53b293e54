"""The audit trail: every audit appended to a history store, `advkit history` lists them,
`advkit compare A B` shows each metric's change and gates on regressions (exit 1)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading

import pytest

from advkit.audit.compare import compare
from advkit.audit.history import History, headline, history_path, record_from_report
from advkit.cli.main import run
from advkit.errors import HistoryError

SPEC = """
title: history {epochs}
seed: 1
dataset: digits
model: {{zoo: mlp, epochs: {epochs}}}
evaluation: {{n_samples: 40}}
attacks: [{{name: fgsm, eps: [0, 0.1]}}]
"""
WORST = "worst-case/Linf/eps=0.1"


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    """Two versions of a model (2 and 8 epochs) audited with `advkit audit` into one history."""
    root = tmp_path_factory.mktemp("history")
    hist = root / "h.sqlite"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv("CI", "true")
        for i, epochs in enumerate((2, 8), 1):
            spec = root / f"s{epochs}.yaml"
            spec.write_text(SPEC.format(epochs=epochs))
            assert run(["audit", str(spec), "--out", str(root / f"r{i}"),
                        "--history", str(hist)]) == 0
    return hist, root / "r1", root / "r2"


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


def _doc(path):
    return json.loads((path / "report.json").read_text())


def _plant(src, dst, drop=0.2):
    """A copy of the report src/report.json whose worst-case robust accuracy is ``drop`` lower."""
    doc = _doc(src)
    for s in doc["scenarios"]:
        if s["id"] == WORST:
            ra = s["metrics"]["robust_accuracy"]
            ra["value"] -= drop
            ra["k"] -= round(drop * ra["n"])
    dst.mkdir()
    (dst / "report.json").write_text(json.dumps(doc))
    return dst / "report.json"


def test_every_audit_is_recorded_and_listed(audits, capsys):
    hist, r1, r2 = audits
    capsys.readouterr()
    assert run(["history", "--history", str(hist)]) == 0
    out = capsys.readouterr().out
    shas = [_doc(r)["manifest"]["sha256"]["model"] for r in (r1, r2)]
    assert shas[0] != shas[1]
    for sha, title in zip(shas, ("history 2", "history 8"), strict=True):
        assert sha[:8] in out and title in out
    assert "@ Linf 0.1" in out and "evasion:" in out
    assert run(["history", "--history", str(hist), "--json", "--limit", "1"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["id"] == 2 and rows[0]["title"] == "history 8"
    assert rows[0]["report_path"].endswith("report.json") and rows[0]["spec_path"].endswith(".yaml")
    ra = rows[0]["headline"]["metrics"][WORST]["robust_accuracy"]
    assert set(ra) == {"value", "lo", "hi", "k", "n"} and ra["lo"] <= ra["value"] <= ra["hi"]
    # at eps 0 only the clean accuracy is kept (robust accuracy equals it, success is 0)
    assert set(rows[0]["headline"]["metrics"]["worst-case/Linf/eps=0"]) == {"clean_accuracy"}


def test_compare_two_model_versions_prints_deltas(audits, capsys):
    hist, r1, r2 = audits
    capsys.readouterr()
    code = run(["compare", "1", "2", "--history", str(hist), "--json"])
    doc = json.loads(capsys.readouterr().out)
    a, b = (_doc(r) for r in (r1, r2))
    worst = {(c["scenario"], c["metric"]): c for c in doc["changes"]}[(WORST, "robust_accuracy")]
    va = next(s for s in a["scenarios"] if s["id"] == WORST)["metrics"]["robust_accuracy"]["value"]
    vb = next(s for s in b["scenarios"] if s["id"] == WORST)["metrics"]["robust_accuracy"]["value"]
    assert worst["delta"] == pytest.approx(vb - va)
    assert code == (1 if doc["regressions"] else 0)
    assert any("different specs" in n for n in doc["notes"])  # epochs 2 vs 8: flagged
    assert doc["verdicts"][0]["threat"] == "evasion"
    run(["compare", "1", "#2", "--history", str(hist)])
    out = capsys.readouterr().out
    assert "robust_accuracy" in out and f"{vb - va:+.3f}" in out and "[" in out  # intervals


def test_compare_exits_1_on_a_planted_regression(audits, tmp_path, capsys):
    _, _, r2 = audits
    bad = _plant(r2, tmp_path / "bad")
    capsys.readouterr()
    assert run(["compare", str(r2), str(bad)]) == 1
    cap = capsys.readouterr()
    assert "REGRESSED" in cap.out and "-0.200" in cap.out
    assert "REGRESSION" in cap.err and "robust_accuracy" in cap.err
    assert run(["compare", str(r2), str(r2 / "report.json")]) == 0  # equal: no regression
    assert "no metric regressed" in capsys.readouterr().out
    assert run(["compare", str(bad), str(r2)]) == 0  # the other way round it improved
    assert run(["compare", str(r2), str(bad), "--tolerance", "0.25"]) == 0
    c = compare(*(record_from_report(_doc(p)) for p in (r2, bad.parent)), tolerance=0.01)
    assert [(x.scenario, x.metric) for x in c.regressions] == [(WORST, "robust_accuracy")]


def test_attack_success_up_is_a_regression(audits, tmp_path):
    _, _, r2 = audits
    doc = _doc(r2)
    for s in doc["scenarios"]:
        if s["id"] == WORST:
            s["metrics"]["attack_success_rate"]["value"] += 0.1
    a = record_from_report(_doc(r2))
    b = record_from_report(doc)
    assert [(x.metric, x.status) for x in compare(a, b).regressions] == [
        ("attack_success_rate", "regressed")]


@pytest.mark.parametrize("args,needle", [
    (["99", "1"], "no audit #99"),
    (["1", "nope"], "neither a report file nor an audit id"),
    (["1", "missing.json"], "neither a report file"),
    (["1", "1", "--tolerance", "2"], "--tolerance"),
])
def test_bad_input_exits_2(audits, capsys, args, needle):
    hist = audits[0]
    assert run(["compare", *args, "--history", str(hist)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_unreadable_report_exits_2(tmp_path, capsys):
    junk = tmp_path / "report.json"
    junk.write_text("{not json")
    assert run(["compare", str(junk), str(junk)]) == 2
    err = capsys.readouterr().err
    assert "ReportFormatError" in err and "Traceback" not in err


def test_nothing_in_common_exits_2(tmp_path, capsys):
    for name, sid in (("a", "x/eps=0"), ("b", "y/eps=0")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps({
            "schema_version": "1.1", "title": name, "manifest": {}, "verdicts": [],
            "scenarios": [{"id": sid, "metrics": {"clean_accuracy": {
                "value": 0.5, "k": 1, "n": 2, "ci_low": 0.1, "ci_high": 0.9}}}]}))
    assert run(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "share no metric" in capsys.readouterr().err


# ---------------------------------------------------------------- the store


def test_damaged_history_exits_2_and_never_fails_an_audit(audits, tmp_path, capsys):
    _, r1, _ = audits
    hist = tmp_path / "h.sqlite"
    hist.write_bytes(b"this is not a database" * 100)
    for args in (["history"], ["compare", "1", "2"]):
        assert run([*args, "--history", str(hist)]) == 2
        err = capsys.readouterr().err
        assert "HistoryError" in err and str(hist) in err and "Traceback" not in err
        assert "--history PATH" in err  # the fix
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC.format(epochs=2))
    assert run(["audit", str(spec), "--out", str(tmp_path / "r"), "--history", str(hist)]) == 0
    assert (tmp_path / "r" / "report.json").is_file()
    assert "not added to the audit history" in capsys.readouterr().err


def test_foreign_and_newer_databases_are_refused(tmp_path):
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE things (x)")
    with pytest.raises(HistoryError, match="not an advkit audit history"):
        History(foreign)
    newer = tmp_path / "newer.sqlite"
    History(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(HistoryError, match="newer advkit"):
        History(newer, create=False)
    with pytest.raises(HistoryError, match="is a folder"):
        History(tmp_path)


def test_reading_a_missing_history_creates_nothing(tmp_path, capsys):
    hist = tmp_path / "sub" / "h.sqlite"
    assert run(["history", "--history", str(hist)]) == 0
    assert "no audits recorded" in capsys.readouterr().out
    assert not hist.exists()


def test_concurrent_appends_are_all_kept(audits, tmp_path):
    rec = record_from_report(_doc(audits[1]))
    hist = tmp_path / "h.sqlite"
    errors = []

    def worker():
        try:
            for _ in range(10):
                with History(hist) as h:
                    h.append(rec)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with History(hist, create=False) as h:
        ids = [r.id for r in h.list()]
    assert sorted(ids) == list(range(1, 41))


def test_processes_creating_one_new_history_at_once_all_see_it_whole(tmp_path):
    """Opening a new file races its creation by another opener: the check must never see the
    table without the marks (or the marks without the table) and call the file foreign."""
    errors = []
    for trial in range(25):
        hist = tmp_path / f"h{trial}.sqlite"
        start = threading.Barrier(6)

        def opener(hist=hist, start=start):
            try:
                start.wait()
                with History(hist):
                    pass
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=opener) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]


def test_default_path_env_and_user_data_dir(tmp_path, monkeypatch):
    import platformdirs

    monkeypatch.setenv("ADVKIT_HISTORY", str(tmp_path / "env.sqlite"))
    assert history_path() == tmp_path / "env.sqlite"
    assert history_path(tmp_path / "x.sqlite") == tmp_path / "x.sqlite"
    monkeypatch.delenv("ADVKIT_HISTORY")
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda app: str(tmp_path / app))
    assert history_path() == tmp_path / "advkit" / "history.sqlite"


def test_headline_skips_malformed_entries():
    head = headline({"scenarios": [None, {"id": 3}, {"id": "s", "metrics": {
        "robust_accuracy": {"value": 0.5, "n": 2, "k": 1, "ci_low": 0.1, "ci_high": 0.9},
        "eps": 0.1, "median_distance": 0.3}}], "verdicts": ["x"], "findings": [
        {"check": "threshold", "metric": "clean_accuracy", "passed": False}]})
    assert head["metrics"] == {"s": {"robust_accuracy": {"value": 0.5, "lo": 0.1, "hi": 0.9,
                                                          "k": 1, "n": 2}}}
    assert head["gate"] == [{"threshold": "clean_accuracy", "passed": False}]


def test_copied_report_folder_is_accepted(audits, tmp_path, capsys):
    _, r1, _ = audits
    shutil.copytree(r1, tmp_path / "copy")
    assert run(["compare", str(r1), str(tmp_path / "copy")]) == 0
    assert "same model" in capsys.readouterr().out
