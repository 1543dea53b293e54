"""Zip and tar containers: torch.save-like zips (:func:`torch_zip`, :func:`patch_zip_member`,
:func:`zip_cases`), torch's legacy tar, polyglots and files whose name hides their format."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import torch

from advkit.testing.corpus._writer import _Writer
from advkit.testing.corpus.joblib_cases import joblib_wrapper
from advkit.testing.corpus.pickles import DT, Call, G, _Reduce, enc, pickle_of


def torch_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A zip archive of ``members`` (name, data), stored, duplicates allowed."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # duplicate names
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def patch_zip_member(blob: bytes, name: str, *, method: int | None = None, flag: int = 0) -> bytes:
    """Set the compression method or OR a flag into ``name``'s local and central headers."""
    out = bytearray(blob)
    for sig, flag_at, method_at, name_len_at, head in ((b"PK\x03\x04", 6, 8, 26, 30),
                                                       (b"PK\x01\x02", 8, 10, 28, 46)):
        i = out.find(sig)
        while i >= 0:
            n = struct.unpack_from("<H", out, i + name_len_at)[0]
            if bytes(out[i + head:i + head + n]) == name.encode():
                struct.pack_into("<H", out, i + flag_at,
                                 struct.unpack_from("<H", out, i + flag_at)[0] | flag)
                if method is not None:
                    struct.pack_into("<H", out, i + method_at, method)
            i = out.find(sig, i + 4)
    return bytes(out)


def zip_cases(marker) -> dict[str, bytes]:
    """torch.save-like zip archives a scanner may fail to read (GHSA-w8jq-xcqf-f792,
    GHSA-7q5r-7gvp-wc82: headers that crash picklescan but not torch)."""
    ok = pickle.dumps({"w": "aaaa"}, protocol=2)
    payload = pickle_of(enc(Call(G("gzip", "open"), (str(marker), "wb"))))
    base = [("archive/data.pkl", ok + b"\x00" * 20000), ("archive/version", b"3\n")]
    good = torch_zip(base)
    i = good.find(b"aaaa")
    return {
        "encrypted": patch_zip_member(good, "archive/data.pkl", flag=0x1),
        "unknown-method": patch_zip_member(good, "archive/data.pkl", method=99),
        "bad-crc": good[:i] + b"aaab" + good[i + 4:],
        "duplicate": torch_zip([("archive/data.pkl", ok), ("archive/data.pkl", payload)]),
        "traversal": torch_zip(base + [("../evil.pkl", ok)]),
        "absolute": torch_zip(base + [("/tmp/evil.pkl", ok)]),
        "encrypted-data": patch_zip_member(torch_zip(base + [("archive/data/0", b"\x00" * 8)]),
                                           "archive/data/0", flag=0x1),
    }


def _legacy_tar(payload: bytes) -> bytes:
    """torch's oldest format: a tar of sys_info, pickle, storages and tensors; torch.load reads
    it before anything else when the file is a tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("sys_info", pickle.dumps({"protocol_version": 1001,
                                                      "little_endian": True})),
                           ("pickle", payload), ("storages", pickle.dumps(0)),
                           ("tensors", pickle.dumps(0))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()

# --- the zip and tar files of the corpus --------------------------------------------------------


def _malicious_archives(w: _Writer, marker: Path) -> None:
    m = str(marker)
    payload_obj = _Reduce(os.system, (f"touch {m}",))
    payload = pickle.dumps(payload_obj, protocol=2)
    benign = pickle.dumps({"w": [1.0, 2.0]}, protocol=2)
    # torch.save, zip and legacy
    for zipped in (True, False):
        fmt = "torch-zip" if zipped else "torch-legacy"
        p = w.path(fmt, "malicious", "torch.save payload", ".pt")
        torch.save({"w": torch.zeros(2), "x": payload_obj}, p,
                   _use_new_zipfile_serialization=zipped)
        w.add(p, "torch.save payload", "payload in torch.save", "malicious", fmt)
    for name, data in zip_cases(marker).items():
        w.write(data, f"zip {name}", "zip the scanner cannot read", "torch-zip", ".pt",
                "GHSA-w8jq-xcqf-f792, GHSA-7q5r-7gvp-wc82")
    v = ("archive/version", b"3\n")
    w.write(torch_zip([("model_v2/data.pkl", payload), ("model_v2/version", b"3\n")]),
            "archive prefix renamed", "zip member naming", "torch-zip", ".pt",
            "GHSA-769v-p64c-89pr")
    w.write(torch_zip([("archive/data.pkl", benign), v, ("archive/extra/config.pkl", payload)]),
            "payload pickle after a benign one", "zip member naming", "torch-zip", ".pt",
            "GHSA-769v-p64c-89pr")
    w.write(torch_zip([("archive/data.pkl", pickle_of(enc(Call(G("torch", "load"), (
        "archive/config.p",))))), v, ("archive/config.p", payload)]),
        "data.pkl loads a non-.pkl member", "zip member naming", "torch-zip", ".pt",
        "GHSA-769v-p64c-89pr")
    w.write(torch_zip([("archive/data.pkl", payload), v]), "torch zip named .bin",
            "format by name", "torch-zip", ".bin")
    w.write(torch_zip([("archive/data.pkl", payload), v]), "torch zip named .zip",
            "format by name", "torch-zip", ".zip")
    pay = enc(Call(G("gzip", "open"), (m, "wb"))) + b"0"
    data = pickle_of(joblib_wrapper(DT("u1", (3, "|", None, None, None, -1, -1, 0)),
                                    (len(pay),)) + pay)
    w.write(torch_zip([("archive/data.pkl", data), v]), "joblib wrapper in torch data.pkl",
            "joblib parser differential", "torch-zip", ".pt")
    magic = joblib_wrapper(DT("u1", (3, "|", None, None, None, -1, -1, 0)), (2,)) + b"\x00\x00" \
        + b"0"
    w.write(pickle_of(magic + enc(0x1950A86A20F9469CFC6C)) + pickle.dumps(1001),
            "joblib wrapper before the legacy magic", "joblib parser differential",
            "torch-legacy", ".pt")
    w.write(_legacy_tar(payload), "legacy tar format", "torch legacy tar", "torch-legacy", ".pt")
    w.write(_legacy_tar(payload), "legacy tar format as .tar", "torch legacy tar",
            "torch-legacy", ".tar")
    benign_zip = torch_zip([("archive/data.pkl", benign), v])
    w.write(payload + benign_zip, "payload pickle + benign zip (polyglot)", "polyglot",
            "torch-legacy", ".pt")
    w.write(benign + torch_zip([("archive/data.pkl", payload), v]),
            "benign pickle + payload zip (polyglot)", "polyglot", "torch-legacy", ".pt")
    w.write(payload + b"\x00" * 16, "payload with trailing padding", "polyglot", "pickle",
            ".safetensors", "a pickle named as safetensors")
    gz = gzip.compress(payload)
    w.write(gz, "gzip pickle as .pt", "payload in compressed pickle", "joblib", ".pt")
    # safetensors-named and skops-named pickles
    w.write(payload, "pickle named .safetensors", "format by name", "safetensors",
            ".safetensors")
    w.write(benign, "benign pickle named .safetensors", "format by name", "safetensors",
            ".safetensors")
    w.write(payload, "pickle named .skops", "format by name", "skops", ".skops")
