"""A PyTorch architecture from the user's own code, with weights from a safetensors file.

An audit spec can name its model as ``model: {class: "pkg.module:Net", kwargs: {...},
weights: w.safetensors}``: advkit imports ``pkg.module`` with the spec's own folder first on
``sys.path`` (restored right after the import), builds ``Net(**kwargs)`` and loads the weights
strictly (every key present, none extra, every shape equal).

**This runs the user's own code**: the module named in the spec, found first in the spec's folder.
That is the user's choice, made by writing the spec, exactly as running their own training script
would be. It is unlike a model *file*, which is untrusted input and never runs code by default: the
weights come from safetensors, which holds plain tensors and nothing else.

The model's identity (the ``model_sha256`` of the report and the key of stored results) is the
SHA-256 of the weights file combined with the class path and the keyword arguments, so changing
any of the three starts a fresh audit.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from torch import nn

from advkit.errors import AuditSpecError, short

KIND = "torch (user class)"
CLASS_PATTERN = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_FORM = "'package.module:ClassName' (e.g. 'my_net:Net', for a class Net in my_net.py)"


@contextlib.contextmanager
def sys_path_prepended(folders: Iterable[str | Path]) -> Iterator[None]:
    """Put ``folders`` first on ``sys.path`` (in order) for the duration of the block, then
    restore ``sys.path`` exactly as it was. Modules imported meanwhile stay imported."""
    saved = list(sys.path)
    sys.path[:0] = [str(Path(f).resolve()) for f in folders]
    try:
        yield
    finally:
        sys.path[:] = saved


def _forget_shadowed(module: str, code_dir: Path) -> None:
    """When ``module``'s top-level package was imported earlier from elsewhere but the folder
    ``code_dir`` holds its own copy, drop the cached one so that the import reads ``code_dir``'s
    (two specs in two folders may each have a ``net.py``)."""
    top = module.partition(".")[0]
    here = code_dir / f"{top}.py", code_dir / top / "__init__.py"
    cached = sys.modules.get(top)
    if cached is None or not any(p.is_file() for p in here):
        return
    where = getattr(cached, "__file__", None)
    if where is not None and Path(where).resolve() in {p.resolve() for p in here}:
        return
    if top in sys.stdlib_module_names or where is None or any(
            part in ("site-packages", "dist-packages") for part in Path(where).parts):
        raise AuditSpecError(
            f"model.class: {code_dir} holds a module {top!r}, which shadows the installed module "
            f"of that name ({where or 'built in'}); rename your file (e.g. my_{top}.py) and the "
            "class path with it")
    for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
        del sys.modules[name]


def source_problem(zoo, path, class_path, weights) -> str | None:
    """What is wrong with a spec's model section as a whole (one source; class with weights)."""
    if sum(v is not None for v in (zoo, path, class_path)) != 1:
        return ("give exactly one of 'zoo' (train a zoo model), 'path' (a saved model), "
                "'class' (your own torch class, with 'weights': a safetensors file) or 'url' (a "
                "model behind a prediction API)")
    if (class_path is None) != (weights is None):
        return ("'class' and 'weights' go together: class: 'my_net:Net' names your nn.Module "
                "(my_net.py beside the spec), weights: w.safetensors its state dict "
                "(safetensors.torch.save_file(model.state_dict(), 'w.safetensors'))")
    if class_path is not None and not CLASS_PATTERN.match(class_path):
        return f"class {class_path!r} is not of the form {_FORM}"
    return None


def import_user_class(class_path: str, code_dir: str | Path | None = None) -> type:
    """The class ``class_path`` (``"pkg.module:Class"``) imported with ``code_dir`` (default: the
    current folder) first on ``sys.path``. AuditSpecError, naming the problem and the fix, when the
    path is malformed, the module cannot be imported, it lacks the attribute, or the attribute is
    not a ``torch.nn.Module`` subclass."""
    if not isinstance(class_path, str) or not CLASS_PATTERN.match(class_path):
        raise AuditSpecError(f"model.class {short(class_path)} is not of the form {_FORM}")
    folder = Path(code_dir if code_dir is not None else ".").resolve()
    module_name, _, attr = class_path.partition(":")
    with sys_path_prepended([folder]):
        _forget_shadowed(module_name, folder)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                raise AuditSpecError(
                    f"model.class {class_path!r}: no module {exc.name!r} in {folder} (the spec's "
                    f"folder) nor among installed packages; put {exc.name.replace('.', '/')}.py "
                    "beside the spec, or fix the module name") from None
            raise AuditSpecError(
                f"model.class {class_path!r}: importing {module_name!r} failed because it imports "
                f"{exc.name!r}, which is not installed; install it into advkit's environment"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
            raise AuditSpecError(
                f"model.class {class_path!r}: importing {module_name!r} raised "
                f"{type(exc).__name__}: {short(str(exc))}; fix that module") from exc
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            found = sorted(n for n, v in vars(module).items()
                           if isinstance(v, type) and issubclass(v, nn.Module)
                           and getattr(v, "__module__", None) == module.__name__)
            raise AuditSpecError(
                f"model.class {class_path!r}: {module_name!r} ({getattr(module, '__file__', '?')})"
                f" has no attribute {attr!r}; its nn.Module classes: {', '.join(found) or 'none'}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise AuditSpecError(
            f"model.class {class_path!r} is a {type(obj).__name__}, not a torch.nn.Module "
            "subclass; name the model's class (the one whose forward returns the logits)")
    return obj


def build_user_model(cls: type, kwargs: dict, class_path: str) -> nn.Module:
    """``cls(**kwargs)``; AuditSpecError naming the constructor's signature on bad arguments."""
    try:
        return cls(**kwargs)
    except TypeError as exc:
        try:
            sig = str(inspect.signature(cls))
        except (TypeError, ValueError):
            sig = "(...)"
        raise AuditSpecError(
            f"model.kwargs {short(kwargs)} do not fit {class_path}{sig}: {exc}; fix model.kwargs "
            "to match the constructor") from exc
    except Exception as exc:  # noqa: BLE001 - the user's constructor failed
        raise AuditSpecError(
            f"building {class_path}(**{short(kwargs)}) raised {type(exc).__name__}: "
            f"{short(str(exc))}; fix model.kwargs or the class") from exc


def model_identity(weights_sha256: str, class_path: str, kwargs: dict) -> str:
    """The model's SHA-256: that of the weights combined with the class path and the kwargs."""
    blob = json.dumps({"weights_sha256": weights_sha256, "class": class_path, "kwargs": kwargs},
                      sort_keys=True, default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_user_model(class_path: str, kwargs: dict | None, weights: str | Path, *,
                    code_dir: str | Path | None = None):
    """Import ``class_path`` from ``code_dir`` (see :func:`import_user_class`), build it with
    ``kwargs`` and load ``weights`` (safetensors) strictly; return a :class:`LoadedModel` of kind
    ``"torch (user class)"`` in eval mode whose ``config`` describes it for the report.

    Runs the user's own code (the module and the constructor). Raises AuditSpecError for a class
    that cannot be found or built, InputContractError for weights that are missing, not
    safetensors, or do not fit the model."""
    from advkit.models.io import LoadedModel
    from advkit.models.scan import scan_model_file
    from advkit.models.weights import load_weights_strict
    from advkit.paths import is_file

    kwargs = dict(kwargs or {})
    weights = Path(weights)
    if not is_file(weights, "model.weights"):
        raise AuditSpecError(
            f"model.weights {str(weights)!r} is not a file; write the weights with "
            "safetensors.torch.save_file(model.state_dict(), 'w.safetensors') and name that file "
            "(relative to the spec's folder)")
    res = scan_model_file(weights)
    if res.format != "safetensors" or res.verdict != "safe":
        why = "; ".join([f"{g} ({r})" for g, r in res.dangerous.items()] + list(res.issues))
        raise AuditSpecError(
            f"model.weights {str(weights)!r} is not a safetensors file (its content is "
            f"{res.format}{': ' + why if why else ''}); save the state dict with "
            "safetensors.torch.save_file(model.state_dict(), 'w.safetensors')")
    cls = import_user_class(class_path, code_dir)
    model = build_user_model(cls, kwargs, class_path)
    load_weights_strict(
        model, weights, what=f"{class_path}(**{short(kwargs, 120)})",
        fix="Save the weights of this very class with these kwargs: "
            "safetensors.torch.save_file(model.state_dict(), 'w.safetensors').")
    sha = res.sha256
    info = {"class": class_path, "kwargs": kwargs, "weights": str(weights),
            "weights_sha256": sha,
            "code_dir": str(Path(code_dir if code_dir is not None else ".").resolve())}
    return LoadedModel(KIND, model.eval(), info, model_identity(sha, class_path, kwargs), weights,
                       res)
