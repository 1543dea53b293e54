"""Attack goals: what counts as success, and which way the loss goes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advkit.errors import InvalidParameterError


@dataclass(frozen=True)
class Untargeted:
    """Success: the predicted class differs from the true class."""

    targeted = False

    def labels_for(self, y: torch.Tensor) -> torch.Tensor:
        """The labels the loss is computed against (true labels, ascended)."""
        return y

    def success(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pred != y

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(y, dtype=torch.bool)


@dataclass(frozen=True)
class Targeted:
    """Success: the predicted class equals ``target`` (one class, or one per sample)."""

    target: int | torch.Tensor
    targeted = True

    def __post_init__(self):
        t = self.target
        if isinstance(t, torch.Tensor):
            if t.dtype not in (torch.int64, torch.int32) or (t < 0).any():
                raise InvalidParameterError("target", t, "non-negative integer class indices")
        elif not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise InvalidParameterError("target", t, "a non-negative integer class index")

    def labels_for(self, y: torch.Tensor) -> torch.Tensor:
        if isinstance(self.target, torch.Tensor):
            t = self.target.to(y.device)
            if t.dim() == 0:
                return t.expand_as(y).clone()
            if t.shape != y.shape:
                raise InvalidParameterError("target", tuple(t.shape), f"shape {tuple(y.shape)}")
            return t
        return torch.full_like(y, self.target)

    def success(self, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pred == self.labels_for(y)

    def eligible(self, y: torch.Tensor) -> torch.Tensor:
        """Points whose true class is not the target (DESIGN §4)."""
        return y != self.labels_for(y)
