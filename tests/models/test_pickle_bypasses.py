"""Hostile model files the pickle scan must refuse, and ordinary ones it must let through.

Every hostile file is assembled here opcode by opcode with advkit.testing.corpus's assembler
(nothing binary is committed); its payload, if it ever ran, would only create a marker file in
tmp_path, and each test checks that neither the scan nor ``load_model`` (with or without
``trust_pickle``) creates it.
"""

import gzip
import io
import pickle
import warnings
import zlib

import joblib
import numpy as np
import pytest
import torch
from joblib.numpy_pickle import NumpyUnpickler

from advkit.errors import AdvkitWarning, InputContractError, UnsafeModelError
from advkit.models.io import load_model, save_model
from advkit.models.pickle_lists import SKLEARN_ESTIMATORS
from advkit.models.pickle_scan import CALLED_UNKNOWN, PickleScan, classify, scan_stream
from advkit.models.scan import scan_model_file
from advkit.models.zoo import build
from advkit.testing.corpus import (
    DT,
    Call,
    G,
    enc,
    hostile_calls,
    invoke,
    joblib_differentials,
    joblib_wrapper,
    npy_with_pickle,
    pickle_of,
    torch_zip,
    zip_cases,
)
from advkit.testing.corpus.benign import _estimators as benign_estimators
from advkit.testing.corpus.joblib_cases import _F8, _WRAPPER, _wrapper_state

_pickle = pickle_of
_npy_with_pickle = npy_with_pickle
_torch_zip = torch_zip
_wrapper = joblib_wrapper


def _assert_refused(path, marker, *names):
    res = scan_model_file(path)
    assert res.verdict == "dangerous", (res.dangerous, res.issues)
    for name in names:
        assert name in res.dangerous, (name, res.dangerous)
    for kw in ({}, {"trust_pickle": True}):
        with pytest.raises(UnsafeModelError):
            load_model(path, **kw)
    assert not marker.exists()
    return res


# --- dangerous callables that a deny-list missed ------------------------------------------------


def _hostile_calls(tmp_path) -> dict[str, tuple[G, tuple]]:
    return hostile_calls(tmp_path / "marker")


_FORMS = ["reduce-global", "reduce-stack", "reduce-build", "inst", "obj", "newobj"]


_HOSTILE = ["uuid", "osx_support", "collect_env.run", "collect_env.read_all", "loky",
            "test.support", "FileHandler", "dictConfig", "gzip.open", "wave.open", "open_memmap",
            "memmap", "joblib.dump", "sklearn joblib.dump", "read_array", "npyio.load",
            "joblib._unpickle", "pickle_compat", "model_zoo", "Parallel", "fetch_openml"]


def test_the_hostile_cases_are_all_tested(tmp_path):
    assert sorted(_hostile_calls(tmp_path)) == sorted(_HOSTILE)


@pytest.mark.parametrize("case", _HOSTILE)
def test_each_dangerous_callable_is_refused_in_every_calling_form(tmp_path, case):
    (tmp_path / "src.bin").write_bytes(b"x")
    func, args = _hostile_calls(tmp_path)[case]
    for form in _FORMS:
        path = tmp_path / f"{form}.pkl"
        path.write_bytes(_pickle(invoke(func, args, form) + b"0" + enc(None)))
        _assert_refused(path, tmp_path / "marker", f"{func.module}.{func.name}")


def test_parallel_called_on_a_payload_is_refused(tmp_path):
    m = str(tmp_path / "marker")
    par = Call(G("sklearn.utils.parallel", "Parallel"), (1,))
    path = tmp_path / "p.pkl"
    path.write_bytes(_pickle(enc(Call(par, ([(G("gzip", "open"), (m, "wb"), {})],)))))
    res = _assert_refused(path, tmp_path / "marker", "sklearn.utils.parallel.Parallel")
    assert "<unresolved>.computed-call" in res.dangerous


@pytest.mark.parametrize("module,name,kind", [
    ("sklearn.utils.parallel", "Parallel", "dangerous"),
    ("sklearn.preprocessing._function_transformer", "FunctionTransformer", "unknown"),
    ("sklearn.utils._something", "Helper", "unknown"),  # a capital letter proves nothing
    ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper", "dangerous"),
    ("mymodule", "NumpyArrayWrapper", "dangerous"),  # an alias would make joblib read raw bytes
    ("sklearn.ensemble._forest", "RandomForestClassifier", "known"),
    ("uuid", "UUID", "known"), ("uuid", "getnode", "dangerous"),
    ("torch.utils.model_zoo", "load_url", "dangerous"), ("somelib.hub", "load_url", "dangerous"),
    ("somelib.io", "read_csv", "dangerous"), ("torch.jit._pickle", "build_intlist", "known"),
    ("numpy", "log1p", "known"), ("numpy.lib.format", "open_memmap", "dangerous"),
    ("copyreg", "add_extension", "dangerous"), ("copy_reg", "_reconstructor", "known"),
])
def test_allow_list_first_classification(module, name, kind):
    assert classify(module, name)[0] == kind


def test_the_estimator_allow_list_matches_the_installed_scikit_learn():
    from sklearn.utils import all_estimators

    installed = {f"{c.__module__}.{c.__qualname__}" for _, c in all_estimators()}
    installed.discard("sklearn.preprocessing._function_transformer.FunctionTransformer")
    assert installed == set(SKLEARN_ESTIMATORS)


# --- unknown globals: called is dangerous, only created needs trust ----------------------------


def _scan_bytes(data: bytes) -> PickleScan:
    scan = PickleScan()
    scan_stream(io.BytesIO(data), scan, "test")
    return scan


def test_an_unknown_function_that_loading_calls_is_dangerous():
    for form in ("reduce-stack", "inst", "obj", "newobj"):
        scan = _scan_bytes(_pickle(invoke(G("mypkg.util", "helper"), ("a",), form)))
        assert scan.classified("dangerous") == {"mypkg.util.helper": CALLED_UNKNOWN}, form


@pytest.mark.parametrize("body", [
    invoke(G("mypkg.models", "Net"), (), "newobj") + enc({"w": 1}) + b"b",
    invoke(G("mypkg.models", "Net"), (), "obj") + enc({"w": 1}) + b"b",
    invoke(G("mypkg.models", "Net"), (), "inst"),
    enc(Call(G("copyreg", "_reconstructor"), (G("mypkg.models", "Net"), G("builtins", "object"),
                                              None))) + enc({"w": 1}) + b"b",
])
def test_an_unknown_class_that_loading_only_creates_needs_trust(body):
    scan = _scan_bytes(_pickle(body))
    assert scan.classified("dangerous") == {}
    assert list(scan.classified("unknown")) == ["mypkg.models.Net"]


@pytest.mark.parametrize("value,called", [
    (Call(G("copyreg", "_reconstructor"), (G("mypkg", "A"), G("mypkg", "Base"), None)), "Base"),
    (Call(G("numpy.random._pickle", "__randomstate_ctor"), ("x", G("mypkg", "ctor"))), "ctor"),
    (Call(G("numpy.random._pickle", "__bit_generator_ctor"), (G("mypkg", "Gen"),)), "Gen"),
])
def test_an_unknown_global_handed_to_a_known_helper_that_calls_it_is_dangerous(value, called):
    dangerous = _scan_bytes(_pickle(enc(value))).classified("dangerous")
    assert dangerous == {f"mypkg.{called}": CALLED_UNKNOWN}


# --- joblib: the scan must read the bytes exactly as joblib does --------------------------------



def _gzip_open(tmp_path) -> bytes:
    return enc(Call(G("gzip", "open"), (str(tmp_path / "marker"), "wb")))


class _GzipPayload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (gzip.open, (self.path, "wb"))


def _joblib_cases(tmp_path) -> dict[str, bytes]:
    return joblib_differentials(tmp_path / "marker")


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("case", ["itemsize-lie", "hasobject-flag", "reconstructor-stop", "frame"])
def test_joblib_parser_differentials_are_read_as_joblib_reads_them(tmp_path, case, compress):
    data = b"\x80\x04" + _joblib_cases(tmp_path)[case] + b"N."
    path = tmp_path / "model.joblib"
    path.write_bytes(zlib.compress(data) if compress else data)
    res = _assert_refused(path, tmp_path / "marker", "gzip.open")
    assert res.complete and res.format == "joblib", res.issues


def test_array_wrappers_read_no_bytes_in_pickles_that_torch_loads(tmp_path):
    # torch.load does not know joblib's wrappers: the bytes after one are opcodes it runs
    pay = _gzip_open(tmp_path) + b"0"
    data = _pickle(_wrapper(DT("u1", (3, "|", None, None, None, -1, -1, 0)), (len(pay),)) + pay)
    path = tmp_path / "ckpt.pt"
    path.write_bytes(_torch_zip([("archive/data.pkl", data), ("archive/version", b"3\n")]))
    res = _assert_refused(path, tmp_path / "marker", "gzip.open")
    assert res.complete and res.format == "torch"
    # a legacy torch.save file starts with its magic number: a wrapper there is read two ways
    legacy = tmp_path / "legacy.pt"
    magic = _wrapper(DT("u1", (3, "|", None, None, None, -1, -1, 0)), (2,)) + b"\x00\x00" + b"0"
    legacy.write_bytes(_pickle(magic + enc(0x1950A86A20F9469CFC6C)) + pickle.dumps(1001))
    res = _assert_refused(legacy, tmp_path / "marker")
    assert any("torch and joblib read differently" in i for i in res.issues), res.issues


@pytest.mark.parametrize("compress", [0, 3])
def test_structured_array_with_an_object_field_is_scanned_as_a_nested_pickle(tmp_path, compress):
    arr = np.zeros(2, dtype=[("a", "f8"), ("o", "O")])
    arr["o"][1] = _GzipPayload(str(tmp_path / "marker"))
    path = tmp_path / "model.joblib"
    joblib.dump({"arr": arr, "x": np.arange(5.0)}, path, compress=compress)
    res = _assert_refused(path, tmp_path / "marker", "gzip.open")
    assert res.complete, res.issues


@pytest.mark.parametrize("body,why", [
    (enc(_WRAPPER) + enc(("x", (4,), "C", DT("u1", _F8))) + b"R" + b"}b",
     "made by calling it"),
    (enc(_WRAPPER) + b")\x81" + enc((None, _wrapper_state(DT("u1", _F8), (4,)))) + b"b",
     "dict of named attributes"),
    (enc(_WRAPPER) + b")\x81\x94" + enc(_wrapper_state(DT("u1", _F8), (0,))) + b"b0h\x00}b",
     "BUILD applied twice"),
    (enc(_WRAPPER) + b")\x81" + enc(_wrapper_state(Call(G("mypkg", "dt"), ()), (4,))) + b"b",
     "not a numpy.dtype"),
    (_wrapper(DT("f8", _F8), (1 << 40, 1 << 40)), "larger than joblib can count"),
])
def test_a_joblib_wrapper_the_scan_cannot_size_makes_the_scan_incomplete(tmp_path, body, why):
    path = tmp_path / "model.joblib"
    path.write_bytes(_pickle(body + b"0N"))
    res = scan_model_file(path)
    assert not res.complete and res.verdict == "dangerous"
    assert any(why in i for i in res.issues), res.issues
    with pytest.raises(UnsafeModelError):
        load_model(path, trust_pickle=True)


class _Restricted(NumpyUnpickler):
    """joblib's own unpickler, allowed only the globals these test files use: the oracle."""

    allowed = {("numpy", "dtype"), ("numpy", "ndarray"), ("joblib.numpy_pickle",
               "NumpyArrayWrapper"), ("builtins", "set")}

    def __init__(self, f):
        super().__init__("", f, ensure_native_byte_order=False)
        self.seen = set()

    def find_class(self, module, name):
        self.seen.add(f"{module}.{name}")
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"{module}.{name}")
        return super().find_class(module, name)


_O = DT("O8", (3, "|", None, None, None, -1, -1, 63))
_FIELDS = {"a": (DT("f8", _F8), 0), "o": (_O, 8)}
# left out: object dtypes whose flags deny holding objects (joblib would read raw bytes as object
# pointers, which can crash the process) and subarray dtypes (joblib fails to reshape them)
_DTYPES = [
    DT("f8", _F8), DT("f8", (3, "<", None, None, None, 1, 1, 0)),
    DT("f8", (3, "<", None, None, None, -1, -1, 63)), DT("V8", (3, "|", None, None, None, 8, 1, 0)),
    DT("V8", (3, "|", None, None, None, 2, 1, 0)), DT("V8", (3, "|", None, None, None, 8, 1, 63)),
    _O, DT("V16", (3, "|", None, ("a", "o"), _FIELDS, 16, 1, 27)),
    DT("V16", (3, "|", None, ("a", "o"), _FIELDS, 4, 1, 27)),
    DT("U3", (3, "<", None, None, None, 12, 4, 8)), DT("U3", (3, "<", None, None, None, 4, 4, 8)),
]
_NESTED = b"\x80\x04cbuiltins\nset\n)R."  # as a nested pickle it imports builtins.set


@pytest.mark.parametrize("dtype", _DTYPES, ids=lambda d: f"{d.code}-{d.state[5:]}")
@pytest.mark.parametrize("shape", [(2,), (), (0,)])
def test_scan_and_joblib_agree_on_where_array_data_ends(dtype, shape):
    """Against joblib's own reader, for each dtype and each guess of the array's length: if the
    scan completes, it saw every global joblib imported, and it stopped where joblib stopped."""
    agreed = 0
    guesses = [_NESTED] + [b"\x00" * n for n in (0, 2, 4, 8, 12, 16, 24, 32, 48)]
    for align, pad in ((None, b""), (16, b""), (16, b"\x03\xff\xff\xff")):
        for data in guesses:
            blob = b"\x80\x04" + _wrapper(dtype, shape, align) + pad + data + b"."
            f = io.BytesIO(blob)
            oracle = _Restricted(f)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    oracle.load()
                    end = f.tell()
                except Exception:  # noqa: BLE001 - the oracle fails where joblib fails
                    end = None
            g = io.BytesIO(blob)
            scan = PickleScan()
            scan_stream(g, scan, "t")
            if scan.complete:
                assert oracle.seen <= set(scan.globals())
                if end is not None:
                    assert g.tell() == end
                    agreed += 1
    assert agreed >= 2


# --- joblib's old format: NDArrayWrapper loads a sidecar file with allow_pickle=True --------------


@pytest.mark.parametrize("where", ["inside", "absolute", "parent"])
def test_ndarraywrapper_with_a_sidecar_is_refused(tmp_path, where):
    sub = tmp_path / "model"
    sub.mkdir()
    handler = Call(G("logging", "FileHandler"), (str(tmp_path / "marker"),))
    side = {"inside": sub / "side.npy", "absolute": tmp_path / "abs.npy",
            "parent": tmp_path / "up.npy"}[where]
    side.write_bytes(_npy_with_pickle(_pickle(enc(handler))))
    name = {"inside": "side.npy", "absolute": str(side), "parent": "../up.npy"}[where]
    state = {"filename": name, "subclass": G("numpy", "ndarray"), "allow_mmap": False}
    path = sub / "model.pkl"
    path.write_bytes(_pickle(enc(G("joblib.numpy_pickle_compat", "NDArrayWrapper")) + b")\x81"
                             + enc(state) + b"b"))
    res = _assert_refused(path, tmp_path / "marker", "joblib.numpy_pickle_compat.NDArrayWrapper")
    assert "sidecar" in res.dangerous["joblib.numpy_pickle_compat.NDArrayWrapper"]


# --- zip archives the scan cannot read must be refused, never crash -----------------------------


def _zip_cases(tmp_path) -> dict[str, bytes]:
    return zip_cases(tmp_path / "marker")


@pytest.mark.parametrize("case", ["encrypted", "unknown-method", "bad-crc", "duplicate",
                                  "traversal", "absolute", "encrypted-data"])
def test_unreadable_zip_members_give_a_dangerous_verdict_not_a_crash(tmp_path, case):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(_zip_cases(tmp_path)[case])
    res = _assert_refused(path, tmp_path / "marker")
    assert not res.complete and res.issues and res.format == "torch"


# --- ordinary files stay loadable -------------------------------------------------------------


def _estimators():
    """The corpus's benign estimators and the meta-estimators whose pickles nest others."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import StackingClassifier, VotingClassifier
    from sklearn.linear_model import LogisticRegression as lr
    from sklearn.model_selection import GridSearchCV
    from sklearn.naive_bayes import GaussianNB
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    return {
        **benign_estimators(), "svc": SVC(probability=True),
        "grid": GridSearchCV(lr(), {"C": [0.1, 1.0]}, cv=2),
        "stack": StackingClassifier([("a", lr()), ("t", DecisionTreeClassifier())], cv=2),
        "vote": VotingClassifier([("a", lr()), ("n", GaussianNB())], voting="soft"),
        "calib": CalibratedClassifierCV(lr(), cv=2),
        "columns": Pipeline([("c", ColumnTransformer([("s", StandardScaler(), [0, 1]), (
            "o", OneHotEncoder(handle_unknown="ignore"), [2])])), ("lr", lr())]),
    }


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    x[:, 2] = np.arange(60) % 3
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {k: e.fit(x, y) for k, e in _estimators().items()}, x


_SAVES = [("pickle", 2), ("pickle", 5), ("joblib", 0), ("joblib", 3), ("joblib", ("gzip", 3)),
          ("joblib", ("xz", 1)), ("joblib", ("bz2", 1))]


def test_ordinary_scikit_learn_models_need_trust_and_load_with_it(tmp_path, fitted):
    models, x = fitted
    for i, (name, est) in enumerate(sorted(models.items())):
        how, arg = _SAVES[i % len(_SAVES)]
        path = tmp_path / f"{name}.{'pkl' if how == 'pickle' else 'joblib'}"
        if how == "pickle":
            path.write_bytes(pickle.dumps(est, protocol=arg))
        else:
            joblib.dump(est, path, compress=arg)
        res = scan_model_file(path)
        assert (res.verdict, res.dangerous, res.unknown) == ("requires-trust", {}, ()), (
            name, how, res.dangerous, res.unknown, res.issues)
        with pytest.raises(UnsafeModelError):
            load_model(path)
        with pytest.warns(AdvkitWarning):
            loaded = load_model(path, trust_pickle=True)
        np.testing.assert_array_equal(loaded.model.predict(x), est.predict(x))


@pytest.mark.parametrize("zipped", [True, False])
def test_torch_state_dicts_need_trust_and_load_with_it(tmp_path, zipped):
    model = build("mlp", input_shape=(1, 8, 8), n_classes=10,
                  generator=torch.Generator().manual_seed(0), hidden=(7,))
    out = save_model(model, tmp_path / "m")
    path = out / "weights.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "dtype": torch.float16,
                "device": torch.device("cpu")}, path, _use_new_zipfile_serialization=zipped)
    res = scan_model_file(path)
    assert (res.format, res.verdict, res.dangerous, res.unknown) == ("torch", "requires-trust",
                                                                    {}, ())
    with pytest.warns(AdvkitWarning):
        loaded = load_model(path, trust_pickle=True)
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


@pytest.mark.parametrize("compress", [0, 3, ("gzip", 3), ("xz", 1), ("bz2", 1), ("lzma", 1)])
def test_numpy_arrays_saved_by_joblib_are_not_dangerous(tmp_path, compress):
    arrays = {"f": np.arange(12.0).reshape(3, 4), "i": np.arange(5), "u": np.array(["ab", "c"]),
              "rec": np.zeros(2, dtype=[("a", "f4"), ("b", "i8")]), "s": np.float32(2.5),
              "o": np.array([1, "x", None], dtype=object), "big": np.ones((300, 300)),
              "fortran": np.asfortranarray(np.ones((3, 2))), "rng": np.random.default_rng(1)}
    path = tmp_path / "arrays.joblib"
    joblib.dump(arrays, path, compress=compress)
    res = scan_model_file(path)
    assert (res.verdict, res.dangerous, res.unknown, res.complete) == ("requires-trust", {}, (),
                                                                       True), res.issues
    with pytest.warns(AdvkitWarning), pytest.raises(InputContractError, match="not a model"):
        load_model(path, trust_pickle=True)  # unpickled (past the gate), but it holds no model
