"""Whether a scanned model file may be loaded, the refusal that says why not, and the unpickling
of a file the user trusts (shared by :func:`advkit.models.io.load_model` and ``advkit convert``).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch

from advkit.errors import AdvkitError, AdvkitWarning, InputContractError, UnsafeModelError
from advkit.models.scan import ScanResult
from advkit.models.user_class import sys_path_prepended


def gate(res: ScanResult, *, trust_pickle: bool, allow_dangerous: bool) -> None:
    """Refuse (UnsafeModelError) or allow with a warning, according to the scan and the flags."""
    dangerous = res.verdict == "dangerous"
    needs_trust = res.verdict == "requires-trust"
    refused = dangerous and not (trust_pickle and allow_dangerous)
    if refused or (needs_trust and not trust_pickle):
        raise UnsafeModelError(refusal(res, trusted=trust_pickle))
    if needs_trust or dangerous:
        what = "; ".join(f"{g} ({r})" for g, r in res.dangerous.items()) or "none found"
        found = "Refused code" if res.format == "torchscript" else "Dangerous imports"
        warnings.warn(
            f"loading {res.path} ({res.format}) because trust_pickle=True was passed explicitly"
            + (" with allow_dangerous=True" if dangerous else "") + ": " + _RISK[_risk(res)]
            + f". {found}: {what}. Imports the scan does not recognize: "
            + (", ".join(res.unknown) or "none") + ".",
            AdvkitWarning, stacklevel=3,
        )


_RISK = {
    "pickle": "loading a pickle runs arbitrary code chosen by whoever made the file",
    "skops": "skops builds these types while loading, and building an arbitrary type can run its "
             "code",
    "torchscript": "a TorchScript archive is a program, whose code runs while it loads and when "
                   "it is called",
    "torch-export": "torch.export.load unpickles an archive's pickled parts, loads its native "
                    "libraries and evaluates expressions from it; its graph runs when called",
}


def _risk(res: ScanResult) -> str:
    return res.format if res.format in _RISK else "pickle"


def refusal(res: ScanResult, *, trusted: bool) -> str:
    """The UnsafeModelError message: what the file is, the risk, what the scan found, the fix."""
    kind = {"skops": "a skops file with types skops does not trust by default",
            "torchscript": "a TorchScript archive",
            "torch-export": "a torch.export archive (.pt2)"}.get(res.format,
                                                         f"a pickle-based file ({res.format})")
    head = (f"refusing to load {res.path}: it is {kind}, and {_RISK[_risk(res)]} (model files "
            "are untrusted input). ")
    if res.format == "skops" and not res.dangerous:
        found = f"Untrusted types: {', '.join(res.globals)}. "
    elif res.dangerous:
        what = {"torchscript": "Its code uses what the allow-list of inert operators refuses: ",
                "torch-export": "It holds what advkit refuses to load: "}.get(
            res.format, "The scan found dangerous imports: ")
        found = what + "; ".join(f"{g} ({r})" for g, r in res.dangerous.items()) + ". "
    elif not res.complete:
        found = (f"The scan could not read the whole file ({'; '.join(res.issues)}), so what "
                 "loading it would run is unknown. ")
    else:
        other = f" (unrecognized: {', '.join(res.unknown)})" if res.unknown else ""
        found = ("The scan found no known-dangerous imports, but the format can still execute "
                 f"code the scan does not recognize{other}. ")
    if res.verdict == "dangerous":
        fix = ("A model needs only numeric operators and plain tensors; these suggest a malicious "
               "payload (or a model using an operator the allow-list lacks)"
               if res.format in ("torchscript", "torch-export") else
               "Such imports have no place in a model file and suggest a malicious payload")
        fix += (("; trust_pickle=True alone does not allow it" if trusted else "")
                + ". Only if you are certain (you wrote this file and know why it uses them), "
                "pass trust_pickle=True and allow_dangerous=True (on the command line: "
                "--trust-pickle --allow-dangerous).")
    elif res.format == "skops":
        fix = ("Check that these are types you expect in this model; if they are and you trust "
               "the file's source, pass trust_pickle=True.")
    else:
        fix = ("If you made this file or trust its source completely, pass trust_pickle=True "
               "(--trust-pickle on the command line).")
    if res.format == "skops":
        return head + found + fix
    if res.format == "torch-export":
        return (head + found + fix + " To avoid this, export a model holding plain tensors only "
                "(no tensor subclasses, custom objects or AOTInductor packages), or save its "
                "weights with safetensors and audit it as model: {class: 'module:Class', "
                "weights: w.safetensors}.")
    if res.format in ("torch", "torchscript"):
        convert = ("rebuild the architecture with advkit.models.build(...), load the state_dict "
                   "into it and call advkit.models.save_model(model, out_dir) (safetensors + "
                   "config.json, the format `advkit train` writes)"
                   + (", or export it with torch.jit.save(torch.jit.script(model), path)"
                      if res.format == "torch" else ""))
    else:
        convert = "re-save the estimator with skops: skops.io.dump(estimator, 'model.skops')"
    return (head + found + fix + " To convert it to a safe format, load it once in a sandbox "
            "you trust and " + convert + "; `advkit convert FILE OUT --trust-pickle` does this "
            "for advkit zoo models and scikit-learn estimators.")


def unpickle(p: Path, res: ScanResult, *, search_paths: Iterable[str | Path] = ()) -> object:
    """Load the pickle-based file ``p`` (scanned as ``res``) with its own loader. Only after
    :func:`gate` allowed it: this runs the file's pickle code.

    A pickled model of a user-defined class needs that class's code: the file's own folder, then
    ``search_paths`` (the audit passes the spec's folder), then the current folder are put first
    on ``sys.path`` while it loads (restored afterwards). A class that still cannot be found is an
    InputContractError that names it and says how to proceed."""
    search_paths = [*search_paths, Path.cwd()]
    with sys_path_prepended([p.parent, *search_paths]):
        try:
            return _load(p, res)
        except (AdvkitError, MemoryError, KeyboardInterrupt):
            raise
        except ModuleNotFoundError as exc:
            raise InputContractError(_missing_code(p, f"the module {exc.name!r}", search_paths)) \
                from exc
        except AttributeError as exc:
            if "Can't get attribute" not in str(exc):
                raise InputContractError(f"{p} could not be unpickled: {exc}") from exc
            what = str(exc).replace("Can't get attribute ", "the class ", 1)
            raise InputContractError(_missing_code(p, what, search_paths)) from exc
        except Exception as exc:  # noqa: BLE001
            what = ("is not a loadable torch.save file" if res.format == "torch"
                    else "could not be unpickled")
            raise InputContractError(f"{p} {what}: {exc}") from exc


def _missing_code(p: Path, what: str, search_paths: Iterable[str | Path]) -> str:
    where = ", ".join(str(Path(f).resolve()) for f in [p.parent, *search_paths])
    return (f"{p} holds an object whose code advkit cannot import: {what} was not found (looked "
            f"in {where} and the installed packages). A pickled model needs the code of its "
            "class: put that code beside the model file (or the spec), run advkit from the "
            "folder holding it, or add that folder to PYTHONPATH. Recommended instead: save the "
            "weights with "
            "safetensors.torch.save_file(model.state_dict(), 'w.safetensors') and audit with "
            "model: {class: 'module:Class', kwargs: {...}, weights: w.safetensors}, which "
            "needs no pickle at all.")


def _load(p: Path, res: ScanResult) -> object:
    if res.format == "torch":
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # it holds more than tensors: needs the full unpickler
            pass
        return torch.load(p, map_location="cpu", weights_only=False)  # safe: user passed trust_pickle
    if res.format == "joblib":
        import joblib

        return joblib.load(p)  # safe: user passed trust_pickle
    with open(p, "rb") as f:
        return pickle.load(f)  # safe: user passed trust_pickle
