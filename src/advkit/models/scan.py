"""Model files: identify the format by content and scan every pickle in it, without loading.

``scan_model_file`` is the public entry (used by ``load_model`` and ``advkit scan``); the opcode
level pickle scan itself lives in :mod:`advkit.models.pickle_scan`, and the check of a TorchScript
archive's code against an allow-list of operators in :mod:`advkit.models.torchscript_scan`.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from advkit.errors import InvalidParameterError
from advkit.models.pickle_scan import PickleScan, _scan_zip, classify, scan_stream
from advkit.models.torchscript_scan import scan_torchscript


class _ZlibRaw(io.RawIOBase):
    """A raw zlib stream (joblib's default compressor), decompressed as it is read."""

    def __init__(self, f):
        self._f, self._d, self._pos = f, zlib.decompressobj(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = b""
        while not data and not self._d.eof:
            src = self._d.unconsumed_tail or self._f.read(1 << 16)
            if not src:
                break
            data = self._d.decompress(src, len(b))
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        self._f.close()
        super().close()


def _compression(head: bytes) -> str | None:
    """The compressor whose magic bytes start ``head``, if any (joblib's formats)."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh":
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00" or head[:3] == b"\x5d\x00\x00":
        return "lzma"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0:
        return "zlib"
    return None


def _open_decompressed(path: Path, kind: str):
    opener = {"gzip": gzip.open, "bz2": bz2.open, "lzma": lzma.open}.get(kind)
    return opener(path, "rb") if opener else io.BufferedReader(_ZlibRaw(open(path, "rb")))


_TORCH_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")
_PICKLE_EXTENSIONS = (".pkl", ".pickle", ".joblib", ".sav") + _TORCH_EXTENSIONS


@dataclass(frozen=True)
class ScanResult:
    """What a model file is and what loading it would do, found without loading it.

    ``format``: ``advkit`` (a save_model folder), ``safetensors``, ``torchscript``, ``skops``,
    ``torch`` (a ``torch.save`` pickle), ``joblib``, ``pickle`` or ``unknown``. ``needs_trust``:
    loading it needs ``trust_pickle=True`` (any pickle; a skops file with types skops does not
    trust by default). ``globals``: what its pickles import (for skops, its untrusted types);
    ``dangerous``: those that run commands, touch files or the network, or evaluate code, with why
    (for a TorchScript archive, also every operator or construct its code uses that the
    allow-list of :mod:`advkit.models.torchscript_scan` refuses);
    ``unknown``: those neither known-ordinary nor known-dangerous; ``complete``: every stream was
    parsed to its end. ``verdict``: ``safe``, ``requires-trust``, ``dangerous`` or ``unknown``.
    """

    path: Path
    format: str
    sha256: str
    needs_trust: bool
    globals: tuple[str, ...] = ()
    dangerous: dict[str, str] = field(default_factory=dict)
    unknown: tuple[str, ...] = ()
    complete: bool = True
    issues: tuple[str, ...] = ()
    compression: str | None = None

    @property
    def verdict(self) -> str:
        if self.format == "unknown":
            return "unknown"
        if self.dangerous or not self.complete:
            return "dangerous"
        return "requires-trust" if self.needs_trust or self.unknown else "safe"

    def as_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "verdict": self.verdict,
                "sha256": self.sha256, "needs_trust": self.needs_trust,
                "globals": list(self.globals), "dangerous": dict(self.dangerous),
                "unknown": list(self.unknown), "complete": self.complete,
                "issues": list(self.issues), "compression": self.compression}


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def scan_model_file(path) -> ScanResult:
    """Identify the model file (or save_model folder) at ``path`` by its content and scan every
    pickle in it without executing anything."""
    p = Path(path)
    if p.is_dir():
        weights = p / "model.safetensors"
        if (p / "config.json").is_file() and weights.is_file():
            return ScanResult(p, "advkit", sha256_file(weights), False)
        return ScanResult(p, "unknown", "", False, issues=("a folder without config.json and "
                                                           "model.safetensors",))
    if not p.is_file():
        raise InvalidParameterError("path", str(p), "an existing model file or folder")
    sha, size = sha256_file(p), p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(16)
    scan, fmt, needs_trust, comp = PickleScan(), "unknown", True, None
    refused: dict[str, str] = {}  # for a TorchScript archive: what its code may not do
    if head[:4] == b"PK\x03\x04":  # by the leading bytes, as torch.load decides
        try:
            names = _scan_zip(p, scan)
        except (zipfile.BadZipFile, OSError) as exc:
            return ScanResult(p, "unknown", sha, False, issues=(f"a damaged zip archive: {exc}",))
        if "schema.json" in names:
            return _scan_skops(p, sha)
        if any(n.endswith("constants.pkl") or "/code/" in f"/{n}" for n in names):
            fmt, needs_trust = "torchscript", False
            refused = scan_torchscript(p, head, scan.globals())
        elif any(n.endswith("data.pkl") for n in names):
            fmt = "torch"
        elif any(n.endswith(("archive_format", "serialized_exported_program.json")) for n in names):
            scan.issues.append("a torch.export archive (.pt2), which advkit does not load: its "
                               "loader unpickles weights and constants without restriction")
        else:
            scan.issues.append("a zip archive that is not torch.save, TorchScript or skops")
    elif len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") <= size - 8:
        fmt, needs_trust = "safetensors", False
    elif (comp := _compression(head)) is not None:
        with _open_decompressed(p, comp) as stream:
            try:
                is_pickle = stream.peek(1)[:1] == b"\x80"
            except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                scan.issues.append(f"{comp} data that cannot be decompressed: {exc}")
                is_pickle = False
            if is_pickle:
                scan_stream(stream, scan, f"{p.name} ({comp})")
                fmt = "joblib"
    elif head[:1] == b"\x80" or p.suffix.lower() in _PICKLE_EXTENSIONS:
        with open(p, "rb") as stream:
            scan_stream(stream, scan, p.name)
        if scan.torch_legacy and tarfile.is_tarfile(p):  # torch.load would read it as a tar
            scan.fail(p.name, "also a tar archive (torch's legacy tar format), which the scan "
                              "does not cover")
        fmt = "torch" if scan.torch_legacy else "joblib" if scan.joblib else "pickle"
    if fmt == "unknown":
        return ScanResult(p, fmt, sha, False, issues=tuple(scan.issues), compression=comp)
    unknown = scan.classified("unknown")
    if fmt == "torchscript":  # its __torch__ classes were checked against its code instead
        unknown = {g: r for g, r in unknown.items() if not g.startswith("__torch__.")}
    return ScanResult(p, fmt, sha, needs_trust, tuple(scan.globals()),
                      {**scan.classified("dangerous"), **refused}, tuple(unknown), scan.complete,
                      tuple(scan.issues), comp)


def _scan_skops(p: Path, sha: str) -> ScanResult:
    import skops.io as sio

    try:
        untrusted = sorted(sio.get_untrusted_types(file=p))
    except Exception as exc:  # noqa: BLE001 - skops raises assorted errors on a broken file
        return ScanResult(p, "unknown", sha, False, issues=(f"not a readable skops file: {exc}",))
    kinds = {t: classify(*t.rpartition(".")[::2]) for t in untrusted}
    return ScanResult(p, "skops", sha, bool(untrusted), tuple(untrusted),
                      {t: r for t, (k, r) in kinds.items() if k == "dangerous"},
                      tuple(t for t, (k, _) in kinds.items() if k == "unknown"))
