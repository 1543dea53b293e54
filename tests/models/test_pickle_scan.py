import collections
import io
import os
import pickle
import sys
import zipfile

import joblib
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advkit.models.pickle_scan import PickleScan, classify, scan_stream
from advkit.models.scan import scan_model_file


class _Payload:
    """Pickles as a call to os.system: such a file must never be loaded."""

    def __reduce__(self):
        return (os.system, ("true",))


class _Recorder(pickle.Unpickler):
    """The oracle: the globals a real unpickler asks for (used on benign test data only)."""

    def __init__(self, f):
        super().__init__(f)
        self.seen = set()

    def find_class(self, module, name):
        self.seen.add(f"{module}.{name}")
        return super().find_class(module, name)


def _scan_bytes(data: bytes) -> PickleScan:
    scan = PickleScan()
    scan_stream(io.BytesIO(data), scan, "test")
    return scan


def _true_globals(data: bytes) -> set[str]:
    rec = _Recorder(io.BytesIO(data))
    rec.load()
    return rec.seen


_leaves = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
                    st.binary(max_size=5), st.booleans(), st.none(), st.complex_numbers(
                        allow_nan=False, allow_infinity=False))
_values = st.recursive(_leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.tuples(kids, kids), st.dictionaries(st.text(max_size=3), kids,
                                                                        max_size=3),
    st.frozensets(st.integers(), max_size=3), st.sets(st.integers(), max_size=3),
    st.builds(collections.OrderedDict, st.dictionaries(st.text(max_size=3), kids, max_size=3)),
    st.builds(lambda v: [v, v], kids),  # shared references go through the memo
), max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(value=_values, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_scan_finds_exactly_the_globals_the_unpickler_imports(value, protocol):
    data = pickle.dumps(value, protocol=protocol)
    scan = _scan_bytes(data)
    assert scan.complete and scan.n_pickles == 1
    assert set(scan.globals()) == _true_globals(data)


@pytest.mark.parametrize("obj", [
    np.arange(6.0).reshape(2, 3), np.array(["a", "bc"]), np.float32(1.5),
    {"sd": collections.OrderedDict(w=np.ones(2))}, np.random.default_rng(0), {1, 2}, range(3),
])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_scan_matches_the_unpickler_on_library_objects(obj, protocol):
    data = pickle.dumps(obj, protocol=protocol)
    scan = _scan_bytes(data)
    assert scan.complete
    assert set(scan.globals()) == _true_globals(data)
    assert scan.classified("dangerous") == {}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_os_system_is_found_in_every_protocol(protocol):
    scan = _scan_bytes(pickle.dumps(_Payload(), protocol=protocol))
    assert "posix.system" in scan.classified("dangerous")


def test_stack_global_operands_are_resolved_through_the_memo():
    # pushes "os" and "system", memoizes and pops them, then fetches both back from the memo:
    # a scan that only looks at the strings right before STACK_GLOBAL misses this
    data = (b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94" b"00" b"h\x00h\x01\x93"
            b"\x8c\x04true\x85R.")
    scan = _scan_bytes(data)
    assert scan.complete and "os.system" in scan.classified("dangerous")


def test_a_computed_global_name_is_flagged():
    # STACK_GLOBAL whose module name is the result of a call, str("os"): known only at load time
    data = (b"\x80\x04" b"\x8c\x08builtins\x8c\x03str\x93" b"\x8c\x02os\x85R"
            b"\x8c\x06system\x93" b"\x8c\x04true\x85R.")
    scan = _scan_bytes(data)
    dangerous = scan.classified("dangerous")
    assert "<unresolved>.STACK_GLOBAL" in dangerous


def test_scanning_never_imports_the_modules_it_names():
    data = b"\x80\x02cadvkit_no_such_module\nfunc\n)\x81."
    scan = _scan_bytes(data)
    assert scan.globals() == ["advkit_no_such_module.func"]
    assert "advkit_no_such_module" not in sys.modules
    assert classify("advkit_no_such_module", "func")[0] == "unknown"


def test_a_pickled_tensor_is_flagged_for_its_nested_torch_load():
    # pickle.dumps(tensor) stores the tensor as bytes for torch.load(weights_only=False) to read
    scan = _scan_bytes(pickle.dumps(torch.ones(2)))
    assert "torch.storage._load_from_bytes" in scan.classified("dangerous")


def test_truncated_pickle_makes_the_scan_incomplete():
    data = pickle.dumps({"a": [1, 2, 3]}, protocol=2)
    scan = _scan_bytes(data[:-3])
    assert not scan.complete and scan.issues


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("bz2", 3), ("xz", 3)])
def test_joblib_raw_arrays_are_skipped_and_a_payload_after_them_found(tmp_path, compress):
    path = tmp_path / "model.joblib"
    objs = np.array([1, "x", None], dtype=object)
    rec = np.zeros(3, dtype=[("a", "f4"), ("b", "i8")])
    joblib.dump({"a": np.arange(1000.0), "o": objs, "r": rec, "p": _Payload()}, path,
                compress=compress)
    res = scan_model_file(path)
    assert res.format == "joblib" and res.complete, res.issues
    assert "posix.system" in res.dangerous and res.verdict == "dangerous"
    assert "joblib.numpy_pickle.NumpyArrayWrapper" in res.globals


@pytest.mark.parametrize("zipped", [True, False])
def test_payload_inside_a_torch_save_file_is_found(tmp_path, zipped):
    path = tmp_path / "ckpt.pt"
    torch.save({"w": torch.ones(3), "p": _Payload()}, path, _use_new_zipfile_serialization=zipped)
    res = scan_model_file(path)
    assert res.format == "torch" and res.complete
    assert "posix.system" in res.dangerous
    assert "torch._utils._rebuild_tensor_v2" in res.globals


def test_a_pickle_with_a_zip_appended_is_read_as_the_pickle_it_starts_with(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("schema.json", "{}")
    path = tmp_path / "model.skops"
    path.write_bytes(pickle.dumps(_Payload()) + buf.getvalue())
    assert zipfile.is_zipfile(path)
    res = scan_model_file(path)
    assert res.format == "pickle" and "posix.system" in res.dangerous


@pytest.mark.parametrize("module,name,kind", [
    ("builtins", "eval", "dangerous"), ("__builtin__", "exec", "dangerous"),
    ("builtins", "getattr", "dangerous"), ("builtins", "set", "known"),
    ("subprocess", "Popen", "dangerous"), ("os.path", "join", "dangerous"),
    ("numpy.testing._private.utils", "runstring", "dangerous"),
    ("pathlib", "Path.write_text", "dangerous"),
    ("collections", "OrderedDict.__class__", "dangerous"),
    ("__builtin__", "intern", "dangerous"), ("__builtin__", "set", "known"),
    ("torch._utils", "_rebuild_tensor_v2", "known"), ("torch", "FloatStorage", "known"),
    ("sklearn.linear_model._logistic", "LogisticRegression", "known"),
    ("torch.storage", "_load_from_bytes", "dangerous"), ("mypkg.models", "Net", "unknown"),
])
def test_classification(module, name, kind):
    assert classify(module, name)[0] == kind


def test_a_legacy_torch_file_that_is_also_a_tar_is_not_vetted(tmp_path, monkeypatch):
    # torch.load tries a file as its legacy tar format first; the scan reads it as pickles only
    import tarfile

    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    assert scan_model_file(path).verdict == "requires-trust"
    monkeypatch.setattr(tarfile, "is_tarfile", lambda p: True)
    res = scan_model_file(path)
    assert not res.complete and res.verdict == "dangerous" and "tar" in res.issues[0]
