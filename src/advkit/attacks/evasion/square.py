"""Square Attack, L∞ and L2: score-based black-box random search.

Andriushchenko, Croce, Flammarion & Hein (2020), "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV. L∞: start from vertical stripes of ±eps (one random
sign per column and channel), then repeatedly propose a random square window whose perturbation
is set to ±eps (one random sign per channel) and keep it if the margin loss on the target's scores
decreases. The square covers a share p of the pixels; p starts at ``p_init`` and is halved at the
paper's iterations {10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000} of a 10,000-query run,
rescaled linearly to ``n_queries``. Only points not yet fooled are queried (per-sample early stop).

L2 (the paper's Algorithm 3): the start is a grid of tiles of side ~h/5, each holding the paper's
concentric-square pattern η with a random sign per tile and channel, scaled to norm eps. An update
takes two random windows W1, W2 of the scheduled side; per channel W1 receives a new two-halved η
pattern (halves of opposite sign, randomly transposed) plus its old content, rescaled so that W1
carries all the mass of W1 ∪ W2 and the unused budget, while W2 is zeroed: the perturbation keeps
norm eps before clipping to the bounds.

Scores are ``target.predict_scores``: logits when the target has them, else probabilities. The
loss is the margin ``s_y - max_{k≠y} s_k`` (untargeted) or ``max_{k≠t} s_k - s_t`` (targeted; the
paper uses cross-entropy there), minimised. For non-image inputs of shape (d,) the "square" is a
contiguous window of round(p·d) coordinates. Query accounting: every forward pass counts one
query per point, the clean pass included; no point is queried more than ``n_queries`` times by the
attack (``extra["queries"]`` per point; the template's final scoring pass comes on top).
``extra["success_by_query"][q]``: share of points fooled after q + 1 queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from advkit.attacks.base import EvasionAttack, Perturbed, take_rows_
from advkit.errors import BudgetExhausted
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import BLACK_BOX_EVASION

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


def ring_pattern(a: int, b: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """The paper's η on an a x b rectangle: concentric squares whose weights, sums of
    1/(n + 1 - k)^2, grow toward the centre."""
    n = max(a // 2, b // 2)
    i = torch.arange(a, device=device)[:, None]
    j = torch.arange(b, device=device)[None, :]
    m = n - torch.maximum((i - a // 2).abs(), (j - b // 2).abs())  # rings from the outside
    weights = torch.cumsum(1.0 / (n + 1 - torch.arange(n + 1, device=device, dtype=dtype)) ** 2, 0)
    return weights[m.clamp(0, n)]


def meta_pattern(sh: int, sw: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Two η halves of opposite sign (split along the rows, or the columns for a 1 x L window),
    normalised to unit L2 norm."""
    if sh >= 2:
        h1 = sh // 2
        eta = torch.cat([ring_pattern(h1, sw, device=device, dtype=dtype),
                         -ring_pattern(sh - h1, sw, device=device, dtype=dtype)], 0)
    else:
        w1 = sw // 2
        eta = torch.cat([ring_pattern(sh, w1, device=device, dtype=dtype),
                         -ring_pattern(sh, sw - w1, device=device, dtype=dtype)], 1)
    return eta / eta.norm()


@lru_cache(maxsize=64)
def _bands(n: int, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n - size + 1, n) 0/1 table whose row r marks positions r .. r + size - 1: the rows (or
    columns) a window with corner r covers. A few exist per run (one per square size); float, as
    float products are far cheaper than bool ones on CPU."""
    j = torch.arange(n, device=device)
    r = torch.arange(n - size + 1, device=device)[:, None]
    return ((j >= r) & (j < r + size)).to(dtype)


def _as_image(x: torch.Tensor) -> torch.Tensor:
    """View a batch as (N, C, H, W); vectors become (N, 1, 1, d)."""
    n, shape = x.shape[0], x.shape[1:]
    if len(shape) == 1:
        return x.reshape(n, 1, 1, shape[0])
    return x.reshape(n, -1, shape[-2], shape[-1])


@register("square", family="evasion", threat=BLACK_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class Square(EvasionAttack):
    """Square Attack (Andriushchenko 2020), L∞ or L2: query-efficient score-based random search."""

    requires = frozenset({"probabilities"})
    suggest = None  # on a labels-only target suggestion() lists the decision-based attacks
    eps: float = param(0.1, float, lo=0, doc="radius of the Lp ball")
    norm: float | str = param(math.inf, "norm", choices=(math.inf, 2.0))
    n_queries: int = param(1000, int, lo=2, doc="the paper allows 10,000; raise it for a final "
                           "evaluation")
    p_init: float = param(0.8, float, lo=0, hi=1, lo_open=True,
                          doc="initial share of the input a square covers")

    def __post_init__(self):
        check_params(self)

    @staticmethod
    def _randint(high, shape, generator, device) -> torch.Tensor:
        dev = generator.device if generator is not None else device
        return torch.randint(0, high, shape, generator=generator, device=dev).to(device)

    @staticmethod
    def _rand(shape, generator, like) -> torch.Tensor:
        dev = generator.device if generator is not None else like.device
        return torch.rand(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)

    def _sign(self, shape, generator, like) -> torch.Tensor:
        return (self._randint(2, shape, generator, like.device) * 2 - 1).to(like.dtype)

    def _window(self, k, h, w, sh, sw, generator, device):
        """Random (sh x sw) windows, one per sample: mask (k, 1, h, w) and corners."""
        r = self._randint(h - sh + 1, (k,), generator, device)
        s = self._randint(w - sw + 1, (k,), generator, device)
        rh = torch.arange(h, device=device)[None] - r[:, None]
        rw = torch.arange(w, device=device)[None] - s[:, None]
        mask = ((rh >= 0) & (rh < sh))[:, None, :, None] & ((rw >= 0) & (rw < sw))[:, None, None, :]
        return mask, rh.clamp(0, sh - 1), rw.clamp(0, sw - 1)

    def _init(self, x0, lo, hi, generator):
        k, c, h, w = x0.shape
        if self.threat.p == math.inf:  # vertical stripes: one random sign per column and channel
            return (x0 + self.eps * self._sign((k, c, 1, w), generator, x0)).clamp(lo, hi)
        th, tw = max(h // 5, 1), max(w // 5, 1)  # L2: a grid of η tiles with random signs
        nh, nw = h // th, w // tw
        tiles = ring_pattern(th, tw, device=x0.device, dtype=x0.dtype).repeat(nh, nw)
        signs = self._sign((k, c, nh, nw), generator, x0)
        delta = signs.repeat_interleave(th, 2).repeat_interleave(tw, 3) * tiles
        delta = torch.nn.functional.pad(delta, (0, w - nw * tw, 0, h - nh * th))
        scale = self.eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * scale[:, None, None, None]
        return (x0 + delta).clamp(lo, hi)

    def _box(self, x0, lo, hi):
        """The two values an L∞ pixel may take: x0 - eps and x0 + eps, clipped to the bounds."""
        return (x0 - self.eps).clamp(lo, hi), (x0 + self.eps).clamp(lo, hi)

    def _propose(self, x0, b, p, lo, hi, generator, box=None):
        k, c, h, w = x0.shape
        l2 = self.threat.p == 2.0
        least = 2 if l2 else 1
        if h == 1:  # a vector: a contiguous window of round(p·d) coordinates
            sh, sw = 1, min(max(round(p * w), least), max(w - 1, least), w)
        else:
            sh = sw = min(max(round(math.sqrt(p * h * w)), least), max(min(h, w) - 1, least), h, w)
        if not l2:
            return self._propose_linf(b, sh, sw, box or self._box(x0, lo, hi), generator)
        m1, rh, rw = self._window(k, h, w, sh, sw, generator, x0.device)
        m2 = self._window(k, h, w, sh, sw, generator, x0.device)[0]
        eta = meta_pattern(sh, sw, device=x0.device, dtype=x0.dtype).expand(k, sh, sw)
        if sh == sw:  # transpose the pattern for a random half of the samples
            flip = self._randint(2, (k, 1, 1), generator, x0.device).bool()
            eta = torch.where(flip, eta.transpose(1, 2), eta)
        placed = eta.reshape(k, -1).gather(1, (rh[:, :, None] * sw + rw[:, None, :]).flatten(1))
        placed = placed.reshape(k, 1, h, w) * m1
        nu = b - x0
        sq = lambda t: t.pow(2).sum((2, 3))  # noqa: E731 - per-channel squared norms
        unused = (self.eps**2 - nu.pow(2).sum((1, 2, 3))).clamp_min(0)[:, None]
        avail = (sq(nu * (m1 | m2)) + unused / c).sqrt()
        new = self._sign((k, c, 1, 1), generator, x0) * placed
        new = new + nu * m1 / sq(nu * m1).sqrt().clamp_min(1e-12)[..., None, None]
        new = new / sq(new).sqrt().clamp_min(1e-12)[..., None, None] * avail[..., None, None]
        return (x0 + nu * ~(m1 | m2) + new).clamp(lo, hi)

    def _propose_linf(self, b, sh, sw, box, generator):
        """An sh x sw window set to x0 ± eps, one random sign per channel, as exact 0/1 lerps
        (several times cheaper on CPU than masked ``where``); one random draw per query."""
        k, c, h, w = b.shape
        u = self._rand((k, 2 + c), generator, b)  # corner row, corner column, channel signs
        # (a float product can round up to the count itself, hence the clamp)
        r = (u[:, 0] * (h - sh + 1)).long().clamp_(max=h - sh)
        s = (u[:, 1] * (w - sw + 1)).long().clamp_(max=w - sw)
        rows, cols = _bands(h, sh, b.device, b.dtype), _bands(w, sw, b.device, b.dtype)
        win = rows[r][:, None, :, None] * cols[s][:, None, None, :]
        up = (u[:, 2:] < 0.5).to(b.dtype)[:, :, None, None]  # 1: x0 + eps, 0: x0 - eps
        place = lambda up: torch.lerp(b, torch.lerp(box[0], box[1], up), win)  # noqa: E731
        cand = place(up)
        same = torch.sub(cand, b).flatten(1).abs_().amax(1) == 0
        if bool(same.any()):  # never propose a no-op: flip the signs of those
            cand = place(torch.where(same[:, None, None, None], 1 - up, up))
        return cand

    def _perturb(self, target, x, y, goal, generator):
        lo, hi = target.contract.bounds
        xi, shape = _as_image(x), (-1,) + x.shape[1:]
        n, targeted = x.shape[0], goal.targeted
        labels = goal.labels_for(y)
        queries = torch.ones(n, dtype=torch.int64, device=x.device)
        scores = target.predict_scores(x, check=False)
        clean_pred = scores.argmax(1)
        done = goal.success(clean_pred, y)
        fooled = [int(done.sum())]  # points fooled after each query
        best = xi.clone()
        # the points still running, compacted: only they are proposed to and queried
        idx = torch.nonzero(~done).squeeze(1)
        x0, lab, yy = xi[idx], labels[idx], y[idx]
        b = self._init(x0, lo, hi, generator)
        box = self._box(x0, lo, hi) if self.threat.p == math.inf else None
        m_b = torch.full((idx.numel(),), math.inf, device=x.device)
        exhausted = None
        for i in range(self.n_queries - 1):
            if idx.numel() == 0:
                break
            if i == 0:
                cand = b
            else:
                cand = self._propose(x0, b, square_fraction(self.p_init, i - 1, self.n_queries - 2),
                                     lo, hi, generator, box)
            try:
                scores = target.predict_scores(cand.reshape(shape), check=False)
            except BudgetExhausted as exc:  # keep the best found so far, and say so
                exhausted = str(exc)
                break
            m = margin_loss(scores, lab, targeted)
            better = m < m_b
            b = take_rows_(b, cand, better)
            m_b = torch.where(better, m, m_b)
            won = better & goal.success(scores.argmax(1), yy)
            n_won = int(won.sum())
            fooled.append(fooled[-1] + n_won)
            if n_won:  # write the finished points back and drop them from the working set
                best[idx[won]], queries[idx[won]] = b[won], i + 2  # the clean pass + i + 1
                keep = ~won
                idx, x0, lab, yy, b, m_b = idx[keep], x0[keep], lab[keep], yy[keep], b[keep], m_b[keep]
                if box is not None:
                    box = (box[0][keep], box[1][keep])
        # the points still running used every query (or all the budget allowed)
        best[idx], queries[idx] = b, self.n_queries if exhausted is None else i + 1
        trace = torch.tensor(fooled, dtype=torch.float32, device=x.device) / n
        trace = torch.cat([trace, trace[-1:].expand(self.n_queries - trace.numel())])
        extra = {"queries": queries, "success_by_query": trace}
        if exhausted is not None:
            extra["budget_exhausted"] = exhausted
        return Perturbed(best.reshape(x.shape), clean_pred=clean_pred, passes=0, extra=extra)
