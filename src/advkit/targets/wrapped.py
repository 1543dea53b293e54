"""Defended targets: a target behind input transformations, or with hardened outputs.

``TransformedTarget`` applies input transformations (``advkit.defenses.transforms``) before the
wrapped target. Gradient attacks see it as a target with gradients; how the gradient passes each
transform depends on ``mode``:

- ``"adaptive"`` (the default): a transform whose ``gradient`` is ``"bpda"`` is applied in the
  forward pass with the identity in the backward pass, ``x + (t(x) - x).detach()`` (BPDA, Athalye,
  Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of Security", ICML); when any
  transform is randomized, each differentiable call averages the scores over ``eot_samples`` draws
  (Expectation over Transformation, Athalye, Engstrom, Ilyas & Kwok 2018, "Synthesizing Robust
  Adversarial Examples", ICML), so the gradient is the average over draws.
- ``"naive"``: autograd through the transforms as they are (zero or masked gradients through
  rounding, one draw of the randomness): what a non-adaptive evaluation measures.

Predictions (calls without gradients) always use one draw of the deployed defense. Randomness comes
from the target's own ``generator`` (a ``torch.Generator``; seeded from ``seed`` when not given).

``HardenedOutputTarget`` hardens what the wrapped target answers (``advkit.defenses.output``):
rounded probabilities, top-k probabilities, or labels only; it offers no gradients.
"""

from __future__ import annotations

import torch

from advkit.errors import InvalidParameterError, check_choice, check_range
from advkit.targets.base import Capabilities, Target

MODES = ("adaptive", "naive")


def _check_transform(t) -> None:
    gradient = getattr(t, "gradient", None)
    if not callable(getattr(t, "apply", None)) or gradient not in ("exact", "bpda"):
        raise InvalidParameterError(
            "transforms", type(t).__name__,
            "input transforms from advkit.defenses.transforms (objects with apply(x, bounds, "
            "generator), a 'gradient' of 'exact' or 'bpda' and a 'randomized' flag)")


class TransformedTarget(Target):
    """``inner`` behind input transformations, with BPDA/EOT gradients in adaptive mode."""

    def __init__(self, inner: Target, transforms, *, mode: str = "adaptive", eot_samples: int = 10,
                 generator: torch.Generator | None = None, seed: int = 0,
                 batch_size: int | None = None, budget: int | None = None):
        if not isinstance(inner, Target):
            raise InvalidParameterError("inner", type(inner).__name__, "an advkit Target")
        if not isinstance(transforms, list | tuple):
            transforms = (transforms,)
        if not transforms:
            raise InvalidParameterError("transforms", transforms, "at least one input transform")
        for t in transforms:
            _check_transform(t)
        check_choice("mode", mode, MODES)
        check_range("eot_samples", eot_samples, lo=1, kind=int)
        super().__init__(contract=inner.contract,
                         batch_size=inner.batch_size if batch_size is None else batch_size,
                         budget=budget)
        check_range("batch_size", self.batch_size, lo=1, kind=int)
        self.inner = inner
        self.transforms = tuple(transforms)
        self.mode = mode
        self.eot_samples = eot_samples
        self.seed = seed
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)

    # -- what it declares --------------------------------------------------------------------
    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def bpda(self) -> tuple[str, ...]:
        """Labels of the transforms an adaptive attack passes with the identity gradient."""
        return tuple(_label(t) for t in self.transforms if t.gradient == "bpda")

    @property
    def randomized(self) -> tuple[str, ...]:
        """Labels of the transforms that draw randomness (EOT in adaptive mode)."""
        return tuple(_label(t) for t in self.transforms if t.randomized)

    @property
    def eot(self) -> int:
        """Draws averaged per differentiable call (1 unless adaptive and randomized)."""
        return self.eot_samples if self.mode == "adaptive" and self.randomized else 1

    def describe(self) -> dict:
        """What the report says about this defended target's gradients."""
        return {"transforms": [_label(t) for t in self.transforms], "mode": self.mode,
                "bpda": list(self.bpda) if self.mode == "adaptive" else [],
                "eot_samples": self.eot, "randomized": list(self.randomized)}

    def with_mode(self, mode: str, *, eot_samples: int | None = None) -> TransformedTarget:
        """The same defended target (same inner target and generator) in another mode."""
        eot = self.eot_samples if eot_samples is None else eot_samples
        return TransformedTarget(self.inner, self.transforms, mode=mode, eot_samples=eot,
                                 generator=self.generator, seed=self.seed,
                                 batch_size=self.batch_size, budget=self.budget)

    # -- forward ----------------------------------------------------------------------------
    def transform(self, x: torch.Tensor, *, bpda: bool = False) -> torch.Tensor:
        """Apply the transforms in order (with identity backward for BPDA ones when ``bpda``)."""
        bounds = self.contract.bounds
        for t in self.transforms:
            tx = t.apply(x, bounds, self.generator if t.randomized else None)
            x = x + (tx - x).detach() if bpda and t.gradient == "bpda" else tx
        return x

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        differentiable = torch.is_grad_enabled() and x.requires_grad
        adaptive = self.mode == "adaptive"
        draws = self.eot if differentiable else 1
        out = None
        for _ in range(draws):
            s = self.inner.predict_scores(self.transform(x, bpda=adaptive and differentiable),
                                          check=False)
            out = s if out is None else out + s
        if draws > 1:
            self._count(x.shape[0] * (draws - 1))
            out = out / draws
        return out


class HardenedOutputTarget(Target):
    """``inner`` whose answers are hardened (rounded, top-k or labels only); no gradients."""

    def __init__(self, inner: Target, hardening, *, batch_size: int | None = None,
                 budget: int | None = None):
        if not isinstance(inner, Target):
            raise InvalidParameterError("inner", type(inner).__name__, "an advkit Target")
        if not callable(getattr(hardening, "harden", None)):
            raise InvalidParameterError(
                "hardening", type(hardening).__name__,
                "an output hardening from advkit.defenses.output (Rounded, TopK, LabelsOnly)")
        super().__init__(contract=inner.contract,
                         batch_size=inner.batch_size if batch_size is None else batch_size,
                         budget=budget)
        self.inner = inner
        self.hardening = hardening
        self.transforms = getattr(inner, "transforms", ())

    @property
    def capabilities(self) -> Capabilities:
        probs = bool(getattr(self.hardening, "probabilities", False)) and (
            self.inner.capabilities.probabilities or self.inner.capabilities.logits)
        return Capabilities(gradients=False, logits=False, probabilities=probs, labels=True)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            s = self.inner.predict_scores(x, check=False)
            caps = self.inner.capabilities
            if caps.logits:
                p = torch.softmax(s, dim=1)
            elif caps.probabilities:
                p = s
            else:  # labels only already
                p = torch.nn.functional.one_hot(s.argmax(1), self.contract.n_classes).to(x.dtype)
            return self.hardening.harden(p)


def _label(t) -> str:
    label = getattr(t, "label", None)
    return label if isinstance(label, str) else type(t).__name__
