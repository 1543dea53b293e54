"""Label flipping: poisoning by wrong labels alone, the inputs untouched.

Random flips follow the label-noise attacks studied by Biggio, Nelson & Laskov (2011), "Support
Vector Machines Under Adversarial Label Noise", ACML: a share of the training labels is replaced by
a uniformly random *other* class. Class-targeted flips (source -> target, as in Tolpegin, Truex,
Gursoy & Liu 2020, "Data Poisoning Attacks Against Federated Learning Systems", ESORICS) relabel a
share of one source class as the target class, to make the model confuse the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.attacks.poisoning.base import PoisoningAttack
from advkit.errors import InvalidParameterError
from advkit.params import check_params, invalid, param
from advkit.registry import register
from advkit.threat_tags import LABEL_POISONING


@register("label_flip", family="poisoning", threat=LABEL_POISONING)
@dataclass(frozen=True, kw_only=True)
class LabelFlip(PoisoningAttack):
    """Label flipping, random (to a uniformly random other class) or class-targeted.

    ``mode="random"``: ``round(rate * N)`` samples of the whole set get a different label drawn
    uniformly from the other k - 1 classes. ``mode="targeted"``: ``round(rate * n_source)`` samples
    of class ``source`` are relabelled ``target`` (``rate`` is then a share of the source class;
    ``rate=1`` flips all of it).
    """

    rate: float = param(0.1, float, lo=0, hi=1, lo_open=True,
                        doc="share of the training set (targeted: of the source class) flipped")
    mode: str = param("random", str, choices=("random", "targeted"))
    source: int | None = param(None, int, lo=0, doc="class flipped in targeted mode")
    target: int | None = param(None, int, lo=0, doc="label it receives in targeted mode")

    def __post_init__(self):
        check_params(self)
        for name in ("source", "target"):
            if self.mode == "targeted" and getattr(self, name) is None:
                raise invalid(self, name, "a class (an int >= 0) when mode='targeted'")
            if self.mode == "random" and getattr(self, name) is not None:
                raise invalid(self, name, "None when mode='random' (use mode='targeted')")
        if self.mode == "targeted" and self.source == self.target:
            raise invalid(self, "target", f"a class other than source={self.source}")

    def _candidates(self, y, n_classes):
        if self.mode == "targeted":
            return y == self.source
        return torch.ones_like(y, dtype=torch.bool)

    def _n_poison(self, n_total, n_candidates):
        n = n_candidates if self.mode == "targeted" else n_total
        return int(math.floor(self.rate * n + 0.5))

    def _poison(self, x, y, idx, n_classes, rng):
        yp = y.clone()
        if self.mode == "targeted":
            for name, c in (("source", self.source), ("target", self.target)):
                if c >= n_classes:
                    raise InvalidParameterError(name, c, f"a class in [0, {n_classes - 1}]")
            yp[idx] = self.target
            label_map = torch.full((n_classes,), -1, dtype=torch.int64, device=y.device)
            label_map[self.source] = self.target
            return dict(x=x.clone(), y=yp, target=int(self.target), label_map=label_map)
        shift = torch.as_tensor(rng.integers(1, n_classes, size=int(idx.numel())), device=y.device)
        yp[idx] = (y[idx] + shift) % n_classes
        return dict(x=x.clone(), y=yp, target=None)
