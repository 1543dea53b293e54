"""The ray executor (issue 17): an audit run as Ray tasks on a local Ray instance (num_cpus=2) writes
the report.json the local executor writes, timings and run identities aside; a Ray worker killed
(SIGKILL) in the middle of a stage is replaced, the stage runs again and the audit ends with the
same report; the executor is chosen in the spec or on the command line, and a bad choice is a
typed error."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from advkit.audit import runner
from advkit.audit.executors import get_executor
from advkit.audit.spec import parse_spec
from advkit.errors import AuditSpecError
from advkit.report.json import report_dict
from report_keys import RUN_VOLATILE, run_independent

# evasion (independent stages), poisoning (train → measure → mitigation chains: stages that
# wait for their dependencies' records) and Neural Cleanse (class stages → merge); small enough
# for two cores, big enough that the kill below lands inside a stage (the PGD one)
SPEC = {
    "title": "ray executor",
    "seed": 3,
    "dataset": "digits",
    "model": {"zoo": "mlp", "epochs": 2, "kwargs": {"hidden": [32]}},
    # FGSM's points in two shards (stages) merged: the same report
    "evaluation": {"n_samples": 200, "batch_size": 100, "shards": 2},
    "attacks": [{"name": "fgsm", "eps": [0.05, 0.1]},
                {"name": "pgd", "eps": [0.1], "params": {"steps": 300}}],
    "poisoning": {"attacks": [{"name": "badnets", "rates": [0.1], "params": {"size": 2, "target": 0}}],
                  "mitigations": ["spectral_signatures"], "training": {"epochs": 3}},
    # Neural Cleanse: one stage per class (run in parallel) and their merge
    "backdoor": {"neural_cleanse": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 8},
                 "clean_samples": 100},
}
KILLED_STAGE = "pgd/Linf/eps=0.1"


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    """One local Ray instance (2 CPUs) for the module and the model cache folder of its runs: the
    workers inherit it (an environment variable read when a stage trains), each Ray test's driver
    sets it (the audited model is trained there). Its own folder: a model cached by a run at
    another thread count would not be this run's model."""
    ray = pytest.importorskip("ray", reason="the ray executor needs the [ray] extra "
                              "(pip install 'advkit[ray]'); .ci/run installs it")
    cache = tmp_path_factory.mktemp("ray-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADVKIT_CACHE_DIR", str(cache))
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        for attempt in (1, 2):  # Ray gives its node 30 s to start: a busy machine may need two
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
    try:
        yield ray, cache
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_doc(tmp_path_factory):
    """The local executor's report.json of SPEC (its own model cache), computed once."""
    base = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADVKIT_CACHE_DIR", str(base / "cache"))
        mp.setenv("CI", "true")
        return _report(base / "out", "local")


def _report(out: Path, executor: str) -> dict:
    spec = parse_spec(SPEC)
    rep = runner.run_audit(spec, out_dir=out, spec_sha256=spec.sha256(), progress=False,
                           executor=get_executor(executor))
    return json.loads(json.dumps(report_dict(rep)))  # what report.json holds


def test_ray_report_equals_the_local_one(ray_instance, local_doc, tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(ray_instance[1]))
    doc = _report(tmp_path / "out", "ray")
    assert run_independent(doc) == run_independent(local_doc)
    # the comparison is not empty: every planned stage has its result in both
    ids = {s["id"] for s in doc["scenarios"]}
    assert {KILLED_STAGE, "fgsm/Linf/eps=0.05", "poisoning/badnets/rate=0.1/measure"} <= ids
    assert local_doc["manifest"]["executor"]["name"] == "local"
    # each stage ran as a Ray task whose worker and log files the report names
    tasks = doc["manifest"]["executor"]["tasks"]
    assert doc["manifest"]["executor"]["name"] == "ray"
    assert set(tasks) == set(local_doc["manifest"]["executor"]["tasks"])  # every stage, once
    assert tasks["poisoning/badnets/rate=0.1/measure"]["deps"] == ["poisoning/badnets/rate=0.1/train"]
    assert tasks["fgsm/Linf/eps=0.1"]["deps"] == ["fgsm/Linf/eps=0.1/shard=0",
                                                  "fgsm/Linf/eps=0.1/shard=1"]
    assert tasks["backdoor/neural-cleanse"]["deps"] == [f"backdoor/neural-cleanse/class={k}"
                                                        for k in range(10)]
    for where in tasks.values():
        assert where["pid"] != os.getpid() and len(where["node_id"]) > 8
        assert Path(where["stderr"]).is_file()
    log = Path(tasks[KILLED_STAGE]["stderr"]).read_text()
    assert f"stage {KILLED_STAGE}: done in" in log


def test_the_quick_privacy_preset_on_ray_equals_the_local_run(ray_instance, tmp_path,
                                                              monkeypatch):
    """The privacy families keep per-run memos (the split, reference models, defended models) in
    ``ctx.state``, which Ray workers do not share: the report must not depend on it."""
    from advkit.audit import presets
    from advkit.audit.spec import load_spec

    monkeypatch.setenv("CI", "true")
    spec, sha = load_spec(presets.preset_path("privacy", quick=True))
    docs = {}
    for ex, cache in (("local", tmp_path / "cache"), ("ray", ray_instance[1])):  # workers': theirs
        monkeypatch.setenv("ADVKIT_CACHE_DIR", str(cache))
        rep = runner.run_audit(spec, out_dir=tmp_path / ex, spec_sha256=sha, progress=False,
                               executor=get_executor(ex))
        docs[ex] = json.loads(json.dumps(report_dict(rep)))
    assert run_independent(docs["ray"]) == run_independent(docs["local"])
    ids = {s["id"] for s in docs["ray"]["scenarios"]}
    assert {"privacy/membership/lira", "privacy_defenses/dp-sgd/membership/lira",
            "extraction/copycat/queries=300"} <= ids


def _kill_when_started(logs: Path, stage: str, killed: list, stop: threading.Event) -> None:
    """Watch the Ray workers' log files; SIGKILL the worker that logs ``stage``'s start (a worker
    serves many tasks, its file may hold an earlier audit's lines: a start not yet matched by
    its end)."""
    pattern = re.compile(r"worker-[0-9a-f]+-[0-9a-f]+-(\d+)\.err$")
    while not stop.is_set():
        for f in logs.glob("worker-*.err"):
            m = pattern.search(f.name)
            text = f.read_text(errors="replace") if m else ""
            if text.count(f"stage {stage}: started") > text.count(f"stage {stage}: done"):
                pid = int(m.group(1))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.01)


def test_a_killed_worker_is_replaced_and_the_audit_ends_with_the_same_report(
        ray_instance, local_doc, tmp_path, monkeypatch):
    monkeypatch.setenv("CI", "true")
    ray, cache = ray_instance
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(cache))
    probe = ray.remote(lambda: os.readlink("/proc/self/fd/2"))
    logs = Path(ray.get(probe.remote())).parent  # this instance's worker log folder
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_when_started, args=(logs, KILLED_STAGE, killed, stop))
    watcher.start()
    try:
        doc = _report(tmp_path / "out", "ray")
    finally:
        stop.set()
        watcher.join()
    assert len(killed) == 1, "the stage never started on a worker"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # that worker is gone
    # the stage ran again in another worker process, and the report is the local run's
    assert doc["manifest"]["executor"]["tasks"][KILLED_STAGE]["pid"] != killed[0]
    assert run_independent(doc) == run_independent(local_doc)
    print({k: v["seconds"] for k, v in doc["manifest"]["executor"]["tasks"].items()})


def test_executor_choice_is_validated():
    assert parse_spec({**SPEC, "executor": "ray"}).executor.name == "ray"
    assert parse_spec({**SPEC, "executor": {"name": "ray", "num_cpus": 4}}).executor.num_cpus == 4
    for bad, why in [("dask", "'local' or 'ray'"), ({"name": "local", "address": "auto"},
                                                    "ray executor only"),
                     ({"name": "ray", "cpus": 2}, "unknown field")]:
        with pytest.raises(AuditSpecError, match=why):
            parse_spec({**SPEC, "executor": bad})
    with pytest.raises(AuditSpecError, match="executors: local, ray"):
        get_executor("dask")
    with pytest.raises(AuditSpecError, match="ray executor only"):
        get_executor("local", address="auto")
    assert "executor" in RUN_VOLATILE  # where a stage ran is not part of the comparison


def test_cli_rejects_unknown_executor_and_address_without_ray(tmp_path, capsys):
    from advkit.cli.main import run

    for args, why in [(["--executor", "dask"], "expected one of local, ray"),
                      (["--address", "auto"], "ray executor only")]:
        code = run(["audit", "--out", str(tmp_path / "o"), *args])
        err = capsys.readouterr().err
        assert code == 2 and why in err and "Traceback" not in err


def test_a_task_reserves_as_many_cpus_as_torch_threads_it_runs():
    """Two 2-thread tasks on a 2-core node would oversubscribe it; a task never asks for more CPUs
    than the largest live node has (it would never be scheduled)."""
    from advkit.audit.executors.ray_executor import _task_cpus

    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 64}}]
    assert _task_cpus(1, nodes) == 1
    assert _task_cpus(2, nodes) == 2
    assert _task_cpus(8, nodes) == 2
    assert _task_cpus(3, []) == 1


def test_run_independent_blanks_time_columns_of_tables_only():
    """Two runs differ in their tables' wall-clock columns and nowhere else (the Ray benchmark
    found the defenses table's 'inference s/point' and the extraction table's 'seconds')."""
    doc = {"sections": [{"tables": [{"columns": ["defense", "inference s/point", "queries/point",
                                                 "× undefended time", "seconds"],
                                     "rows": [["jpeg", 2.0e-5, 1.0, 2.79, 0.37]]}]}],
           "scenarios": [{"id": "a", "seconds": 3.0, "metrics": {"auc": 0.6}}]}
    other = json.loads(json.dumps(doc))
    other["sections"][0]["tables"][0]["rows"][0][1:] = [2.1e-5, 1.0, 3.02, 0.41]
    other["scenarios"][0]["seconds"] = 9.0
    assert run_independent(doc) == run_independent(other)
    other["sections"][0]["tables"][0]["rows"][0][2] = 2.0  # queries are not a time
    assert run_independent(doc) != run_independent(other)
    assert doc["sections"][0]["tables"][0]["rows"][0][1] == 2.0e-5  # the input is not changed
