"""Safe save and load of model files (DESIGN §5: a model file is untrusted input).

``save_model`` writes a folder with ``model.safetensors`` (the weights: plain tensors, no code)
and ``config.json`` (zoo name, input shape, classes, options, dataset info, SHA-256 of the
weights). ``load_model`` reads, by content rather than by file name:

- an advkit folder (or a ``.safetensors`` file with its ``config.json`` beside it): the model is
  rebuilt from the zoo and the weights are checked key by key and shape by shape;
- a TorchScript archive (``torch.jit.save``), loaded with ``torch.jit.load`` only when every
  operator its code uses is on the allow-list of inert numeric operators
  (:mod:`advkit.models.torchscript_scan`): its code runs while it loads and when it is called;
- a ``torch.export`` archive (``.pt2``, ``torch.export.save``), loaded only when
  :mod:`advkit.models.export_scan` finds nothing but plain tensors, allow-listed aten operators and
  inert names and expressions in it (pickled parts other than plain tensors need
  ``trust_pickle=True``; native code is refused);
- a scikit-learn model saved with skops (``skops.io.dump``); types skops does not trust by default
  need ``trust_pickle=True``;
- an XGBoost JSON or LightGBM text / JSON model (:mod:`advkit.models.boosters`): data, not code;
- an ONNX file (``.onnx``), checked by :mod:`advkit.models.onnx_scan` (standard operators only,
  external data inside its folder) and run by onnxruntime as an
  :class:`~advkit.targets.onnx.OnnxTarget` (scores or labels, no gradients);
- anything pickle-based (``torch.save`` files, ``.pkl`` / ``.pickle`` / ``.joblib``): it is scanned
  first (:mod:`advkit.models.pickle_scan`) and refused with ``UnsafeModelError`` unless the caller
  passes ``trust_pickle=True``. Even then a file whose scan found dangerous imports (``os.system``,
  ``builtins.eval``, ...) or could not be scanned to its end is refused unless the caller also
  passes ``allow_dangerous=True``: trusting where a file came from is not the same as accepting a
  file that plainly carries a payload, which is what such imports mean in a model file. A
  TorchScript archive whose code the allow-list refuses is treated the same way.

Each loader reads what the scan read: the format is decided by the leading bytes, as the loaders
themselves decide (a pickle with a zip archive appended is a pickle). Not covered: a file changed
between the scan and the load by someone who can write to it, and code a pickle runs through
globals the danger list does not know, which is why any pickle needs ``trust_pickle``.

Errors: ``UnsafeModelError`` for safety refusals only; ``InvalidParameterError`` when an argument
itself is wrong (a path that does not exist, a model ``save_model`` cannot describe);
``InputContractError`` when a file's content is wrong (no config, an unknown zoo name, weights that
do not match the architecture, a corrupt or unrecognized file).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from advkit.errors import InputContractError, InvalidParameterError, UnsafeModelError
from advkit.models.boosters import FORMATS as BOOSTER_FORMATS
from advkit.models.boosters import load_booster
from advkit.models.scan import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    ScanResult,
    scan_model_file,
    sha256_file,
)
from advkit.models.trust import gate, unpickle
from advkit.models.weights import load_weights_strict
from advkit.models.zoo import ZOO_NAMES, build

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "LoadedModel", "ScanResult", "load_model", "save_model",
           "scan_model_file", "sha256_file", "target_for"]

FORMAT = "advkit-model"
_MAX_CONFIG_BYTES = 1 << 20
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


@dataclass
class LoadedModel:
    """A loaded model: ``kind`` is ``"torch"``, ``"torchscript"``, ``"torch-export"``,
    ``"sklearn"``, ``"xgboost"``, ``"lightgbm"``, ``"lightgbm-json"``, ``"onnx"`` or
    ``"torch (user class)"``;
    ``sha256`` is that of the file loaded (the weights file for an advkit folder; for a user class,
    the weights' combined with the class path and kwargs); ``scan`` is the safety scan."""

    kind: str
    model: object
    config: dict
    sha256: str
    path: Path
    scan: ScanResult | None = None


def save_model(model: nn.Module, out_dir, *, dataset_info=None, extra: dict | None = None) -> Path:
    """Write ``model`` (built by :func:`advkit.models.build`) to the folder ``out_dir`` as
    ``model.safetensors`` plus ``config.json``; return the folder."""
    cfg = getattr(model, "advkit_config", None)
    if not isinstance(model, nn.Module) or not isinstance(cfg, dict):
        raise InvalidParameterError(
            "model", type(model).__name__,
            "a model built by advkit.models.build (it carries advkit_config); export any other "
            "PyTorch model with torch.jit.save(torch.jit.script(model), 'model.pt')",
        )
    info = dataset_info.as_dict() if hasattr(dataset_info, "as_dict") else dataset_info
    if info is not None and not isinstance(info, dict):
        raise InvalidParameterError("dataset_info", type(info).__name__,
                                    "a DatasetInfo, a dict or None")
    if info and (tuple(info.get("shape", ())) != tuple(cfg["input_shape"])
                 or info.get("n_classes") != cfg["n_classes"]):
        raise InvalidParameterError(
            "dataset_info", f"shape {info.get('shape')}, {info.get('n_classes')} classes",
            f"the model's input shape {tuple(cfg['input_shape'])} and {cfg['n_classes']} classes",
        )
    try:
        json.dumps(extra)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError("extra", type(extra).__name__,
                                    f"JSON-serializable data ({exc})") from exc
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InvalidParameterError("out_dir", str(out), "a folder (this path is a file)")
    out.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "advkit_zoo": cfg["name"]})
    os.replace(tmp, out / WEIGHTS_NAME)
    from advkit import __version__

    config = {
        "format": FORMAT, "format_version": 1, "zoo": cfg["name"],
        "input_shape": list(cfg["input_shape"]), "n_classes": cfg["n_classes"],
        "kwargs": cfg["kwargs"], "dataset": info, "advkit_version": __version__,
        "torch_version": torch.__version__, "weights_file": WEIGHTS_NAME,
        "weights_sha256": sha256_file(out / WEIGHTS_NAME), "extra": extra,
    }
    tmp = out / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / CONFIG_NAME)
    return out


def load_model(path, *, trust_pickle: bool = False, allow_dangerous: bool = False,
               search_paths: Iterable[str | Path] = ()) -> LoadedModel:
    """Load a model file or folder without running code from it (see the module docstring).

    ``trust_pickle=True`` allows pickle-based files (and skops types skops does not trust by
    default), with an ``AdvkitWarning``; pass it only for files you made or whose source you
    trust completely. ``allow_dangerous=True`` (only with ``trust_pickle``) also allows a file
    whose scan found dangerous imports or could not finish. A trusted pickle of a user-defined
    class finds that class's code in the file's folder, then in ``search_paths``.
    """
    if allow_dangerous and not trust_pickle:
        raise InvalidParameterError("allow_dangerous", True, "only together with trust_pickle=True")
    p = Path(path)
    if not p.exists():
        raise InvalidParameterError("path", str(p), "an existing model file or folder")
    if p.is_dir():
        cfg_path = p / CONFIG_NAME
        if not cfg_path.is_file():
            raise InputContractError(
                f"{p} is a folder without {CONFIG_NAME}; expected a model folder written by "
                f"advkit's save_model or `advkit train` ({WEIGHTS_NAME} + {CONFIG_NAME})"
            )
        config = _read_config(cfg_path)
        res = scan_model_file(p) if (p / WEIGHTS_NAME).is_file() else None
        if res is not None and res.verdict != "safe":  # the verdict advkit scan gives it
            what = "; ".join([f"{g} ({r})" for g, r in res.dangerous.items()] + list(res.issues))
            error = UnsafeModelError if res.verdict == "dangerous" else InputContractError
            raise error(f"{p} is not a valid advkit model folder ({res.verdict}): {what}; "
                        "re-save the model with save_model or `advkit convert`")
        return _load_safetensors(p / WEIGHTS_NAME, config, cfg_path)
    res = scan_model_file(p)
    if res.format == "unknown":
        why = "; ".join(res.issues) or "unrecognized content"
        raise InputContractError(
            f"{p} is not a model format advkit can read ({why}); expected an advkit model folder, "
            ".safetensors with config.json, a TorchScript or torch.export archive, a skops file, "
            "an XGBoost JSON or LightGBM model, or a pickle-based file (torch.save, joblib, pickle)"
        )
    if res.format == "safetensors":
        cfg_path = p.parent / CONFIG_NAME
        if not cfg_path.is_file():
            raise InputContractError(
                f"{p} holds weights only and no {CONFIG_NAME} beside it says the architecture; "
                "put the config.json written by save_model next to it, or load its folder"
            )
        return _load_safetensors(p, _read_config(cfg_path), cfg_path)
    if res.format in BOOSTER_FORMATS:
        est = load_booster(p, res.format)
        return LoadedModel(res.format, est, {"format": res.format, "objective": est.objective},
                           res.sha256, p, res)
    if res.format == "onnx":  # never behind trust flags: refused content cannot be loaded
        from advkit.targets.onnx import OnnxFile

        onnx_file = OnnxFile.load(p)
        return LoadedModel("onnx", onnx_file, {"format": "onnx", **onnx_file.config()},
                           res.sha256, p, res)
    gate(res, trust_pickle=trust_pickle, allow_dangerous=allow_dangerous)
    if res.format == "torch-export":
        from advkit.models.exported import load_exported

        return LoadedModel("torch-export", load_exported(p), {"format": "torch-export"},
                           res.sha256, p, res)
    if res.format == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*jit.load.*deprecated")
                model = torch.jit.load(str(p), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - any failure means a broken archive
            raise InputContractError(f"{p} is not a loadable TorchScript archive: {exc}") from exc
        return LoadedModel("torchscript", model.eval(), {"format": "torchscript"}, res.sha256, p,
                           res)
    if res.format == "skops":
        import skops.io as sio

        untrusted = list(res.globals)
        try:
            est = sio.load(p, trusted=untrusted or None)
        except Exception as exc:  # noqa: BLE001
            raise InputContractError(f"{p} is not a loadable skops file: {exc}") from exc
        return _wrap(est, p, res)
    return _wrap(unpickle(p, res, search_paths=search_paths), p, res)


def target_for(model, ds, *, batch_size: int = 256):
    """A Target for a loaded model (``nn.Module``, TorchScript, an exported program, a scikit-learn
    estimator or a tree ensemble, a checked ONNX file, or a :class:`LoadedModel`) with the input
    contract of ``ds`` (a Dataset or an InputContract)."""
    from advkit.targets.sklearn import SklearnTarget
    from advkit.targets.torch import TorchTarget

    model = model.model if isinstance(model, LoadedModel) else model
    contract = ds.contract() if hasattr(ds, "contract") and callable(ds.contract) else ds
    if isinstance(model, torch.export.ExportedProgram):
        from advkit.models.exported import wrap_program

        model = wrap_program(model)
    if getattr(model, "is_onnx_file", False):
        return model.target(contract, batch_size=batch_size)
    if isinstance(model, nn.Module):
        return TorchTarget(contract=contract, model=model, batch_size=batch_size)
    if hasattr(model, "predict"):
        return SklearnTarget(contract=contract, estimator=model, batch_size=batch_size)
    raise InvalidParameterError("model", type(model).__name__,
                                "a torch.nn.Module or a fitted estimator")


def _read_config(cfg_path: Path) -> dict:
    try:
        if cfg_path.stat().st_size > _MAX_CONFIG_BYTES:
            raise InputContractError(f"{cfg_path} is larger than 1 MiB; not an advkit model config")
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputContractError(f"{cfg_path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise InputContractError(f"{cfg_path} must hold a JSON object, got {type(config).__name__}")
    for key, kind in (("zoo", str), ("input_shape", list), ("n_classes", int), ("kwargs", dict)):
        if not isinstance(config.get(key), kind):
            raise InputContractError(
                f"{cfg_path}: the key {key!r} is missing or not a {kind.__name__}; a config "
                "written by save_model has zoo, input_shape, n_classes and kwargs"
            )
    if config["zoo"] not in ZOO_NAMES:
        raise InputContractError(
            f"{cfg_path} names the zoo model {config['zoo']!r}, which this advkit does not have "
            f"(it has {', '.join(ZOO_NAMES)}); the file was written by another version or edited"
        )
    return config


def _build(config: dict, cfg_path: Path) -> nn.Module:
    try:
        return build(config["zoo"], input_shape=tuple(config["input_shape"]),
                     n_classes=config["n_classes"], **config["kwargs"])
    except InvalidParameterError as exc:
        raise InputContractError(f"{cfg_path} describes a model that cannot be built: {exc}") \
            from exc


def _load_safetensors(weights: Path, config: dict, cfg_path: Path) -> LoadedModel:
    if not weights.is_file():
        raise InputContractError(f"the weights file {weights} is missing (config: {cfg_path})")
    sha = sha256_file(weights)
    recorded = config.get("weights_sha256")
    if recorded and recorded != sha:
        raise InputContractError(
            f"{weights} does not match the SHA-256 recorded in {cfg_path} ({recorded[:12]}..., "
            f"file {sha[:12]}...): it was changed after saving, or the two come from different "
            "saves; re-save with save_model (or delete weights_sha256 from the config if the "
            "change is yours)"
        )
    with torch.device("meta"):  # the architecture only: nothing is allocated until shapes match
        model = _build(config, cfg_path)
    load_weights_strict(model, weights, what=f"the {config['zoo']!r} model its config describes",
                        fix="Re-save it with save_model.")
    return LoadedModel("torch", model.eval(), config, sha, weights)


def _wrap(obj, p: Path, res: ScanResult) -> LoadedModel:
    """A LoadedModel for what a trusted file held: a module, a state dict (with a config beside the
    file), or a scikit-learn estimator."""
    if isinstance(obj, nn.Module):
        return LoadedModel("torch", obj.eval(), {"format": res.format}, res.sha256, p, res)
    if isinstance(obj, dict):
        sd = next((obj[k] for k in _STATE_DICT_KEYS if isinstance(obj.get(k), dict)), obj)
        if sd and all(isinstance(v, torch.Tensor) for v in sd.values()):
            cfg_path = p.parent / CONFIG_NAME
            if not cfg_path.is_file():
                raise InputContractError(
                    f"{p} holds a state dict ({len(sd)} tensors) but no {CONFIG_NAME} beside "
                    "it says which architecture it belongs to; rebuild the model in code and call "
                    "model.load_state_dict, or save it with advkit's save_model"
                )
            config = _read_config(cfg_path)
            model = _build(config, cfg_path)
            try:
                model.load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                raise InputContractError(f"{p} does not fit the model in {cfg_path}: {exc}") \
                    from exc
            config = {**config, "format": res.format}
            return LoadedModel("torch", model.eval(), config, res.sha256, p, res)
    if hasattr(obj, "predict") and not isinstance(obj, type):
        return LoadedModel("sklearn", obj, {"format": res.format}, res.sha256, p, res)
    raise InputContractError(f"{p} holds a {type(obj).__name__}, not a model")
