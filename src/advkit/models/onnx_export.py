"""Write a PyTorch or scikit-learn model to ONNX with advkit's input contract, and verify it.

PyTorch modules go through ``torch.onnx.export`` with the TorchScript-based exporter
(``dynamo=False``: it works offline and needs no onnxscript), opset 17, a dynamic batch axis, one
input ``input`` and one output ``scores`` (the module's logits). scikit-learn classifiers (and
Pipelines ending in one) go through skl2onnx with ``zipmap=False``, so the probabilities come
back as a plain (batch, classes) float tensor beside the ``label`` output.

The contract (input shape, classes, bounds, what the scores are, the dataset) goes into the
file's ``metadata_props`` under ``advkit.*``, where :class:`advkit.targets.onnx.OnnxTarget`
reads it. The written file is then loaded back through the same checks as any untrusted ONNX
file and run by onnxruntime on sample inputs; the largest absolute difference from the original
model's scores is returned, and an export that differs by more than ``atol`` is removed and
refused (``ModelBehaviorError``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advkit.errors import InputContractError, InvalidParameterError, ModelBehaviorError
from advkit.models.onnx_scan import META_PREFIX, need_onnx
from advkit.targets.base import InputContract

OPSET = 17
ATOL = 1e-4  # relative to max(1, the largest score): float32 round-off over a few layers


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and how closely it reproduces the original model."""

    path: Path
    kind: str  # torch | sklearn
    scores: str  # logits | probabilities
    max_abs_diff: float
    n_checked: int
    labels_agree: float  # fraction of the checked inputs with the same predicted class


def _torch_bytes(model: nn.Module, contract: InputContract) -> bytes:
    buf = io.BytesIO()
    x = torch.zeros((2, *contract.shape))
    was = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=OPSET,
                              input_names=["input"], output_names=["scores"],
                              dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}})
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types
        raise InvalidParameterError("model", type(model).__name__,
                                    f"a module torch.onnx can export ({str(exc)[:300]})") from exc
    finally:
        model.train(was)
    return buf.getvalue()


def _sklearn_proto(est, contract: InputContract):
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError:
        raise InputContractError("exporting scikit-learn models needs skl2onnx: pip install "
                                 "'advkit[onnx]'") from None
    if not hasattr(est, "predict_proba"):
        raise InvalidParameterError("model", type(est).__name__,
                                    "a classifier with predict_proba (the export answers "
                                    "probabilities)")
    final = est.steps[-1][1] if hasattr(est, "steps") else est
    d = int(np.prod(contract.shape))
    try:
        return to_onnx(est, initial_types=[("input", FloatTensorType([None, d]))],
                       options={id(final): {"zipmap": False}}, target_opset=OPSET)
    except Exception as exc:  # noqa: BLE001 - skl2onnx raises many types for unsupported models
        raise InvalidParameterError("model", type(est).__name__,
                                    f"an estimator skl2onnx can convert ({str(exc)[:300]})") \
            from exc


def _reference(model, x: torch.Tensor) -> np.ndarray:
    if isinstance(model, nn.Module):
        with torch.no_grad():
            return model(x).detach().cpu().numpy()
    return np.asarray(model.predict_proba(x.reshape(x.shape[0], -1).numpy()), dtype=np.float64)


def export_onnx(model, out, contract: InputContract, *, dataset: str | None = None,
                samples: torch.Tensor | None = None, n_random: int = 64, seed: int = 0,
                atol: float = ATOL, force: bool = False) -> OnnxExport:
    """Export ``model`` (an ``nn.Module`` answering logits, or a fitted scikit-learn classifier)
    to the ONNX file ``out`` with ``contract`` in its metadata; verify it on ``samples`` plus
    ``n_random`` uniform inputs within the bounds and return the comparison."""
    onnx = need_onnx()
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise InvalidParameterError("out", str(out), "a file name ending in .onnx")
    if out.exists() and not (force and out.is_file()):
        raise InvalidParameterError("out", str(out), "a path that does not exist yet (or pass "
                                    "force=True / --force to replace a file)")
    if isinstance(model, nn.Module):
        kind, scores = "torch", "logits"
        proto = onnx.load_model_from_string(_torch_bytes(model, contract))
        source = f"torch {type(model).__name__}"
        if isinstance(cfg := getattr(model, "advkit_config", None), dict):
            source = f"advkit zoo {cfg.get('name')}"
    elif hasattr(model, "predict"):
        kind, scores = "sklearn", "probabilities"
        proto = _sklearn_proto(model, contract)
        source = f"scikit-learn {type(model).__name__}"
    else:
        raise InvalidParameterError("model", type(model).__name__,
                                    "a torch.nn.Module or a fitted scikit-learn classifier")
    meta = {"input_shape": json.dumps(list(contract.shape)),
            "n_classes": json.dumps(contract.n_classes),
            "bounds": json.dumps(list(contract.bounds)), "scores": scores,
            "scores_output": "scores" if kind == "torch" else "probabilities", "source": source}
    if dataset:
        meta["dataset"] = dataset
    from advkit import __version__

    onnx.helper.set_model_props(proto, {META_PREFIX + k: v for k, v in meta.items()})
    proto.producer_name, proto.producer_version = "advkit", __version__
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    try:
        result = verify(model, tmp, contract, samples=samples, n_random=n_random, seed=seed,
                        atol=atol)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return OnnxExport(out, kind, scores, *result)


def verify(model, path, contract: InputContract, *, samples=None, n_random: int = 64,
           seed: int = 0, atol: float = ATOL) -> tuple[float, int, float]:
    """Run the ONNX file at ``path`` (loaded through OnnxTarget's checks) and ``model`` on the
    same inputs: (max abs difference of the scores, inputs checked, label agreement). Raise
    ModelBehaviorError when the difference passes ``atol * max(1, |scores|)``."""
    from advkit.targets.onnx import OnnxTarget

    target = OnnxTarget.from_file(path, contract)
    lo, hi = contract.bounds
    g = torch.Generator().manual_seed(seed)
    xs = [lo + (hi - lo) * torch.rand((n_random, *contract.shape), generator=g)]
    if samples is not None:
        xs.insert(0, target.check_inputs(torch.as_tensor(samples, dtype=torch.float32)))
    x = torch.cat(xs).float()
    ref = _reference(model, x)
    got = target.predict_scores(x).double().numpy()
    diff = float(np.abs(got - ref).max()) if x.shape[0] else 0.0
    agree = float((got.argmax(1) == ref.argmax(1)).mean()) if x.shape[0] else 1.0
    limit = atol * max(1.0, float(np.abs(ref).max()))
    if not diff <= limit:
        raise ModelBehaviorError(
            f"the ONNX export differs from the original model by up to {diff:.3g} on "
            f"{x.shape[0]} inputs (limit {limit:.3g}; labels agree on {agree:.1%}): the exporter "
            "does not reproduce this model faithfully, so its audit would not be the model's; "
            "the file was not written")
    return diff, int(x.shape[0]), agree
