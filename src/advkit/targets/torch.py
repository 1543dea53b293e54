"""``TorchTarget``: a PyTorch ``nn.Module`` behind the Target interface."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from advkit.errors import (
    AdvkitError,
    AdvkitWarning,
    InputContractError,
    InvalidParameterError,
    ModelBehaviorError,
    ModelInputShapeError,
    image_layouts,
)
from advkit.targets.base import (
    Capabilities,
    Target,
    check_scores,
    looks_like_probabilities,
    no_gradient_path,
)

# failures of the machine, not of the model: never reported as the model misbehaving
_NOT_THE_MODEL = (AdvkitError, MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))

_MODE_SENSITIVE = (
    nn.modules.batchnorm._BatchNorm,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.AlphaDropout,
)


def module_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


# words of torch's shape errors: "Expected 3D (unbatched) or 4D (batched) input to conv2d", "mat1
# and mat2 shapes cannot be multiplied", "expected input[...] to have 1 channels", "size mismatch"
_SHAPE_ERROR = re.compile(r"shape|size|dimension|\b\dD\b|channels|mat1|expected input", re.I)


def error_cause(exc: BaseException) -> str:
    """The error itself, on one line: for a TorchScript error, its last line (the interpreter's
    "Traceback of TorchScript" of serialized code before it says nothing to the user)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if len(lines) > 1 and any("Traceback" in ln for ln in lines):
        lines = lines[-1:]
    text = " ".join(lines).removeprefix(f"{type(exc).__name__}: ") or type(exc).__name__
    return text if len(text) <= 300 else f"{text[:280]}... ({len(text)} characters)"


def reshape_fix(shape: tuple[int, ...]) -> str:
    """How to give a model the layout it may expect, for data samples of ``shape``."""
    d = math.prod(shape)
    if len(shape) == 1:
        images = image_layouts(d)
        if images:
            layout = " or ".join(f"(n, {c}, {h}, {w})" for c, h, w in images)
            return (f"for a model that takes images, store the data's x as {layout} instead of "
                    f"flat (n, {d}) features (numpy: x.reshape(-1, "
                    f"{', '.join(map(str, images[0]))})); a model for flat features must take "
                    f"(n, {d})")
        return (f"for a model that takes images, store the data's x as (n, channels, height, "
                f"width); a model for flat features must take (n, {d})")
    dims = ", ".join(map(str, shape))
    if len(shape) == 2:
        return (f"for a model that takes one-channel images, add the channel axis: store the "
                f"data's x as (n, 1, {dims}) (numpy: x[:, None]); for one that takes flat "
                f"features, as (n, {d}) (numpy: x.reshape(len(x), -1))")
    return (f"for a model that takes flat feature vectors, store the data's x as (n, {d}) "
            "(numpy: x.reshape(len(x), -1)); for one that takes other images (size, channels), "
            f"convert the data to its layout: the data gives (n, {dims})")


def forward_error(name: str, exc: BaseException, batch: tuple[int, ...], contract
                  ) -> ModelBehaviorError:
    """The typed error for a model whose forward raised ``exc`` on a batch of shape ``batch``:
    ModelInputShapeError naming the shape and the reshape when it reads like a shape mismatch."""
    cause = error_cause(exc)
    what = f"the model {name} raised {type(exc).__name__} on inputs of shape {batch}: {cause}"
    if _SHAPE_ERROR.search(cause):
        return ModelInputShapeError(
            f"{what}; the model does not take samples of the data's shape {contract.shape}. "
            f"Fix: {reshape_fix(contract.shape)}")
    return ModelBehaviorError(
        f"{what}; fix its forward, or check that it takes inputs of shape "
        f"(N, {', '.join(map(str, contract.shape))}) within {contract.bounds}")


@dataclass(eq=False)
class TorchTarget(Target):
    """A PyTorch classifier. ``output`` says what its forward returns: ``"logits"`` (default) or
    ``"probabilities"`` (a final softmax; gradient attacks then use log-probabilities).

    The model stays on its device and in its mode: inputs are moved to the model's device and the
    scores moved back; a model left in training mode is evaluated in eval mode for each call (with
    a warning at construction) and put back as it was.
    """

    model: nn.Module = None
    output: str = "logits"
    _output_checked: bool = field(default=False, init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.model, nn.Module):
            raise InvalidParameterError("model", type(self.model).__name__, "a torch.nn.Module")
        if self.output not in ("logits", "probabilities"):
            raise InvalidParameterError("output", self.output, "'logits' or 'probabilities'")
        if self.model.training:
            sensitive = sorted(
                {type(m).__name__ for m in self.model.modules() if isinstance(m, _MODE_SENSITIVE)}
            )
            what = (
                f" (it holds {', '.join(sensitive)}, which behave differently in training)"
                if sensitive
                else ""
            )
            warnings.warn(
                f"the model is in training mode{what}; advkit evaluates it in eval mode and "
                "restores the mode after each call. Call model.eval() before wrapping it to silence this.",
                AdvkitWarning,
                stacklevel=3,
            )

    @property
    def capabilities(self) -> Capabilities:
        # with output="probabilities" the logits are log-probabilities (valid logits up to a constant)
        return Capabilities(gradients=True, logits=True, probabilities=True, labels=True)

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        dev = self.device
        xin = x if x.device == dev else x.to(dev, non_blocking=True)
        if xin.dtype != self.contract.dtype:
            xin = xin.to(self.contract.dtype)
        was_training = self.model.training
        if was_training:
            self.model.eval()
        grad = torch.is_grad_enabled() and x.requires_grad
        try:
            with torch.set_grad_enabled(grad):
                out = self.model(xin)
        except _NOT_THE_MODEL:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure inside the user's forward
            raise forward_error(self.model_name, exc, tuple(xin.shape), self.contract) from exc
        finally:
            if was_training:
                self.model.train(True)
        check_scores(out, x.shape[0], self.contract.n_classes, f"model {self.model_name}", x)
        if grad and not out.requires_grad:
            raise no_gradient_path(self.model_name)
        if not self._output_checked:
            self._check_output(out, x.shape[0])
        if self.output == "probabilities":
            out = torch.log(out.clamp_min(1e-12))
        return out if out.device == x.device else out.to(x.device)

    @property
    def model_name(self) -> str:
        """The model's class name, as error messages name it (a TorchScript model's original
        class name, not RecursiveScriptModule)."""
        original = getattr(self.model, "original_name", None)
        return original if isinstance(original, str) and original else type(self.model).__name__

    def _check_output(self, out: torch.Tensor, n: int) -> None:
        if self.output == "logits" and n > 1 and looks_like_probabilities(out):
            raise InputContractError(
                "the model returns probabilities (rows are non-negative and sum to 1) where logits are "
                "expected; gradients through a softmax vanish and make attacks look weak. Fix: remove the "
                "final softmax, or wrap it with TorchTarget(..., output='probabilities')"
            )
        self._output_checked = True
