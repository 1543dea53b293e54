"""Wrap a loaded model (torch module, TorchScript, scikit-learn estimator) as a Target."""

from __future__ import annotations

from torch import nn

from advkit.errors import InvalidParameterError
from advkit.targets.base import InputContract, Target
from advkit.targets.sklearn import SklearnTarget
from advkit.targets.torch import TorchTarget


def target_for(model, data, *, batch_size: int = 256) -> Target:
    """A Target for ``model`` with the contract of ``data`` (a Dataset or an InputContract)."""
    contract = data if isinstance(data, InputContract) else data.contract()
    if isinstance(model, nn.Module):
        return TorchTarget(contract, batch_size=batch_size, model=model.eval())
    if hasattr(model, "predict") and hasattr(model, "classes_"):
        return SklearnTarget(contract, batch_size=batch_size, estimator=model)
    raise InvalidParameterError("model", type(model).__name__,
                                "a torch.nn.Module, a TorchScript module or a fitted scikit-learn classifier")
