"""Parameters declared as data (one message format from constructor, registry and spec), threat
tags on every registered class, and a registry name held by one class only."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest

from advkit import registry
from advkit.attacks.evasion.patch import Patch
from advkit.attacks.evasion.pgd import PGD
from advkit.audit.report import Finding, Report, _plain
from advkit.cli.main import run
from advkit.errors import (
    AuditSpecError,
    InvalidParameterError,
    RegistrationError,
    UnknownParameterError,
)
from advkit.params import Param, check_params, invalid_values, param
from advkit.testing import ConformanceFailure, check_parameters
from advkit.threat_tags import TECHNIQUES, ThreatTag, tag

PGD_EPS = "PGD: parameter 'eps' must be a float in [0, inf); got '0.1' (str)"
PGD_STEPS = "PGD: parameter 'steps' must be an int in [1, inf); got '10' (str)"


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made in the test are forgotten afterwards."""
    registry.entries()  # load every module first
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


# ------------------------------------------------------------------ one message format


def test_python_and_registry_give_the_one_format():
    with pytest.raises(InvalidParameterError) as exc:
        PGD(eps="0.1")
    assert str(exc.value) == PGD_EPS
    assert (exc.value.owner, exc.value.name, exc.value.value) == ("PGD", "eps", "0.1")
    with pytest.raises(InvalidParameterError) as exc:
        registry.create("pgd", eps="0.1")
    assert str(exc.value) == PGD_EPS
    with pytest.raises(InvalidParameterError, match=r"^PGD: parameter 'norm' must be one of inf, "
                       r"2, 1 \(or 'linf', 'l2', 'l1'\); got 'l3' \(str\)$"):
        PGD(norm="l3")
    with pytest.raises(InvalidParameterError, match=r"^PGD: parameter 'random_start' must be a "
                       r"bool \(true or false\); got 'yes' \(str\)$"):
        registry.create("pgd", random_start="yes")
    with pytest.raises(InvalidParameterError, match=r"'eps' must be a float in \[0, inf\); "
                       r"got inf \(float\)"):
        PGD(eps=math.inf)
    with pytest.raises(UnknownParameterError, match="PGD: unknown parameter 'stepz'.*steps"):
        registry.create("pgd", stepz=3)


def test_cross_parameter_checks_use_the_format_too():
    with pytest.raises(InvalidParameterError, match=r"^JSMA: parameter 'theta' must be a nonzero"):
        registry.create("jsma", theta=0.0)
    with pytest.raises(InvalidParameterError, match=r"^LabelFlip: parameter 'source' must be a "
                       r"class \(an int >= 0\) when mode='targeted'"):
        registry.create("label_flip", mode="targeted", target=1)
    with pytest.raises(InvalidParameterError, match=r"^BadNets: parameter 'pattern' must be an "
                       r"array of shape .*; got an array of shape \(2, 2\)$"):
        registry.create("badnets", size=3, pattern=[[0.0, 1.0], [1.0, 0.0]])


def test_spec_parameter_fails_in_the_format_before_any_training(tmp_path, monkeypatch, capsys):
    import advkit.models.cache as cache
    from advkit.audit.spec import parse_spec

    def boom(*a, **k):
        raise AssertionError("training was reached")

    monkeypatch.setattr(cache, "trained_zoo_model", boom)
    text = ("seed: 1\ndataset: digits\nmodel: {zoo: mlp, epochs: 3}\nevaluation: {n_samples: 40}"
            "\nattacks:\n  - {name: pgd, eps: [0, 0.1], params: {steps: \"10\"}}\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(text)
    assert run(["audit", str(spec), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert PGD_STEPS in err and "Traceback" not in err
    assert not (tmp_path / "r" / "report.json").exists()
    import yaml

    with pytest.raises(AuditSpecError, match="PGD: parameter 'steps' must be an int"):
        parse_spec(yaml.safe_load(text))


# ------------------------------------------------------------------ declarations


def test_declaration_texts_and_invalid_values():
    p = Param(float, lo=0, hi=1, lo_open=True)
    assert p.describe() == "a float in (0, 1]"
    assert Param(int, lo=1).describe() == "an int in [1, inf)"
    assert Param(float, lo=0, finite=False).describe() == "a float in [0, inf]"
    assert Param(str, choices=("ce", "dlr")).describe() == "one of 'ce', 'dlr'"
    assert Param("norm", choices=(math.inf, 2.0)).describe() == "one of inf, 2 (or 'linf', 'l2')"
    assert Param(int, lo=1, optional=True).describe() == "an int in [1, inf) or None"
    assert Param("pair", strict=True).describe() == "a pair (lo, hi) of numbers with lo < hi"
    for decl in (p, Param(int, lo=1), Param("norm", choices=(2.0,)), Param((str, "ints"),
                 choices=("a",), lo=0, length=2), Param("transforms"), Param("numbers")):
        bad = invalid_values(decl)
        assert bad and not any(decl.accepts(v) for v in bad)
    assert Param("norm").accepts("L2") and Param("norm").accepts(math.inf)
    assert not Param(int).accepts(True) and not Param(float).accepts(math.nan)
    with pytest.raises(InvalidParameterError):
        Param("tensor")


def test_lists_from_yaml_become_tuples():
    assert Patch(scale_range=[0.5, 1.0]).scale_range == (0.5, 1.0)
    assert registry.create("badnets", position=[1, 2]).position == (1, 2)


def test_describe_json_reads_the_declarations(capsys):
    assert run(["describe", "apgd", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    ps = {p["name"]: p for p in d["parameters"]}
    assert ps["norm"]["allowed"] == "one of inf, 2 (or 'linf', 'l2')"
    assert ps["norm"]["constraints"] == [{"kind": "choice", "choices": ["inf", "2"],
                                          "aliases": ["linf", "l2"]}]
    assert ps["loss"]["constraints"] == [{"kind": "choice", "choices": ["ce", "dlr"]}]
    assert ps["rho"]["constraints"][0] == {"kind": "range", "min": 0, "max": 1, "min_open": False,
                                           "max_open": False, "type": "float"}
    assert d["threat"]["atlas_id"] == "AML.T0043.000"
    assert run(["describe", "pgd"]) == 0
    out = capsys.readouterr().out
    assert "steps" in out and "an int in [1, inf)" in out and "AML.T0043.000" in out


def test_conformance_catches_a_class_that_skips_the_validator(scratch_registry):
    @registry.register("sloppy", family="defense", threat=tag("AML.T0015", "white box",
                                                               mitigates=True))
    @dataclass(frozen=True, kw_only=True)
    class Sloppy:
        """A defense whose constructor forgets check_params."""

        k: int = param(1, int, lo=1)

    with pytest.raises(InvalidParameterError):  # the registry's create path still checks
        registry.create("sloppy", k=0)
    with pytest.raises(ConformanceFailure, match="Sloppy accepted k=None"):
        check_parameters("sloppy")

    @registry.register("tidy", family="defense", threat=tag("AML.T0015", "white box",
                                                             mitigates=True))
    @dataclass(frozen=True, kw_only=True)
    class Tidy:
        """A defense that declares and checks its parameter."""

        k: int = param(1, int, lo=1)

        def __post_init__(self):
            check_params(self)

    assert check_parameters("tidy") > 0


# ------------------------------------------------------------------ registry and threat tags


def test_a_name_held_by_another_class_cannot_be_registered(scratch_registry):
    pgd = registry.get("pgd").cls

    with pytest.raises(RegistrationError, match="'pgd' is already taken by "
                       "advkit.attacks.evasion.pgd.PGD"):
        @registry.register("pgd", family="evasion")
        @dataclass(frozen=True, kw_only=True)
        class PGD:  # the same qualified name in another module is another class
            eps: float = 0.1

    assert registry.get("pgd").cls is pgd
    registry.register("pgd", family="evasion", threat=pgd.threat_tag)(pgd)  # a reload: allowed
    assert registry.get("pgd").cls is pgd


def test_every_registered_class_has_a_threat_tag():
    for e in registry.entries():
        t = e.threat
        assert isinstance(t, ThreatTag), e.name
        assert e.cls.threat_tag is t
        assert t.atlas_id in TECHNIQUES and t.atlas_name == TECHNIQUES[t.atlas_id][0]
        assert t.mitigates == (e.family == "defense")
        assert ThreatTag.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    assert registry.get("square").threat.knowledge == "black box"
    assert registry.get("pgd").threat.knowledge == "white box"
    assert registry.get("badnets").threat.phase == "training"
    assert "AML.T0018" in registry.get("badnets").threat.related
    assert registry.get("output-rounding").threat.property == "confidentiality"
    with pytest.raises(InvalidParameterError, match="ThreatTag: parameter 'phase'"):
        ThreatTag("integrity", "deployment", "white box", "AML.T0015", "Evade ML Model")
    with pytest.raises(InvalidParameterError, match="atlas_id"):
        tag("AML.T9999", "white box")


def test_finding_carries_an_optional_threat_tag():
    f = Finding("c", "warning", "m", 0.5, 0.9, "why", "fix")
    assert f.threat_tag is None
    f.threat_tag = registry.get("pgd").threat
    doc = Report(manifest={}, model={}, dataset={}, findings=[f]).to_dict()
    row = json.loads(json.dumps(doc))["findings"][0]
    assert row["threat_tag"]["atlas_id"] == "AML.T0043.000"
    assert _plain(Finding("c", "info", "m", None, None, "w", "f"))["threat_tag"] is None
