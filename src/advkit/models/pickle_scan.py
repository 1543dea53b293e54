"""Static scan of pickle streams: which globals would loading import and call, without loading.

Unpickling runs code: the GLOBAL / STACK_GLOBAL / INST / OBJ opcodes import any attribute of any
module and REDUCE / NEWOBJ / BUILD call it, so a model file can run ``os.system`` the moment it is
loaded. The opcodes are walked with :func:`pickletools.genops` (which parses, never executes) on a
symbolic stack machine (:mod:`advkit.models.pickle_machine`) that reads the bytes as the loader
will, joblib's raw array data included; where it cannot be sure, the scan is incomplete.
Compressed joblib files are scanned through a streaming decompressor, and zip archives
(``torch.save``, TorchScript) member by member.

Each global is classified allow-list first (:mod:`advkit.models.pickle_lists`): *known* only when
listed there; otherwise *dangerous* when the deny-list names it (it runs commands, touches files or
the network, imports or evaluates code, or loads another pickle), and *unknown* otherwise. An
unknown global that loading *calls* with arguments from the file (REDUCE, ``__init__`` through
INST / OBJ, ``__new__`` with arguments, or handed to a known helper that calls it) is reported as
dangerous too: that is how deny-list bypasses work. An unknown class that loading only creates
(``__new__`` without arguments, then its state) stays unknown: loading any pickle needs trust.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field

import numpy as np

from advkit.models.pickle_lists import (
    ALLOWED,
    DANGEROUS_ANYWHERE,
    DANGEROUS_MODULES,
    DANGEROUS_NAMES,
    DANGEROUS_PREFIXES,
    SKLEARN_ESTIMATORS,
)
from advkit.models.pickle_machine import UNRESOLVED, Machine, mapped

_NUMPY_UFUNCS = frozenset(f"numpy.{n}" for n, v in vars(np).items() if isinstance(v, np.ufunc))
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy (non-zip) torch.save file
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # what torch's zip reader reads
_UNRESOLVED_REASONS = {
    "STACK_GLOBAL": "its name is computed while loading, which hides what it imports",
    "computed-call": "calls a value computed while loading instead of a named global",
    "extension-code": "a global looked up in copyreg's extension registry, which the scan cannot "
                      "see",
}
CALLED_UNKNOWN = ("not on the allow-list of ordinary model types, and loading calls it with "
                  "arguments taken from the file")


def classify(module: str, name: str) -> tuple[str, str]:
    """``("dangerous" | "known" | "unknown", reason)`` for the global ``name`` of ``module``.

    Pickles of protocol < 3 name Python 2 modules that the unpickler maps to Python 3 ones
    (``__builtin__.eval`` is ``builtins.eval``): a global is dangerous if either name is.
    """
    if module == UNRESOLVED:
        return "dangerous", _UNRESOLVED_REASONS[name.partition(":")[0]]
    py3 = mapped(module, name)
    verdict = _classify(*py3)
    if verdict[0] != "dangerous" and py3 != (module, name):
        raw = _classify(module, name)
        verdict = raw if raw[0] == "dangerous" else verdict
    return verdict


def _classify(module: str, name: str) -> tuple[str, str]:
    full = f"{module}.{name}"
    if (full in ALLOWED or full in SKLEARN_ESTIMATORS or full in _NUMPY_UFUNCS
            or (module == "numpy.dtypes" and name.endswith("DType") and "." not in name)):
        return "known", ""
    if module == "builtins":
        return "dangerous", "a builtin that can evaluate code, import modules or reach attributes"
    if full in DANGEROUS_NAMES:
        return "dangerous", DANGEROUS_NAMES[full]
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        reason = DANGEROUS_MODULES.get(".".join(parts[:i]))
        if reason:
            return "dangerous", reason
    if any(p.startswith("__") and p.endswith("__") for p in name.split(".")):
        return "dangerous", "reaches a dunder attribute, a known way to disguise a call"
    if "." in name:
        return "dangerous", "an attribute chain through a class, a known way to disguise a call"
    if name in DANGEROUS_ANYWHERE:
        return "dangerous", DANGEROUS_ANYWHERE[name]
    bare = name.lstrip("_")
    for prefix, reason in DANGEROUS_PREFIXES.items():
        if bare.startswith(prefix):
            return "dangerous", reason
    return "unknown", ""


@dataclass
class PickleScan:
    """What a scan of one file's pickle streams found. ``complete`` is False when some stream could
    not be parsed to its end (then what a loader would execute is not fully known). ``called``:
    the globals that loading calls with arguments from the file."""

    found: dict[tuple[str, str], int] = field(default_factory=dict)  # (module, name) -> count
    called: set[tuple[str, str]] = field(default_factory=set)
    issues: list[str] = field(default_factory=list)
    complete: bool = True
    n_pickles: int = 0
    joblib: bool = False
    torch_legacy: bool = False

    def add(self, module: str, name: str) -> None:
        self.found[(module, name)] = self.found.get((module, name), 0) + 1

    def fail(self, where: str, exc: Exception | str) -> None:
        self.complete = False
        self.issues.append(f"{where}: {exc}")

    def globals(self) -> list[str]:
        """Every imported global as ``"module.name"``, sorted."""
        return sorted(f"{m}.{n}" for m, n in self.found)

    def classified(self, kind: str) -> dict[str, str]:
        """``"module.name" -> reason`` of the globals classified as ``kind``; an unknown global
        that loading calls with arguments from the file counts as dangerous."""
        out = {}
        for m, n in sorted(self.found):
            k, reason = classify(m, n)
            if k == "unknown" and (m, n) in self.called:
                k, reason = "dangerous", CALLED_UNKNOWN
            if k == kind:
                out[f"{m}.{n}"] = reason
        return out


def scan_stream(stream, scan: PickleScan, where: str, *, joblib: bool = True) -> None:
    """Scan the pickle at the start of ``stream`` into ``scan`` (and, when it is the magic number of
    a legacy ``torch.save`` file, the four pickles that follow it, as ``torch.load`` reads them).
    ``joblib``: the stream is loaded by ``joblib.load`` when it holds array wrappers (a plain
    file or a compressed joblib file); False for pickles that only torch reads (zip members)."""
    for count in range(1, 6):
        machine = Machine(stream, scan, 0, joblib=joblib and count == 1)
        try:
            result = machine.run()
        except Exception as exc:  # noqa: BLE001 - any parse failure makes the scan incomplete
            scan.fail(f"{where} (pickle {count})", exc)
            return
        scan.n_pickles += 1
        if count == 1 and type(result) is int and result == _TORCH_MAGIC:
            if machine.arrays:
                scan.fail(where, "a legacy torch.save file with joblib array data, which torch "
                                 "and joblib read differently")
                return
            scan.torch_legacy = True
        if not scan.torch_legacy:
            return


_MAX_TRAILING_PICKLES = 16


def scan_trailing(stream, scan: PickleScan, where: str) -> None:
    """Whatever follows the pickle of a plain or compressed pickle file (not a legacy torch.save
    file, whose tensor data follows its pickles). pickle.load and joblib.load read one pickle and
    stop, but pickle.dump writes nothing after it, and a loader that reads on (pickle.load in a
    loop) runs what follows: a second pickle concatenated to a benign one hides a payload from a
    scanner that stops at the first STOP (modelscan issue #263). Further pickles are scanned; any
    other bytes make the scan incomplete."""
    if not scan.complete or scan.torch_legacy:
        return
    for _ in range(_MAX_TRAILING_PICKLES):
        if not stream.peek(1)[:1]:
            return
        try:
            Machine(stream, scan, 0, joblib=False).run()
        except Exception as exc:  # noqa: BLE001 - bytes that are not a pickle
            scan.fail(f"{where} (after its pickle)", f"data after the end of the pickle that is "
                      f"not a pickle ({exc}): a file pickle.dump did not write as it is")
            return
        scan.n_pickles += 1
    if stream.peek(1)[:1]:
        scan.fail(where, f"more than {_MAX_TRAILING_PICKLES} pickles one after another")


def _escapes(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


def _scan_zip(path, scan: PickleScan) -> list[str]:
    """Scan every ``*.pkl`` member of the zip archive at ``path``; return the member names. A member
    that is encrypted, compressed in a way torch cannot read, named twice, named outside the
    archive or damaged makes the scan incomplete."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile raises assorted errors on forged headers
        raise zipfile.BadZipFile(str(exc)) from exc
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            scan.fail(str(path), "duplicate member names (a known way to hide a payload)")
        for info in infos:
            member = info.filename
            if _escapes(member):
                scan.fail(member, "a member name outside the archive (path traversal)")
            if info.flag_bits & 0x1:
                scan.fail(member, "an encrypted member, which the scan cannot read")
            elif info.compress_type not in _ZIP_METHODS:
                scan.fail(member, f"compression method {info.compress_type}, which torch's zip "
                                  "reader does not read")
            elif member.endswith(".pkl"):
                try:
                    with zf.open(info) as f:
                        scan_stream(f, scan, member, joblib=False)
                        while f.read(1 << 20):  # to its end, so that its CRC is checked
                            pass
                except Exception as exc:  # noqa: BLE001 - a damaged member (bad CRC, header)
                    scan.fail(member, f"a damaged member: {exc}")
    return names
