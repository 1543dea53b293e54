"""Model files: identify the format by content and scan every pickle in it, without loading.

``scan_model_file`` is the public entry (used by ``load_model`` and ``advkit scan``); the opcode
level pickle scan itself lives in :mod:`advkit.models.pickle_scan`, and the check of a TorchScript
archive's code against an allow-list of operators in :mod:`advkit.models.torchscript_scan`,
the check that a safetensors file is well-formed in :mod:`advkit.models.safetensors_scan`, and
the scan of a whole folder in :mod:`advkit.models.scan_tree`.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import pickletools
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

from advkit.errors import InvalidParameterError
from advkit.models.boosters import detect as detect_booster
from advkit.models.export_scan import TENSOR_GLOBALS, is_export_archive, scan_export
from advkit.models.pickle_scan import (
    PickleScan,
    _scan_zip,
    classify,
    scan_stream,
    scan_trailing,
)
from advkit.models.safetensors_scan import (
    config_problem,
    looks_like_safetensors,
    safetensors_problem,
)
from advkit.models.torchscript_scan import scan_torchscript

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


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


_SAFE_SUFFIXES = (".safetensors", ".skops")
_PICKLE_OPCODES = frozenset(op.code for op in pickletools.opcodes)
_TORCH_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")
_PICKLE_EXTENSIONS = (".pkl", ".pickle", ".joblib", ".sav") + _TORCH_EXTENSIONS


@dataclass(frozen=True)
class ScanResult:
    """What a model file is and what loading it would do, found without loading it.

    ``format``: ``advkit`` (a save_model folder whose weights file is checked to be well-formed
    safetensors and whose config.json is a JSON object of at most 1 MiB), ``safetensors`` (the
    header parses and its offsets fit the file), ``torchscript``, ``torch-export`` (a ``.pt2``
    archive of ``torch.export.save``, checked by :mod:`advkit.models.export_scan`), ``skops``,
    ``xgboost`` / ``lightgbm`` / ``lightgbm-json`` (tree ensembles in their own data formats,
    :mod:`advkit.models.boosters`: always safe), ``onnx`` (an ONNX graph, checked by
    :mod:`advkit.models.onnx_scan`: dangerous when it needs custom operators or reads external
    data from outside its folder),
    ``torch`` (a ``torch.save`` pickle), ``joblib``, ``pickle`` or ``unknown``. ``needs_trust``:
    loading it needs ``trust_pickle=True`` (any pickle; a skops file with types skops does not
    trust by default). ``globals``: what its pickles import (for skops, its untrusted types);
    ``dangerous``: those that run commands, touch files or the network, or evaluate code, with why
    (for a TorchScript archive, also every operator or construct its code uses that the
    allow-list of :mod:`advkit.models.torchscript_scan` refuses);
    ``unknown``: those neither known-ordinary nor known-dangerous; ``complete``: every stream was
    parsed to its end. ``verdict``: ``safe``, ``requires-trust``, ``dangerous`` or ``unknown``
    (not a recognized format, empty or unreadable: ``issues`` says which). A pickle in a file
    named ``.safetensors`` or ``.skops``, or a file that is both valid safetensors and a complete
    pickle, is dangerous: it lies about its format.
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
    pickle in it without executing anything. A file that cannot be read, or is empty, gets the
    verdict ``unknown`` with the reason in ``issues``."""
    p = Path(path)
    if p.is_dir():
        if (p / CONFIG_NAME).is_file() and (p / WEIGHTS_NAME).is_file():
            return _scan_advkit_folder(p)
        return ScanResult(p, "unknown", "", False, issues=(
            f"a folder without {CONFIG_NAME} and {WEIGHTS_NAME} (not a save_model folder)",))
    if not p.is_file():
        raise InvalidParameterError("path", str(p), "an existing model file or folder")
    try:
        return _scan_file(p)
    except OSError as exc:
        return ScanResult(p, "unknown", "", False, issues=(
            f"the file cannot be read ({exc}); check its permissions",))


def _scan_advkit_folder(p: Path) -> ScanResult:
    """A save_model folder: its weights must really be safetensors (scanned by content, whatever
    the name says) and its config a JSON object of bounded size."""
    weights = scan_model_file(p / WEIGHTS_NAME)
    if weights.format != "safetensors":
        what = (f"{WEIGHTS_NAME} is not a valid safetensors file" if weights.format == "unknown"
                else f"{WEIGHTS_NAME} is not safetensors: its content is {weights.format}")
        if weights.verdict in ("dangerous", "requires-trust"):  # keep what the scan found in it
            return replace(weights, path=p, issues=(what,) + weights.issues)
        return ScanResult(p, "unknown", weights.sha256, False, issues=(
            what + " (load_model reads a folder's weights only as safetensors)",) + weights.issues)
    problem = config_problem(p / CONFIG_NAME)
    if problem:
        return ScanResult(p, "unknown", weights.sha256, False, issues=(problem,))
    return ScanResult(p, "advkit", weights.sha256, False, issues=weights.issues)


def _scan_file(p: Path) -> ScanResult:
    sha, size = sha256_file(p), p.stat().st_size
    if size == 0:
        return ScanResult(p, "unknown", sha, False, issues=(
            "an empty file (0 bytes), not a model: it was truncated or never written; save or "
            "download it again",))
    with open(p, "rb") as f:
        head = f.read(16)
    scan, fmt, needs_trust, comp = PickleScan(), "unknown", True, None
    refused: dict[str, str] = {}  # for a TorchScript archive: what its code may not do
    problem: str | None = None  # what is wrong with a file that starts like safetensors
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
        elif is_export_archive(names):
            try:
                refused, problems = scan_export(p, names, scan)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as exc:
                refused, problems = {}, [f"a damaged member: {exc}"]
            if problems:
                return ScanResult(p, "unknown", sha, False, issues=(
                    "a torch.export archive (.pt2) that is not as torch.export.save writes it: "
                    + "; ".join(problems),))
            fmt, needs_trust = "torch-export", False
        elif any(n.endswith("serialized_exported_program.json") for n in names):
            scan.issues.append("a torch.export archive in the format of torch 2.7 or older, which "
                               "advkit does not load; export it again with torch.export.save")
        else:
            scan.issues.append("a zip archive that is not torch.save, TorchScript or skops")
    elif looks_like_safetensors(head, size) and (problem := safetensors_problem(p)) is None:
        return _polyglot(p, sha) or ScanResult(p, "safetensors", sha, False)
    elif (comp := _compression(head)) is not None:
        with _open_decompressed(p, comp) as stream:
            try:
                is_pickle = stream.peek(1)[:1] == b"\x80"
            except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                scan.issues.append(f"{comp} data that cannot be decompressed: {exc}")
                is_pickle = False
            if is_pickle:
                scan_stream(stream, scan, f"{p.name} ({comp})")
                scan_trailing(stream, scan, f"{p.name} ({comp})")
                fmt = "joblib"
    elif (booster := detect_booster(p))[0] is not None:  # tree ensembles as data, not code
        if booster[1]:
            return ScanResult(p, "unknown", sha, False, issues=(
                f"starts like a {booster[0]} model but is {booster[1]}",))
        return ScanResult(p, booster[0], sha, False)
    elif p.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ModelProto: ir_version first
        from advkit.models.onnx_scan import scan_onnx

        onnx_res = scan_onnx(p, sha)  # another file starting with 0x08 is merely unrecognized
        if onnx_res.format == "onnx" or p.suffix.lower() == ".onnx":
            return onnx_res
    elif head[:1] == b"\x80" or p.suffix.lower() in _PICKLE_EXTENSIONS:
        fmt = _scan_pickle(p, scan)
    elif head[:1].decode("latin-1") in _PICKLE_OPCODES:  # perhaps a protocol 0 or 1 pickle
        probe = PickleScan()
        if _scan_pickle(p, probe) and probe.complete and probe.n_pickles:
            scan, fmt = probe, _pickle_format(probe)
    if fmt == "unknown":
        issues = tuple(scan.issues)
        if problem:
            issues = (f"a safetensors header, but not a valid safetensors file: {problem}",) + issues
        return ScanResult(p, fmt, sha, False, issues=issues or (
            "not a format advkit recognizes by its content (safetensors, skops, TorchScript, "
            "torch.export, torch.save, joblib, pickle, XGBoost JSON, LightGBM or ONNX)",),
            compression=comp)
    unknown = scan.classified("unknown")
    if fmt == "torchscript":  # its __torch__ classes were checked against its code instead
        unknown = {g: r for g, r in unknown.items() if not g.startswith("__torch__.")}
    elif fmt == "torch-export":  # its pickles may rebuild plain tensors, nothing else
        dangerous = scan.classified("dangerous")
        unknown = {g: "" for g in scan.globals() if not (TENSOR_GLOBALS.match(g) or g in dangerous)}
    elif p.suffix.lower() in _SAFE_SUFFIXES:  # a pickle that claims a format that runs no code
        refused[f"disguised as {p.suffix.lower()}"] = (
            f"pickle-based content ({fmt}) in a file named {p.name}: a file that lies about "
            "its format to be loaded by someone who trusts the name is a known way to deliver "
            "a payload")
    return ScanResult(p, fmt, sha, needs_trust, tuple(scan.globals()),
                      {**scan.classified("dangerous"), **refused}, tuple(unknown), scan.complete,
                      tuple(scan.issues), comp)


def _scan_pickle(p: Path, scan: PickleScan) -> str:
    with open(p, "rb") as stream:
        scan_stream(stream, scan, p.name)
        scan_trailing(stream, scan, p.name)
    if scan.torch_legacy and tarfile.is_tarfile(p):  # torch.load would read it as a tar
        scan.fail(p.name, "also a tar archive (torch's legacy tar format), which the scan "
                          "does not cover")
    return _pickle_format(scan)


def _pickle_format(scan: PickleScan) -> str:
    return "torch" if scan.torch_legacy else "joblib" if scan.joblib else "pickle"


def _polyglot(p: Path, sha: str) -> ScanResult | None:
    """A valid safetensors file that is also a complete pickle: a crafted file (a pickle loader
    such as torch.load would run it), never a saved model."""
    probe = PickleScan()
    with open(p, "rb") as stream:
        scan_stream(stream, probe, p.name)
    if not (probe.complete and probe.n_pickles):
        return None
    why = ("the file is valid both as safetensors and as a pickle: a safetensors loader reads "
           "weights, but a pickle loader (pickle.load, torch.load) would run its pickle")
    return ScanResult(p, _pickle_format(probe), sha, True, tuple(probe.globals()),
                      {**probe.classified("dangerous"), "safetensors+pickle polyglot": why},
                      tuple(probe.classified("unknown")), True, tuple(probe.issues))


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
