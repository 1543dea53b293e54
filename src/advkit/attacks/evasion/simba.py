"""SimBA (Simple Black-box Attack), pixel and DCT bases: score-based greedy coordinate search.

Guo, Gardner, You, Wilson & Weinberger (2019), "Simple Black-box Adversarial Attacks", ICML. The
attack draws orthonormal directions q without replacement from a basis (SimBA-pixel: the standard
basis, in a random order; SimBA-DCT: the 2-D DCT basis of each channel, the low frequencies first,
in a random order within each frequency band) and for each tries x - ε·q, then x + ε·q: the first
that lowers the probability of the true class (untargeted) or raises that of the target class
(targeted) is kept (Algorithm 1). A point stops as soon as its goal is met. As every kept step is
orthogonal to the others, the perturbation's L2 norm after T kept steps is ε·sqrt(T) (before
clipping to the bounds): the attack is reported as minimum-norm in L2.

Scores: probabilities (softmax of the logits when the target answers logits). Per point at most
``max_queries`` queries, the clean pass included; ``extra``: ``queries`` per point,
``success_by_query`` and ``median_norm_by_query`` (:mod:`advkit.attacks.evasion.query_ledger`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.base import EvasionAttack, Perturbed
from advkit.attacks.evasion.query_ledger import Ledger
from advkit.errors import BudgetExhausted, InvalidParameterError
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import BLACK_BOX_EVASION


def dct_matrix(n: int, dtype=torch.float32) -> torch.Tensor:
    """The orthonormal DCT-II matrix: row k is the k-th cosine basis vector of length n."""
    i = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (i[None, :] + 0.5) * i[:, None] / n) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m.to(dtype)


def _perm(n: int, generator, device) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=dev).to(device)


def dct_order(c: int, h: int, w: int, generator, device) -> torch.Tensor:
    """Indices (into c·h·w) of the DCT coefficients, by growing frequency band max(u, v), each
    band in a random order (the paper samples the lowest frequencies first)."""
    u = torch.arange(h, device=device)[:, None].expand(h, w)
    v = torch.arange(w, device=device)[None, :].expand(h, w)
    band = torch.maximum(u, v).reshape(1, -1).expand(c, -1).reshape(-1)
    shuffle = _perm(band.numel(), generator, device)
    order = shuffle[torch.argsort(band[shuffle], stable=True)]
    return order


@register("simba", family="evasion", threat=BLACK_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class SimBA(EvasionAttack):
    """SimBA (Guo 2019): greedy ±ε steps along random pixel or DCT directions, from scores."""

    requires = frozenset({"probabilities"})
    suggest = None
    minimum_norm: ClassVar[bool] = True
    norm: ClassVar[float] = 2.0

    step: float = param(0.2, float, lo=0, lo_open=True,
                        doc="the paper's ε: the length of each step along a basis direction")
    basis: str = param("pixel", str, choices=("pixel", "dct"),
                       doc="pixel: standard basis; dct: low-frequency 2-D DCT first (images)")
    max_queries: int = param(1000, int, lo=2, doc="score queries per point, the clean pass "
                             "included")

    def __post_init__(self):
        check_params(self)

    def _directions(self, shape, generator, device, dtype):
        """(order, to_input): the coordinate order and a map from coordinate ids to unit
        directions in input space (rows of the basis)."""
        d = math.prod(shape)
        if self.basis == "dct" and len(shape) < 2:
            raise InvalidParameterError(
                "basis", "dct", f"'pixel' for inputs of shape {shape} (the DCT basis is 2-D: it "
                "needs images, shape (C, H, W) or (H, W))", owner="SimBA")
        if self.basis == "pixel":
            order = _perm(d, generator, device)
            return order, lambda ids: torch.nn.functional.one_hot(ids, d).to(dtype)
        c = math.prod(shape[:-2])
        h, w = shape[-2], shape[-1]
        dh, dw = dct_matrix(h, dtype).to(device), dct_matrix(w, dtype).to(device)
        order = dct_order(c, h, w, generator, device)

        def to_input(ids):
            ch, rest = ids // (h * w), ids % (h * w)
            u, v = rest // w, rest % w
            img = dh[u][:, :, None] * dw[v][:, None, :]  # (k, h, w), unit norm
            out = torch.zeros(ids.numel(), c, h, w, device=device, dtype=dtype)
            out[torch.arange(ids.numel(), device=device), ch] = img
            return out.reshape(ids.numel(), -1)

        return order, to_input

    def _probs(self, target, xs, shape):
        s = target.predict_scores(xs.reshape((-1,) + shape), check=False)
        return torch.softmax(s, 1) if target.capabilities.logits else s

    def _perturb(self, target, x, y, goal, generator):
        lo, hi = target.contract.bounds
        shape, n = tuple(x.shape[1:]), x.shape[0]
        flat = x.reshape(n, -1)
        led = Ledger(flat, 2.0, self.max_queries)
        lab = goal.labels_for(y)
        sign = -1.0 if goal.targeted else 1.0  # minimise sign * p_label
        order, to_input = self._directions(shape, generator, x.device, x.dtype)  # before a query
        probs = self._probs(target, flat, shape)
        clean_pred = probs.argmax(1).to(y.device)
        led.spend(torch.arange(n, device=x.device))
        led.settle(goal.success(clean_pred, y))
        idx = torch.nonzero(led.attacked).squeeze(1)
        cur = flat[idx].clone()
        best = sign * probs[idx].gather(1, lab[idx, None]).squeeze(1)
        exhausted = None
        try:
            for i in range(order.numel()):
                if idx.numel() == 0:
                    break
                q = to_input(order[i:i + 1]).expand(idx.numel(), -1)
                keep = torch.ones(idx.numel(), dtype=torch.bool, device=x.device)
                done = torch.zeros_like(keep)
                for s in (-1.0, 1.0):  # x - εq first, then x + εq (Algorithm 1)
                    rows = torch.nonzero(keep & ~done & (led.left(idx) > 0)).squeeze(1)
                    if rows.numel() == 0:
                        continue
                    cand = (cur[rows] + s * self.step * q[rows]).clamp(lo, hi)
                    p = self._probs(target, cand, shape)
                    led.spend(idx[rows])
                    val = sign * p.gather(1, lab[idx[rows], None]).squeeze(1)
                    ok = val < best[rows]
                    cur[rows[ok]], best[rows[ok]], done[rows[ok]] = cand[ok], val[ok], True
                    won = ok & goal.success(p.argmax(1).to(y.device), y[idx[rows]])
                    led.offer(idx[rows], cand, won)
                    keep[rows[won]] = False
                keep &= led.left(idx) > 0
                idx, cur, best = idx[keep], cur[keep], best[keep]
        except BudgetExhausted as exc:  # keep the best found so far, and say so
            exhausted = str(exc)
        # points not fooled keep their last iterate (the report counts them as not fooled)
        unfooled = torch.isinf(led.best_norm[idx])
        led.best[idx[unfooled]] = cur[unfooled]
        return Perturbed(led.best.reshape(x.shape), clean_pred=clean_pred,
                         extra=led.extra(exhausted))
