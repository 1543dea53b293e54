"""Convert a trusted pickle-based model file, once, into a format that never needs trust again.

- a ``torch.save`` of an advkit zoo model (it carries ``advkit_config``), or of its state dict
  (the architecture given as a :class:`ZooArgs`, or read from the ``config.json`` written by
  :func:`~advkit.models.io.save_model` beside the file) becomes an advkit folder:
  ``model.safetensors`` + ``config.json``;
- a pickled or joblib scikit-learn estimator becomes a skops file (``skops.io.dump``).

The source is loaded with its own pickle loader, which runs any code it holds: only with
``trust_pickle=True``, and a source the scan calls dangerous also needs ``allow_dangerous=True``
(the rule of :func:`~advkit.models.io.load_model`). The zoo model is rebuilt from its config and
must give the same outputs as the unpickled module on a probe batch, and the written weights must
load back identical, so what is written is a plain zoo model and nothing else. The output is
written beside its final path and renamed into place; an existing output is replaced only with
``force=True`` (and only a file or a folder written by save_model).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from advkit.errors import InputContractError, InvalidParameterError, UnsafeModelError
from advkit.models.io import (
    _STATE_DICT_KEYS,
    CONFIG_NAME,
    WEIGHTS_NAME,
    _build,
    _read_config,
    load_model,
    save_model,
)
from advkit.models.scan import ScanResult, scan_model_file
from advkit.models.trust import gate, unpickle
from advkit.models.zoo import build

_SAFE_FORMATS = ("advkit", "safetensors", "skops", "torchscript")


@dataclass(frozen=True)
class ZooArgs:
    """The zoo architecture a bare state dict belongs to (as :func:`advkit.models.build` takes)."""

    name: str
    input_shape: tuple[int, ...]
    n_classes: int
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Conversion:
    """What was converted: the source's scan, the output path, ``kind`` (``advkit`` or
    ``skops``) and the scan of the written output."""

    source: ScanResult
    out: Path
    kind: str
    scan: ScanResult


def convert_model(src, out, *, trust_pickle: bool = False, allow_dangerous: bool = False,
                  zoo: ZooArgs | None = None, force: bool = False) -> Conversion:
    """Load the trusted pickle-based file ``src`` once and write it to ``out`` in a safe format
    (see the module docstring); return the :class:`Conversion` with the output's scan."""
    src, out = Path(src), Path(out)
    if not src.is_file():
        raise InvalidParameterError("src", str(src), "an existing model file")
    res = scan_model_file(src)
    if res.format == "unknown":
        raise InputContractError(
            f"{src} is not a model file advkit can read ({'; '.join(res.issues)}); nothing to "
            "convert")
    if res.format in _SAFE_FORMATS:
        raise InputContractError(
            f"{src} is already {res.format}, which advkit loads without unpickling; nothing to "
            "convert (see `advkit scan` for what loading it needs)")
    if not trust_pickle:
        raise UnsafeModelError(
            f"converting {src} means loading it once with its own pickle loader ({res.format}), "
            f"which runs whatever code the file holds (scan verdict: {res.verdict}). Pass "
            "--trust-pickle (trust_pickle=True) only if you made the file or trust its source "
            f"completely; `advkit scan {src}` shows what it imports.")
    _check_out(out, src, force)
    gate(res, trust_pickle=True, allow_dangerous=allow_dangerous)
    obj = unpickle(src, res)
    if isinstance(obj, nn.Module | dict):
        model, info, extra = _zoo_model(obj, src, zoo)

        def write(tmp: Path) -> None:
            save_model(model, tmp, dataset_info=info, extra=extra)
            _verify_weights(model, tmp)

        _publish(out, write)
        kind = "advkit"
    elif hasattr(obj, "predict") and not isinstance(obj, type):
        _publish(out, lambda tmp: _dump_skops(obj, tmp))
        kind = "skops"
    else:
        raise InputContractError(
            f"{src} holds a {type(obj).__name__}, which is neither a PyTorch model or state dict "
            "nor a scikit-learn estimator; advkit convert cannot write it in a safe format")
    return Conversion(res, out, kind, scan_model_file(out))


def _zoo_model(obj, src: Path, zoo: ZooArgs | None) -> tuple[nn.Module, dict | None, dict | None]:
    """The zoo model (rebuilt, with the source's weights), dataset info and extra for save_model."""
    info = extra = None
    cfg = getattr(obj, "advkit_config", None) if isinstance(obj, nn.Module) else None
    if zoo is not None:
        model = _build_zoo(zoo.name, zoo.input_shape, zoo.n_classes, zoo.kwargs, "--zoo")
    elif isinstance(cfg, dict):
        model = _build_zoo(cfg.get("name"), cfg.get("input_shape"), cfg.get("n_classes"),
                           cfg.get("kwargs") or {}, f"{src}'s advkit_config")
    elif (src.parent / CONFIG_NAME).is_file():
        config = _read_config(src.parent / CONFIG_NAME)
        model = _build(config, src.parent / CONFIG_NAME)
        info, extra = config.get("dataset"), config.get("extra")
    else:
        what = ("a PyTorch module not built by advkit's zoo" if isinstance(obj, nn.Module)
                else "a dict that is not an advkit model")
        raise InputContractError(
            f"{src} holds {what}, and nothing says its architecture: pass --zoo NAME "
            "--input-shape C,H,W --n-classes K (and --zoo-kwargs for non-default options) if its "
            f"weights fit a zoo model, or put the {CONFIG_NAME} written by save_model beside it. "
            "Any other architecture: export it with torch.jit.save(torch.jit.script(model), path)")
    sd = obj.state_dict() if isinstance(obj, nn.Module) else _state_dict(obj, src)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise InputContractError(
            f"the weights in {src} do not fit the zoo model {model.advkit_config['name']!r} "
            f"{tuple(model.advkit_config['input_shape'])}: {exc}") from exc
    if isinstance(obj, nn.Module):
        _same_outputs(obj, model, src)
    return model.eval(), info, extra


def _build_zoo(name, input_shape, n_classes, kwargs, where: str) -> nn.Module:
    try:
        return build(name, input_shape=tuple(input_shape), n_classes=n_classes, **kwargs)
    except (InvalidParameterError, TypeError) as exc:
        raise InputContractError(f"{where} does not describe a zoo model advkit can build: "
                                 f"{exc}") from exc


def _state_dict(obj: dict, src: Path) -> dict:
    sd = next((obj[k] for k in _STATE_DICT_KEYS if isinstance(obj.get(k), dict)), obj)
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputContractError(f"{src} holds a dict that is not a state dict (name -> tensor)")
    return sd


def _same_outputs(module: nn.Module, model: nn.Module, src: Path) -> None:
    """The unpickled module and the rebuilt zoo model agree on a probe batch, so the converted
    folder behaves as the source did (a subclass with its own forward would not)."""
    probe = torch.rand((4, *model.advkit_config["input_shape"]),
                       generator=torch.Generator().manual_seed(0))
    was_training = module.training
    try:
        with torch.no_grad():
            same = torch.allclose(module.eval()(probe).float(), model(probe).float(),
                                  rtol=1e-4, atol=1e-5)
    except Exception as exc:  # noqa: BLE001 - the source's own forward may raise anything
        raise InputContractError(f"the model in {src} cannot run on its own input shape: "
                                 f"{exc}") from exc
    finally:
        module.train(was_training)
    if not same:
        raise InputContractError(
            f"the model in {src} gives other outputs than the zoo model "
            f"{model.advkit_config['name']!r} rebuilt from its weights: it is not a plain advkit "
            "zoo model, so safetensors weights alone cannot reproduce it; export it with "
            "torch.jit.save(torch.jit.script(model), path)")


def _verify_weights(model: nn.Module, out: Path) -> None:
    loaded = load_model(out).model.state_dict()
    for k, v in model.state_dict().items():
        if not torch.equal(loaded[k], v):
            raise InputContractError(f"{out}: the tensor {k} did not load back identical")


def _dump_skops(est, path: Path) -> None:
    import skops.io as sio

    try:
        sio.dump(est, path)
    except Exception as exc:  # noqa: BLE001 - skops raises assorted errors on odd objects
        raise InputContractError(f"skops cannot save this {type(est).__name__}: {exc}") from exc


def _check_out(out: Path, src: Path, force: bool) -> None:
    if out.resolve() == src.resolve():
        raise InvalidParameterError("out", str(out), "a path other than the source file")
    if not (out.exists() or out.is_symlink()):
        return
    if not force:
        raise InvalidParameterError("out", str(out),
                                    "a path that does not exist yet (pass --force to replace it)")
    if out.is_dir() and not out.is_symlink():
        other = sorted({p.name for p in out.iterdir()} - {CONFIG_NAME, WEIGHTS_NAME})
        if other:
            raise InvalidParameterError(
                "out", str(out), f"a file or a folder written by save_model (this folder also "
                f"holds {', '.join(other[:5])}; remove it yourself if it should go)")


def _publish(out: Path, write: Callable[[Path], object]) -> None:
    """Write ``out`` in a temporary sibling (``write(path)``), then rename it into place; an
    existing ``out`` (allowed by :func:`_check_out`) is replaced only once the new one is whole."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise InvalidParameterError("out", str(out), f"a path in a writable folder ({exc})") \
            from exc
    try:
        new = work / "new"
        write(new)
        old = work / "old"
        if out.exists() or out.is_symlink():
            os.replace(out, old)
        try:
            os.replace(new, out)
        except OSError:
            if old.exists() or old.is_symlink():
                os.replace(old, out)  # put the previous output back
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
