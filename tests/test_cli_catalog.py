"""``advkit --version``, ``list --json``, ``describe NAME --json`` and the audit's stage log lines."""

import json

import pytest

import advkit
from advkit import registry
from advkit.cli.main import run


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


def test_version(capsys):
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"advkit {advkit.__version__}"


def test_list_json(capsys):
    assert run(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(registry.list())
    pgd = next(r for r in rows if r["name"] == "pgd")
    assert pgd["family"] == "evasion" and pgd["requires"] == ["gradients"]
    assert pgd["threat"]["knowledge"] == "white box"
    assert "AML.T0043.000" in [t["id"] for t in pgd["threat"]["atlas"]]
    square = next(r for r in rows if r["name"] == "square")
    assert square["threat"]["knowledge"] == "black box"
    assert run(["list", "poisoning", "--json"]) == 0
    assert {r["family"] for r in json.loads(capsys.readouterr().out)} == {"poisoning"}


def test_describe_json(capsys):
    assert run(["describe", "pgd", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["name"] == "pgd" and d["family"] == "evasion" and "Madry" in d["doc"] + d["module_doc"]
    params = {p["name"]: p for p in d["parameters"]}
    assert params["steps"]["default"] == 40 and params["steps"]["type"] == "int"
    assert params["steps"]["constraints"] == [{"kind": "range", "min": 1, "max": None,
                                               "min_open": False, "max_open": False,
                                               "type": "int"}]
    assert params["eps"]["constraints"][0]["min"] == 0
    assert params["norm"]["default"] == "inf"
    assert params["norm"]["constraints"][0]["choices"] == ["inf", "2", "1"]
    assert d["threat"]["property"] == "integrity" and d["threat"]["phase"] == "inference"
    assert run(["describe", "jpeg", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    q = next(p for p in d["parameters"] if p["name"] == "quality")
    assert q["constraints"][0]["min"] == 1 and q["constraints"][0]["max"] == 100
    assert "mitigates" in d["threat"]


def test_every_entry_describes_as_json():
    from advkit.catalog import describe_entry

    for e in registry.entries():
        json.dumps(describe_entry(e), allow_nan=False)


def test_audit_logs_one_line_per_stage_outside_a_terminal(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("seed: 2\ndataset: digits\nmodel: {zoo: mlp, epochs: 2}\n"
                    "evaluation: {n_samples: 30}\nattacks: [{name: fgsm, eps: [0, 0.1]}]\n")
    assert run(["audit", str(spec), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "advkit: [1/4] fgsm/Linf/eps=0 done in" in err
    assert "advkit: [3/4] evasion/validity-checks done in" in err
    assert "advkit: [4/4] report done in" in err
    assert run(["audit", str(spec), "--out", str(tmp_path / "r"), "--fail-under",
                "clean_accuracy=0.1"]) == 0
    captured = capsys.readouterr()
    assert "advkit: [2/4] fgsm/Linf/eps=0.1: read from the store" in captured.err
    assert "from store" in captured.out  # the summary marks stored scenarios
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    assert doc["manifest"]["scenarios_from_store"] == 3  # two attacks and the checks
    assert set(doc["manifest"]["durations"]) == {"first_run_s", "resumed_s", "total_s"}
