"""Hostile skops files and advkit model folders whose weights are not safetensors."""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path

from advkit.testing.corpus._writer import _Writer
from advkit.testing.corpus.archives import torch_zip
from advkit.testing.corpus.benign import _zoo_model
from advkit.testing.corpus.pickles import _Reduce


def _malicious_skops_and_folders(w: _Writer, marker: Path) -> None:
    import functools
    import operator

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    from advkit.models.io import save_model

    m = str(marker)
    for name, obj in {"os.system": {"f": os.system},
                      "functools.partial(os.system)": {"f": functools.partial(os.system, m)},
                      "operator.methodcaller": {"f": operator.methodcaller("system", m)},
                      "FunctionTransformer(eval)": FunctionTransformer(func=eval),
                      "shutil.rmtree": {"f": shutil.rmtree}}.items():
        p = w.path("skops", "malicious", name, ".skops")
        sio.dump(obj, p)
        w.add(p, name, "dangerous type in a skops file", "malicious", "skops",
              "skops untrusted types (CVE-2024-37065)")
    # a skops file whose schema names builtins.exec although it was dumped as something else
    p = w.path("skops", "malicious", "schema edited to builtins.exec", ".skops")
    sio.dump({"f": len}, p)
    with zipfile.ZipFile(p) as zf:
        members = {i.filename: zf.read(i) for i in zf.infolist()}
    members["schema.json"] = members["schema.json"].replace(b'"len"', b'"exec"')
    p.write_bytes(torch_zip(list(members.items())))
    w.add(p, "schema edited to builtins.exec", "dangerous type in a skops file", "malicious",
          "skops")
    # advkit folders whose weights are not safetensors
    payload = pickle.dumps(_Reduce(os.system, (f"touch {m}",)), protocol=2)
    for name, data in {"pickle weights": payload,
                       "torch zip weights": torch_zip([("archive/data.pkl", payload),
                                                       ("archive/version", b"3\n")]),
                       "benign pickle weights": pickle.dumps({"w": [1.0]})}.items():
        d = w.path("advkit", "malicious", name, "")
        save_model(_zoo_model(1), d)
        (d / "model.safetensors").write_bytes(data)
        w.add(d, name, "advkit folder with pickle weights", "malicious", "advkit")
