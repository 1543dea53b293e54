"""`advkit scan PATH` reads each file's real format by content; `--trust-pickle` never overrides a
dangerous verdict and `--allow-dangerous` is plumbed from the CLI and the spec to load_model."""

import json
import os
import pickle
import posix
import shutil
import struct

import pytest
import torch

from advkit.cli.main import run
from advkit.errors import UnsafeModelError
from advkit.models import build, load_model, save_model
from advkit.models.safetensors_scan import safetensors_problem
from advkit.models.scan import scan_model_file


class _Payload:
    """Pickles as a call to os.system: loading it must never happen without --allow-dangerous."""

    def __reduce__(self):
        return (os.system, ("true",))


EVIL = pickle.dumps(_Payload())  # made before any test replaces posix.system

@pytest.fixture(autouse=True)
def _quiet(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


@pytest.fixture
def calls(monkeypatch) -> list:
    """posix.system replaced: a payload that ever ran would be recorded here, not executed."""
    recorded = []
    monkeypatch.setattr(posix, "system", lambda cmd: recorded.append(cmd) or 0)
    return recorded


def _folder(path):
    return save_model(build("mlp", input_shape=(4,), n_classes=3, hidden=(5,)), path)


def _scan(capsys, *args) -> tuple[int, str]:
    capsys.readouterr()
    code = run(["scan", *map(str, args)])
    return code, capsys.readouterr().out


def test_a_pickle_named_model_safetensors_in_an_advkit_folder_is_not_safe(tmp_path, capsys):
    good = _folder(tmp_path / "good")
    assert scan_model_file(good).verdict == "safe"
    assert _scan(capsys, good)[0] == 0
    bad = _folder(tmp_path / "bad")
    (bad / "model.safetensors").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    res = scan_model_file(bad)
    assert (res.format, res.verdict) == ("pickle", "dangerous")
    assert any("disguised" in k for k in res.dangerous)
    code, out = _scan(capsys, bad)
    assert code == 1 and "DANGEROUS" in out and "not safetensors" in out
    with pytest.raises(UnsafeModelError, match="disguised"):  # load_model reads the same verdict
        load_model(bad, trust_pickle=True)


def test_a_pkl_that_is_really_safetensors_is_recognised_as_safetensors(tmp_path, capsys):
    folder = _folder(tmp_path / "m")
    disguised = tmp_path / "weights.pkl"
    shutil.copy(folder / "model.safetensors", disguised)
    res = scan_model_file(disguised)
    assert (res.format, res.verdict, res.needs_trust) == ("safetensors", "safe", False)
    code, out = _scan(capsys, disguised)
    assert code == 0 and "safetensors, verdict SAFE" in out


def _forge(path, header: dict, data: bytes, *, raw_header: bytes | None = None):
    blob = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


_F32_2x2 = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}


@pytest.mark.parametrize("case,header,data,raw,why", [
    ("truncated", _F32_2x2, b"\0" * 12, None, "cover 16 bytes"),
    ("appended", _F32_2x2, b"\0" * 20, None, "cover 16 bytes"),
    ("wrong-size", {"w": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}},
     b"\0" * 16, None, "needs 24 bytes"),
    ("overlap", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                 "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
     b"\0" * 12, None, "overlap"),
    ("dtype", {"w": {"dtype": "PYOBJ", "shape": [1], "data_offsets": [0, 8]}},
     b"\0" * 8, None, "unknown dtype"),
    ("not-json", None, b"", b"{not json at all}", "not valid JSON"),
])
def test_a_malformed_safetensors_file_is_not_safe(tmp_path, capsys, case, header, data, raw, why):
    from safetensors import SafetensorError, safe_open

    path = _forge(tmp_path / "model.safetensors", header, data, raw_header=raw)
    with pytest.raises(SafetensorError):  # the oracle: the safetensors library refuses it too
        with safe_open(str(path), framework="pt") as f:
            [f.get_tensor(k) for k in f.keys()]
    assert why in safetensors_problem(path)
    res = scan_model_file(path)
    assert res.verdict == "unknown" and why in res.issues[0]
    code, out = _scan(capsys, path)
    assert code == 2 and "UNKNOWN" in out
    ok = _forge(tmp_path / "ok.safetensors", _F32_2x2, b"\0" * 16)
    assert safetensors_problem(ok) is None and scan_model_file(ok).verdict == "safe"


@pytest.mark.parametrize("name", ["empty.pkl", "model.pt", "model.safetensors", "noext"])
def test_an_empty_file_is_unknown_and_exits_2(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(b"")
    res = scan_model_file(path)
    assert res.verdict == "unknown" and "empty" in res.issues[0]
    code, out = _scan(capsys, path)
    assert code == 2 and "empty" in out and "DANGEROUS" not in out


def test_an_empty_weights_file_in_an_advkit_folder_exits_2(tmp_path, capsys):
    folder = _folder(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"")
    code, out = _scan(capsys, folder)
    assert code == 2 and "empty" in out


def test_an_oversized_or_non_json_config_is_not_safe(tmp_path, capsys):
    folder = _folder(tmp_path / "m")
    (folder / "config.json").write_text("[1, 2")
    assert scan_model_file(folder).verdict == "unknown"
    (folder / "config.json").write_text(" " * (1 << 20) + "{}")
    res = scan_model_file(folder)
    assert res.verdict == "unknown" and "1 MiB" in res.issues[0]
    assert _scan(capsys, folder)[0] == 2


def test_a_missing_path_exits_2(tmp_path, capsys):
    assert run(["scan", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err


def _tree(tmp_path, calls):
    """A folder of mixed files, with the verdict each must get (by path relative to the root)."""
    root = tmp_path / "root"
    _folder(root / "models" / "good")
    shutil.copy(root / "models" / "good" / "model.safetensors", root / "models" / "w.pkl")
    (root / "legacy" / "deep").mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, root / "legacy" / "sd.pt")
    (root / "legacy" / "deep" / "evil.bin").write_bytes(EVIL)
    outside = tmp_path / "outside.pkl"
    outside.write_bytes(EVIL)
    os.symlink(outside, root / "link.pkl")
    expected = {"models/good": "safe", "models/w.pkl": "safe", "legacy/sd.pt": "requires-trust",
                "legacy/deep/evil.bin": "dangerous"}
    return root, expected


def test_a_folder_is_scanned_recursively_with_one_verdict_per_file(tmp_path, capsys, calls):
    root, expected = _tree(tmp_path, calls)
    code, out = _scan(capsys, root)
    assert code == 1
    for rel, verdict in expected.items():
        line = next(ln for ln in out.splitlines() if ln.split()[1] == str(root / rel))
        assert line.startswith(verdict.upper()), line
    assert "SKIPPED" in out and "link.pkl" in out and "outside the scanned folder" in out
    assert "4 scanned: 2 safe, 1 requires-trust, 1 dangerous; 1 skipped" in out

    code, out = _scan(capsys, root, "--json")
    assert code == 1
    doc = json.loads(out)
    assert {os.path.relpath(d["path"], root): d["verdict"] for d in doc} == expected
    assert all(len(d["sha256"]) == 64 for d in doc)
    assert calls == []

    shutil.rmtree(root / "legacy")
    assert _scan(capsys, root)[0] == 0  # only safe files (the outside link is skipped)
    (root / "models" / "notes.txt").write_text("not a model\n")
    code, out = _scan(capsys, root)
    assert code == 2 and "UNKNOWN" in out  # a file no one can vouch for
    (root / "models" / "sd.pt").write_bytes(pickle.dumps({"a": 1}))
    assert _scan(capsys, root)[0] == 1  # an unsafe file outranks an unknown one


def test_sarif_has_one_result_per_unsafe_file(tmp_path, capsys, calls):
    root, expected = _tree(tmp_path, calls)
    sarif = tmp_path / "scan.sarif"
    assert run(["scan", str(root), "--sarif", str(sarif)]) == 1
    doc = json.loads(sarif.read_text())
    assert doc["version"] == "2.1.0" and "sarif" in doc["$schema"] and len(doc["runs"]) == 1
    run0 = doc["runs"][0]
    assert run0["tool"]["driver"]["name"] == "advkit"
    rule_ids = {r["id"] for r in run0["tool"]["driver"]["rules"]}
    levels = {}
    for res in run0["results"]:
        assert res["ruleId"] in rule_ids and res["message"]["text"]
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        levels[uri.rsplit("/", 2)[-1]] = (res["ruleId"], res["level"])
    assert levels == {"sd.pt": ("advkit.model.requires-trust", "warning"),
                      "evil.bin": ("advkit.model.dangerous", "error")}
    assert "posix.system" in next(r["message"]["text"] for r in run0["results"]
                                  if r["level"] == "error")
    notes = run0["invocations"][0]["toolExecutionNotifications"]
    assert len(notes) == 1 and "link.pkl" in notes[0]["message"]["text"]


# --- audit: --trust-pickle never overrides DANGEROUS; --allow-dangerous is plumbed -------------

_SPEC = ("dataset: digits\nmodel: {{path: {path}{extra}}}\nevaluation: {{n_samples: 20}}\n"
         "attacks: [{{name: fgsm, eps: [0.1]}}]\n")


def _audit(tmp_path, capsys, extra="", *flags) -> tuple[int, str]:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(EVIL)
    spec = tmp_path / "s.yaml"
    spec.write_text(_SPEC.format(path=evil, extra=extra))
    capsys.readouterr()
    code = run(["audit", str(spec), "--out", str(tmp_path / "r"), *flags])
    return code, capsys.readouterr().err


def test_trust_pickle_never_loads_a_dangerous_file(tmp_path, capsys, calls):
    code, err = _audit(tmp_path, capsys, "", "--trust-pickle")
    assert code == 2 and "UnsafeModelError" in err and "posix.system" in err
    assert "--allow-dangerous" in err
    code, err = _audit(tmp_path, capsys, ", trust_pickle: true")
    assert code == 2 and "UnsafeModelError" in err
    assert calls == []


def test_allow_dangerous_needs_trust_pickle(tmp_path, capsys, calls):
    code, err = _audit(tmp_path, capsys, "", "--allow-dangerous")
    assert code == 2 and "--trust-pickle" in err
    code, err = _audit(tmp_path, capsys, ", allow_dangerous: true")
    assert code == 2 and "allow_dangerous" in err and "trust_pickle" in err
    assert calls == []


@pytest.mark.parametrize("extra,flags", [("", ("--trust-pickle", "--allow-dangerous")),
                                         (", trust_pickle: true, allow_dangerous: true", ())])
def test_allow_dangerous_with_trust_loads_after_a_loud_warning(tmp_path, capsys, calls, extra,
                                                               flags):
    with pytest.warns(UserWarning, match="allow_dangerous=True"):
        code, err = _audit(tmp_path, capsys, extra, *flags)
    assert "WARNING: --allow-dangerous" in err
    assert calls == ["true"]  # load_model ran the (recorded) payload: the flag reached it
    assert code == 2 and "not a model" in err  # what it held was the payload's return value


def test_hostile_file_names_cannot_forge_lines_or_drive_the_terminal(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a\x1b]0;pwned\x07\nSAFE           fake.pkl").write_bytes(EVIL)
    code, out = _scan(capsys, root)
    assert code == 1 and "\x1b" not in out and "\x07" not in out
    assert [ln.split()[0] for ln in out.splitlines()[:1]] == ["DANGEROUS"]
    assert not any(ln.startswith("SAFE") for ln in out.splitlines())
