"""Blended-key backdoor.

Chen, Liu, Li, Lu & Song (2017), "Targeted Backdoor Attacks on Deep Learning Systems Using Data
Poisoning", arXiv:1712.05526 (the blended injection strategy). A key pattern is blended into a
share of the training images, ``x' = (1 - alpha) * x + alpha * key``, which are relabelled to the
target class. The paper blends with a small alpha at training time (hard to see) and may use a
larger alpha at test time to make the backdoor fire more reliably; both are parameters here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advkit.attacks.poisoning.base import ImageTrigger, PoisoningAttack
from advkit.errors import MAX_SEED, InputContractError, InvalidParameterError, check_range
from advkit.params import check_params, invalid, param
from advkit.registry import register
from advkit.threat_tags import BACKDOOR_POISONING


@register("blended", family="poisoning", threat=BACKDOOR_POISONING)
@dataclass(frozen=True, kw_only=True)
class Blended(PoisoningAttack):
    """Blended backdoor (Chen 2017): x' = (1 - alpha) x + alpha key, relabelled to ``target``.

    ``key`` is ``"random"`` (uniform noise within ``bounds`` drawn from a torch generator seeded
    with ``key_seed``, so the same attack always has the same key) or an array of the sample shape
    (C, H, W) or (H, W). ``alpha`` blends the training samples, ``test_alpha`` (default: ``alpha``)
    the inputs given to ``apply_trigger``. Poisons ``round(rate * N)`` samples whose class is not
    the target.
    """

    alpha: float = param(0.1, float, lo=0, hi=1, lo_open=True, doc="blend of the training samples")
    test_alpha: float | None = param(None, float, lo=0, hi=1, lo_open=True,
                                     doc="blend of the test inputs; None: alpha")
    key: str | np.ndarray | torch.Tensor = param(
        "random", (str, "array"), choices=("random",),
        doc="random (noise from key_seed) or an array (C, H, W) or (H, W) within bounds")
    key_seed: int = param(0, int, lo=0, hi=MAX_SEED)
    target: int = param(0, int, lo=0, doc="target class")
    rate: float = param(0.1, float, lo=0, hi=1, lo_open=True,
                        doc="share of the training set poisoned")
    bounds: tuple[float, float] = param((0.0, 1.0), "pair", strict=True,
                                        doc="input bounds (lo, hi)")

    def __post_init__(self):
        check_params(self)
        if not isinstance(self.key, str):
            k = torch.as_tensor(np.asarray(self.key), dtype=torch.float32)
            lo, hi = self.bounds
            if k.dim() not in (2, 3) or not torch.isfinite(k).all() or k.min() < lo or k.max() > hi:
                raise invalid(
                    self, "key", f"a (C, H, W) or (H, W) array of finite values within "
                    f"{self.bounds}", given=f"an array of shape {tuple(k.shape)}")

    def key_for(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The key pattern (C, H, W) for samples of shape ``shape``."""
        if len(shape) != 3:
            raise InputContractError(
                f"the blended attack needs images (C, H, W), got {tuple(shape)}"
            )
        lo, hi = (float(b) for b in self.bounds)
        if isinstance(self.key, str):
            g = torch.Generator().manual_seed(self.key_seed)
            return lo + (hi - lo) * torch.rand(tuple(shape), generator=g)
        k = torch.as_tensor(np.asarray(self.key), dtype=torch.float32)
        if k.dim() == 2:
            k = k.expand(shape[0], *k.shape)
        if tuple(k.shape) != tuple(shape):
            raise InputContractError(
                f"the key has shape {tuple(k.shape)} but the samples have shape {tuple(shape)}"
            )
        return k.clone()

    def trigger_for(self, shape: tuple[int, ...], alpha: float | None = None) -> ImageTrigger:
        """The blend as an ``ImageTrigger``: a constant mask ``alpha`` and the key as pattern."""
        a = self.alpha if alpha is None else alpha
        mask = torch.full(tuple(shape[1:]), float(a))
        return ImageTrigger(mask=mask, pattern=self.key_for(shape))

    def apply_trigger(self, x: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """Blend the key into test inputs with ``alpha`` (default: ``test_alpha`` or ``alpha``)."""
        if x.dim() != 4:
            raise InputContractError(f"expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
        if alpha is None:
            alpha = self.test_alpha if self.test_alpha is not None else self.alpha
        check_range("alpha", alpha, lo=0, hi=1, lo_open=True)
        return self.trigger_for(tuple(x.shape[1:]), alpha).apply(x)

    def _candidates(self, y, n_classes):
        return y != self.target

    def _poison(self, x, y, idx, n_classes, rng):
        if self.target >= n_classes:
            raise InvalidParameterError("target", self.target, f"a class in [0, {n_classes - 1}]")
        trigger = self.trigger_for(tuple(x.shape[1:]))
        xp, yp = x.clone(), y.clone()
        xp[idx] = trigger.apply(x[idx])
        yp[idx] = self.target
        test = None
        if self.test_alpha is not None and self.test_alpha != self.alpha:
            test = self.trigger_for(tuple(x.shape[1:]), self.test_alpha)
        return dict(x=xp, y=yp, trigger=trigger, target=int(self.target), test_trigger=test)
