"""Every hostile input is one typed advkit error (DESIGN §5: bad input gets a clear error and loses
nothing). A CLI case exits 2 without a traceback, names the problem, prints no raw control
characters and writes no report; it fails before any training (a stub refuses to train). A Python
API case raises an AdvkitError subclass. Every malformed input is built in code
(``malformed_builders``)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import malformed_builders as mb
from advkit import registry
from advkit.cli.main import run
from advkit.errors import (
    AdvkitError,
    DataFormatError,
    InputContractError,
    InvalidParameterError,
    ModelBehaviorError,
    check_seed,
)
from advkit.targets.base import InputContract, check_input_dependence
from advkit.targets.torch import TorchTarget

REPORTS = ("report.html", "report.json")
DB = ".advkit-progress.sqlite"


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


@pytest.fixture
def no_training(monkeypatch):
    """Any audit that reaches training fails the test: errors must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("the audit reached training before finding the bad input")

    monkeypatch.setattr("advkit.models.cache.trained_zoo_model", refuse)


def exits_2(capsys, argv: list[str], needle: str, out=None) -> str:
    code = run([str(a) for a in argv])
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert code == 2, text
    assert "Traceback" not in text
    assert needle.lower() in text.lower(), text
    assert "\x1b" not in text and "\x07" not in text  # control characters are shown escaped
    if out is not None and out.is_dir():
        assert not [f for f in REPORTS if (out / f).exists()], "a report was written"
    return text


# ------------------------------------------------------------------------------- specs

@pytest.mark.parametrize("text,needle", list(mb.SPECS.values()), ids=list(mb.SPECS))
def test_malformed_spec_exits_2(tmp_path, capsys, no_training, text, needle):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    out = tmp_path / "out"
    msg = exits_2(capsys, ["audit", spec, "--out", out], needle, out)
    assert len(msg) < 5000  # no huge structure is quoted


def test_alias_bomb_fails_fast_in_a_fresh_process(tmp_path):
    spec = tmp_path / "bomb.yaml"
    spec.write_text(mb.alias_bomb() + "dataset: digits\nmodel: {zoo: mlp, kwargs: *a8}\n")
    p = subprocess.run([sys.executable, "-m", "advkit.cli.main", "audit", str(spec), "--out",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=30,
                       env={**os.environ, "CI": "true"})
    assert p.returncode == 2 and "10000 nodes" in p.stderr
    assert "Traceback" not in p.stdout + p.stderr


# ------------------------------------------------------------------------------- data files

@pytest.mark.parametrize("build,needle", list(mb.DATA.values()), ids=list(mb.DATA))
def test_malformed_data_file_exits_2(tmp_path, capsys, no_training, build, needle):
    spec = tmp_path / "spec.yaml"
    spec.write_text(mb.spec_yaml(dataset=build(tmp_path)))
    out = tmp_path / "out"
    exits_2(capsys, ["audit", spec, "--out", out], needle, out)


def test_npz_is_never_unpickled(tmp_path, monkeypatch):
    from advkit.data import load

    seen = []
    real = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: seen.append(k) or real(*a, **k))
    with pytest.raises(AdvkitError, match="without unpickling"):
        load(mb.write_npz(tmp_path / "d.npz", x=mb.OBJECT, y=mb.Y))
    assert seen and all(k.get("allow_pickle") is False for k in seen)


def test_npz_decompression_bomb_is_refused_unread(tmp_path, monkeypatch):
    from advkit.data import load

    bomb = mb.write_zip_bomb(tmp_path / "bomb.npz", 16 << 20)  # 16 MiB of zeros in ~16 KiB
    assert bomb.stat().st_size < 100_000
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("the bomb was decompressed"))
    monkeypatch.setenv("ADVKIT_NPZ_MAX_BYTES", str(1 << 20))
    with pytest.raises(DataFormatError, match=r"'x\.npy' decompresses to 16,777,.* limit of "
                                               r"1,048,576 bytes.*ADVKIT_NPZ_MAX_BYTES"):
        load(bomb)
    monkeypatch.setenv("ADVKIT_NPZ_MAX_BYTES", "lots")
    with pytest.raises(InvalidParameterError, match="ADVKIT_NPZ_MAX_BYTES"):
        load(bomb)


# ------------------------------------------------------------------------------- output paths

def _file(d):
    (d / "taken").write_text("a file")
    return d / "taken"


OUTS = {
    "out-is-a-file": (_file, "existing file"),
    "out-under-a-file": (lambda d: _file(d) / "sub", "is a file, not a folder"),
    "out-in-proc": (lambda d: "/proc/advkit-no-such-folder/out", "usable path"),
    "out-long-name": (lambda d: d / mb.long_name(), "too long"),
    "out-long-nested": (lambda d: d / mb.long_name() / "sub", "too long"),
}


@pytest.mark.parametrize("build,needle", list(OUTS.values()), ids=list(OUTS))
@pytest.mark.parametrize("cmd", ["audit", "train", "preset"])
def test_unusable_out_exits_2_before_any_work(tmp_path, capsys, monkeypatch, no_training,
                                              build, needle, cmd):
    monkeypatch.setattr("advkit.data.load", lambda *a, **k: pytest.fail("data loaded"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(mb.spec_yaml())
    out = build(tmp_path)
    argv = {"audit": ["audit", spec], "preset": ["audit", "--preset", "backdoor", "--quick"],
            "train": ["train", "-d", "digits", "-m", "mlp"]}[cmd]
    exits_2(capsys, [*argv, "--out", out], needle)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_out_exits_2(tmp_path, capsys, no_training):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    spec = tmp_path / "spec.yaml"
    spec.write_text(mb.spec_yaml())
    try:
        exits_2(capsys, ["audit", spec, "--out", ro / "out"], "permission denied")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("kind", ["garbage", "schema", "directory"])
def test_damaged_progress_db_is_found_before_training_and_kept(tmp_path, capsys, no_training,
                                                               kind):
    spec, out = tmp_path / "spec.yaml", tmp_path / "out"
    spec.write_text(mb.spec_yaml())
    if kind == "directory":
        (out / DB).mkdir(parents=True)
        before = None
    else:
        before = mb.write_bad_store(out / DB, kind)
    exits_2(capsys, ["audit", spec, "--out", out], "--fresh", out)
    assert before is None or (out / DB).read_bytes() == before  # loses nothing


CLI_ARGS = {
    "cli-seed-2**70": (["--seed", str(2**70)], "2**63"),
    "cli-seed-negative": (["--seed", "-1"], "2**63"),
    "cli-seed-not-int": (["--seed", "\x1b[2Jx"], "valid integer"),
    "cli-fail-under-nan": (["--fail-under", "clean_accuracy=nan"], "]=VALUE"),
    "cli-fail-under-no-value": (["--fail-under", "clean_accuracy"], "]=VALUE"),
    "cli-unknown-preset": (["--preset", "\x1b]0;pwned\x07"], "unknown preset"),
}


@pytest.mark.parametrize("args,needle", list(CLI_ARGS.values()), ids=list(CLI_ARGS))
def test_bad_cli_arguments_exit_2(tmp_path, capsys, no_training, args, needle):
    spec = tmp_path / "spec.yaml"
    spec.write_text(mb.spec_yaml())
    positional = [] if "--preset" in args else [spec]
    exits_2(capsys, ["audit", *positional, *args, "--out", tmp_path / "out"], needle,
            tmp_path / "out")


@pytest.mark.parametrize("build,needle", [
    (lambda d: d / mb.long_name(".yaml"), "too long"),
    (lambda d: d / "missing.yaml", "does not exist"),
    (lambda d: d, "does not exist"),
], ids=["spec-long-name", "spec-missing", "spec-is-a-folder"])
def test_bad_spec_path_exits_2(tmp_path, capsys, no_training, build, needle):
    exits_2(capsys, ["audit", build(tmp_path), "--out", tmp_path / "out"], needle)


def test_train_seed_out_of_range_exits_2(tmp_path, capsys):
    exits_2(capsys, ["train", "-d", "digits", "-m", "mlp", "--seed", str(2**70), "--out",
                     tmp_path / "m"], "2**63")


# ------------------------------------------------------------------------------- models

@pytest.mark.parametrize("make,needle", list(mb.MISBEHAVING.values()), ids=list(mb.MISBEHAVING))
def test_misbehaving_model_stops_the_audit(tmp_path, capsys, monkeypatch, make, needle):
    model = make(64, 10).eval()
    monkeypatch.setattr("advkit.models.cache.trained_zoo_model",
                        lambda *a, **k: (model, {"name": type(model).__name__}))
    spec, out = tmp_path / "spec.yaml", tmp_path / "out"
    spec.write_text(mb.spec_yaml())
    text = exits_2(capsys, ["audit", spec, "--out", out], needle, out)
    assert type(model).__name__ in text  # the error names the model


C = InputContract(shape=(4,), n_classes=3)
XS, YS = torch.rand(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("make,needle", list(mb.MISBEHAVING.values()), ids=list(mb.MISBEHAVING))
def test_misbehaving_model_api(make, needle):
    target = TorchTarget(contract=C, model=make(4, 3).eval())
    with pytest.raises(ModelBehaviorError, match=needle.replace("(", r"\(")):
        target.labels(XS)
        target.labels(XS)  # NaN only from the second call on
        check_input_dependence(target, XS)


GRADIENT_ATTACKS = [e.name for e in registry.entries("evasion") if "gradients" in e.cls.requires]


@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
def test_model_without_gradient_path_is_named(name):
    """Attacks that differentiate the scores themselves (cw, deepfool, jsma, patch, universal)
    give the same typed error as those using ``input_grad``, not a raw torch error."""
    image = InputContract(shape=(1, 8, 8), n_classes=3)  # patch needs images, jsma 3+ steps
    target = TorchTarget(contract=image, model=mb.Detached(64, 3).eval())
    with pytest.raises(ModelBehaviorError, match="no gradient path"):
        registry.create(name).attack(target, torch.rand(6, 1, 8, 8), YS,
                                     generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------- Python API

def _lin():
    return torch.nn.Linear(4, 3).eval()


def _target(**kw):
    return TorchTarget(contract=C, model=_lin(), **kw)


def _sk(n_features=4, kind="linear", **kw):
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    from advkit.targets.sklearn import SklearnTarget

    est = LogisticRegression() if kind == "linear" else DecisionTreeClassifier()
    est.fit(np.random.default_rng(0).random((30, n_features)), np.arange(30) % 3)
    return SklearnTarget(contract=C, estimator=est, **kw)


def _attack_call(name, eps=0.1, generator=None, x=XS, y=YS, **params):
    return lambda: registry.create(name, eps=eps, **params).attack(_target(), x, y,
                                                                   generator=generator)


API = {
    "torch-batch-size-0": (lambda: _target(batch_size=0), InvalidParameterError),
    "torch-batch-size-negative": (lambda: _target(batch_size=-3), InvalidParameterError),
    "torch-batch-size-float": (lambda: _target(batch_size=2.5), InvalidParameterError),
    "torch-budget-negative": (lambda: _target(budget=-1), InvalidParameterError),
    "patch-batch-size-0": (lambda: registry.create("patch", batch_size=0), InvalidParameterError),
    "sklearn-batch-size-0": (lambda: _sk(batch_size=0), InvalidParameterError),
    "sklearn-feature-count-linear": (lambda: _sk(n_features=6), InputContractError),
    "sklearn-feature-count-tree": (lambda: _sk(n_features=6, kind="tree"), InputContractError),
    "generator-int-pgd": (_attack_call("pgd", generator=42, steps=2), InvalidParameterError),
    "generator-int-square": (_attack_call("square", generator=42), InvalidParameterError),
    "generator-numpy": (_attack_call("fgsm", generator=np.random.default_rng(0)),
                        InvalidParameterError),
    "eps-above-width-api": (_attack_call("pgd", eps=5.0, steps=2), InvalidParameterError),
    "eps-1e300-api": (_attack_call("fgsm", eps=1e300), InvalidParameterError),
    "eps-nan-api": (_attack_call("fgsm", eps=math.nan), InvalidParameterError),
    "eps-string-api": (_attack_call("fgsm", eps="0.1"), InvalidParameterError),
    "steps-string-api": (_attack_call("pgd", steps="ten"), InvalidParameterError),
    "contract-inf-bounds": (lambda: InputContract(shape=(4,), n_classes=3, bounds=(0, math.inf)),
                            InputContractError),
    "contract-one-class": (lambda: InputContract(shape=(4,), n_classes=1), InputContractError),
    "contract-zero-dim": (lambda: InputContract(shape=(0,), n_classes=3), InputContractError),
    "labels-out-of-range": (lambda: _target().check_labels([0, 3]), InputContractError),
    "labels-negative": (lambda: _target().check_labels([-1, 0]), InputContractError),
    "labels-fractional": (lambda: _target().check_labels([0.5, 1.0]), InputContractError),
    "labels-2d": (lambda: _target().check_labels([[0], [1]]), InputContractError),
    "labels-count": (lambda: _target().check_labels([0, 1], 3), InputContractError),
    "inputs-nan": (lambda: _target().labels(torch.full((2, 4), math.nan)), InputContractError),
    "inputs-out-of-bounds": (lambda: _target().labels(torch.full((2, 4), 7.0)),
                             InputContractError),
    "inputs-wrong-shape": (lambda: _target().labels(torch.rand(2, 5)), InputContractError),
    "seed-2**70-api": (lambda: check_seed("seed", 2**70), InvalidParameterError),
    "bool-param-string-api": (lambda: registry.create("pgd", eps=0.1, random_start="yes"),
                              InvalidParameterError),
    "bool-param-int-api": (lambda: registry.create("pgd", early_stop=1), InvalidParameterError),
    "data-long-name-api": (lambda: __import__("advkit.data").data.load(mb.long_name(".npz")),
                           InvalidParameterError),
}


@pytest.mark.parametrize("call,error", list(API.values()), ids=list(API))
def test_python_api_raises_typed_error(call, error):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, AdvkitError) and len(str(info.value)) < 1000


@pytest.mark.parametrize("name", registry.list("evasion"))
def test_empty_batch_is_a_typed_error(name):
    x, y = torch.rand(0, 4), torch.zeros(0, dtype=torch.long)
    with pytest.raises(AdvkitError):
        registry.create(name).attack(_target(), x, y)


def test_messages_never_quote_huge_values():
    err = InvalidParameterError("x", list(range(10**6)), "something small")
    assert len(str(err)) < 300
    assert len(str(InvalidParameterError("x", "y" * 10**6, "z"))) < 300


@pytest.mark.parametrize("fail", ["write", "replace"])
def test_report_is_all_or_nothing(tmp_path, monkeypatch, fail):
    """A failure writing report.json leaves no report.html behind (and no temporary file)."""
    import advkit.report.json as rj
    from advkit.audit.report import Report
    from advkit.report import write_report

    def broken(real):
        def call(*args, **kwargs):
            if "report.json" in str(args[-1 if fail == "replace" else 0]):
                raise OSError(28, "No space left on device")
            return real(*args, **kwargs)
        return call

    if fail == "write":
        monkeypatch.setattr(rj, "_write_temp", broken(rj._write_temp))
    else:
        monkeypatch.setattr(rj.os, "replace", broken(os.replace))
    out = tmp_path / "out"
    with pytest.raises(InvalidParameterError, match="no space left"):
        write_report(Report(manifest={}, model={}, dataset={}), out)
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------- what does run

def test_title_escapes_and_n_samples_beyond_the_test_set(tmp_path, capsys):
    """The one case that trains (1 epoch, 8 points): control characters in the title never reach
    the terminal or the HTML raw, and n_evaluated is what was evaluated; a damaged progress
    database is replaced under --fresh."""
    spec, out = tmp_path / "spec.yaml", tmp_path / "out"
    spec.write_text(mb.spec_yaml(title="\x1b]0;pwned\x07\x1b[2J title",
                                 evaluation={"n_samples": 100_000}))
    mb.write_bad_store(out / DB, "garbage")
    assert run(["audit", str(spec), "--out", str(out), "--fresh"]) == 0
    text = capsys.readouterr().out
    assert "\x1b" not in text and "\\x1b]0;pwned\\x07" in text
    html = (out / "report.html").read_text()
    assert "\x1b" not in html and "\x07" not in html and "\\x1b[2J title" in html
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["manifest"]["n_evaluated"] == 359  # digits' test set, not 100000
