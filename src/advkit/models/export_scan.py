"""Static check of ``torch.export`` archives (``.pt2``, written by ``torch.export.save``).

A ``.pt2`` is a zip holding the exported graph as JSON (``models/<name>.json``), its weights and
constants (``data/weights/``, ``data/constants/``: raw tensor bytes described by a JSON config),
and sample inputs (``data/sample_inputs/<name>.pt``, a ``torch.save`` file). Reading torch 2.13's
loader (``torch/export/pt2_archive/_package.py``, ``torch/_export/serde/serialize.py``,
``torch/export/_unlift.py``) shows how loading it can run code chosen by the file's author:

- *unpickling*: sample inputs go through ``torch.load(weights_only=True)`` and, if that fails,
  the same loader with ``weights_only`` off; weights and constants flagged ``use_pickle`` (tensor
  subclasses) and the legacy ``data/weights/<name>.pt`` format through ``weights_only=False``;
  ``opaque_obj_*`` constants through ``pickle.loads``; ``custom_obj_*`` constants through the
  TorchBind unpickler (classes from loaded native libraries);
- *native code*: ``data/aotinductor/`` holds compiled shared libraries, which are loaded;
- *Python source built from the file*: symbolic shape expressions are parsed with
  ``sympy.sympify`` (which evaluates them with ``eval``); node and tensor names are written
  unescaped into the FX code that ``GraphModule`` compiles and runs; ``ExportedProgram.module()``
  compiles the archive's ``guards_code`` strings with ``exec`` (advkit calls
  ``module(check_guards=False)``, which does not, but checks them anyway so that the verdict
  also holds for someone who loads the file with torch directly);
- *operators*: each graph node's target is resolved with ``getattr`` from ``torch``, ``operator``
  or ``math`` (``torch.os.system`` included) and called on every forward.

So before anything is loaded, every member must be one ``torch.export.save`` writes; pickled
parts are scanned (:mod:`advkit.models.pickle_scan`) and any import in them other than the
functions that rebuild plain tensors makes the archive need trust; AOTInductor and TorchBind
members are refused; every node target must be an aten operator on the allow-list of inert numeric
operators (:data:`advkit.models.torchscript_scan.ALLOWED_OPS`, plus the names export uses for the
same layers) or plain arithmetic; names must be dotted identifiers; symbolic expressions and guards
may use only symbols, numbers, arithmetic and a fixed list of sympy functions. Not covered: allowed
operators can still exhaust memory; the file may change between this scan and the load.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile

from advkit.models.pickle_scan import PickleScan, _scan_zip, scan_stream, scan_trailing
from advkit.models.torchscript_scan import ALLOWED_OPS

__all__ = ["TENSOR_GLOBALS", "is_export_archive", "scan_export"]

_MAX_JSON_BYTES = 64 << 20
# what a torch.save of plain tensors imports: all a loader calls while rebuilding them
TENSOR_GLOBALS = re.compile(
    r"^(torch\._utils\._rebuild_(tensor|tensor_v2|parameter)|collections\.OrderedDict|torch\.Size"
    r"|torch\.[A-Z][A-Za-z]*Storage|torch\.(float|double|half|bfloat16|int|long|short|bool"
    r"|uint8|int8|int16|int32|int64|float16|float32|float64))$")
_EXPORT_OPS = frozenset(f"aten::{n}" for n in """
    convolution _native_batch_norm_legit_no_training _native_batch_norm_legit_functional
    _native_batch_norm_legit native_batch_norm native_layer_norm native_group_norm native_dropout
    max_pool2d_with_indices max_pool1d_with_indices max_pool3d_with_indices _adaptive_avg_pool2d
    _log_softmax _to_copy alias lift_fresh_copy _unsafe_view scalar_tensor hardswish
    sym_size sym_numel sym_stride sym_storage_offset _assert_scalar _assert_tensor_metadata
    sym_constrain_range sym_constrain_range_for_size
""".split())
_PLAIN = frozenset(f"_operator.{n}" for n in (
    "getitem add sub mul floordiv truediv mod neg pos eq ne lt le gt ge and_ or_ not_".split())) \
    | frozenset(f"torch.sym_{n}" for n in "float int max min not".split())
_DOTTED = re.compile(r"^[A-Za-z0-9_.]*$")  # names, fully qualified names, numbers as keys
_WORD = re.compile(r"^[A-Za-z0-9_. :\-]*$")  # string arguments ("tanh", "mean", "cpu")
_SYMBOL = re.compile(r"^[a-z]+\d+$")  # s0, u1, zuf0: the names export gives shape symbols
_SYM_NAMES = frozenset("""
    Symbol Integer Rational Float Max Min Abs Eq Ne Lt Le Gt Ge And Or Not Mod floor ceiling sqrt
    oo zoo nan pi True False None positive integer nonnegative negative real finite
    FloorDiv ModularIndexing Where PythonMod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift
    PowByNatural FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat
    TruncToInt RoundToInt RoundDecimal ToFloat Identity
""".split())
_SYM_TOKEN = re.compile(r"\s+|'[a-z]+\d+'|[A-Za-z_]\w*|\d+(?:\.\d+)?(?:e[-+]?\d+)?|\*\*|//"
                        r"|[<>=!]=|[-+*/%(),<>=]")
_GUARD_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Subscript,
                ast.Constant, ast.Name, ast.Attribute, ast.Call, ast.Load, ast.operator,
                ast.boolop, ast.cmpop, ast.unaryop)
_GUARD_ATTRS = frozenset("size stride storage_offset dim isnan isinf inf".split())
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")
_FREE_TEXT = ("torch_version", "in_spec", "out_spec")  # parsed as data (JSON, version string)
_WHY = {
    "aot": "compiled native code (an AOTInductor shared library), which is loaded and run",
    "custom": "a TorchBind object, rebuilt by native code from a loaded library",
    "member": "a member torch.export.save does not write, which the scan cannot vouch for",
    "op": "not on the allow-list of inert numeric operators",
    "name": "a name that is not a dotted identifier: names are written into the Python code "
            "torch compiles for the graph, so this one could inject code",
    "sym": "a symbolic expression with more than symbols, numbers and sympy functions: "
           "torch parses it with sympy.sympify, which evaluates it with eval",
    "guard": "a guard with more than comparisons of input sizes: ExportedProgram.module() "
             "compiles guards with exec",
    "text": "text with control characters, which can end a line of generated code",
}


def is_export_archive(names: list[str]) -> bool:
    """Whether the zip member ``names`` are those of a ``torch.export.save`` archive."""
    return any(n.endswith("/archive_format") for n in names) and any(
        "/models/" in n and n.endswith(".json") for n in names)


def scan_export(path, names: list[str], scan: PickleScan) -> tuple[dict[str, str], list[str]]:
    """Check the ``.pt2`` archive at ``path`` (zip member ``names``); scan its pickled parts into
    ``scan``. Returns (``refused``: what a loader would run that is not allowed -> why,
    ``problems``: why the archive is malformed, making it no valid archive at all)."""
    refused: dict[str, str] = {}
    problems: list[str] = []
    roots = {n.partition("/")[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        return refused, ["its members are not all in one top-level folder"]
    root = roots.pop()
    rel = sorted(n.partition("/")[2] for n in names)
    with zipfile.ZipFile(path) as zf:
        read = _reader(zf, root)
        if read("archive_format", 64) != b"pt2":
            problems.append("archive_format does not say pt2")
        models = [r[len("models/"):-len(".json")] for r in rel
                  if r.startswith("models/") and r.endswith(".json")]
        pickled: set[str] = set()
        for model in models:
            _check_graph(_json(read, f"models/{model}.json", problems), refused)
            for kind in ("weights", "constants"):
                pickled |= _check_payloads(read, model, kind, rel, refused, problems)
        for r in rel:
            what = _member_kind(r, models, pickled)
            if what in ("pickle", "torch.save"):
                _scan_nested(read(r), r, what, scan)
            elif what in _WHY:
                refused[f"{root}/{r}"] = _WHY[what]
    return refused, problems


def _scan_nested(data: bytes, where: str, what: str, scan: PickleScan) -> None:
    """Scan a pickled member: a ``torch.save`` file (zip or legacy) or a plain pickle."""
    stream = io.BufferedReader(io.BytesIO(data))
    try:
        if what == "torch.save" and data[:4] == b"PK\x03\x04":
            _scan_zip(stream, scan)
        else:
            scan_stream(stream, scan, where, joblib=False)
            if what == "pickle":
                scan_trailing(stream, scan, where)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        scan.fail(where, f"a damaged torch.save file inside the archive: {exc}")


def _member_kind(r: str, models: list[str], pickled: set[str]) -> str:
    """What the member ``r`` (relative to the root) is: ``ok``, ``torch.save`` / ``pickle`` (to
    scan), or a key of ``_WHY`` (refused)."""
    if r in ("archive_format", "archive_version", "byteorder", ".data/version",
             ".data/serialization_id") or r.startswith("extra/"):  # extra/: read as text
        return "ok"
    if r.startswith("data/aotinductor/"):
        return "aot"
    for m in models:
        if r in (f"models/{m}.json", f"data/weights/{m}_weights_config.json",
                 f"data/constants/{m}_constants_config.json"):
            return "ok"
        if r in (f"data/sample_inputs/{m}.pt", f"data/weights/{m}.pt", f"data/constants/{m}.pt"):
            return "torch.save"
    if re.fullmatch(r"data/(weights/weight|constants/tensor)_\d+", r):
        return "torch.save" if r in pickled else "ok"
    if re.fullmatch(r"data/constants/opaque_obj_\d+", r):
        return "pickle"
    if re.fullmatch(r"data/constants/custom_obj_\d+", r):
        return "custom"
    return "member"


def _reader(zf: zipfile.ZipFile, root: str):
    def read(rel: str, limit: int = 1 << 40) -> bytes | None:
        try:
            info = zf.getinfo(f"{root}/{rel}")
        except KeyError:
            return None
        if info.file_size > limit:
            raise ValueError(f"{rel} is larger than {limit >> 20} MiB")
        return zf.read(info)
    return read


def _json(read, rel: str, problems: list[str]):
    try:
        data = read(rel, _MAX_JSON_BYTES)
        return None if data is None else json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append(f"{rel} is not valid JSON of bounded size: {exc}")
        return None


def _check_payloads(read, model: str, kind: str, rel: list[str], refused: dict,
                    problems: list[str]) -> set[str]:
    """Check the weights or constants config of ``model``; return the members it loads with an
    unpickler (tensor subclasses, flagged ``use_pickle``)."""
    name = f"data/{kind}/{model}_{kind}_config.json"
    cfg = _json(read, name, problems)
    if cfg is None:
        if f"data/{kind}/{model}.pt" not in rel:
            problems.append(f"{name} is missing")
        return set()
    entries = cfg.get("config") if isinstance(cfg, dict) else None
    if not isinstance(entries, dict):
        problems.append(f"{name} has no config mapping")
        return set()
    out = set()
    for fqn, meta in entries.items():
        if not (isinstance(meta, dict) and isinstance(meta.get("path_name"), str)):
            problems.append(f"{name}: the entry {fqn!r} has no path_name")
            continue
        if not _DOTTED.match(fqn) or not re.fullmatch(r"\w+", meta["path_name"]):
            refused[f"{name}: {fqn!r} -> {meta['path_name']!r}"[:200]] = _WHY["name"]
        elif meta.get("use_pickle"):
            out.add(f"data/{kind}/{meta['path_name']}")
    return out


def _check_graph(doc, refused: dict[str, str]) -> None:
    """Walk the exported program's JSON: operators, names, expressions, guards, text."""
    if not isinstance(doc, dict):
        return
    stack: list[tuple[object, str]] = [(doc, "")]
    while stack:
        obj, key = stack.pop()
        if isinstance(obj, dict):
            for k, v in obj.items():
                if not _DOTTED.match(k):
                    refused[f"key {k[:80]!r}"] = _WHY["name"]
                elif k == "metadata":
                    _check_text(v, refused)
                elif k in ("target", "as_operator") and isinstance(v, str):
                    _check_target(v, refused)
                elif k == "expr_str" and isinstance(v, str):
                    if not _sym_ok(v):
                        refused[f"expression {v[:80]!r}"] = _WHY["sym"]
                elif k == "guards_code" and isinstance(v, list):
                    for g in v:
                        if not (isinstance(g, str) and _guard_ok(g)):
                            refused[f"guard {str(g)[:80]!r}"] = _WHY["guard"]
                elif k in ("as_string", "as_strings"):
                    for s in v if isinstance(v, list) else [v]:
                        if not (isinstance(s, str) and _WORD.match(s)):
                            refused[f"string argument {str(s)[:80]!r}"] = _WHY["name"]
                elif k in _FREE_TEXT:
                    _check_text(v, refused)
                else:
                    stack.append((v, k))
        elif isinstance(obj, list):
            stack.extend((v, key) for v in obj)
        elif isinstance(obj, str) and not _DOTTED.match(obj):
            refused[f"{key or 'value'} {obj[:80]!r}"] = _WHY["name"]


def _check_text(obj, refused: dict[str, str]) -> None:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
        elif isinstance(o, str) and _CONTROL.search(o):
            refused[f"text {o[:60]!r}"] = _WHY["text"]


def _check_target(target: str, refused: dict[str, str]) -> None:
    parts = target.split(".")
    if target in _PLAIN:
        return
    if (len(parts) == 5 and parts[:3] == ["torch", "ops", "aten"]
            and re.fullmatch(r"\w+", parts[4])
            and f"aten::{parts[3]}" in ALLOWED_OPS | _EXPORT_OPS):
        return
    refused[target[:120]] = _WHY["op"]


def _sym_ok(expr: str) -> bool:
    """Only symbols, numbers, arithmetic, comparisons and the sympy functions export writes."""
    tokens = _SYM_TOKEN.findall(expr)
    if "".join(tokens) != expr:
        return False
    words = (t for t in tokens if t[:1].isalpha() or t[:1] == "_")
    return all(_SYMBOL.match(t) or t in _SYM_NAMES for t in words)


def _guard_ok(code: str) -> bool:
    """A guard: comparisons of input sizes, ``L['x'].size()[0] <= 100`` and the like."""
    try:
        tree = ast.parse(code, mode="eval")
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_NODES):
            return False
        if isinstance(node, ast.Name) and not (node.id in ("L", "math") or node.id in _SYM_NAMES
                                               or _SYMBOL.match(node.id)):
            return False
        if isinstance(node, ast.Attribute) and node.attr not in _GUARD_ATTRS:
            return False
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and not _DOTTED.match(node.value):
            return False
    return True
