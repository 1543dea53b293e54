"""Builders of malformed inputs for ``test_malformed_inputs.py``: specs, data files and models that
misbehave, each made in code (no fixtures on disk), and the tables of spec and data-file cases."""

from __future__ import annotations

import io
import sqlite3
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

DROP = object()  # a spec key set to DROP is left out

BASE_SPEC = {
    "title": "malformed",
    "seed": 0,
    "dataset": "digits",
    "model": {"zoo": "mlp", "epochs": 1},
    "evaluation": {"n_samples": 8},
    "attacks": [{"name": "fgsm", "eps": [0.1]}],
}


def spec_yaml(**changes) -> str:
    """BASE_SPEC with top-level keys replaced (or dropped with DROP), as YAML text."""
    data = {k: v for k, v in {**BASE_SPEC, **changes}.items() if v is not DROP}
    return yaml.safe_dump(data, sort_keys=False)


def with_model(**fields) -> dict:
    return {**BASE_SPEC["model"], **fields}


def with_attack(**fields) -> list[dict]:
    return [{"name": "fgsm", "eps": [0.1], **fields}]


def alias_bomb(levels: int = 9) -> str:
    """The "billion laughs" document: each level lists the previous one nine times."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def long_name(suffix: str = "") -> str:
    """A file name of 300 characters (Linux allows 255 bytes per name)."""
    return "n" * (300 - len(suffix)) + suffix


# ----------------------------------------------------------------------------- data files

def good_arrays(n: int = 40, d: int = 4, k: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.random((n, d), dtype=np.float64), "y": np.arange(n) % k}


def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def write_raw_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A zip (``.npz`` by name) whose members are the given raw bytes."""
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return path


def npy_header(shape: tuple, descr: str = "<f8") -> bytes:
    """A .npy header (format 1.0) declaring ``shape`` and ``descr``, without the data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


def lying_npz(shape: tuple, data: bytes = bytes(16)) -> dict[str, bytes]:
    """Members of an .npz whose 'x' header declares ``shape`` (float64) over ``data`` only."""
    return {"x.npy": npy_header(shape) + data, "y.npy": npy_header((2,), "<i8") + bytes(16)}


def write_zip_bomb(path: Path, size: int) -> Path:
    """An .npz whose 'x.npy' is a valid uint8 array of ``size`` zeros, DEFLATE-compressed to
    about size / 1000 bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w") as f:
            f.write(npy_header((size,), "|u1"))
            chunk = bytes(1 << 20)
            for _ in range(size >> 20):
                f.write(chunk)
        z.writestr("y.npy", npy_header((2,), "<i8") + bytes(16))
    return path


def write_csv(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def csv_text(rows: int = 20, *, bad: str | None = None, label: str = "y") -> str:
    """A small table with columns a, b and ``label``; ``bad`` replaces a in the first row."""
    out = [f"a,b,{label}"]
    for i in range(rows):
        a = bad if (bad is not None and i == 0) else str(i / rows)
        out.append(f"{a},{(i * 7) % 5},{i % 2}")
    return "\n".join(out) + "\n"


def write_bad_store(path: Path, kind: str) -> bytes:
    """A progress database that is not SQLite ("garbage") or has the wrong table ("schema")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "garbage":
        path.write_bytes(b"this is not a database\x00" * 64)
    else:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE scenarios (a INTEGER)")
        db.commit()
        db.close()
    return path.read_bytes()


# ----------------------------------------------------------------------------- spec cases

def _attack(**kw):
    return spec_yaml(attacks=with_attack(**kw))


def _model(**kw):
    return spec_yaml(model=with_model(**kw))


def _eval(**kw):
    return spec_yaml(evaluation=kw)


SPECS = {
    "list-top-level": ("- 1\n- 2\n", "must be a YAML mapping"),
    "scalar-top-level": ("just some text\n", "must be a YAML mapping"),
    "empty-file": ("", "must be a YAML mapping"),
    "syntax-error": ("dataset: [unclosed\n", "not valid YAML"),
    "python-tag": ("!!python/object/apply:os.system ['true']\n", "not valid YAML"),
    "alias-bomb": (alias_bomb(), "more than 10000 nodes"),
    "recursive-alias": ("a: &a [*a]\n", "refers to itself"),
    "duplicate-key": (spec_yaml() + "seed: 3\n", "appears twice"),
    "deep-nesting": ("a: " + "[" * 100 + "]" * 100 + "\n", "deeper than"),
    "too-large": ("title: " + "x" * (1 << 20) + "\n", "larger than"),
    "unknown-top-key": (spec_yaml(modle={}), "modle: unknown field"),
    "unknown-model-key": (_model(epoch=3), "model.epoch: unknown field"),
    "unknown-attack-key": (_attack(steps=3), "attacks.0.steps: unknown field"),
    "seed-2**70": (spec_yaml(seed=2**70), "seed: Input should be less than"),
    "seed-negative": (spec_yaml(seed=-1), "seed: Input should be greater"),
    "seed-string": (spec_yaml(seed="abc"), "seed: Input should be a valid integer"),
    "seed-float": (spec_yaml(seed=1.5), "seed: Input should be a valid integer"),
    "seed-bool": (spec_yaml(seed=True), "seed: Input should be a valid integer"),
    "eps-1e300": (_attack(eps=[1e300]), "width 1"),
    "eps-1e300-no-dot": ("dataset: digits\nmodel: {zoo: mlp}\nattacks: [{name: fgsm, eps: [1e300]}]\n",
                         "width 1"),
    "eps-above-width": (_attack(eps=[2.0]), "width 1"),
    "l2-eps-above-diameter": (_attack(norm="l2", eps=[100.0]), "at most 8"),
    "eps-negative": (_attack(eps=[-0.1]), "eps values must be >= 0"),
    "eps-nan": (_attack(eps=[float("nan")]), "finite number"),
    "eps-inf": (_attack(eps=[float("inf")]), "finite number"),
    "eps-empty": (_attack(eps=[]), "at least one value"),
    "eps-string": (_attack(eps=["big"]), "attacks.0.eps.0"),
    "n-samples-1e9-float": (_eval(n_samples=1e9), "n_samples: Input should be a valid integer"),
    "n-samples-fraction": (_eval(n_samples=2.5), "n_samples: Input should be a valid integer"),
    "n-samples-zero": (_eval(n_samples=0), "n_samples: Input should be greater"),
    "n-samples-negative": (_eval(n_samples=-5), "n_samples: Input should be greater"),
    "n-samples-string": (_eval(n_samples="all"), "n_samples"),
    "eval-batch-size-zero": (_eval(batch_size=0), "batch_size"),
    "epochs-zero": (_model(epochs=0), "model.epochs"),
    "epochs-huge": (_model(epochs=10**9), "model.epochs"),
    "lr-nan": (_model(lr=float("nan")), "model.lr"),
    "lr-negative": (_model(lr=-1.0), "model.lr"),
    "zoo-and-path": (_model(path="m.safetensors"), "exactly one of 'zoo'"),
    "no-model-source": (spec_yaml(model={"epochs": 1}), "exactly one of 'zoo'"),
    "unknown-zoo": (_model(zoo="resnet9000"), "unknown zoo model"),
    "trust-pickle-string": (_model(trust_pickle="yes"), "valid boolean"),
    "kwargs-not-mapping": (_model(kwargs=[1, 2]), "model.kwargs"),
    "unknown-dataset": (spec_yaml(dataset="imagenet"), "a dataset name"),
    "dataset-both": (spec_yaml(dataset={"name": "digits", "path": "d.npz"}), "exactly one"),
    "dataset-suffix": (spec_yaml(dataset={"path": "data.txt"}), "name_or_path"),
    "dataset-not-mapping": (spec_yaml(dataset=[1, 2]), "dataset"),
    "label-column-builtin": (spec_yaml(dataset={"name": "digits", "label_column": "y"}),
                             "label_column"),
    "missing-data-file": (spec_yaml(dataset={"path": "/nonexistent/d.npz"}), "does not exist"),
    "missing-model-file": (spec_yaml(model={"path": "/nonexistent/m.safetensors"}),
                           "existing model file"),
    "model-long-name": (spec_yaml(model={"path": long_name(".pt")}), "too long"),
    "unknown-attack": (spec_yaml(attacks=[{"name": "nope"}]), "unknown attack 'nope'"),
    "attacks-not-list": (spec_yaml(attacks={"name": "fgsm"}), "attacks"),
    "unknown-attack-param": (_attack(name="pgd", params={"stepz": 3}), "stepz"),
    "bad-attack-param": (_attack(name="pgd", params={"steps": -1}), "steps"),
    "attack-param-type": (_attack(name="pgd", params={"steps": "ten"}), "steps"),
    "attack-param-string-number": (_attack(name="pgd", params={"step_size": "x"}),
                                   "PGD: parameter 'step_size' must be a float in (0, inf) or "
                                   "None; got 'x' (str)"),
    "attack-param-bool-string": (_attack(name="pgd", params={"random_start": "yes"}),
                                 "PGD: parameter 'random_start' must be a bool (true or false); "
                                 "got 'yes' (str)"),
    "bad-norm": (_attack(norm="l3"), "norm"),
    "ensemble-eps-zero": (spec_yaml(attacks=DROP, ensemble={"eps": [0.0]}), "> 0"),
    "ensemble-version": (spec_yaml(ensemble={"version": "x"}), "version"),
    "ensemble-unknown-attack": (spec_yaml(ensemble={"attacks": ["nope"]}), "unknown attack"),
    "nothing-to-run": (spec_yaml(attacks=[]), "at least one attack"),
    "fail-under-nan": (spec_yaml(fail_under={"clean_accuracy": float("nan")}), "finite"),
    "fail-under-string": (spec_yaml(fail_under={"clean_accuracy": "high"}), "valid number"),
    "title-huge": (spec_yaml(title="x" * 1000), "at most 500"),
    "title-list": (spec_yaml(title=[1, 2]), "valid string"),
    "escape-in-attack-name": (spec_yaml(attacks=[{"name": "\x1b[2J\x1b]0;pwned\x07"}]),
                              "unknown attack '\\x1b[2j"),
    "huge-attack-name": (spec_yaml(attacks=[{"name": "a" * 100_000}]), "characters)"),
}


# ----------------------------------------------------------------------------- data cases

def _npz(**arrays):
    return lambda d: {"path": str(write_npz(d / "data.npz", **arrays))}


def _npz_with(**changes):
    return _npz(**{k: v for k, v in {**good_arrays(), **changes}.items() if v is not None})


def _raw_zip(members):
    return lambda d: {"path": str(write_raw_zip(d / "data.npz", members))}


def _bytes(name, blob):
    def build(d):
        (d / name).write_bytes(blob)
        return {"path": str(d / name)}
    return build


def _csv(text, label="y"):
    return lambda d: {"path": str(write_csv(d / "data.csv", text)), "label_column": label}


X, Y = good_arrays()["x"], good_arrays()["y"]
_NAN_X, _INF_X = X.copy(), X.copy()
_NAN_X[3, 1], _INF_X[5, 0] = np.nan, np.inf
OBJECT = np.empty(40, dtype=object)
OBJECT[:] = [{"a": i} for i in range(40)]

DATA = {
    "npz-x-1d": (_npz_with(x=np.zeros(40)), "has shape"),
    "npz-x-5d": (_npz_with(x=np.zeros((40, 1, 2, 2, 2))), "has shape"),
    "npz-zero-features": (_npz_with(x=np.zeros((40, 0))), "has shape"),
    "npz-nan": (_npz_with(x=_NAN_X), "remove or impute"),
    "npz-inf": (_npz_with(x=_INF_X), "remove or impute"),
    "npz-y-nan": (_npz_with(y=np.where(Y == 0, np.nan, 1.0)), "labels must be finite"),
    "npz-y-fraction": (_npz_with(y=Y + 0.5), "not an integer"),
    "npz-one-class": (_npz_with(y=np.zeros(40, dtype=int)), "at least 2"),
    "npz-y-2d": (_npz_with(y=Y[:, None]), "one label per row"),
    "npz-length-mismatch": (_npz_with(y=Y[:39]), "one label per row"),
    "npz-empty": (_npz_with(x=np.zeros((0, 4)), y=np.zeros(0, dtype=int)), "no rows"),
    "npz-too-few": (_npz_with(x=X[:2], y=Y[:2]), "too few"),
    "npz-non-npy-member": (_raw_zip({"x.npy": b"not npy", "y.npy": b"nope"}), "not NumPy .npy"),
    "npz-pickled-object": (_npz_with(x=OBJECT), "without unpickling"),
    "npz-object-labels": (_npz_with(y=OBJECT), "without unpickling"),
    "npz-missing-y": (_npz(x=X), "lacks the array"),
    "npz-x-test-only": (_npz_with(x_test=X[:5]), "only one of"),
    "npz-x-test-shape": (_npz_with(x_test=np.zeros((5, 3)), y_test=Y[:5]), "same per sample"),
    "npz-string-x": (_npz_with(x=np.array(["a"] * 40)), "must be numeric"),
    "npz-complex-x": (_npz_with(x=X.astype(complex)), "must be numeric"),
    "npz-huge-declared-shape": (_raw_zip(lying_npz((10**6, 10**6))), "over the limit"),
    "npz-shape-overflows": (_raw_zip(lying_npz((2**62, 2**62))), "over the limit"),
    "npz-negative-dimension": (_raw_zip(lying_npz((-2, 4))), "negative dimension"),
    "npz-truncated-member": (_raw_zip(lying_npz((40, 4))), "holds 16 bytes"),
    "npz-garbage-bytes": (_bytes("data.npz", b"\x00garbage" * 50), "cannot read"),
    "npz-single-array": (_bytes("data.npz", b""), "cannot read"),
    "npz-long-name": (lambda d: {"path": str(d / long_name(".npz"))}, "too long"),
    "csv-wrong-column": (_csv(csv_text(), label="label"), "label_column"),
    "csv-no-label-column": (lambda d: {"path": str(write_csv(d / "d.csv", csv_text()))},
                            "label_column"),
    "csv-nan": (_csv(csv_text(bad="")), "missing value"),
    "csv-inf": (_csv(csv_text(bad="inf")), "non-finite"),
    "csv-header-only": (_csv("a,b,y\n"), "no data rows"),
    "csv-empty-file": (_csv(""), "cannot parse"),
    "csv-fraction-labels": (_csv("a,y\n" + "".join(f"{i},{i / 3}\n" for i in range(20))),
                            "not an integer"),
    "csv-only-label": (_csv("y\n" + "".join(f"{i % 2}\n" for i in range(20))),
                       "no feature columns"),
    "csv-one-class": (_csv("a,y\n" + "".join(f"{i},0\n" for i in range(20))), "at least 2"),
    "csv-long-name": (lambda d: {"path": str(d / long_name(".csv")), "label_column": "y"},
                      "too long"),
}


# ----------------------------------------------------------------------------- models

class _Base(nn.Module):
    def __init__(self, d: int, k: int):
        super().__init__()
        self.lin = nn.Linear(d, k)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


class Raises(_Base):
    def forward(self, x):
        raise RuntimeError("forward exploded")


class Int64Scores(_Base):
    def forward(self, x):
        return self.scores(x).argmax(1, keepdim=True).repeat(1, self.lin.out_features)


class NanAfterFirstCall(_Base):
    def __init__(self, d: int, k: int):
        super().__init__(d, k)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        out = self.scores(x)
        return out if self.calls == 1 else out * float("nan")


class Constant(_Base):
    def forward(self, x):
        return self.scores(torch.zeros_like(x)) + 0.0 * x.flatten(1).sum(1, keepdim=True)


class WrongShape(_Base):
    def forward(self, x):
        return self.scores(x)[:, :1]


class ReturnsTuple(_Base):
    def forward(self, x):
        return self.scores(x), {"aux": 1}


class Detached(_Base):
    def forward(self, x):
        return self.scores(x.detach())


MISBEHAVING = {
    "raises": (Raises, "forward exploded"),
    "int64": (Int64Scores, "torch.int64"),
    "nan-after-first-call": (NanAfterFirstCall, "non-finite"),
    "constant": (Constant, "ignores its"),
    "wrong-shape": (WrongShape, "shape"),
    "tuple": (ReturnsTuple, "tuple"),
}
