"""``advkit serve`` on the command line: bad options exit 2 with a message, another host than
loopback warns, models named with --model are checked before the server starts."""

from __future__ import annotations

import pytest

from advkit.cli.main import run

pytest.importorskip("fastapi")


@pytest.fixture
def served(monkeypatch):
    """Replace the server loop: record what it would have served."""
    calls = []
    monkeypatch.setattr("advkit.serve.web.app.serve",
                        lambda opts, host, port: calls.append((opts, host, port)))
    return calls


@pytest.mark.parametrize("args, words", [
    (["--port", "0"], "--port"),
    (["--max-upload-mb", "-1"], "--max-upload-mb"),
    (["--parallel-audits", "0"], "--parallel-audits"),
])
def test_bad_options_exit_2(served, capsys, args, words):
    assert run(["serve", *args]) == 2
    assert words in capsys.readouterr().err and not served


def test_loopback_is_quiet_and_other_hosts_warn(served, capsys, tmp_path):
    assert run(["serve", "--port", "8123", "--runs-dir", str(tmp_path)]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert run(["serve", "--host", "0.0.0.0", "--runs-dir", str(tmp_path)]) == 0
    assert "WARNING: serving on 0.0.0.0" in capsys.readouterr().err
    assert [(h, p) for _, h, p in served] == [("127.0.0.1", 8123), ("0.0.0.0", 8080)]


def test_model_files_are_loaded_safely_at_start(web_cache, tmp_path, capsys):
    import torch

    from advkit.data import load
    from advkit.models.io import save_model
    from advkit.models.zoo import build
    from advkit.serve.web.models import ModelTable

    ds = load("digits")
    model = build("mlp", input_shape=(1, 8, 8), n_classes=10,
                  generator=torch.Generator().manual_seed(0))
    save_model(model, tmp_path / "m", dataset_info=ds.info)
    table = ModelTable([tmp_path / "m"], scan_cache=False)
    assert table.get("file-0").dataset == "digits"
    target, _ = table.load("file-0")
    assert target.contract.shape == (1, 8, 8)
    (tmp_path / "evil.pkl").write_bytes(b"\x80\x04cos\nsystem\n.")
    assert run(["serve", "--model", str(tmp_path / "evil.pkl")]) == 2
    assert "UnsafeModelError" in capsys.readouterr().err
