"""torch.export archives (.pt2): loaded when they hold only plain tensors, allow-listed aten
operators and inert names; refused (typed) when tampered with or when they hold pickled objects."""

import io
import json
import os
import pickle
import posix
import warnings
import zipfile

import pytest
import torch
from torch import nn

from advkit.cli.main import run
from advkit.errors import UnsafeModelError
from advkit.models.io import load_model, scan_model_file, target_for
from advkit.targets.base import InputContract
from advkit.targets.torch import TorchTarget


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


class _Opaque:
    """A harmless user class, still not a plain tensor."""


def _mlp() -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return net.eval()


def _export(path, net, *, dynamic=True):
    x = torch.rand(4, 1, 8, 8)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=shapes), str(path))
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    net = _mlp()
    return _export(tmp_path_factory.mktemp("pt2") / "mlp.pt2", net), net


def _rewrite(src, dst, change):
    """Copy the zip ``src`` to ``dst``; ``change(relative_name, bytes)`` returns new bytes, or
    None to drop the member; ``change.extra`` (relative name -> bytes) adds members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            data = change(info.filename.partition("/")[2], zin.read(info))
            if data is not None:
                zout.writestr(info.filename, data)
        for rel, data in getattr(change, "extra", {}).items():
            zout.writestr(f"{root}/{rel}", data)
    return dst


def _edit_graph(src, dst, edit):
    def change(rel, data):
        if rel == "models/model.json":
            doc = json.loads(data)
            edit(doc)
            return json.dumps(doc).encode()
        return data
    return _rewrite(src, dst, change)


def test_exported_mlp_loads_and_predicts_as_the_original(archive, capsys):
    path, net = archive
    res = scan_model_file(path)
    assert (res.format, res.verdict) == ("torch-export", "safe")
    loaded = load_model(path)
    assert loaded.kind == "torch-export" and loaded.sha256 == res.sha256
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net(x), atol=1e-6)
    contract = InputContract(shape=(1, 8, 8), n_classes=10)
    target = target_for(loaded, contract)
    assert isinstance(target, TorchTarget) and target.capabilities.gradients
    assert torch.equal(target.labels(x), net(x).argmax(1))
    ep = torch.export.load(str(path))  # an ExportedProgram given directly is wrapped the same way
    assert torch.equal(target_for(ep, contract).labels(x), net(x).argmax(1))
    assert run(["scan", str(path)]) == 0
    assert "torch-export, verdict SAFE" in capsys.readouterr().out


def test_static_batch_export_runs_any_batch(tmp_path):
    net = _mlp()
    loaded = load_model(_export(tmp_path / "static.pt2", net, dynamic=False))
    x = torch.rand(9, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), net(x), atol=1e-6)


def _first_node(doc):
    return doc["graph_module"]["graph"]["nodes"][0]


@pytest.mark.parametrize("edit,what", [
    (lambda d: _first_node(d).update(target="torch.os.system"), "torch.os.system"),
    (lambda d: _first_node(d)["outputs"][0]["as_tensor"].update(name="x=__import__('os')"),
     "not a dotted identifier"),
    (lambda d: d.update(guards_code=["__import__('os').system('true')"]), "guard"),
    (lambda d: d["range_constraints"].update(s0={"min_val": 0, "max_val": None}) or d[
        "graph_module"]["graph"]["sym_int_values"].update(
        s0={"as_expr": {"expr_str": "__import__('os').getcwd()", "hint": None}}), "sympify"),
])
def test_tampered_graph_is_refused_even_when_trusted(archive, tmp_path, edit, what, monkeypatch):
    calls = []
    monkeypatch.setattr(posix, "system", lambda cmd: calls.append(cmd) or 0)
    bad = _edit_graph(archive[0], tmp_path / "bad.pt2", edit)
    res = scan_model_file(bad)
    assert res.format == "torch-export" and res.verdict == "dangerous"
    assert what in json.dumps(res.dangerous)
    with pytest.raises(UnsafeModelError, match="torch.export archive"):
        load_model(bad)
    with pytest.raises(UnsafeModelError):
        load_model(bad, trust_pickle=True)
    assert calls == []


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_pickled_parts_need_trust_or_are_refused(archive, tmp_path, monkeypatch):
    evil = _saved(_Payload())  # before posix.system is replaced (pickling checks it)
    calls = []
    monkeypatch.setattr(posix, "system", lambda cmd: calls.append(cmd) or 0)
    payload = _rewrite(archive[0], tmp_path / "payload.pt2", lambda rel, data: evil
                       if rel == "data/sample_inputs/model.pt" else data)
    res = scan_model_file(payload)
    assert res.verdict == "dangerous" and "posix.system" in res.dangerous
    with pytest.raises(UnsafeModelError, match="posix.system"):
        load_model(payload, trust_pickle=True)

    def opaque(rel, data):
        return data
    opaque.extra = {"data/constants/opaque_obj_0": pickle.dumps(_Opaque())}
    res = scan_model_file(_rewrite(archive[0], tmp_path / "opaque.pt2", opaque))
    assert res.verdict == "requires-trust" and any("_Opaque" in g for g in res.unknown)
    with pytest.raises(UnsafeModelError, match="trust_pickle=True"):
        load_model(res.path)

    def aot(rel, data):
        return data
    aot.extra = {"data/aotinductor/model/model.so": b"\x7fELF"}
    res = scan_model_file(_rewrite(archive[0], tmp_path / "aot.pt2", aot))
    assert res.verdict == "dangerous" and "native code" in json.dumps(res.dangerous)
    assert calls == []


def test_torch_save_zip_with_export_markers_is_still_a_pickle(archive, tmp_path):
    def marker(rel, data):
        return data
    marker.extra = {"data.pkl": pickle.dumps({"a": 1})}
    res = scan_model_file(_rewrite(archive[0], tmp_path / "mixed.pt2", marker))
    assert res.format == "torch" and res.verdict == "requires-trust"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert scan_model_file(archive[0]).format == "torch-export"
