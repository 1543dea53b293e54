"""Bring your own model: a user's class + safetensors audited end to end, and trusted pickles of
user classes that find (or clearly miss) their code."""

import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from advkit.cli.main import run
from advkit.errors import AuditSpecError, InputContractError
from advkit.models.io import load_model
from advkit.models.user_class import import_user_class, load_user_model, model_identity

FIXTURE = Path(__file__).parent / "user_net_fixture.py"


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")
    saved = dict(sys.modules)
    yield
    for name in set(sys.modules) - set(saved):  # forget the user modules each test imported
        if name.split(".")[0] in ("user_net", "pickled_net"):
            del sys.modules[name]


def _user_folder(folder: Path, module: str = "user_net") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE, folder / f"{module}.py")
    return folder


def _trained_net(folder: Path, hidden: int = 16):
    """The fixture's Net imported from ``folder`` and trained briefly on digits."""
    from advkit.data import load

    ds = load("digits")
    net_cls = import_user_class("user_net:Net", folder)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = net_cls(hidden=hidden)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(ds.x_train), ds.y_train).backward()
        opt.step()
    return net.eval(), ds


def test_user_class_with_safetensors_is_audited_end_to_end(tmp_path):
    folder = _user_folder(tmp_path / "proj")
    net, ds = _trained_net(folder)
    save_file(net.state_dict(), str(folder / "w.safetensors"))
    (folder / "audit.yaml").write_text(
        "dataset: digits\n"
        'model: {class: "user_net:Net", kwargs: {hidden: 16}, weights: w.safetensors}\n'
        "attacks: [{name: fgsm, eps: [0.0, 0.1]}]\n"
        "evaluation: {n_samples: 40}\n")
    out = tmp_path / "report"
    assert run(["audit", str(folder / "audit.yaml"), "--out", str(out), "--no-progress"]) == 0
    doc = json.loads((out / "report.json").read_text())
    model = doc["model"]
    assert model["kind"] == "torch (user class)" and model["class"] == "user_net:Net"
    assert model["kwargs"] == {"hidden": 16} and model["name"] == "Net"
    expected = model_identity(model["weights_sha256"], "user_net:Net", {"hidden": 16})
    assert doc["manifest"]["sha256"]["model"] == expected
    with torch.no_grad():
        own = int((net(ds.x_test[:40]).argmax(1) == ds.y_test[:40]).sum())
    clean = [s["metrics"]["clean_accuracy"] for s in doc["scenarios"] if s["id"].startswith("fgsm")]
    assert clean and all(c["k"] == own and c["n"] == 40 for c in clean)  # the net's own answers
    assert own > 20  # trained: well above chance (4 of 40)


def test_user_class_errors_are_typed_and_name_the_fix(tmp_path):
    folder = _user_folder(tmp_path / "proj")
    net, _ = _trained_net(folder, hidden=8)
    save_file(net.state_dict(), str(folder / "w.safetensors"))
    w = folder / "w.safetensors"
    with pytest.raises(AuditSpecError, match="no module 'nope'.*beside the spec"):
        load_user_model("nope:Net", {}, w, code_dir=folder)
    with pytest.raises(AuditSpecError, match="has no attribute 'Nett'.*Net"):
        load_user_model("user_net:Nett", {}, w, code_dir=folder)
    with pytest.raises(AuditSpecError, match="not a torch.nn.Module subclass"):
        load_user_model("user_net:NotAModule", {}, w, code_dir=folder)
    with pytest.raises(AuditSpecError, match=r"model.kwargs .* do not fit user_net:Net\(hidden"):
        load_user_model("user_net:Net", {"width": 3}, w, code_dir=folder)
    shapes = r"do not fit .*wrong shapes .*body.1.weight: file \(8, 64\) vs model \(9, 64\)"
    with pytest.raises(InputContractError, match=shapes):
        load_user_model("user_net:Net", {"hidden": 9}, w, code_dir=folder)
    save_file({**net.state_dict(), "extra": torch.zeros(1)}, str(folder / "x.safetensors"))
    with pytest.raises(InputContractError, match=r"unexpected \['extra'\]"):
        load_user_model("user_net:Net", {"hidden": 8}, folder / "x.safetensors", code_dir=folder)
    torch.save(net.state_dict(), folder / "w.pt")
    with pytest.raises(AuditSpecError, match="not a safetensors file"):
        load_user_model("user_net:Net", {"hidden": 8}, folder / "w.pt", code_dir=folder)
    # sys.path is restored after the import
    assert str(folder.resolve()) not in sys.path
    loaded = load_user_model("user_net:Net", {"hidden": 8}, w, code_dir=folder)
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded.model(x), net(x)) and not loaded.model.training


def test_spec_model_section_checks_class_and_weights(tmp_path):
    from advkit.audit.spec import load_spec

    base = "dataset: digits\nattacks: [{name: fgsm, eps: [0.1]}]\n"
    spec = tmp_path / "s.yaml"
    for model, msg in [('{class: "user_net:Net"}', "'class' and 'weights' go together"),
                       ('{class: "user_net.Net", weights: w.safetensors}', "not of the form"),
                       ('{zoo: mlp, class: "a:B", weights: w.safetensors}', "exactly one of")]:
        spec.write_text(base + f"model: {model}\n")
        with pytest.raises(AuditSpecError, match=msg):
            load_spec(spec)
    spec.write_text(base + 'model: {class: "user_net:Net", weights: w.safetensors}\n')
    s, _ = load_spec(spec)
    assert s.model.weights == str(tmp_path / "w.safetensors")
    assert s.model.spec_dir == tmp_path.resolve()


def _pickled_model(tmp_path: Path) -> Path:
    """torch.save of a whole user-defined module whose class lives in pickled_net.py."""
    code = _user_folder(tmp_path / "code", "pickled_net")
    sys.path.insert(0, str(code))
    try:
        import pickled_net
    finally:
        sys.path.remove(str(code))
    torch.save(pickled_net.Net(hidden=4).eval(), code / "model.pt")
    del sys.modules["pickled_net"]
    return code / "model.pt"


def test_trusted_pickle_finds_the_user_class_beside_the_file(tmp_path):
    path = _pickled_model(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = load_model(path, trust_pickle=True)
    assert type(loaded.model).__name__ == "Net" and loaded.model(torch.rand(2, 1, 8, 8)).shape \
        == (2, 10)
    assert str(path.parent.resolve()) not in sys.path


def test_trusted_pickle_without_its_code_is_a_typed_error(tmp_path):
    path = _pickled_model(tmp_path)
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.move(path, alone / "model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(InputContractError, match="module 'pickled_net'.*class: 'module:Class'"):
            load_model(alone / "model.pt", trust_pickle=True)
        # from the audit, the spec's folder is searched too
        loaded = load_model(alone / "model.pt", trust_pickle=True, search_paths=[path.parent])
    assert type(loaded.model).__name__ == "Net"


def test_same_module_name_in_two_spec_folders_reads_each_folder(tmp_path):
    first = _user_folder(tmp_path / "a")
    second = _user_folder(tmp_path / "b")
    (second / "user_net.py").write_text(FIXTURE.read_text() + "\n\nclass Other(Net):\n    pass\n")
    assert import_user_class("user_net:Net", first).__module__ == "user_net"
    assert import_user_class("user_net:Other", second).__name__ == "Other"
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "json.py").write_text("")  # a file shadowing an installed module
    with pytest.raises(AuditSpecError, match="shadows the installed module"):
        import_user_class("json:Net", tmp_path / "c")
