"""Square Attack, L∞ version: score-based black-box random search.

Andriushchenko, Croce, Flammarion & Hein (2020), "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV. Start from vertical stripes of ±eps (one random sign
per column and channel), then repeatedly propose a random square window whose perturbation is set to
±eps (one random sign per channel) and keep it if the margin loss on the target's scores decreases.
The square covers a share p of the pixels; p starts at ``p_init`` and is halved at the paper's
iterations {10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000} of a 10,000-query run, rescaled
linearly to ``n_queries``. Only points not yet fooled are queried (per-sample early stop).

Scores are ``target.predict_scores``: logits when the target has them, else probabilities. The
loss is the margin ``s_y - max_{k≠y} s_k`` (untargeted) or ``max_{k≠t} s_k - s_t`` (targeted; the
paper uses cross-entropy there), minimised. For non-image inputs of shape (d,) the "square" is a
contiguous window of round(p·d) coordinates with one random sign. Query accounting: every forward
pass counts one query per point, the clean pass included; no point is queried more than
``n_queries`` times by the attack (``extra["queries"]`` per point; the template's final scoring pass
comes on top). ``extra["success_by_query"][q]``: share of points fooled after q + 1 queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.attacks.base import EvasionAttack, Perturbed
from advkit.errors import InvalidParameterError, check_range
from advkit.registry import register
from advkit.threats import parse_norm

_HALVE_AT = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # of a 10,000-iteration run


def square_fraction(p_init: float, i: int, n_iters: int) -> float:
    """The share of pixels a square covers at iteration ``i`` of ``n_iters`` (paper's schedule)."""
    it = int(i / max(n_iters, 1) * 10000)
    return p_init / 2 ** sum(it > h for h in _HALVE_AT)


def margin_loss(scores: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-sample margin, negative exactly when the goal is met (up to ties)."""
    own = scores.gather(1, labels[:, None]).squeeze(1)
    other = scores.scatter(1, labels[:, None], -math.inf).amax(1)
    return other - own if targeted else own - other


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """View a batch as (N, C, H, W); vectors become (N, 1, 1, d)."""
    n, shape = x.shape[0], x.shape[1:]
    if len(shape) == 1:
        return x.reshape(n, 1, 1, shape[0])
    return x.reshape(n, -1, shape[-2], shape[-1])


@register("square", family="evasion")
@dataclass(frozen=True, kw_only=True)
class Square(EvasionAttack):
    """Square Attack (Andriushchenko 2020), L∞: query-efficient score-based random search."""

    requires = frozenset({"probabilities"})
    eps: float = 0.1
    norm: float | str = math.inf
    n_queries: int = 1000  # the paper allows 10,000; raise it for a final evaluation
    p_init: float = 0.8

    def __post_init__(self):
        check_range("eps", self.eps, lo=0)
        if parse_norm(self.norm) != math.inf:
            raise InvalidParameterError("norm", self.norm, "inf (L∞ only for now)")
        check_range("n_queries", self.n_queries, lo=2, kind=int)
        check_range("p_init", self.p_init, lo=0, hi=1, lo_open=True)

    @staticmethod
    def _randint(high, shape, generator, device) -> torch.Tensor:
        dev = generator.device if generator is not None else device
        return torch.randint(0, high, shape, generator=generator, device=dev).to(device)

    def _perturb(self, target, x, y, goal, generator):
        lo, hi = target.contract.bounds
        xi = _as_image(x)
        n, c, h, w = xi.shape
        labels, targeted, eps = goal.labels_for(y), goal.targeted, self.eps
        queries = torch.ones(n, dtype=torch.int64, device=x.device)
        trace = torch.zeros(self.n_queries, device=x.device)
        scores = target.predict_scores(x, check=False)
        clean_pred = scores.argmax(1)
        done = goal.success(clean_pred, y)
        trace[0] = done.float().mean()
        best = xi.clone()
        m_best = torch.full((n,), math.inf, device=x.device)
        idx = torch.nonzero(~done).squeeze(1)
        if idx.numel():  # vertical stripes: one random sign per column and channel
            bits = self._randint(2, (idx.numel(), c, 1, w), generator, x.device)
            stripes = (bits * 2 - 1).to(x.dtype)
            best[idx] = (xi[idx] + eps * stripes).clamp(lo, hi)
            scores = target.predict_scores(best[idx].reshape((-1,) + x.shape[1:]), check=False)
            queries[idx] += 1
            m_best[idx] = margin_loss(scores, labels[idx], targeted)
            done[idx] = goal.success(scores.argmax(1), y[idx])
        trace[1] = done.float().mean()
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        for i in range(self.n_queries - 2):
            idx = torch.nonzero(~done).squeeze(1)
            if idx.numel() == 0:
                trace[i + 2:] = trace[i + 1]
                break
            k, p = idx.numel(), square_fraction(self.p_init, i, self.n_queries - 2)
            if h == 1:  # a vector: a contiguous window of round(p·d) coordinates
                sh, sw = 1, min(max(round(p * w), 1), max(w - 1, 1))
            else:
                sh = sw = min(max(round(math.sqrt(p * h * w)), 1), max(min(h, w) - 1, 1))
            r = self._randint(h - sh + 1, (k,), generator, x.device)
            s = self._randint(w - sw + 1, (k,), generator, x.device)
            mask = (((rows >= r[:, None]) & (rows < r[:, None] + sh))[:, None, :, None]
                    & ((cols >= s[:, None]) & (cols < s[:, None] + sw))[:, None, None, :])
            sign = (self._randint(2, (k, c, 1, 1), generator, x.device) * 2 - 1).to(x.dtype)
            x0, b = xi[idx], best[idx]
            same = ((x0 + eps * sign).clamp(lo, hi) == b).logical_or(~mask).flatten(1).all(1)
            sign = torch.where(same[:, None, None, None], -sign, sign)  # never propose a no-op
            cand = torch.where(mask, (x0 + eps * sign).clamp(lo, hi), b)
            scores = target.predict_scores(cand.reshape((-1,) + x.shape[1:]), check=False)
            queries[idx] += 1
            m = margin_loss(scores, labels[idx], targeted)
            better = m < m_best[idx]
            best[idx] = torch.where(better[:, None, None, None], cand, b)
            m_best[idx] = torch.where(better, m, m_best[idx])
            done[idx] = better & goal.success(scores.argmax(1), y[idx])
            trace[i + 2] = done.float().mean()
        extra = {"queries": queries, "success_by_query": trace}
        return Perturbed(best.reshape(x.shape), clean_pred=clean_pred, passes=0, extra=extra)
