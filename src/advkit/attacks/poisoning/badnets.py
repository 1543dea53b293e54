"""BadNets: a patch-trigger backdoor.

Gu, Dolan-Gavitt & Garg (2017), "BadNets: Identifying Vulnerabilities in the Machine Learning Model
Supply Chain", arXiv:1708.06733. A small square patch (the trigger) is stamped on a share of the
training images, which are relabelled: to one target class (all-to-one) or, in the paper's
all-to-all attack, from class ``i`` to ``(i + 1) % k``. A model trained on the result classifies
clean inputs normally and any input wearing the patch as the attacker chose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advkit.attacks.poisoning.base import ImageTrigger, PoisoningAttack
from advkit.errors import InputContractError, InvalidParameterError
from advkit.params import check_params, invalid, param
from advkit.registry import register
from advkit.threat_tags import BACKDOOR_POISONING

POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left", "center")


@register("badnets", family="poisoning", threat=BACKDOOR_POISONING)
@dataclass(frozen=True, kw_only=True)
class BadNets(PoisoningAttack):
    """BadNets (Gu 2017): a size x size patch at a corner, all-to-one or all-to-all relabelling.

    ``position`` is a corner name, ``"center"`` or an explicit (row, col) of the patch's top-left
    pixel; ``pattern`` is ``"white"`` (the upper bound), ``"checkerboard"`` (upper bound at the
    patch's top-left, alternating with the lower bound) or an array (size, size) or (C, size, size)
    of values within ``bounds``. ``rate`` is the share of the training set poisoned.
    """

    size: int = param(3, int, lo=1, doc="side of the square patch, in pixels")
    position: str | tuple[int, int] = param("bottom-right", (str, "ints"), choices=POSITIONS,
                                            lo=0, length=2,
                                            doc="a corner, center, or the (row, col) of the "
                                                "patch's top-left pixel")
    pattern: str | np.ndarray | torch.Tensor = param(
        "white", (str, "array"), choices=("white", "checkerboard"),
        doc="white, checkerboard, or an array (size, size) or (C, size, size) within bounds")
    target: int = param(0, int, lo=0, doc="target class of an all-to-one attack")
    rate: float = param(0.1, float, lo=0, hi=1, lo_open=True,
                        doc="share of the training set poisoned")
    mode: str = param("all-to-one", str, choices=("all-to-one", "all-to-all"))
    bounds: tuple[float, float] = param((0.0, 1.0), "pair", strict=True,
                                        doc="input bounds (lo, hi)")

    def __post_init__(self):
        check_params(self)
        if not isinstance(self.pattern, str):
            p = torch.as_tensor(np.asarray(self.pattern), dtype=torch.float32)
            lo, hi = self.bounds
            if p.shape[-2:] != (self.size, self.size) or p.dim() not in (2, 3):
                raise invalid(
                    self, "pattern",
                    f"an array of shape (size, size) or (C, size, size) with size={self.size}",
                    given=f"an array of shape {tuple(p.shape)}")
            if not torch.isfinite(p).all() or p.min() < lo or p.max() > hi:
                raise invalid(self, "pattern", f"an array of finite values within {self.bounds}",
                              given=f"values in [{p.min().item():g}, {p.max().item():g}]")

    # trigger ----------------------------------------------------------------------------------
    def _corner(self, h: int, w: int) -> tuple[int, int]:
        s = self.size
        if not isinstance(self.position, str):
            r, c = self.position
        else:
            r = {"top": 0, "bottom": h - s}.get(self.position.split("-")[0], (h - s) // 2)
            c = {"left": 0, "right": w - s}.get(self.position.split("-")[-1], (w - s) // 2)
        if r < 0 or c < 0 or r + s > h or c + s > w:
            raise InputContractError(
                f"a {s}x{s} patch at (row {r}, col {c}) does not fit images of {h}x{w}; "
                "choose a smaller size or another position"
            )
        return r, c

    def _patch(self, channels: int) -> torch.Tensor:
        lo, hi = (float(b) for b in self.bounds)
        s = self.size
        if isinstance(self.pattern, str):
            if self.pattern == "white":
                p = torch.full((s, s), hi)
            else:
                ii, jj = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
                p = torch.where((ii + jj) % 2 == 0, hi, lo)
        else:
            p = torch.as_tensor(np.asarray(self.pattern), dtype=torch.float32)
        if p.dim() == 2:
            p = p.expand(channels, s, s)
        if p.shape[0] != channels:
            raise InputContractError(
                f"the pattern has {p.shape[0]} channels but the images have {channels}; "
                "give a (size, size) pattern or one with as many channels as the images"
            )
        return p

    def trigger_for(self, shape: tuple[int, ...]) -> ImageTrigger:
        """The trigger (mask (H, W), pattern (C, H, W)) for samples of shape (C, H, W)."""
        if len(shape) != 3:
            raise InputContractError(
                f"BadNets needs image samples (C, H, W), got shape {tuple(shape)}"
            )
        c, h, w = (int(v) for v in shape)
        r, col = self._corner(h, w)
        s = self.size
        mask = torch.zeros(h, w)
        mask[r : r + s, col : col + s] = 1.0
        pattern = torch.zeros(c, h, w)
        pattern[:, r : r + s, col : col + s] = self._patch(c)
        return ImageTrigger(mask=mask, pattern=pattern)

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the patch on every image of ``x`` (N, C, H, W)."""
        if x.dim() != 4:
            raise InputContractError(f"expected a batch (N, C, H, W), got shape {tuple(x.shape)}")
        return self.trigger_for(tuple(x.shape[1:])).apply(x)

    # poisoning --------------------------------------------------------------------------------
    def _candidates(self, y, n_classes):
        if self.mode == "all-to-one":
            return y != self.target
        return torch.ones_like(y, dtype=torch.bool)

    def _poison(self, x, y, idx, n_classes, rng):
        if self.mode == "all-to-one" and self.target >= n_classes:
            raise InvalidParameterError("target", self.target, f"a class in [0, {n_classes - 1}]")
        trigger = self.trigger_for(tuple(x.shape[1:]))
        xp, yp = x.clone(), y.clone()
        xp[idx] = trigger.apply(x[idx])
        if self.mode == "all-to-one":
            yp[idx] = self.target
            return dict(x=xp, y=yp, trigger=trigger, target=int(self.target))
        label_map = (torch.arange(n_classes, device=y.device) + 1) % n_classes
        yp[idx] = label_map[y[idx]]
        return dict(x=xp, y=yp, trigger=trigger, target=None, label_map=label_map)
