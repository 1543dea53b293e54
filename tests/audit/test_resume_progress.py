"""Honest run facts and readable progress: each scenario is stored under its own inputs (editing a
threshold or the title reruns nothing), a resumed report gives both runs' durations, the bar names
the running stage and, outside a terminal, each finished stage is one log line."""

import contextlib
import logging

import pytest

from advkit.audit import progress as progress_mod
from advkit.audit import runner
from advkit.audit.plan import make_plan
from advkit.audit.spec import parse_spec

SPEC = {
    "title": "tiny",
    "seed": 1,
    "dataset": "digits",
    "model": {"zoo": "mlp", "epochs": 2},
    "evaluation": {"n_samples": 40},
    "attacks": [{"name": "fgsm", "eps": [0.0, 0.1]}, {"name": "pgd", "eps": [0.1], "params": {"steps": 3}}],
}


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


def _run(tmp_path, caplog, **changes):
    spec = parse_spec({**SPEC, **changes})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="advkit.progress"):
        rep = runner.run_audit(spec, out_dir=tmp_path / "out", spec_sha256=spec.sha256(),
                               progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "advkit.progress"]
    planned = {sc.id for sc in make_plan(spec)}  # not the derived worst-case rows
    return rep, {s.id: s.from_store for s in rep.scenarios if s.id in planned}, lines


def test_store_keys_each_scenario_by_its_inputs_and_reports_both_durations(tmp_path, caplog):
    rep, stored, lines = _run(tmp_path, caplog)
    assert stored == {"fgsm/Linf/eps=0": False, "fgsm/Linf/eps=0.1": False,
                      "pgd/Linf/eps=0.1": False}
    d = rep.manifest["durations"]
    assert d["resumed_s"] is None and d["first_run_s"] == d["total_s"] > 0
    # stages: 3 scenarios and the stored validity checks
    assert rep.manifest["scenarios_run"] == 4 and rep.manifest["scenarios_from_store"] == 0
    # one line per finished stage, numbered, naming the stage and its time (4 stages + report)
    assert lines[0].startswith("[1/5] fgsm/Linf/eps=0 done in ") and lines[0].endswith(" s")
    assert lines[-2].startswith("[4/5] evasion/validity-checks done in")
    assert lines[-1].startswith("[5/5] report done in")
    first = {s.id: s.metrics["robust_accuracy"].k for s in rep.scenarios if s.id in stored}

    # a new threshold and title: nothing reruns; the report says so and keeps the first run's time
    rep2, stored2, lines2 = _run(tmp_path, caplog, title="renamed",
                                 fail_under={"clean_accuracy": 0.99})
    assert all(stored2.values()) and rep2.manifest["scenarios_run"] == 0
    assert rep2.manifest["scenarios_from_store"] == 4  # the checks are not run again
    assert {s.id: s.metrics["robust_accuracy"].k for s in rep2.scenarios if s.id in stored} == first
    d2 = rep2.manifest["durations"]
    assert d2["first_run_s"] >= d["first_run_s"] - 1e-3  # the original run's time, not the resume's
    assert d2["resumed_s"] is not None
    assert d2["total_s"] == pytest.approx(d2["first_run_s"] + d2["resumed_s"], abs=2e-3)
    assert rep2.manifest["duration_s"] == d2["total_s"]
    assert any("fgsm/Linf/eps=0.1: read from the store" in m for m in lines2)

    # one attack's eps list changes: only the new scenario runs
    _, stored3, _ = _run(tmp_path, caplog, attacks=[SPEC["attacks"][0],
                                                     {**SPEC["attacks"][1], "eps": [0.1, 0.2]}])
    assert [k for k, v in stored3.items() if not v] == ["pgd/Linf/eps=0.2"]
    # one attack's parameters change: only its scenarios rerun
    _, stored4, _ = _run(tmp_path, caplog, attacks=[SPEC["attacks"][0],
                                                     {**SPEC["attacks"][1], "params": {"steps": 4}}])
    assert [k for k, v in stored4.items() if not v] == ["pgd/Linf/eps=0.1"]


class _StubBar:
    """Records the task's description and progress like rich's Progress."""

    def __init__(self):
        self.description, self.completed = "", 0

    def add_task(self, description, total):
        self.description = description
        return 0

    def update(self, task, *, description=None, advance=0):
        if description is not None:
            self.description = description
        self.completed += advance

    def advance(self, task, n=1):
        self.completed += n


def test_bar_names_the_running_stage_before_it_starts(tmp_path, monkeypatch):
    bar = _StubBar()

    @contextlib.contextmanager
    def stub(progress=None):
        yield bar

    monkeypatch.setattr(progress_mod, "progress_bar", stub)
    seen = []
    from advkit.audit.families import evasion

    real = evasion.run_scenario

    def spy(sc, *a, **k):
        seen.append((sc.id, bar.description, bar.completed))
        return real(sc, *a, **k)

    monkeypatch.setattr(evasion, "run_scenario", spy)
    spec = parse_spec(SPEC)
    runner.run_audit(spec, out_dir=tmp_path / "out", spec_sha256="x", progress=True)
    assert seen == [("fgsm/Linf/eps=0", "audit [1/5] fgsm/Linf/eps=0", 0),
                    ("fgsm/Linf/eps=0.1", "audit [2/5] fgsm/Linf/eps=0.1", 1),
                    ("pgd/Linf/eps=0.1", "audit [3/5] pgd/Linf/eps=0.1", 2)]
    assert bar.completed == 5  # and the validity checks, and the report


def test_sequential_stages_and_terminal_detection(monkeypatch, caplog):
    bar = _StubBar()
    st = progress_mod.Stages(bar, 2, "lab")
    with caplog.at_level(logging.INFO, logger="advkit.progress"):
        st.begin("training")
        assert bar.description == "lab [1/2] training" and bar.completed == 0
        st.begin("attacking")
        assert bar.description == "lab [2/2] attacking" and bar.completed == 1
        st.end()
    assert bar.completed == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs[0].startswith("[1/2] training done in") and msgs[1].startswith("[2/2] attacking")
    monkeypatch.setenv("CI", "true")
    assert not progress_mod.wants_progress(None) and progress_mod.wants_progress(True)
    monkeypatch.delenv("CI")
    monkeypatch.setattr(progress_mod.sys.stderr, "isatty", lambda: False, raising=False)
    assert not progress_mod.wants_progress(None)
