"""Presets are spec files shipped in the package, run by the generic runner (issue 12 item 4)."""

from __future__ import annotations

import pytest

from advkit.audit import presets
from advkit.audit.runner import active_families
from advkit.audit.spec import load_spec
from advkit.cli.main import run


def test_preset_list_names_each_with_one_line(capsys):
    assert run(["audit", "--preset", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("full", "backdoor", "evasion-defense"):
        assert any(line.startswith(name) for line in out.splitlines()), out
    assert "every threat family on digits" in out


def test_full_preset_is_a_spec_with_every_family():
    spec, _ = load_spec(presets.preset_path("full"))
    names = [f.name for f in active_families(spec)]
    assert sorted(names) == ["backdoor", "defenses", "evasion", "poisoning"]


@pytest.mark.parametrize("argv,needle", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--preset", "full", "--quick"], "has no quick version"),
    (["--quick"], "--quick applies to presets only"),
])
def test_bad_preset_requests_exit_2(tmp_path, capsys, argv, needle):
    assert run(["audit", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
