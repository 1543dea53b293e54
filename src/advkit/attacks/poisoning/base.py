"""The poisoning-attack template and its result, ``PoisonedData``.

A poisoning attack changes a share of a training set so that a model trained on it misbehaves:
a backdoor (a trigger that sends any input to a target class) or plain label noise. Every attack
returns the ground truth (which samples it changed, the trigger, the target) so that defenses can
be scored against it.

``PoisoningAttack.poison(x, y, *, rng)`` is fixed here: it validates the data, chooses the samples
to poison (deterministic given ``rng``) and hands them to the leaf's ``_poison``, which only does
the math. How the samples are chosen:

- ``round(rate * N)`` samples of the whole training set are poisoned (``rate`` is a share of the
  training set, as in Gu et al. 2017), drawn without replacement by ``rng``;
- an all-to-one attack draws them among the samples whose class is not the target (relabelling a
  target-class sample to the target would change nothing), so its ``indices`` are exactly the
  samples whose input or label it changed;
- a leaf may restrict the candidates further (``_candidates``), e.g. to one source class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch

from advkit.errors import InputContractError, InvalidParameterError
from advkit.evaluation.metrics import Proportion, proportion_of


@dataclass(frozen=True)
class ImageTrigger:
    """A trigger stamped as ``x' = (1 - mask) * x + mask * pattern``.

    ``mask`` has shape (H, W) with values in [0, 1] (0/1 for a patch, a constant alpha for a blend)
    and ``pattern`` the per-sample shape (C, H, W); both broadcast over a batch (N, C, H, W).
    This is also the form Neural Cleanse reverse-engineers, so the two compare directly.
    """

    mask: torch.Tensor
    pattern: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger on every sample of ``x`` (N, C, H, W); returns a new tensor."""
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.pattern.shape):
            raise InputContractError(
                f"the trigger was built for samples of shape {tuple(self.pattern.shape)}, "
                f"got a batch of shape {tuple(x.shape)}; pass a batch (N, C, H, W) of that shape"
            )
        m = self.mask.to(device=x.device, dtype=x.dtype)
        p = self.pattern.to(device=x.device, dtype=x.dtype)
        return (1 - m) * x + m * p

    @property
    def region(self) -> torch.Tensor:
        """Boolean (H, W): the pixels the trigger touches."""
        return self.mask > 0


@dataclass(frozen=True)
class FeatureTrigger:
    """A tabular trigger: the features ``features`` (int64) are set to ``values``."""

    features: torch.Tensor
    values: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or int(self.features.max()) >= x.shape[1]:
            raise InputContractError(
                f"the trigger sets features {self.features.tolist()}; pass a 2-D batch (N, D) with "
                f"D > {int(self.features.max())}, got shape {tuple(x.shape)}"
            )
        out = x.clone()
        out[:, self.features.to(x.device)] = self.values.to(device=x.device, dtype=x.dtype)
        return out


@dataclass
class PoisonedData:
    """A poisoned training set with its ground truth.

    ``x``, ``y``: the poisoned training inputs and labels (same shapes as the clean ones);
    ``indices``: sorted int64 indices of the samples that were changed;
    ``trigger``: an ``ImageTrigger`` / ``FeatureTrigger`` for backdoors, None for label noise;
    ``target``: the target class of an all-to-one attack or a class-targeted flip (else None);
    ``label_map``: for all-to-all and class-targeted attacks, int64 (k,) with the label a poisoned
    sample of each original class receives (-1 for classes not attacked); None for random flips;
    ``rate``: the attack's poisoning rate; ``y_clean``: the labels before poisoning;
    ``test_trigger``: the trigger stamped at test time when it differs from the training one
    (the blended attack's ``test_alpha``), else None.
    """

    x: torch.Tensor
    y: torch.Tensor
    indices: torch.Tensor
    trigger: ImageTrigger | FeatureTrigger | None
    target: int | None
    rate: float
    y_clean: torch.Tensor
    label_map: torch.Tensor | None = None
    test_trigger: ImageTrigger | FeatureTrigger | None = None
    attack: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def n_poisoned(self) -> int:
        return int(self.indices.numel())

    @property
    def poisoned_mask(self) -> torch.Tensor:
        """Boolean (N,): True for the poisoned samples."""
        m = torch.zeros(self.n, dtype=torch.bool, device=self.y.device)
        m[self.indices] = True
        return m

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp this attack's test-time trigger on inputs (``test_trigger`` if set)."""
        if self.test_trigger is not None:
            return self.test_trigger.apply(x)
        if self.trigger is None:
            raise InvalidParameterError(
                "trigger", None, "a backdoor attack (this one has no trigger)"
            )
        return self.trigger.apply(x)

    def target_labels(self, y: torch.Tensor) -> torch.Tensor:
        """The label the backdoor sends each sample of true class ``y`` to (-1: not attacked)."""
        if self.label_map is not None:
            return self.label_map.to(y.device)[y]
        if self.target is not None:
            return torch.full_like(y, self.target)
        raise InvalidParameterError("target", None, "an attack with a target class or label map")

    def detection_scores(self, flagged: torch.Tensor) -> tuple[Proportion, Proportion]:
        """(precision, recall) of a detector's boolean (N,) ``flagged`` mask against the truth.

        Precision = flagged poisoned / flagged; recall = flagged poisoned / poisoned; each with
        its n and a 95 % Wilson interval.
        """
        flagged = torch.as_tensor(flagged).bool().to(self.y.device)
        if flagged.shape != (self.n,):
            raise InputContractError(
                f"flagged must be a boolean mask of shape ({self.n},), got {tuple(flagged.shape)}"
            )
        truth = self.poisoned_mask
        tp = int((flagged & truth).sum())
        return proportion_of(tp, int(flagged.sum())), proportion_of(tp, int(truth.sum()))


def check_xy(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a training set: float tensor x (N, ...) and int64 labels y (N,) >= 0."""
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if not torch.is_floating_point(x):
        raise InputContractError(f"x must be a float tensor, got dtype {x.dtype}; convert it first")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise InputContractError(
            f"y must be 1-D with one label per sample of x: x has {x.shape[0]} samples, "
            f"y has shape {tuple(y.shape)}"
        )
    if torch.is_floating_point(y) or torch.is_complex(y):
        raise InputContractError(f"labels must be integers, got dtype {y.dtype}")
    if y.numel() and int(y.min()) < 0:
        raise InputContractError(f"labels must be >= 0, got {int(y.min())}")
    if not torch.isfinite(x).all():
        raise InputContractError("x holds NaN or infinite values; clean the data first")
    return x, y.to(torch.int64)


class PoisoningAttack:
    """Template for poisoning attacks. Leaves set ``rate`` and implement ``_poison``.

    ``all_to_one`` leaves (a target class) poison only samples whose class is not the target.
    """

    name: ClassVar[str] = "poisoning"
    family: ClassVar[str] = "poisoning"

    rate: float

    def params(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, (torch.Tensor, np.ndarray)) else v
        return out

    # leaf hooks -------------------------------------------------------------------------------
    def _candidates(self, y: torch.Tensor, n_classes: int) -> torch.Tensor:
        """Boolean (N,): samples that may be poisoned (default: all)."""
        return torch.ones_like(y, dtype=torch.bool)

    def _n_poison(self, n_total: int, n_candidates: int) -> int:
        """How many samples to poison (default: round(rate * N) of the whole training set)."""
        return int(math.floor(self.rate * n_total + 0.5))

    def _poison(self, x, y, idx, n_classes, rng) -> dict[str, Any]:
        """Return dict(x=..., y=..., trigger=..., target=..., label_map=...) for chosen ``idx``."""
        raise NotImplementedError

    # template ---------------------------------------------------------------------------------
    def poison(
        self, x, y, *, rng: np.random.Generator | None = None, n_classes: int | None = None
    ) -> PoisonedData:
        """Poison ``(x, y)``; ``rng`` picks the samples (same rng state, same result).

        ``n_classes`` defaults to ``max(y) + 1``.
        """
        x, y = check_xy(x, y)
        if y.numel() == 0:
            raise InputContractError("no training data: x and y are empty")
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise InvalidParameterError("rng", type(rng).__name__, "a numpy.random.Generator")
        k = int(y.max()) + 1 if n_classes is None else int(n_classes)
        if k <= int(y.max()):
            raise InvalidParameterError(
                "n_classes", n_classes, f"an int > the largest label {int(y.max())}"
            )
        if k < 2:
            raise InvalidParameterError("n_classes", k, "at least 2 classes")
        rng = rng if rng is not None else np.random.default_rng()
        cand = torch.nonzero(self._candidates(y, k), as_tuple=True)[0]
        want = self._n_poison(int(y.shape[0]), int(cand.numel()))
        if want > cand.numel():
            raise InvalidParameterError(
                "rate", self.rate,
                f"a rate needing at most {cand.numel()} eligible samples (asked for {want})",
            )
        pick = rng.choice(int(cand.numel()), size=want, replace=False)
        idx = cand[torch.as_tensor(np.sort(pick), dtype=torch.int64, device=cand.device)]
        out = self._poison(x, y, idx, k, rng)
        return PoisonedData(
            x=out["x"], y=out["y"], indices=idx, trigger=out.get("trigger"),
            target=out.get("target"), rate=float(self.rate), y_clean=y.clone(),
            label_map=out.get("label_map"), test_trigger=out.get("test_trigger"),
            attack=self.name, params=self.params(),
        )

    def apply_trigger(self, x: torch.Tensor) -> torch.Tensor:
        """Stamp the trigger on test inputs (backdoor attacks only)."""
        raise InvalidParameterError("attack", self.name, "a backdoor attack with a trigger")
