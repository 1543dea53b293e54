"""joblib's NumpyArrayWrapper (:func:`joblib_wrapper`), the parser differentials between joblib and
a plain pickle reader (:func:`joblib_differentials`), and the corpus's hostile joblib files."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from advkit.testing.corpus._writer import _Writer
from advkit.testing.corpus.pickles import DT, Call, G, _Reduce, enc, npy_with_pickle, pickle_of

_WRAPPER = G("joblib.numpy_pickle", "NumpyArrayWrapper")
_F8 = (3, "<", None, None, None, -1, -1, 0)


def _wrapper_state(dtype, shape, align=None) -> dict:
    state = {"subclass": G("numpy", "ndarray"), "shape": shape, "order": "C", "dtype": dtype,
             "allow_mmap": False}
    if align is not None:
        state["numpy_array_alignment_bytes"] = align
    return state


def joblib_wrapper(dtype, shape, align=None) -> bytes:
    """A NumpyArrayWrapper as joblib writes it: NEWOBJ, then BUILD of its attributes."""
    return enc(_WRAPPER) + b")\x81" + enc(_wrapper_state(dtype, shape, align)) + b"b"


def joblib_differentials(marker) -> dict[str, bytes]:
    """Pickle bodies (before the final ``N.``) that a scanner reading joblib files as plain pickles
    reads differently from joblib: each hides ``gzip.open(marker, "wb")``."""
    pay = enc(Call(G("gzip", "open"), (str(marker), "wb")))
    # itemsize lie: the state says 1 byte per item, numpy keeps 8: a scan that believed the state
    # would skip 8 bytes and read the payload as the BINBYTES that starts at byte 8
    data = b"\x00" * 8 + b"B" + struct.pack("<I", 64 - 13 + len(pay)) + b"\x00" * (64 - 13)
    lie = joblib_wrapper(DT("f8", (3, "<", None, None, None, 1, 1, 0)), (8,)) + data + pay + b"0"
    # a float64 whose flags say it holds objects: joblib reads a nested pickle, not 8 raw bytes
    flagged = (joblib_wrapper(DT("f8", (3, "<", None, None, None, -1, -1, 63)), (1,))
               + pickle_of(pay))
    # a wrapper made by copyreg._reconstructor, with array data that starts with STOP
    recon = enc(Call(G("copyreg", "_reconstructor"), (_WRAPPER, G("builtins", "object"), None)))
    recon += enc(_wrapper_state(DT("u1", _F8[:1] + ("|",) + _F8[2:]), (4,))) + b"b"
    recon += b".\x00\x00\x00" + pay + b"0"
    # the wrapper's BUILD inside a frame that goes on: joblib reads the array after the frame
    # and then the rest of the frame (the payload); a sequential reader sees it the other way
    rest = pay + b"0"
    rest += b"N0" if len(rest) % 2 else b""
    head = joblib_wrapper(DT("u1", (3, "|", None, None, None, -1, -1, 0)), (128,))
    framed = (b"\x95" + struct.pack("<Q", len(head) + len(rest)) + head + rest
              + b"\x00" * (128 - len(rest)) + b"N0" * (len(rest) // 2))
    return {"itemsize-lie": lie, "hasobject-flag": flagged, "reconstructor-stop": recon,
            "frame": framed}

# --- the joblib files of the corpus -------------------------------------------------------------


def _malicious_joblib(w: _Writer, marker: Path) -> None:
    m = str(marker)
    payload_obj = _Reduce(os.system, (f"touch {m}",))
    # joblib, plain and compressed
    import joblib

    for comp in (0, 3, ("gzip", 3), ("bz2", 1), ("xz", 1), ("lzma", 1)):
        p = w.path("joblib", "malicious", f"joblib.dump compress={comp}", ".joblib")
        joblib.dump({"model": payload_obj, "w": np.arange(4.0)}, p, compress=comp)
        w.add(p, f"joblib.dump compress={comp}", "payload in a joblib file", "malicious", "joblib")
    for name, body in joblib_differentials(marker).items():
        data = b"\x80\x04" + body + b"N."
        w.write(data, f"joblib {name}", "joblib parser differential", "joblib", ".joblib")
        w.write(zlib.compress(data), f"joblib {name} (zlib)", "joblib parser differential",
                "joblib", ".joblib")
    arr = np.zeros(2, dtype=[("a", "f8"), ("o", "O")])
    arr["o"][1] = _Reduce(gzip.open, (m, "wb"))
    p = w.path("joblib", "malicious", "object field in a structured array", ".joblib")
    joblib.dump({"arr": arr}, p)
    w.add(p, "object field in a structured array", "joblib parser differential", "malicious",
          "joblib")
    side = w.folder / "malicious" / "joblib" / "sidecar.npy"
    side.write_bytes(npy_with_pickle(pickle_of(enc(Call(G("logging", "FileHandler"), (m,))))))
    w.write(pickle_of(enc(G("joblib.numpy_pickle_compat", "NDArrayWrapper")) + b")\x81" + enc(
        {"filename": "sidecar.npy", "subclass": G("numpy", "ndarray"), "allow_mmap": False})
        + b"b"), "NDArrayWrapper sidecar", "joblib old format sidecar", "joblib", ".pkl")
