"""Static scan of pickle streams: which globals would loading import and call, without loading.

Unpickling runs code: the GLOBAL / STACK_GLOBAL / INST / OBJ opcodes import any attribute of any
module and REDUCE / NEWOBJ / BUILD call it, so a model file can run ``os.system`` the moment it is
loaded. This module walks the opcodes with :func:`pickletools.genops` (which parses, never executes)
on a small symbolic stack machine: constants are tracked, everything else is an opaque symbol. That
resolves STACK_GLOBAL's module and name exactly even when they come from the memo, and flags a
global whose name is computed at load time as unresolvable. Joblib files interleave raw array bytes
with the pickle (after each ``NumpyArrayWrapper``); the machine sizes the array from the wrapper's
shape and dtype and skips it. Compressed joblib files (zlib, gzip, bz2, xz, lzma) are scanned
through a streaming decompressor, and zip archives (``torch.save``, TorchScript) member by member.

Each global is classified: *dangerous* (it runs commands, touches files or the network, imports
or evaluates code, or loads another pickle), *known* (the globals ordinary PyTorch, NumPy, joblib
and scikit-learn files use), or *unknown*. The dangerous list is best effort: a pickle that uses
none of them can still execute code, which is why loading any pickle needs explicit trust.
"""

from __future__ import annotations

import math
import pickletools
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass, field

import numpy as np


def _by_reason(table: dict[str, str]) -> dict[str, str]:
    """``{reason: "name name ..."}`` -> ``{name: reason}``."""
    return {name: reason for reason, names in table.items() for name in names.split()}


# modules (and packages) that a model file has no reason to import from, with why
_DANGEROUS_MODULES = _by_reason({
    "runs shell commands or programs (os.system, subprocess)":
        "os posix nt subprocess _posixsubprocess pty commands popen2 platform pydoc venv "
        "multiprocessing torch.multiprocessing asyncio",
    "network access": "socket _socket ssl http urllib urllib2 urllib3 requests httpx ftplib "
        "smtplib telnetlib poplib imaplib socketserver xmlrpc webbrowser torch.distributed",
    "changes or reads files": "shutil tempfile tarfile zipfile mmap fcntl dbm sqlite3",
    "runs or compiles Python code": "runpy code codeop timeit cProfile profile trace doctest pdb "
        "bdb idlelib types marshal numpy.testing torch.fx.graph_module torch._dynamo "
        "torch._inductor torch.package sklearn.utils._testing",
    "imports or installs code": "importlib imp zipimport pkgutil site ensurepip pip setuptools "
        "distutils numpy.distutils numpy.f2py torch.hub torch.utils.cpp_extension",
    "calls native code": "ctypes _ctypes numpy.ctypeslib torch.ops torch.classes",
    "interpreter internals (frames, every live object, process control)":
        "sys gc inspect signal resource threading _thread thread",
    "calls arbitrary methods by name (attrgetter, methodcaller)": "operator _operator",
    "loads a nested pickle the scan cannot see": "pickle _pickle cPickle dill cloudpickle shelve "
        "numpy.lib.npyio pandas.io.pickle torch.serialization",
    "downloads data": "sklearn.datasets",
})
# single globals ("module.name") that are dangerous in otherwise ordinary modules
_DANGEROUS_NAMES = _by_reason({
    "opens, reads or writes files": "io.open io.FileIO _io.open _io.FileIO codecs.open numpy.save "
        "numpy.savez numpy.savetxt numpy.fromfile numpy.memmap torch.save joblib.dump",
    "loads a nested pickle the scan cannot see": "numpy.load pandas.read_pickle torch.load "
        "torch.storage._load_from_bytes joblib.load joblib.numpy_pickle.load",
    "loads TorchScript code": "torch.jit.load",
})
# builtins a model file may use; every other builtin (eval, exec, getattr, open, ...) is dangerous
_SAFE_BUILTINS = frozenset(
    "set frozenset slice range complex bytearray bytes int float str bool list dict tuple object "
    "Ellipsis NotImplemented".split()
)
# globals that ordinary PyTorch, NumPy, joblib and scikit-learn files import
_KNOWN = frozenset("""
    collections.OrderedDict collections.defaultdict collections.deque collections.Counter
    copyreg._reconstructor torch._utils._rebuild_tensor torch._utils._rebuild_tensor_v2
    torch._utils._rebuild_tensor_v3 torch._utils._rebuild_parameter
    torch._utils._rebuild_parameter_with_state torch._utils._rebuild_qtensor
    torch._utils._rebuild_sparse_tensor torch._utils._rebuild_meta_tensor_no_storage
    torch._utils._rebuild_wrapper_subclass torch._tensor._rebuild_from_type_v2
    torch.storage.UntypedStorage torch.storage.TypedStorage torch.Size torch.device
    torch.nn.parameter.Parameter torch.serialization._get_layout
    numpy.core.multiarray._reconstruct numpy._core.multiarray._reconstruct
    numpy.core.multiarray.scalar numpy._core.multiarray.scalar numpy.ndarray numpy.dtype
    numpy.core.numeric._frombuffer numpy._core.numeric._frombuffer
    numpy.random._pickle.__randomstate_ctor numpy.random._pickle.__bit_generator_ctor
    numpy.random._pickle.__generator_ctor numpy.random.mtrand.RandomState
    joblib.numpy_pickle.NumpyArrayWrapper
""".split())
_TORCH_DTYPES = frozenset("float32 float64 float16 bfloat16 int64 int32 int16 int8 uint8 bool "
                          "complex64 complex128 float double half long int".split())
_NUMPY_SCALARS = frozenset("float64 float32 float16 int64 int32 int16 int8 uint8 uint16 uint32 "
                           "uint64 bool_ str_ bytes_".split())
_JOBLIB_WRAPPERS = frozenset({"joblib.numpy_pickle.NumpyArrayWrapper",
                              "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper"})
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy (non-zip) torch.save file
UNRESOLVED = "<unresolved>"


def classify(module: str, name: str) -> tuple[str, str]:
    """``("dangerous" | "known" | "unknown", reason)`` for the global ``name`` of ``module``.

    Pickles of protocol < 3 name Python 2 modules that the unpickler maps to Python 3 ones
    (``__builtin__.eval`` is ``builtins.eval``): a global is dangerous if either name is.
    """
    if module == UNRESOLVED:
        return "dangerous", "its name is computed while loading, which hides what it imports"
    mapped = NAME_MAPPING.get((module, name)) or (IMPORT_MAPPING.get(module, module), name)
    verdict = _classify(*mapped)
    if verdict[0] != "dangerous" and mapped != (module, name):
        raw = _classify(module, name)
        verdict = raw if raw[0] == "dangerous" else verdict
    return verdict


def _classify(module: str, name: str) -> tuple[str, str]:
    full = f"{module}.{name}"
    if module == "builtins":
        if name in _SAFE_BUILTINS:
            return "known", ""
        return "dangerous", "a builtin that can evaluate code, import modules or reach attributes"
    if full in _DANGEROUS_NAMES:
        return "dangerous", _DANGEROUS_NAMES[full]
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        reason = _DANGEROUS_MODULES.get(".".join(parts[:i]))
        if reason:
            return "dangerous", reason
    if any(p.startswith("__") and p.endswith("__") for p in name.split(".")):
        return "dangerous", "reaches a dunder attribute, a known way to disguise a call"
    if "." in name:
        return "dangerous", "an attribute chain through a class, a known way to disguise a call"
    if full in _KNOWN:
        return "known", ""
    if module == "torch" and (name.endswith("Storage") or name in _TORCH_DTYPES):
        return "known", ""
    if module.startswith("sklearn.") and name[:1].isupper():
        return "known", ""
    if module in ("numpy", "numpy.dtypes") and (name.endswith("DType") or name in _NUMPY_SCALARS):
        return "known", ""
    return "unknown", ""



@dataclass
class PickleScan:
    """What a scan of one file's pickle streams found. ``complete`` is False when some stream could
    not be parsed to its end (then what a loader would execute is not fully known)."""

    found: dict[tuple[str, str], int] = field(default_factory=dict)  # (module, name) -> count
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
        """``"module.name" -> reason`` of the globals classified as ``kind``."""
        out = {}
        for m, n in sorted(self.found):
            k, reason = classify(m, n)
            if k == kind:
                out[f"{m}.{n}"] = reason
        return out


class _Malformed(Exception):
    pass


@dataclass(slots=True)
class _G:  # an imported global, "module.name"
    qualified: str


@dataclass(slots=True)
class _Call:  # the result of calling something while loading; BUILD sets its state
    func: object
    args: object
    state: object = None


@dataclass(slots=True)
class _Dict:  # a dict under construction: keys may be symbols, so a list of pairs
    pairs: list = field(default_factory=list)

    def get(self, key):
        return next((v for k, v in reversed(self.pairs) if isinstance(k, str) and k == key), None)


_OPAQUE = object()  # a value the scan does not track


def _pairs(items: list) -> list:
    return list(zip(items[::2], items[1::2], strict=False))


_CONST = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


class _Machine:
    """Symbolic execution of one pickle: stack, marks and memo; it never imports or calls.

    Opcodes that build values the scan needs (tuples, dicts, strings, numbers: the operands of
    STACK_GLOBAL and joblib's array headers) and those that import or call are modelled exactly;
    every other opcode gets its stack effect from ``pickletools``' own opcode table.
    """

    def __init__(self, stream, scan: PickleScan, depth: int):
        self.stream, self.scan, self.depth = stream, scan, depth
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict = {}

    def _at_mark(self) -> bool:
        return not self.stack or bool(self.marks and len(self.stack) == self.marks[-1])

    def pop(self):
        if self._at_mark():
            raise _Malformed("stack underflow")
        return self.stack.pop()

    def top(self):
        if self._at_mark():
            raise _Malformed("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list:
        if not self.marks:
            raise _Malformed("no MARK on the stack")
        m = self.marks.pop()
        items = self.stack[m:]
        del self.stack[m:]
        return items

    def global_(self, module, name) -> _G:
        if isinstance(module, str) and isinstance(name, str):
            self.scan.add(module, name)
            return _G(f"{module}.{name}")
        self.scan.add(UNRESOLVED, "STACK_GLOBAL")
        return _G(UNRESOLVED)

    def generic(self, op) -> None:
        before = op.stack_before
        if pickletools.markobject in before:
            self.pop_mark()
            before = before[:before.index(pickletools.markobject)]
        for _ in before:
            self.pop()
        self.stack.extend([_OPAQUE] * len(op.stack_after))

    def run(self) -> object:
        """Execute opcodes up to STOP; return the symbolic result."""
        st = self.stack
        for op, arg, _pos in pickletools.genops(self.stream):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, gname = arg.partition(" ")
                g = self.global_(module, gname)
                st.append(g if name == "GLOBAL" else _Call(g, tuple(self.pop_mark())))
            elif name == "STACK_GLOBAL":
                gname, module = self.pop(), self.pop()
                st.append(self.global_(module, gname))
            elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
                if name == "NEWOBJ_EX":
                    self.pop()  # keyword arguments
                args = self.pop()
                st.append(_Call(self.pop(), args))
            elif name == "OBJ":
                items = self.pop_mark()
                if not items:
                    raise _Malformed("OBJ without a class")
                st.append(_Call(items[0], tuple(items[1:])))
            elif name == "BUILD":
                state, obj = self.pop(), self.top()
                if isinstance(obj, _Call):
                    obj.state = state
                    if isinstance(obj.func, _G) and obj.func.qualified in _JOBLIB_WRAPPERS:
                        self._joblib_array(state)
            elif name in ("EXT1", "EXT2", "EXT4"):  # a global looked up in copyreg's registry
                self.scan.add(UNRESOLVED, f"extension-code-{arg}")
                st.append(_OPAQUE)
            elif name == "MARK":
                self.marks.append(len(st))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self.top()
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in self.memo:
                    raise _Malformed(f"memo key {arg} is not defined")
                st.append(self.memo[arg])
            elif name == "DUP":
                st.append(self.top())
            elif name == "POP":
                st.pop() if not self._at_mark() else self.pop_mark()
            elif name == "TUPLE":
                st.append(tuple(self.pop_mark()))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                items = [self.pop() for _ in range(int(name[-1]))]
                st.append(tuple(reversed(items)))
            elif name == "EMPTY_TUPLE":
                st.append(())
            elif name in ("EMPTY_DICT", "DICT"):
                st.append(_Dict(_pairs(self.pop_mark() if name == "DICT" else [])))
            elif name in ("SETITEM", "SETITEMS"):
                items = self.pop_mark() if name == "SETITEMS" else [self.pop(), self.pop()][::-1]
                if isinstance(self.top(), _Dict):
                    self.top().pairs.extend(_pairs(items))
            elif name in _CONST:
                st.append(_CONST[name])
            elif name == "STOP":
                return self.pop()
            elif arg is not None and not op.stack_before and len(op.stack_after) == 1:
                st.append(arg)  # numbers, strings, bytes (PERSID: its id string)
            else:
                self.generic(op)
        raise _Malformed("pickle ended without STOP")

    def _joblib_array(self, state) -> None:
        """Skip (or scan, for object arrays) the array data joblib writes right after a wrapper."""
        self.scan.joblib = True
        if not isinstance(state, _Dict):
            raise _Malformed("joblib array wrapper without a state dict")
        shape, dtype = state.get("shape"), state.get("dtype")
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise _Malformed("joblib array wrapper with an unreadable shape")
        if not (isinstance(dtype, _Call) and dtype.args and isinstance(dtype.args[0], str)):
            raise _Malformed("joblib array wrapper with an unreadable dtype")
        code = dtype.args[0]
        if code.lstrip("<>|=").startswith("O"):  # object arrays are a nested pickle
            if self.depth >= 4:
                raise _Malformed("pickles nested too deeply")
            _Machine(self.stream, self.scan, self.depth + 1).run()
            self.scan.n_pickles += 1
            return
        try:
            itemsize = np.dtype(code).itemsize
        except (TypeError, ValueError) as exc:
            raise _Malformed(f"joblib array with dtype {code!r}") from exc
        st = dtype.state
        if isinstance(st, tuple) and len(st) > 5 and type(st[5]) is int and st[5] > 0:
            itemsize = st[5]  # structured and flexible dtypes record their element size here
        if state.get("numpy_array_alignment_bytes") is not None:
            pad = self.stream.read(1)
            if len(pad) != 1:
                raise _Malformed("joblib file ends inside an array")
            _skip(self.stream, pad[0])
        _skip(self.stream, math.prod(shape) * itemsize)


def _skip(stream, n: int) -> None:
    while n > 0:
        got = len(stream.read(min(n, 1 << 20)))
        if got == 0:
            raise _Malformed("file ends inside an array")
        n -= got


def scan_stream(stream, scan: PickleScan, where: str) -> None:
    """Scan the pickle at the start of ``stream`` into ``scan`` (and, when it is the magic number of
    a legacy ``torch.save`` file, the four pickles that follow it, as ``torch.load`` reads them)."""
    for count in range(1, 6):
        try:
            result = _Machine(stream, scan, 0).run()
        except Exception as exc:  # noqa: BLE001 - any parse failure makes the scan incomplete
            scan.fail(f"{where} (pickle {count})", exc)
            return
        scan.n_pickles += 1
        if count == 1 and type(result) is int and result == _TORCH_MAGIC:
            scan.torch_legacy = True
        if not scan.torch_legacy:
            return


def _scan_zip(path, scan: PickleScan) -> list[str]:
    """Scan every ``*.pkl`` member of the zip archive at ``path``; return the member names."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        if len(set(names)) != len(names):
            scan.fail(str(path), "duplicate member names (a known way to hide a payload)")
        for member in names:
            if member.endswith(".pkl"):
                with zf.open(member) as f:
                    scan_stream(f, scan, member)
    return names
