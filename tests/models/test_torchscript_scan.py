"""TorchScript archives are code: hostile ones are refused before torch.jit.load can run them.

Every hostile archive here is built in the test (scripted from advkit.testing.corpus's modules,
or a benign archive rewritten with zipfile) and carries a payload aimed at a marker file under
tmp_path: the tests check the scan's verdict, that load_model refuses it with and without
trust_pickle, and that the marker never appeared. test_the_payloads_are_real shows that,
unscanned, torch.jit.load does run them.
"""

import zipfile

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advkit.cli.main import run
from advkit.errors import AdvkitWarning, InputContractError, UnsafeModelError
from advkit.models import build, load_model, scan_model_file
from advkit.models.torchscript_scan import ALLOWED_OPS, scan_torchscript
from advkit.testing.corpus import (
    FromFileInForward,
    FromFileInHelper,
    FromFileInSetstate,
    SavesInForward,
    TorchScriptBase,
    code_edits,
    edit_code,
    rewrite_archive,
)

pytestmark = [pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]



# --- hostile modules (scriptable: TorchScript compiles the payload into the archive) -----------

def _script(module: nn.Module, path) -> None:
    torch.jit.save(torch.jit.script(module), str(path))


def _assert_refused(path, marker, key: str, *words: str) -> None:
    """The scan says dangerous and names ``key`` (with ``words`` in its reason); load_model refuses
    with and without trust_pickle; the payload never ran."""
    res = scan_model_file(path)
    assert (res.format, res.verdict) == ("torchscript", "dangerous"), res
    assert key in res.dangerous, res.dangerous
    for word in words:
        assert word in res.dangerous[key], res.dangerous[key]
    for kwargs in ({}, {"trust_pickle": True}):
        with pytest.raises(UnsafeModelError, match="TorchScript") as exc:
            load_model(path, **kwargs)
        assert key in str(exc.value)
    assert not marker.exists()


HOSTILE = {  # module, refused key, words its reason must contain
    "forward": (FromFileInForward, "aten::from_file", ("FromFileInForward.forward", "file")),
    "setstate": (FromFileInSetstate, "aten::from_file", ("FromFileInSetstate.__setstate__",)),
    "helper": (FromFileInHelper, "aten::from_file", ("_write_through_file",)),
    "save": (SavesInForward, "aten::save", ("SavesInForward.forward", "writes a file")),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_scripted_archive_is_refused(tmp_path, case):
    cls, key, words = HOSTILE[case]
    marker = tmp_path / "marker"
    _script(cls(str(marker)), tmp_path / "hostile.pt")
    _assert_refused(tmp_path / "hostile.pt", marker, key, *words)


def test_the_payloads_are_real(tmp_path):
    """Unscanned, torch.jit.load runs __setstate__ while loading, and forward when called."""
    for cls in (FromFileInSetstate, FromFileInForward):
        marker, path = tmp_path / f"{cls.__name__}.bin", tmp_path / f"{cls.__name__}.pt"
        _script(cls(str(marker)), path)
        assert not marker.exists()
        model = torch.jit.load(str(path))
        if cls is FromFileInForward:
            assert not marker.exists()
            model(torch.zeros(1, 4))
        assert marker.read_bytes() == b"PWND"


def test_allow_dangerous_loads_with_a_warning_naming_the_operator(tmp_path):
    marker = tmp_path / "marker"
    _script(FromFileInForward(str(marker)), tmp_path / "hostile.pt")
    with pytest.warns(AdvkitWarning, match="aten::from_file"):
        loaded = load_model(tmp_path / "hostile.pt", trust_pickle=True, allow_dangerous=True)
    assert loaded.kind == "torchscript" and not marker.exists()  # loaded, never called


def test_cli_scan_prints_dangerous_with_the_operator(tmp_path, capsys):
    _script(FromFileInForward(str(tmp_path / "marker")), tmp_path / "hostile.pt")
    assert run(["scan", str(tmp_path / "hostile.pt")]) == 1
    out = capsys.readouterr().out
    assert "verdict DANGEROUS" in out and "aten::from_file" in out and "forward" in out
    _script(build("mlp", input_shape=(4,), n_classes=2), tmp_path / "ok.pt")
    assert run(["scan", str(tmp_path / "ok.pt")]) == 0
    assert "verdict SAFE" in capsys.readouterr().out
    assert not (tmp_path / "marker").exists()


# --- hand-edited archives: a benign archive whose code or members are rewritten -----------------

CODE_EDITS = code_edits()


@pytest.fixture
def base(tmp_path):
    """A benign archive whose module holds the marker path, and that marker."""
    marker = tmp_path / "marker"
    _script(TorchScriptBase(str(marker)), tmp_path / "base.pt")
    assert scan_model_file(tmp_path / "base.pt").verdict == "safe"
    return tmp_path / "base.pt", marker


@pytest.mark.parametrize("case", CODE_EDITS)
def test_edited_code_is_refused(tmp_path, base, case):
    lines, key, words = CODE_EDITS[case]
    rewrite_archive(base[0], tmp_path / "edited.pt", code=lambda text: edit_code(text, lines))
    _assert_refused(tmp_path / "edited.pt", base[1], key, *words)


def test_edited_archive_structure_is_refused(tmp_path, base):
    src, marker = base
    deep = "    return (lin).forward(" + " + ".join(["x"] * 600) + ", )\n"
    cases = {  # name: (edit, refused key (None: the code member), words its reason must contain)
        "climbs out": (dict(extra={"base/../../evil.txt": b"x"}), "base/../../evil.txt", "climbs out"),
        "absolute": (dict(extra={"/tmp/evil.txt": b"x"}), "/tmp/evil.txt", "absolute"),
        "no code": (dict(drop_code=True), "code/", "no TorchScript code"),
        "unparseable": (dict(code=lambda text: text.replace("def forward(", "def forward((")),
                        None, "does not parse"),
        "deeply nested": (dict(code=lambda text: text.replace(
            "    return (lin).forward(x, )\n", deep)), None, "nested too deeply"),
        "tab": (dict(code=lambda text: text.replace("  def forward", "\tdef forward")), None, "tab"),
    }
    for name, (edit, key, words) in cases.items():
        dst = tmp_path / f"{name}.pt"
        rewrite_archive(src, dst, **edit)
        key = key or next(k for k in scan_model_file(dst).dangerous if k.endswith(".py"))
        _assert_refused(dst, marker, key, words)


def test_flatbuffer_header_is_refused(tmp_path, base):
    data = bytearray(base[0].read_bytes())
    data[4:8] = b"PTMF"  # torch.jit.load would read the file as a flatbuffer module instead
    (tmp_path / "fb.pt").write_bytes(bytes(data))
    _assert_refused(tmp_path / "fb.pt", base[1], "flatbuffer header")


def test_custom_classes_in_pickles_are_refused(base):
    found = scan_torchscript(base[0], b"", ["__torch__.torch.classes.myns.Evil",
                                            "__torch__.not.in.the.Archive", "collections.OrderedDict"])
    assert sorted(found) == ["__torch__.not.in.the.Archive", "__torch__.torch.classes.myns.Evil"]
    assert "custom class" in found["__torch__.torch.classes.myns.Evil"]


def test_torch_export_archive_is_not_loaded(tmp_path):
    path = tmp_path / "model.pt2"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model/archive_format", "pt2")
        zf.writestr("model/models/model.json", "{}")
    res = scan_model_file(path)
    assert res.format == "unknown" and "torch.export" in res.issues[0]
    with pytest.raises(InputContractError, match="torch.export"):
        load_model(path)


def test_allow_list_holds_no_file_operators():
    assert ALLOWED_OPS and not {"aten::from_file", "aten::save", "prim::Print"} & ALLOWED_OPS
    assert all(op.startswith(("aten::", "prim::")) for op in ALLOWED_OPS)


# --- benign archives: the zoo and common torch.nn layers, scripted and traced -------------------

class Residual(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + x)


class ControlFlow(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(6, 6) for _ in range(3)])
        self.scale: float = 0.5

    def forward(self, x: torch.Tensor, n: int = 2) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if i < n and x.dim() == 2:
                x = torch.tanh(layer(x))
            else:
                x = x * self.scale
        while x.abs().max() > 10.0:
            x = x / 2
        a, b = torch.chunk(x, 2, dim=1)
        y = torch.cat([b, a], dim=1)
        return torch.softmax(y, dim=-1) + torch.log_softmax(y, -1).mean()


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.ln, self.act = nn.Embedding(20, 8), nn.LayerNorm(8), nn.GELU()
        self.drop, self.fc = nn.Dropout(0.1), nn.Linear(8, 3)

    def forward(self, ids):
        return self.fc(self.drop(self.act(self.ln(self.emb(ids)))).mean(dim=1))


class Shapes(nn.Module):
    def forward(self, x):
        b = x.size(0)
        y = x.view(b, -1).reshape(b, 2, -1).permute(0, 2, 1).transpose(1, 2).contiguous()
        z = torch.stack(torch.split(y, 1, dim=1), 0).squeeze(2).unsqueeze(0)
        m = torch.zeros(b, 3) + torch.ones(b, 3) * torch.full((b, 3), 2.0)
        w = torch.where(x[:, :3] > 0, x[:, :3], -x[:, :3])
        return z.sum() + m.mean() + w.max() + torch.matmul(x, x.t()).mean()


class OperatorNamedAttributes(nn.Module):
    """Attributes named like operators off the allow-list (aten::stride, aten::threshold)."""

    def __init__(self):
        super().__init__()
        self.stride, self.threshold, self.lin = 2, 0.5, nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x[:, ::self.stride]) * self.threshold


class Recurrent(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm, self.gru = nn.LSTM(4, 6, batch_first=True), nn.GRU(6, 5, batch_first=True)

    def forward(self, x):
        h, _ = self.lstm(x)
        g, _ = self.gru(h)
        return g[:, -1]


def _rand(*shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(0))


BENIGN = {  # name: (module factory, example input)
    **{f"zoo-{n}": (lambda n=n, s=s: build(n, input_shape=s, n_classes=10), _rand(2, *s))
       for n, s in [("mlp", (1, 8, 8)), ("cnn-small", (1, 8, 8)), ("lenet", (1, 28, 28)),
                    ("cnn-madry", (1, 28, 28)), ("cnn-wong", (1, 28, 28))]},
    "conv-stack": (lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
        nn.Linear(8, 5)), _rand(2, 1, 8, 8)),
    "activations": (lambda: nn.Sequential(
        nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.SiLU(), nn.Tanh(), nn.LeakyReLU(0.1),
        nn.ELU(), nn.Sigmoid(), nn.Softplus(), nn.Hardswish(), nn.Linear(16, 4),
        nn.Softmax(dim=-1)), _rand(3, 6)),
    "conv1d": (lambda: nn.Sequential(
        nn.Conv1d(2, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.AvgPool1d(2), nn.Flatten(),
        nn.Linear(12, 3), nn.LogSoftmax(dim=1)), _rand(2, 2, 8)),
    "upsample-norms": (lambda: nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2), nn.ReLU6(), nn.AvgPool2d(2),
        nn.Upsample(scale_factor=2.0), nn.ConvTranspose2d(2, 2, 2), nn.InstanceNorm2d(2),
        nn.PReLU(), nn.ZeroPad2d(1), nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Identity(),
        nn.Linear(8, 2)), _rand(2, 1, 8, 8)),
    "residual": (Residual, _rand(2, 4, 6, 6)),
    "control-flow": (ControlFlow, _rand(2, 6)),
    "embedding": (Tokens, torch.arange(10).reshape(2, 5) % 20),
    "shapes": (Shapes, _rand(4, 6)),
    "recurrent": (Recurrent, _rand(2, 3, 4)),
    "operator-named-attributes": (OperatorNamedAttributes, _rand(2, 6)),
}


@pytest.mark.parametrize("how", ["script", "trace"])
@pytest.mark.parametrize("name", BENIGN)
def test_benign_archive_is_safe_and_loads_with_equal_outputs(tmp_path, name, how):
    make, x = BENIGN[name]
    torch.manual_seed(0)
    module = make().eval()
    path = tmp_path / f"{name}-{how}.pt"
    saved = torch.jit.script(module) if how == "script" else torch.jit.trace(module, x)
    torch.jit.save(saved, str(path))
    res = scan_model_file(path)
    assert (res.format, res.verdict, res.dangerous) == ("torchscript", "safe", {})
    loaded = load_model(path)
    assert loaded.kind == "torchscript"
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), module(x), rtol=0, atol=0)
