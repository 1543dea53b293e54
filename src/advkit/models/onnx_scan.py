"""Check an ONNX file (``.onnx``) as the untrusted input it is, before any runtime sees it.

An ONNX model is a program: a graph of operators, which onnxruntime runs. A hostile file can name
operators from a custom domain (implemented by a native library someone would have to load), carry
model-local functions, or point its tensors at "external data" files anywhere on the machine
(``../../etc/passwd``, ``/root/.ssh/id_rsa``, a symbolic link out of the folder), which a runtime
would read into the model's weights. ``inspect_onnx`` reads the file once, within a size limit,
parses it with the ``onnx`` package *without* loading external data, and checks:

- every operator (in the main graph, every subgraph of ``If``/``Loop``/``Scan``, and every
  function) is a known operator of the standard ``ai.onnx`` or ``ai.onnx.ml`` domains
  (``onnx.defs``); custom domains, model-local functions and unknown operators are refused;
- every external-data location is a relative path inside the file's folder, with no ``..``, no
  absolute or drive path, resolving (symbolic links followed) to a regular file inside the
  folder, and the (offset, length) it names lies inside that file;
- the sizes of the file and of everything it references stay within ``max_bytes``.

Only then is the checked external data read into the model (from the resolved, checked files)
and ``onnx.checker`` run on the self-contained result.

``scan_onnx`` turns the findings into the ``ScanResult`` that ``advkit scan`` prints and that
``load_model`` gates on (one verdict function for both): ``dangerous`` for refused operators or
data locations, ``unknown`` (with the reason) for a file that is not a well-formed ONNX model.
:func:`read_contract` reads the input contract ``advkit export`` writes into ``metadata_props``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from advkit.errors import InputContractError

MAX_ONNX_BYTES = 1 << 30  # the file plus its external data: 1 GiB
ALLOWED_DOMAINS = {"": "", "ai.onnx": "", "ai.onnx.ml": "ai.onnx.ml"}  # -> onnx.defs domain
META_PREFIX = "advkit."
_MAX_META_CHARS = 1 << 16


def need_onnx():
    """The ``onnx`` module, or an InputContractError naming the extra to install."""
    try:
        import onnx
    except ImportError:
        raise InputContractError("ONNX support needs the onnx extra: pip install 'advkit[onnx]' "
                                 "(onnx, onnxruntime, skl2onnx)") from None
    return onnx


@dataclass
class OnnxInspection:
    """What :func:`inspect_onnx` found: the parsed model (external data not loaded), what it
    refuses (name -> why) and why the file is not a readable ONNX model (``problem``)."""

    path: Path
    model: object = None
    refused: dict[str, str] = field(default_factory=dict)
    problem: str | None = None
    external: list = field(default_factory=list)  # (tensor, resolved path, offset, length)

    @property
    def ok(self) -> bool:
        return self.problem is None and not self.refused


def _graphs(graph):
    """``graph`` and every subgraph nested in its nodes' attributes."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for g in attr.graphs:
                yield from _graphs(g)


def _tensors(model):
    """Every TensorProto a runtime would read: initializers, sparse initializers and tensor
    attributes of every graph and function."""
    graphs = list(_graphs(model.graph))
    nodes = [n for g in graphs for n in g.node] + [n for f in model.functions for n in f.node]
    for g in graphs:
        yield from g.initializer
        for s in g.sparse_initializer:
            yield s.values
            yield s.indices
    for n in nodes:
        for attr in n.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices


def _check_ops(onnx, model, refused: dict) -> None:
    for imp in model.opset_import:
        if imp.domain not in ALLOWED_DOMAINS:
            refused[f"opset domain {imp.domain!r}"] = (
                "a custom operator domain: its operators come from a native library, which "
                "advkit never loads")
    for f in model.functions:
        refused[f"function {f.domain}:{f.name}"] = (
            "a model-local function: advkit runs only standard operators; export the model "
            "without functions")
    nodes = [n for g in _graphs(model.graph) for n in g.node]
    for n in nodes:
        domain = ALLOWED_DOMAINS.get(n.domain)
        key = f"operator {n.domain or 'ai.onnx'}:{n.op_type}"
        if domain is None:
            refused[key] = ("from a custom domain, implemented by a native library outside "
                            "onnxruntime's standard operators; advkit does not load it")
        elif not onnx.defs.has(n.op_type, domain):
            refused[key] = "not an operator of the ONNX standard (unknown operator)"


def _location(t) -> dict:
    return {e.key: e.value for e in t.external_data}


def _check_external(model, folder: Path, budget: int, refused: dict, external: list) -> int:
    """Check every external-data reference; return the bytes they add."""
    import onnx

    base = os.path.realpath(folder)
    total = 0
    for t in _tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = _location(t)
        loc = info.get("location", "")
        key = f"external data {loc!r} of tensor {t.name!r}"
        parts = loc.replace("\\", "/").split("/")
        if not loc or "\x00" in loc:
            refused[key] = "an empty or malformed location"
            continue
        if os.path.isabs(loc) or loc.startswith(("/", "\\")) or (len(loc) > 1 and loc[1] == ":"):
            refused[key] = ("an absolute path: a model's data must be files in its own folder; "
                            "a hostile model uses this to read any file on the machine")
            continue
        if ".." in parts:
            refused[key] = ("a path that climbs out of the model's folder ('..'): a hostile "
                            "model uses this to read files outside it")
            continue
        real = os.path.realpath(os.path.join(base, loc))
        if os.path.commonpath([base, real]) != base:
            refused[key] = (f"resolves outside the model's folder (to {real}, through a symbolic "
                            "link): refused, as a hostile model uses links to read other files")
            continue
        if not os.path.isfile(real):
            refused[key] = "not a regular file in the model's folder (missing, or a folder)"
            continue
        size = os.path.getsize(real)
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else size - offset
        except ValueError:
            refused[key] = "an offset or length that is not an integer"
            continue
        if offset < 0 or length < 0 or offset + length > size:
            refused[key] = (f"offset {offset} and length {length} lie outside the file "
                            f"({size} bytes)")
            continue
        total += length
        if total > budget:
            refused[key] = f"the model's external data passes the size limit ({budget} bytes)"
            continue
        external.append((t, real, offset, length))
    return total


def inspect_onnx(path, *, max_bytes: int = MAX_ONNX_BYTES) -> OnnxInspection:
    """Read and check the ONNX file at ``path`` without running or loading anything from it."""
    onnx = need_onnx()
    from google.protobuf.message import DecodeError

    p = Path(path)
    out = OnnxInspection(p)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            out.problem = (f"the file is {size} bytes, over the {max_bytes}-byte limit for an "
                           "ONNX model; raise max_bytes if the model really is that large")
            return out
        data = p.read_bytes()
    except OSError as exc:
        out.problem = f"the file cannot be read ({exc}); check its permissions"
        return out
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        out.problem = (f"not a valid ONNX protobuf ({exc or 'parse error'}): the file is "
                       "truncated or damaged; export or download it again")
        return out
    if not model.HasField("graph") or not model.graph.node or not model.graph.output:
        out.problem = ("no model graph with nodes and outputs in it: not an ONNX model, or a "
                       "truncated one; export or download it again")
        return out
    out.model = model
    _check_ops(onnx, model, out.refused)
    _check_external(model, p.parent, max_bytes - size, out.refused, out.external)
    if not out.refused:
        load_external(out)  # the checked files only, so the checker reads no path itself
        try:
            onnx.checker.check_model(model)
        except Exception as exc:  # noqa: BLE001 - the checker raises several error types
            out.problem = (f"not a well-formed ONNX model ({str(exc)[:300]}); export it again "
                           "with a current exporter")
    return out


def load_external(inspection: OnnxInspection) -> None:
    """Read the checked external data into the model's tensors (from the checked files only), so
    the checker and the runtime get one self-contained model and never resolve a path."""
    import onnx

    for t, real, offset, length in inspection.external:
        with open(real, "rb") as f:
            f.seek(offset)
            t.raw_data = f.read(length)
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def scan_onnx(path, sha: str):
    """The ScanResult of an ONNX file (the verdict ``advkit scan`` prints and loaders gate on)."""
    from advkit.models.scan import ScanResult

    try:
        ins = inspect_onnx(path)
    except InputContractError as exc:  # the onnx extra is not installed
        return ScanResult(Path(path), "unknown", sha, False, issues=(str(exc),))
    if ins.problem is not None and not ins.refused:
        return ScanResult(Path(path), "unknown", sha, False, issues=(ins.problem,))
    return ScanResult(Path(path), "onnx", sha, False, dangerous=dict(ins.refused))


def metadata(model) -> dict[str, str]:
    """The file's ``metadata_props`` as a dict (the last value wins for a repeated key)."""
    return {p.key: p.value for p in model.metadata_props}


def _meta_json(meta: dict, key: str, path):
    raw = meta.get(META_PREFIX + key)
    if raw is None:
        return None
    if len(raw) > _MAX_META_CHARS:
        raise InputContractError(f"{path}: metadata {META_PREFIX}{key} is over "
                                 f"{_MAX_META_CHARS} characters; not written by advkit export")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputContractError(f"{path}: metadata {META_PREFIX}{key} is not JSON ({exc}); "
                                 "export the model again with `advkit export`") from None


def read_contract(model, path) -> dict:
    """The contract ``advkit export`` wrote (input_shape, n_classes, bounds, scores, dataset,
    source), checked for type; keys absent from the file are absent from the result."""
    meta = metadata(model)
    out = {}
    shape = _meta_json(meta, "input_shape", path)
    if shape is not None:
        if not (isinstance(shape, list) and shape and all(type(s) is int and s >= 1 for s in shape)):
            raise InputContractError(f"{path}: metadata {META_PREFIX}input_shape must be a list "
                                     f"of positive integers, got {str(shape)[:80]}")
        out["input_shape"] = tuple(shape)
    k = _meta_json(meta, "n_classes", path)
    if k is not None:
        if type(k) is not int or k < 2:
            raise InputContractError(f"{path}: metadata {META_PREFIX}n_classes must be an "
                                     f"integer >= 2, got {str(k)[:80]}")
        out["n_classes"] = k
    bounds = _meta_json(meta, "bounds", path)
    if bounds is not None:
        if not (isinstance(bounds, list) and len(bounds) == 2
                and all(type(b) in (int, float) and math.isfinite(b) for b in bounds)
                and bounds[0] < bounds[1]):
            raise InputContractError(f"{path}: metadata {META_PREFIX}bounds must be [lo, hi] "
                                     f"with finite lo < hi, got {str(bounds)[:80]}")
        out["bounds"] = (float(bounds[0]), float(bounds[1]))
    scores = meta.get(META_PREFIX + "scores")
    if scores is not None:
        if scores not in ("logits", "probabilities"):
            raise InputContractError(f"{path}: metadata {META_PREFIX}scores must be 'logits' or "
                                     f"'probabilities', got {scores[:40]!r}")
        out["scores"] = scores
    for key in ("dataset", "source", "scores_output"):
        if (v := meta.get(META_PREFIX + key)) is not None:
            out[key] = v[:200]
    return out
