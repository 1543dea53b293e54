"""The base of input transformations: how a transform declares its gradient and randomness."""

from __future__ import annotations

from typing import ClassVar

import torch


class InputTransform:
    """An input transformation placed in front of a model.

    ``gradient`` is ``"exact"`` when autograd through ``apply`` gives the true gradient, or
    ``"bpda"`` when it does not (rounding, quantisation, clipping): an adaptive attack then uses
    Backward Pass Differentiable Approximation with the identity (Athalye, Carlini & Wagner 2018,
    "Obfuscated Gradients Give a False Sense of Security", ICML). ``randomized`` transforms draw
    fresh randomness on each call from the generator they are given; adaptive attacks average over
    draws (Expectation over Transformation, Athalye, Engstrom, Ilyas & Kwok 2018).
    """

    gradient: ClassVar[str] = "exact"
    randomized: ClassVar[bool] = False

    def apply(self, x: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0),
              generator: torch.Generator | None = None) -> torch.Tensor:
        """The transformed batch, same shape, dtype and device, within ``bounds``."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, bounds: tuple[float, float] = (0.0, 1.0),
                 generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(x, bounds, generator)

    @property
    def label(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{getattr(self, 'name', type(self).__name__)}({params})"


def to_unit(x: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    lo, hi = bounds
    return (x - lo) / (hi - lo)


def from_unit(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    lo, hi = bounds
    return u * (hi - lo) + lo
