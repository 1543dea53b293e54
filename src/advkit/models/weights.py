"""Load a safetensors file into a model strictly: every key present, none extra, every shape equal.

Shared by the two routes that pair an architecture with a weights file: an advkit model folder
(the zoo architecture its ``config.json`` names) and a user's own class named in an audit spec
(``model: {class: "pkg.module:Net", weights: w.safetensors}``). safetensors holds plain tensors
and no code, so reading it runs nothing from the file.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from advkit.errors import InputContractError

_SHOWN = 5  # keys quoted per kind of mismatch


def weight_mismatch(expected: dict[str, tuple], found: dict[str, tuple]) -> str | None:
    """What differs between the model's keys and shapes (``expected``) and the file's (``found``):
    the missing, unexpected and wrong-shape keys, or None when they match."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or wrong):
        return None
    parts = [f"missing {missing[:_SHOWN]}" + (f" (+{len(missing) - _SHOWN} more)"
                                              if len(missing) > _SHOWN else "") if missing else "",
             f"unexpected {unexpected[:_SHOWN]}" + (f" (+{len(unexpected) - _SHOWN} more)"
                                                    if len(unexpected) > _SHOWN else "")
             if unexpected else "",
             "wrong shapes " + ", ".join(f"{k}: file {found[k]} vs model {expected[k]}"
                                         for k in wrong[:_SHOWN]) if wrong else ""]
    return "; ".join(p for p in parts if p)


def load_weights_strict(model: nn.Module, weights: Path, *, what: str, fix: str) -> nn.Module:
    """Load the safetensors file ``weights`` into ``model`` (which may live on the meta device),
    checking keys and shapes first; return the model. ``what`` names the model in the error
    (``"the 'mlp' model its config describes"``), ``fix`` says how to repair a mismatch.

    Raises InputContractError when the file is missing, is not valid safetensors, or does not fit
    the model (listing the missing, unexpected and wrong-shape keys)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not Path(weights).is_file():
        raise InputContractError(f"the weights file {weights} is missing; {fix}")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        problem = weight_mismatch(expected, found)
        tensors = None if problem else load_file(str(weights))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise InputContractError(
            f"{weights} is not a valid safetensors file ({exc}); write it with "
            "safetensors.torch.save_file(model.state_dict(), path)") from exc
    if problem:
        raise InputContractError(f"the weights in {weights} do not fit {what}: {problem}. {fix}")
    sd = model.state_dict()
    tensors = {k: v.to(sd[k].dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model
