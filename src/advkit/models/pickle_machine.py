"""The symbolic stack machine behind :mod:`advkit.models.pickle_scan`: it runs a pickle's opcodes
without importing or calling anything, and reads the bytes exactly as the loader will.

Constants are tracked, everything else is an opaque symbol, so STACK_GLOBAL's module and name are
resolved even when they come from the memo. Frames are read as pickle's own (Python) unpickler
buffers them, and in joblib files the raw array data joblib reads right after each
``NumpyArrayWrapper`` is skipped by the count joblib itself uses: the wrapper's shape and a dtype
that NumPy rebuilds from the pickle's constants (its item size and whether it holds objects; object
arrays are a nested pickle, scanned). Where the machine cannot be sure what the loader would read
it raises :class:`Malformed`, which makes the scan incomplete.
"""

from __future__ import annotations

import io
import pickletools
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from advkit.models.pickle_scan import PickleScan

UNRESOLVED = "<unresolved>"
_JOBLIB_WRAPPERS = frozenset({"joblib.numpy_pickle.NumpyArrayWrapper",
                              "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper"})
_MAX_FRAME = 64 << 20  # picklers write frames of about 64 KiB


def mapped(module: str, name: str) -> tuple[str, str]:
    """The Python 3 name the unpickler imports for a (possibly Python 2) ``module``, ``name``."""
    return NAME_MAPPING.get((module, name)) or (IMPORT_MAPPING.get(module, module), name)


class Malformed(Exception):
    """The loader would read this stream differently from the scan (or fail): the scan stops."""


@dataclass(slots=True)
class _G:  # an imported global; ``qualified`` is the Python 3 name, ``key`` what the file says
    qualified: str
    key: tuple[str, str]


@dataclass(slots=True)
class _Call:  # the result of calling (or, ``new``, only creating) something while loading
    func: object
    args: object
    new: bool = False  # made by cls.__new__ without running __init__
    built: bool = False  # BUILD has set its state
    state: object = None
    dtype: np.dtype | None = None  # for a numpy.dtype call: the dtype NumPy makes of the constants


@dataclass(slots=True)
class _Dict:  # a dict under construction: keys may be symbols, so a list of pairs
    pairs: list = field(default_factory=list)


_OPAQUE = object()  # a value the scan does not track
_CONST = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}


def _pairs(items: list) -> list:
    return list(zip(items[::2], items[1::2], strict=False))


def _read(raw, n: int) -> bytes:
    """Up to ``n`` bytes, read in chunks so that a forged length allocates no more than the file."""
    if n <= 1 << 24:
        return raw.read(n)
    chunks = []
    while n > 0 and (chunk := raw.read(min(n, 1 << 24))):
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class _Frames:
    """The byte source of one pickle as :class:`pickle._Unpickler` (joblib's unpickler) reads it:
    a FRAME opcode loads the frame into a buffer and opcodes read from it, while joblib reads array
    data from the file itself, after the frame."""

    def __init__(self, raw):
        self.raw, self.frame = raw, None

    def read(self, n: int) -> bytes:
        if self.frame is not None:
            data = self.frame.read(n)
            if not data and n != 0:
                self.frame = None
                return _read(self.raw, n)
            if len(data) < n:
                raise Malformed("pickle exhausted before end of frame")
            return data
        return _read(self.raw, n)

    def readline(self) -> bytes:
        if self.frame is not None:
            data = self.frame.readline()
            if not data:
                self.frame = None
                return self.raw.readline()
            if not data.endswith(b"\n"):
                raise Malformed("pickle exhausted before end of frame")
            return data
        return self.raw.readline()

    def load_frame(self, size: int) -> None:
        if self.frame is not None and self.frame.read() != b"":
            raise Malformed("beginning of a new frame before end of current frame")
        if size > _MAX_FRAME:
            raise Malformed(f"a frame of {size} bytes, larger than any pickler writes")
        self.frame = io.BytesIO(_read(self.raw, size))


class Machine:
    """Symbolic execution of one pickle: stack, marks and memo; it never imports or calls.

    Opcodes that build values the scan needs (tuples, dicts, strings, numbers: the operands of
    STACK_GLOBAL and joblib's array headers) and those that import or call are modelled exactly;
    every other opcode gets its stack effect from ``pickletools``' own opcode table. ``joblib``:
    the stream is read by joblib's unpickler, which reads array data after each array wrapper.
    """

    def __init__(self, raw, scan: PickleScan, depth: int, joblib: bool):
        self.raw, self.frames, self.scan = raw, _Frames(raw), scan
        self.depth, self.joblib, self.arrays = depth, joblib, 0
        self.stack: list = []
        self.marks: list[int] = []
        self.memo: dict = {}

    def _at_mark(self) -> bool:
        return not self.stack or bool(self.marks and len(self.stack) == self.marks[-1])

    def pop(self):
        if self._at_mark():
            raise Malformed("stack underflow")
        return self.stack.pop()

    def top(self):
        if self._at_mark():
            raise Malformed("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list:
        if not self.marks:
            raise Malformed("no MARK on the stack")
        m = self.marks.pop()
        items = self.stack[m:]
        del self.stack[m:]
        return items

    def global_(self, module, name) -> _G:
        if isinstance(module, str) and isinstance(name, str):
            self.scan.add(module, name)
            return _G(".".join(mapped(module, name)), (module, name))
        self.scan.add(UNRESOLVED, "STACK_GLOBAL")
        return _G(UNRESOLVED, (UNRESOLVED, "STACK_GLOBAL"))

    def call(self, func, args, new: bool) -> _Call:
        """Record a call (``new``: ``func.__new__`` only) and the globals it calls."""
        c = _Call(func, args, new)
        if not isinstance(func, _G):
            self.scan.add(UNRESOLVED, "computed-call")
            return c
        if not (new and args == ()):  # __init__, or __new__ with arguments from the file
            self.scan.called.add(func.key)
        if func.qualified == "numpy.dtype":
            c.dtype = _new_dtype(args)
        # a known helper calls (or creates instances of) the globals it is handed, except that
        # copyreg._reconstructor(cls, object, state) only runs object.__new__(cls)
        handed = args[1:] if func.qualified == "copyreg._reconstructor" else args
        for a in handed if isinstance(handed, tuple) else ():
            if isinstance(a, _G):
                self.scan.called.add(a.key)
        return c

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
        for op, arg, _pos in pickletools.genops(self.frames):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, gname = arg.partition(" ")
                g = self.global_(module, gname)
                if name == "INST":
                    args = tuple(self.pop_mark())
                    g = self.call(g, args, new=not args)
                st.append(g)
            elif name == "STACK_GLOBAL":
                gname, module = self.pop(), self.pop()
                st.append(self.global_(module, gname))
            elif name in ("REDUCE", "NEWOBJ", "NEWOBJ_EX"):
                if name == "NEWOBJ_EX":
                    self.pop()  # keyword arguments
                args = self.pop()
                st.append(self.call(self.pop(), args, new=name != "REDUCE"))
            elif name == "OBJ":
                items = self.pop_mark()
                if not items:
                    raise Malformed("OBJ without a class")
                st.append(self.call(items[0], tuple(items[1:]), new=len(items) == 1))
            elif name == "BUILD":
                self._build(self.pop())
            elif name == "FRAME":
                self.frames.load_frame(arg)
            elif name in ("EXT1", "EXT2", "EXT4"):  # a global looked up in copyreg's registry
                self.scan.add(UNRESOLVED, f"extension-code:{arg}")
                st.append(_OPAQUE)
            elif name == "MARK":
                self.marks.append(len(st))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                self.memo[len(self.memo) if name == "MEMOIZE" else arg] = self.top()
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in self.memo:
                    raise Malformed(f"memo key {arg} is not defined")
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
        raise Malformed("pickle ended without STOP")

    def _build(self, state) -> None:
        obj = self.top()
        if not isinstance(obj, _Call):
            return
        if obj.built:  # pickle never writes this; joblib would read a wrapper's array again
            raise Malformed("BUILD applied twice to one object")
        obj.built, obj.state = True, state
        if obj.dtype is not None:
            _set_dtype_state(obj.dtype, state)  # in place, as numpy.dtype.__setstate__ does
        cls, new = _class_of(obj)
        if self.joblib and cls in _JOBLIB_WRAPPERS:
            if not new:
                raise Malformed("a joblib array wrapper made by calling it: its __init__ sets "
                                 "attributes the scan cannot see")
            self._joblib_array(state)
            self.stack[-1] = _OPAQUE  # joblib replaces the wrapper by the array it read

    def _joblib_array(self, state) -> None:
        """Read past (or scan, when it holds objects) the array data joblib reads after a wrapper,
        exactly as ``joblib.numpy_pickle.NumpyArrayWrapper.read_array`` does."""
        self.scan.joblib, self.arrays = True, self.arrays + 1
        if not (isinstance(state, _Dict) and all(type(k) is str for k, _ in state.pairs)):
            raise Malformed("joblib array wrapper without a dict of named attributes")
        attrs = dict(state.pairs)
        shape, dtype = attrs.get("shape"), attrs.get("dtype")
        if not isinstance(shape, tuple) or not all(type(s) in (int, bool) and s >= 0
                                                   for s in shape):
            raise Malformed("joblib array wrapper with an unreadable shape")
        count = 1
        for s in shape:
            count *= s
        if count >= 1 << 63:
            raise Malformed("joblib array larger than joblib can count")
        if not (isinstance(dtype, _Call) and isinstance(dtype.dtype, np.dtype)):
            raise Malformed("joblib array wrapper whose dtype is not a numpy.dtype of constants")
        if dtype.dtype.hasobject:  # joblib unpickles the data with a plain unpickler
            if self.depth >= 4:
                raise Malformed("pickles nested too deeply")
            Machine(self.raw, self.scan, self.depth + 1, joblib=False).run()
            self.scan.n_pickles += 1
            return
        align = attrs.get("numpy_array_alignment_bytes")
        if not (align is None or type(align) in (int, bool)) or dtype.dtype.itemsize == 0:
            raise Malformed("joblib array wrapper with an unreadable alignment or item size")
        if align is not None:
            pad = self.raw.read(1)
            if len(pad) != 1:
                raise Malformed("joblib file ends inside an array")
            _skip(self.raw, pad[0])
        _skip(self.raw, count * dtype.dtype.itemsize)


def _class_of(obj: _Call) -> tuple[str | None, bool]:
    """The class ``obj`` is an instance of (when its maker shows it) and whether it was created
    without running ``__init__``."""
    if not isinstance(obj.func, _G):
        return None, False
    args = obj.args
    if (obj.func.qualified == "copyreg._reconstructor" and isinstance(args, tuple)
            and len(args) == 3 and isinstance(args[0], _G)):
        base = args[1]
        return args[0].qualified, isinstance(base, _G) and base.qualified == "builtins.object"
    return obj.func.qualified, obj.new


def _new_dtype(args) -> np.dtype | None:
    """What ``numpy.dtype(*args)`` makes, for the ``(code, align, copy=True)`` that pickles hold."""
    if not (isinstance(args, tuple) and len(args) == 3 and isinstance(args[0], str)
            and all(type(a) in (bool, int) for a in args[1:]) and args[2]):
        return None
    try:
        return np.dtype(args[0], bool(args[1]), True)
    except Exception:  # noqa: BLE001 - the loader fails here too; a wrapper using it is refused
        return None


def _dtype_state(v, depth: int = 0):
    """A dtype state as plain values (nested dtypes as the dtypes NumPy made), or Malformed for
    anything ``numpy.dtype.__setstate__`` never receives from a pickler."""
    if v is None or type(v) in (bool, int, str, bytes):
        return v
    if depth > 32:
        raise Malformed("dtype state nested too deeply")
    if isinstance(v, tuple):
        return tuple(_dtype_state(x, depth + 1) for x in v)
    if isinstance(v, _Dict) and all(type(k) is str for k, _ in v.pairs):
        return {k: _dtype_state(x, depth + 1) for k, x in v.pairs}
    if isinstance(v, _Call) and v.dtype is not None:
        return v.dtype
    raise Malformed("a dtype state the scan cannot rebuild")


def _set_dtype_state(dtype: np.dtype, state) -> None:
    plain = _dtype_state(state)
    if not (isinstance(plain, tuple) and len(plain) in (8, 9) and plain[0] in (3, 4)
            and isinstance(plain[1], str) and _dtype_parts_ok(*plain[2:5])
            and all(type(x) is int for x in plain[5:8]) and (len(plain) == 8 or plain[8] is None
                                                             or isinstance(plain[8], dict))):
        raise Malformed("a dtype state unlike those NumPy writes")
    try:
        dtype.__setstate__(plain)
    except Exception as exc:  # noqa: BLE001 - the loader stops here too
        raise Malformed(f"numpy.dtype refuses its state: {exc}") from exc


def _dtype_parts_ok(subarray, names, fields) -> bool:
    """The subarray, names and fields of a dtype state have the types NumPy writes."""
    def dtypes_ok(t, lo, hi):
        return (isinstance(t, tuple) and lo <= len(t) <= hi and isinstance(t[0], np.dtype)
                and (isinstance(t[1], int) or isinstance(t[1], tuple)
                     and all(type(n) is int for n in t[1])))
    return ((subarray is None or dtypes_ok(subarray, 2, 2))
            and (names is None or isinstance(names, tuple) and all(isinstance(n, str)
                                                                   for n in names))
            and (fields is None or isinstance(fields, dict) and all(dtypes_ok(f, 2, 3)
                                                                    for f in fields.values())))


def _skip(stream, n: int) -> None:
    while n > 0:
        got = len(stream.read(min(n, 1 << 20)))
        if got == 0:
            raise Malformed("file ends inside an array")
        n -= got
