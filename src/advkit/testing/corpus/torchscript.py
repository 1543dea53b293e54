"""Hostile TorchScript: scriptable modules whose code touches files, edits of a benign archive's
stored code (:func:`code_edits`, :func:`edit_code`, :func:`rewrite_archive`) and archive-structure
tricks."""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from advkit.testing.corpus._writer import _Writer
from advkit.testing.corpus.pickles import _Reduce

# --- hostile TorchScript ------------------------------------------------------------------------


class FromFileInForward(nn.Module):
    """forward maps the marker path writable and writes into it."""

    def __init__(self, path: str):
        super().__init__()
        self.path, self.lin = path, nn.Linear(4, 4)

    def forward(self, x):
        t = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8)
        t.copy_(torch.tensor([80, 87, 78, 68], dtype=torch.uint8))  # b"PWND"
        return self.lin(x) + t.sum().float() * 0


class FromFileInSetstate(nn.Module):
    """__setstate__, which torch.jit.load runs while unpickling, writes the marker."""

    def __init__(self, path: str):
        super().__init__()
        self.path, self.w, self.buf = path, nn.Parameter(torch.eye(4)), torch.zeros(4)

    @torch.jit.export
    def __getstate__(self):
        return (self.path, self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, torch.Tensor, bool]):
        self.path, self.w, self.training = state[0], state[1], state[2]
        t = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8)
        t.copy_(torch.tensor([80, 87, 78, 68], dtype=torch.uint8))  # b"PWND"
        self.buf = t.float()  # keeps the write alive through TorchScript's dead-code elimination

    def forward(self, x):
        return x @ self.w


def _write_through_file(path: str) -> torch.Tensor:
    t = torch.from_file(path, shared=True, size=4, dtype=torch.uint8)
    t.copy_(torch.tensor([80, 87, 78, 68], dtype=torch.uint8))  # b"PWND"
    return t


class FromFileInHelper(nn.Module):
    """The payload sits in a plain function that forward calls."""

    def __init__(self, path: str):
        super().__init__()
        self.path, self.lin = path, nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x) + _write_through_file(self.path).sum().float() * 0


class SavesInForward(nn.Module):
    """forward writes a file with torch.save."""

    def __init__(self, path: str):
        super().__init__()
        self.path, self.lin = path, nn.Linear(4, 4)

    def forward(self, x):
        torch.save(x, self.path)
        return self.lin(x)


class TorchScriptBase(nn.Module):
    """A benign module holding the marker path: the archive that hand edits start from."""

    def __init__(self, path: str):
        super().__init__()
        self.path, self.lin = path, nn.Linear(4, 4)

    def forward(self, x):
        return self.lin(x)


_USE_T = ("    t0 = (t).fill_(65)\n    return torch.add((lin).forward(x, ), torch.sum(t0))\n")


def code_edits() -> dict[str, tuple[str, str, tuple[str, ...]]]:
    """Edits of TorchScriptBase's stored code: case -> (lines replacing ``return
    (lin).forward(x, )``, the key the scan must refuse, words its reason must contain)."""
    return {
        "ops.aten spelling": ("    t = ops.aten.from_file(self.path, True, 4)\n" + _USE_T,
                              "aten::from_file", ("TorchScriptBase.forward",)),
        "torch.ops spelling": ("    t = torch.ops.aten.from_file(self.path, True, 4)\n" + _USE_T,
                               "aten::from_file", ()),
        "alias": ("    f = torch.from_file\n    t = f(self.path, True, 4)\n" + _USE_T,
                  "aten::from_file", ()),
        "getattr": ('    t = getattr(torch, "from_file")(self.path, True, 4)\n' + _USE_T,
                    "aten::from_file", ()),
        "off-list op": ("    return torch.logcumsumexp((lin).forward(x, ), 1)\n",
                        "aten::logcumsumexp", ("not on the allow-list",)),
        "off-list method": ("    return ((lin).forward(x, )).logcumsumexp(1)\n",
                            "aten::logcumsumexp", ("not on the allow-list",)),
        "custom op": ("    return ops.myns.evil((lin).forward(x, ))\n", "myns::evil",
                      ("custom operator",)),
        "torch.ops custom op": ("    return torch.ops.myns.evil(x)\n", "myns::evil", ()),
        "custom op via getattr": ('    return getattr(getattr(ops, "myns"), "evil")(x)\n',
                                  "myns::evil", ()),
        "custom class": ("    c = annotate(__torch__.torch.classes.myns.Evil, "
                         "uninitialized(Tensor))\n    return (lin).forward(x, )\n",
                         "__torch__.torch.classes.myns.Evil", ("custom class",)),
        "custom class as a string": ('    c = annotate("torch.classes.myns.Evil", None)\n'
                                     "    return (lin).forward(x, )\n", "torch.classes.myns.Evil",
                                     ("custom class",)),
        "undefined class": ("    return __torch__.evil.Payload.run(x)\n",
                            "__torch__.evil.Payload.run", ("does not define",)),
        "import": ('    import os\n    os.system("touch marker")\n    return (lin).forward(x, )\n',
                   "import", ("syntax",)),
        "undeclared attribute": ("    return (lin).forward(self.secret, )\n", ".secret",
                                 ("does not declare",)),
        "declared name as a tensor method": (  # the class is edited to declare ``cummax : int``
            "    return (lin).forward(x, ).cummax(1)[0]\n", "aten::cummax",
            ("not on the allow-list",)),
        "save spelled through ops": ("    ops.aten.save(x, self.path)\n"
                                     "    return (lin).forward(x, )\n", "aten::save", ()),
    }


def edit_code(text: str, lines: str) -> str:
    """TorchScriptBase's stored code with ``lines`` in place of its return statement."""
    return text.replace("    return (lin).forward(x, )\n", lines).replace(
        "  path : str\n", "  path : str\n  cummax : int\n")


def rewrite_archive(src, dst, *, code=None, drop_code=False, extra=None, replace=None) -> None:
    """Copy the archive ``src`` to ``dst``, passing the text of the member holding ``class
    TorchScriptBase`` through ``code``, leaving out the code/ members, replacing members whose
    name ends with a key of ``replace`` {suffix: bytes}, or adding ``extra`` {name: bytes}."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if "/code/" in info.filename and drop_code:
                continue
            if code and info.filename.endswith(".py") and b"class TorchScriptBase(" in data:
                data = code(data.decode()).encode()
            for suffix, new in (replace or {}).items():
                if info.filename.endswith(suffix):
                    data = new
            zout.writestr(info, data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)


def _jit_save(module, path, example=None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = torch.jit.trace(module, example) if example is not None else \
            torch.jit.script(module)
        torch.jit.save(saved, str(path))


def _malicious_torchscript(w: _Writer, marker: Path) -> None:
    m = str(marker)
    for cls in (FromFileInForward, FromFileInSetstate, FromFileInHelper, SavesInForward):
        p = w.path("torchscript", "malicious", cls.__name__, ".pt")
        _jit_save(cls(m), p)
        w.add(p, cls.__name__, "TorchScript file operator", "malicious", "torchscript")
    base = w.folder / "malicious" / "torchscript" / "base.pt.src"
    _jit_save(TorchScriptBase(m), base)
    for case, (lines, _key, _words) in code_edits().items():
        p = w.path("torchscript", "malicious", f"code edit {case}", ".pt")
        rewrite_archive(base, p, code=lambda text, lines=lines: edit_code(text, lines))
        w.add(p, f"code edit {case}", "TorchScript code edit (custom op, file op)", "malicious",
              "torchscript")
    deep = "    return (lin).forward(" + " + ".join(["x"] * 600) + ", )\n"
    payload = pickle.dumps(_Reduce(os.system, (f"touch {m}",)), protocol=2)
    structure = {
        "climbs out": dict(extra={"base/../../evil.txt": b"x"}),
        "absolute member": dict(extra={"/tmp/evil.txt": b"x"}),
        "no code": dict(drop_code=True),
        "unparseable": dict(code=lambda text: text.replace("def forward(", "def forward((")),
        "deeply nested": dict(code=lambda text: text.replace(
            "    return (lin).forward(x, )\n", deep)),
        "tab": dict(code=lambda text: text.replace("  def forward", "\tdef forward")),
        "payload in data.pkl": dict(replace={"/data.pkl": payload}),
        "payload in constants.pkl": dict(replace={"/constants.pkl": payload}),
        "extra payload pickle": dict(extra={"base/extra.pkl": payload}),
    }
    for case, edit in structure.items():
        p = w.path("torchscript", "malicious", f"archive {case}", ".pt")
        rewrite_archive(base, p, **edit)
        w.add(p, f"archive {case}", "TorchScript archive structure", "malicious", "torchscript")
    data = bytearray(base.read_bytes())
    data[4:8] = b"PTMF"
    w.write(bytes(data), "flatbuffer header", "TorchScript archive structure", "torchscript", ".pt")
    base.unlink()
