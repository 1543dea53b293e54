"""``OnnxTarget``: scores or labels from an ONNX file, run by onnxruntime, with no gradients.

The file is untrusted input: :func:`advkit.models.onnx_scan.inspect_onnx` checks it (size,
operators, external-data locations) before a session exists, the checked external data is read
into the model so onnxruntime never resolves a path itself, and the session is built from bytes
with the CPU provider and no custom-operator library (``register_custom_ops_library`` is never
called). The graph must take one float input of shape (batch, *contract.shape) and answer a float
(batch, n_classes) scores output, beside an optional integer label output (skl2onnx's pair).

The scores are logits or probabilities as the file's ``advkit.scores`` metadata (written by
``advkit export``) says; without it, a model with a label output and a scores output (skl2onnx)
answers probabilities and any other logits. ``output="labels"`` hides the scores (a labels-only
target). A graph exported for a fixed batch size is fed in chunks of that size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from advkit.errors import InputContractError, InvalidParameterError, UnsafeModelError
from advkit.models.onnx_scan import inspect_onnx, read_contract
from advkit.targets.base import Capabilities, InputContract, Target, check_scores

_FLOATS = {1: np.float32, 11: np.float64, 10: np.float16}  # TensorProto FLOAT, DOUBLE, FLOAT16
_INTS = (6, 7)  # INT32, INT64


def _dims(value_info) -> list:
    """The declared dims of a graph input/output: ints, dim names (str) or None (unknown)."""
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in shape.dim]


def _elem(value_info) -> int:
    return value_info.type.tensor_type.elem_type


def load_onnx(path) -> tuple[object, dict]:
    """The checked ModelProto of ``path`` (its external data read in) and its advkit metadata;
    UnsafeModelError for what the check refuses, InputContractError for a broken file."""
    ins = inspect_onnx(path)
    if ins.refused:
        what = "; ".join(f"{k}: {v}" for k, v in ins.refused.items())
        raise UnsafeModelError(
            f"refusing to load {path}: an ONNX model is a program run by onnxruntime, and this "
            f"one holds what advkit refuses: {what}. Export the model again with standard "
            "operators only and its data inside its folder (`advkit export`)")
    if ins.problem is not None:
        raise InputContractError(f"{path} is not a loadable ONNX model: {ins.problem}")
    return ins.model, read_contract(ins.model, path)


@dataclass(frozen=True, eq=False)
class OnnxFile:
    """A checked ONNX model as :func:`advkit.models.load_model` returns it: the ModelProto (its
    external data read in) and the advkit metadata; :meth:`target` runs it for a contract."""

    path: Path
    proto: object
    meta: dict
    is_onnx_file = True

    @classmethod
    def load(cls, path) -> OnnxFile:
        return cls(Path(path), *load_onnx(path))

    def config(self) -> dict:
        """The metadata, JSON-ready (for the report's model section)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.meta.items()}

    def target(self, contract: InputContract, **kwargs) -> OnnxTarget:
        return OnnxTarget(contract=contract, path=str(self.path), model=self.proto, **kwargs)


@dataclass(eq=False)
class OnnxTarget(Target):
    """An ONNX classifier run by onnxruntime: logits or probabilities (per the file), or labels
    only with ``output="labels"``; never gradients. Build with :meth:`from_file`."""

    path: str | None = None
    output: str = "scores"  # scores | labels
    model: object = field(default=None, repr=False)  # a checked onnx.ModelProto
    scores: str | None = None  # logits | probabilities; None: from the file
    _session: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        if self.output not in ("scores", "labels"):
            raise InvalidParameterError("output", self.output, "'scores' or 'labels'")
        if self.scores not in (None, "logits", "probabilities"):
            raise InvalidParameterError("scores", self.scores, "'logits', 'probabilities' or None")
        if self.model is None:
            if self.path is None:
                raise InvalidParameterError("path", None, "the path of an .onnx file")
            self.model, meta = load_onnx(self.path)
        else:
            meta = read_contract(self.model, self.path or "the ONNX model")
        self._meta = meta
        self._check_graph(meta)
        self._session = self._make_session()

    @classmethod
    def from_file(cls, path, contract: InputContract | None = None, **kwargs) -> OnnxTarget:
        """An OnnxTarget for ``path``; without ``contract``, the one ``advkit export`` wrote into
        the file (input shape, classes, bounds)."""
        model, meta = load_onnx(path)
        if contract is None:
            if "input_shape" not in meta or "n_classes" not in meta:
                raise InputContractError(
                    f"{path} does not say its input shape and classes (no advkit metadata); "
                    "pass an InputContract, or audit it with the dataset it takes")
            contract = InputContract(meta["input_shape"], meta["n_classes"],
                                     meta.get("bounds", (0.0, 1.0)))
        return cls(contract=contract, path=str(path), model=model, **kwargs)

    # -- the graph against the contract -------------------------------------------------------
    def _check_graph(self, meta: dict) -> None:
        g, c, where = self.model.graph, self.contract, self.path or "the ONNX model"
        inits = {t.name for t in g.initializer}
        inputs = [i for i in g.input if i.name not in inits]
        if len(inputs) != 1:
            raise InputContractError(
                f"{where} takes {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                "advkit audits models with one input tensor: export it with a single input")
        inp = inputs[0]
        if _elem(inp) not in _FLOATS:
            raise InputContractError(f"{where}: its input {inp.name!r} has ONNX element type "
                                     f"{_elem(inp)}, not float; export it with a float input")
        dims, want = _dims(inp), (None, *c.shape)
        if len(dims) != len(want) or any(isinstance(d, int) and w is not None and d != w
                                         for d, w in zip(dims[1:], want[1:], strict=True)):
            shown = ", ".join("?" if not isinstance(d, int) else str(d) for d in dims)
            raise InputContractError(
                f"{where}: its input {inp.name!r} has shape ({shown}) but the data's samples "
                f"have shape {c.shape}, so it needs (batch, {', '.join(map(str, c.shape))}); "
                "audit it with the data it was exported for, or export it for this data")
        for key, have in (("input_shape", c.shape), ("n_classes", c.n_classes),
                          ("bounds", c.bounds)):
            if key in meta and meta[key] != have:
                raise InputContractError(
                    f"{where} was exported for {key} {meta[key]} but the data has {have}; "
                    "audit it with the dataset it was exported for (advkit.dataset: "
                    f"{meta.get('dataset', 'not recorded')})")
        self._input, self._dtype = inp.name, _FLOATS[_elem(inp)]
        self._fixed = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None
        floats = [o for o in g.output if _elem(o) in _FLOATS and len(_dims(o)) == 2]
        if "scores_output" in meta:
            floats = [o for o in floats if o.name == meta["scores_output"]]
        if len(floats) != 1:
            raise InputContractError(
                f"{where} has {len(floats)} float outputs of shape (batch, classes) "
                f"({', '.join(o.name for o in g.output)}); advkit needs exactly one (the scores)")
        out = floats[0]
        k = _dims(out)[1]
        if isinstance(k, int) and k != c.n_classes:
            raise InputContractError(f"{where} answers {k} scores per input but the data has "
                                     f"{c.n_classes} classes; audit it with its own data")
        self._output = out.name
        labels = any(_elem(o) in _INTS for o in g.output)
        self._kind = self.scores or meta.get("scores") or ("probabilities" if labels else "logits")

    def _make_session(self):
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputContractError("OnnxTarget needs onnxruntime: pip install "
                                     "'advkit[onnx]'") from None
        so = ort.SessionOptions()
        so.add_session_config_entry("session.load_model_format", "ONNX")
        so.intra_op_num_threads = max(1, torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            return ort.InferenceSession(self.model.SerializeToString(), sess_options=so,
                                        providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise InputContractError(f"onnxruntime cannot build a session for "
                                     f"{self.path or 'the ONNX model'}: {str(exc)[:300]}") from exc

    # -- Target -------------------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        if self.output == "labels":
            return Capabilities(labels=True)
        return Capabilities(gradients=False, logits=self._kind == "logits", probabilities=True,
                            labels=True)

    @property
    def model_name(self) -> str:
        return Path(self.path).name if self.path else "OnnxTarget"

    def describe(self) -> dict:
        return {"scores": self._kind, "output": self.output, "input": self._input,
                **{k: v for k, v in self._meta.items() if k in ("dataset", "source")}}

    def _run(self, xs: np.ndarray) -> np.ndarray:
        try:
            return self._session.run([self._output], {self._input: xs})[0]
        except Exception as exc:  # noqa: BLE001
            raise InputContractError(f"onnxruntime failed on a batch of shape {xs.shape} for "
                                     f"{self.model_name}: {str(exc)[:300]}") from exc

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = x.detach().cpu().numpy().astype(self._dtype, copy=False)
        n, b = xs.shape[0], self._fixed
        if b is None:
            out = self._run(xs)
        else:  # a graph exported for one batch size: chunks of it, the last padded with zeros
            parts = []
            for i in range(0, n, b):
                chunk = xs[i:i + b]
                pad = np.zeros((b - chunk.shape[0], *xs.shape[1:]), dtype=xs.dtype)
                parts.append(self._run(np.concatenate([chunk, pad]))[:chunk.shape[0]])
            out = np.concatenate(parts) if parts else np.zeros((0, self.contract.n_classes))
        s = check_scores(torch.as_tensor(np.asarray(out, dtype=np.float32)), n,
                         self.contract.n_classes, f"ONNX model {self.model_name}", x)
        if self.output == "labels":
            s = torch.nn.functional.one_hot(s.argmax(1), self.contract.n_classes).float()
        return s.to(x.device)
