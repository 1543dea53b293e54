"""Label-only membership inference: robustness to augmentations, or distance to the boundary.

Choquette-Choo, Tramèr, Carlini & Papernot (2021), "Label-Only Membership Inference Attacks",
ICML. A model that only answers labels still leaks membership: training points are classified
correctly more robustly than unseen ones. Only ``Target.labels`` is ever called (a labels-only
API works; probabilities and logits are never read). Two scores (higher = more likely a member):

- ``augmentation`` (the paper's data-augmentation attack): the share of the queried copies of a
  point that the model still labels with the true label; the point itself is one of them, so a
  misclassified point scores low. The copies:

  - ``translate`` (images, inputs of shape (C, H, W)): the paper's translations, every shift
    (i, j) with |i| + |j| = d (``max_shift``) pixels, 4d copies and the source, 4d + 1 queries; the
    vacated pixels take the lower input bound (the background of advkit's image data). ``flip``
    adds the horizontal mirror of each (2(4d + 1) queries), for natural images only;
  - ``noise`` (tables and flat inputs; the paper's Gaussian-noise augmentation): ``n_noise``
    copies with i.i.d. Gaussian noise of standard deviation ``noise`` times the input range,
    clipped to the bounds (a tabular target's feature constraints repaired), and the source (the
    paper tunes the scale on shadow models; the default 0.2 was the best of 0.05, 0.1, 0.2 and
    0.3 on overfit digits MLPs, AUC 0.559, 0.592, 0.596 and 0.596 in one run);
  - ``auto``: ``translate`` for (C, H, W) inputs, else ``noise``.

- ``boundary`` (the paper's decision-boundary attack): the L2 distance from the point to the
  nearest misclassified input found by advkit's HopSkipJump (Chen et al. 2020,
  ``advkit.attacks.evasion.hopskipjump``) within ``max_queries`` label queries per point, the
  clean query included, as in the paper (it also uses HopSkipJump). A misclassified point scores
  0; a point for which no misclassified input is found within the budget scores the diameter of
  the input box (no input is further away). HopSkipJump's leaf is called directly, not through
  the evasion template, whose final scoring pass reads scores where a target has them.

``LabelOnlyScores`` holds the scores, the clean labels (the first query of each point) and the
label queries spent. The paper also trains a small attack model on the per-copy correctness
vector; the share used here is its threshold baseline (thresholded by the metrics in
``advkit.evaluation.privacy``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from advkit.attacks.base import check_generator
from advkit.errors import InvalidParameterError
from advkit.params import check_params, param

_CHUNK = 1 << 22  # input elements of the copies built at once


@dataclass
class LabelOnlyScores:
    """Scores (N,) float64, the target's labels of the unmodified points, the label queries."""

    variant: str
    scores: torch.Tensor
    pred: torch.Tensor
    queries: int
    copies: str | None = None  # augmentation: 'translate' or 'noise'
    notes: list[str] = field(default_factory=list)


def shift(x: torch.Tensor, i: int, j: int, fill: float) -> torch.Tensor:
    """Images (N, C, H, W) moved ``i`` pixels down and ``j`` right; vacated pixels ``fill``."""
    h, w = x.shape[-2:]
    out = torch.full_like(x, fill)
    out[..., max(i, 0):h + min(i, 0), max(j, 0):w + min(j, 0)] = \
        x[..., max(-i, 0):h - max(i, 0), max(-j, 0):w - max(j, 0)]
    return out


def shifts(d: int) -> list[tuple[int, int]]:
    """(0, 0) and every (i, j) with |i| + |j| = d: 4d + 1 shifts."""
    ring = {(s * a, t * (d - a)) for a in range(d + 1) for s in (-1, 1) for t in (-1, 1)}
    return [(0, 0)] + sorted(ring)


@dataclass(frozen=True, kw_only=True)
class LabelOnly:
    """Choquette-Choo et al. (2021) label-only membership inference (see the module docstring)."""

    variant: str = param("augmentation", str, choices=("augmentation", "boundary"),
                         doc="the score: robustness to augmentations or boundary distance")
    augmentation: str = param("auto", str, choices=("auto", "translate", "noise"),
                              doc="the copies: translations (images) or Gaussian noise")
    max_shift: int = param(1, int, lo=1, hi=64, doc="d: translations with |i| + |j| = d pixels")
    flip: bool = param(False, bool, doc="translate: also the mirrored copies (natural images)")
    n_noise: int = param(30, int, lo=1, hi=100_000, doc="noise: copies per point")
    noise: float = param(0.2, float, lo=0, lo_open=True, hi=1,
                         doc="noise: standard deviation, a share of the input range")
    max_queries: int = param(500, int, lo=10, hi=1_000_000,
                             doc="boundary: HopSkipJump label queries per point")

    def __post_init__(self):
        check_params(self)

    def scores(self, target, x, y, *, generator: torch.Generator | None = None
               ) -> LabelOnlyScores:
        """Label-only scores of ``(x, y)`` (inputs in the target's space) against ``target``, an
        advkit Target (any: only its labels are asked)."""
        from advkit.targets.base import Target

        if not isinstance(target, Target):
            raise InvalidParameterError(
                "target", type(target).__name__,
                "an advkit Target (label-only attacks need its input contract and labels())")
        check_generator(generator)
        x = target.check_inputs(x).detach()
        y = target.check_labels(y, x.shape[0]).to(x.device)
        if x.shape[0] == 0:
            raise InvalidParameterError("x", "an empty batch", "at least one point to score")
        q0 = target.queries
        copies = None
        if self.variant == "boundary":
            s, pred, notes = self._boundary(target, x, y, generator)
        else:
            copies = self._copies_kind(x)
            s, pred = self._augmentation(target, x, y, copies, generator)
            notes = []
        return LabelOnlyScores(self.variant, s.to(torch.float64).cpu(), pred.cpu(),
                               int(target.queries - q0), copies, notes)

    # -- augmentation ----------------------------------------------------------------------
    def _copies_kind(self, x: torch.Tensor) -> str:
        image = x.ndim == 4 and min(x.shape[-2:]) > 1
        kind = self.augmentation
        if kind == "auto":
            kind = "translate" if image else "noise"
        if kind == "translate":
            if not image:
                raise InvalidParameterError(
                    "augmentation", f"'translate' on inputs of shape {tuple(x.shape[1:])}",
                    "'noise' or 'auto' (translations need images of shape (C, H, W))")
            if self.max_shift >= min(x.shape[-2:]):
                raise InvalidParameterError(
                    "max_shift", self.max_shift,
                    f"fewer pixels than the image side ({min(x.shape[-2:])})")
        return kind

    def _augmentation(self, target, x, y, kind, generator):
        lo, hi = target.contract.bounds
        if kind == "translate":
            moves = shifts(self.max_shift)
            n_copies = len(moves) * (2 if self.flip else 1)
        else:
            n_copies = self.n_noise + 1
        per = max(1, _CHUNK // (n_copies * max(1, x[0].numel())))
        correct, pred = [], []
        for a in range(0, x.shape[0], per):
            xb, yb = x[a:a + per], y[a:a + per]
            if kind == "translate":
                views = [xb.flip(-1)] if self.flip else []
                copies = [shift(v, i, j, lo) for v in [xb, *views] for i, j in moves]
            else:
                copies = [xb] + self._noisy(target, xb, generator, lo, hi)
            lab = target.labels(torch.cat(copies), check=False).to(y.device)
            lab = lab.view(n_copies, xb.shape[0])
            pred.append(lab[0])
            correct.append((lab == yb[None]).to(torch.float64).mean(0))
        return torch.cat(correct), torch.cat(pred)

    def _noisy(self, target, xb, generator, lo, hi) -> list[torch.Tensor]:
        from advkit.attacks.evasion.query_ledger import randn

        sd = self.noise * (hi - lo)
        out = []
        space = target.feature_space
        for _ in range(self.n_noise):
            v = (xb + sd * randn(xb.shape, generator, xb)).clamp(lo, hi)
            out.append(space.project(v, xb) if space is not None else v)
        return out

    # -- boundary --------------------------------------------------------------------------
    def _boundary(self, target, x, y, generator):
        from advkit.attacks.evasion.hopskipjump import HopSkipJump
        from advkit.goals import Untargeted
        from advkit.threats import lp_norm

        hsj = HopSkipJump(norm=2.0, max_queries=self.max_queries)
        out = hsj._perturb(target, x, y, Untargeted(), generator)
        pred = out.clean_pred.to(y.device)
        dist = lp_norm(out.x_adv - x, 2.0).to(torch.float64)
        lo, hi = target.contract.bounds
        diameter = math.sqrt(x[0].numel()) * (hi - lo)
        missed = (pred == y) & (dist == 0)
        dist = torch.where(missed, torch.full_like(dist, diameter), dist)
        dist = torch.where(pred == y, dist, torch.zeros_like(dist))
        notes = []
        if bool(missed.any()):
            notes.append(f"label-only boundary: {int(missed.sum())} of {x.shape[0]} points kept "
                         f"their label for all {self.max_queries} queries (scored at the input "
                         "box's diameter)")
        if "budget_exhausted" in out.extra:
            notes.append(f"label-only boundary: {out.extra['budget_exhausted']}")
        return dist, pred, notes
