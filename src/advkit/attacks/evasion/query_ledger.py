"""What the query-based attacks (HopSkipJump, Boundary Attack, SimBA) share: per-point query
accounting against a per-point cap, the best point found so far, the success-versus-queries and
median-norm-versus-queries curves, and (for the decision-based ones) a label oracle, an adversarial
starting point and the binary search along the segment to the original input.

Query accounting: the target counts one query per input sample; the ledger counts the same queries
per attacked point, so ``extra["queries"]`` sums to the queries the attack made (the template's
final scoring pass comes on top). A point never takes more than ``max_queries`` queries; the
target's own budget (``Target.budget``) is enforced by the target, which raises BudgetExhausted:
the attacks stop there and keep the best found so far, like Square.
"""

from __future__ import annotations

import math

import torch

from advkit.threats import lp_norm


class Ledger:
    """Per-point queries, the best adversarial point found so far and its norm, and the events
    from which the curves are drawn. ``x`` is the flat (n, d) batch; the norm is ``p``."""

    def __init__(self, x: torch.Tensor, p: float, max_queries: int):
        n = x.shape[0]
        self.x, self.p, self.max_queries = x, p, max_queries
        self.used = torch.zeros(n, dtype=torch.int64, device=x.device)
        self.best = x.clone()
        self.best_norm = torch.full((n,), math.inf, device=x.device, dtype=x.dtype)
        self.attacked = torch.ones(n, dtype=torch.bool, device=x.device)
        self._events: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def left(self, idx: torch.Tensor) -> torch.Tensor:
        return self.max_queries - self.used[idx]

    def spend(self, owners: torch.Tensor) -> None:
        """One query for each entry of ``owners`` (point indices, repeats allowed)."""
        self.used += torch.bincount(owners, minlength=self.used.numel())

    def offer(self, idx: torch.Tensor, cand: torch.Tensor, ok: torch.Tensor | None = None) -> None:
        """Candidates ``cand`` (adversarial, where ``ok``) for the points ``idx``: kept where
        nearer than the best so far; the event is stamped with the queries used until now."""
        if ok is not None:
            idx, cand = idx[ok], cand[ok]
        if idx.numel() == 0:
            return
        d = lp_norm(cand - self.x[idx], self.p)
        if idx.unique().numel() < idx.numel():  # several candidates of one point: its nearest
            # (an index_put with repeated indices keeps an arbitrary one, thread-dependent)
            order = torch.argsort(d, stable=True)
            uniq, inv = torch.unique(idx[order], return_inverse=True)
            first = torch.full((uniq.numel(),), len(order), dtype=torch.long, device=idx.device)
            first.scatter_reduce_(0, inv, torch.arange(len(order), device=idx.device), "amin")
            keep = order[first]
            idx, cand, d = idx[keep], cand[keep], d[keep]
        better = d < self.best_norm[idx]
        idx, cand, d = idx[better], cand[better], d[better]
        self.best[idx], self.best_norm[idx] = cand, d
        self._events.append((idx, self.used[idx].clone(), d))

    def settle(self, done: torch.Tensor) -> None:
        """Points whose goal holds before any attack (``done``): distance 0, not attacked."""
        self.attacked = ~done
        self.best_norm[done] = 0.0
        idx = torch.nonzero(done).squeeze(1)
        self._events.append((idx, self.used[idx].clone(),
                             torch.zeros(idx.numel(), device=self.x.device, dtype=self.x.dtype)))

    def curves(self) -> dict[str, torch.Tensor]:
        """``success_by_query[q]``: share of the points with an adversarial point after q + 1
        queries; ``median_norm_by_query[q]``: median over the attacked points of the smallest
        norm found after q + 1 queries (inf while fewer than half have one)."""
        n, q = self.used.numel(), self.max_queries
        grid = torch.full((n, q), math.inf, device=self.x.device, dtype=self.x.dtype)
        for idx, at, d in self._events:
            col = (at - 1).clamp(0, q - 1)
            cur = grid[idx, col]
            grid[idx, col] = torch.minimum(cur, d)
        grid = torch.cummin(grid, dim=1).values
        success = torch.isfinite(grid).float().mean(0)
        if bool(self.attacked.any()):
            median = grid[self.attacked].quantile(0.5, dim=0, interpolation="lower")
        else:
            median = torch.zeros(q, device=self.x.device, dtype=self.x.dtype)
        return {"success_by_query": success, "median_norm_by_query": median}

    def extra(self, exhausted: str | None) -> dict:
        out = {"queries": self.used.clone(), **self.curves()}
        if exhausted is not None:
            out["budget_exhausted"] = exhausted
        return out


class LabelOracle:
    """Label-only access for decision-based attacks: ``adversarial(cand, owners)`` asks the
    target's labels for flat candidates ``cand`` of the points ``owners`` and answers whether the
    goal holds for each; the ledger counts the queries."""

    def __init__(self, target, goal, y: torch.Tensor, shape: tuple[int, ...], ledger: Ledger):
        self.target, self.goal, self.y, self.shape, self.ledger = target, goal, y, shape, ledger

    def adversarial(self, cand: torch.Tensor, owners: torch.Tensor) -> torch.Tensor:
        if owners.numel() == 0:
            return torch.zeros(0, dtype=torch.bool, device=cand.device)
        pred = self.target.labels(cand.reshape((-1,) + self.shape), check=False)
        self.ledger.spend(owners)
        return self.goal.success(pred.to(self.y.device), self.y[owners])


def uniform(shape, generator, like: torch.Tensor) -> torch.Tensor:
    dev = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def randn(shape, generator, like: torch.Tensor) -> torch.Tensor:
    dev = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=dev, dtype=like.dtype).to(like.device)


def start_points(oracle: LabelOracle, idx: torch.Tensor, bounds, tries: int, generator,
                 clean_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An adversarial start for each point of ``idx``: uniform noise within ``bounds`` (up to
    ``tries`` draws a point, each one query), failing that the nearest input of the batch whose
    clean prediction already meets the goal for this point (no query). Returns (starts, found)."""
    led = oracle.ledger
    x = led.x[idx]
    lo, hi = bounds
    start, found = x.clone(), torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)
    for _ in range(tries):
        todo = torch.nonzero(~found & (led.left(idx) > 0)).squeeze(1)
        if todo.numel() == 0:
            break
        noise = lo + (hi - lo) * uniform((todo.numel(), x.shape[1]), generator, x)
        ok = oracle.adversarial(noise, idx[todo])
        start[todo[ok]], found[todo[ok]] = noise[ok], True
    if not bool(found.all()):  # another input of the batch the target already answers right for
        good = oracle.goal.success(clean_pred[None, :], oracle.y[idx][:, None])  # (k, n)
        d = torch.cdist(x, led.x, p=led.p if math.isfinite(led.p) else float("inf"))
        d = torch.where(good, d, torch.full_like(d, math.inf))
        near, j = d.min(1)
        use = ~found & torch.isfinite(near)
        start[use], found[use] = led.x[j[use]], True
    return start, found


def line_search(oracle: LabelOracle, idx: torch.Tensor, adv: torch.Tensor, steps: int,
                p: float) -> torch.Tensor:
    """Binary search between each original input and its adversarial ``adv`` for the boundary
    (``steps`` halvings, one query each, fewer where a point's queries run out); returns the
    adversarial end. L2: the segment ``(1 - a) x + a adv``; L∞: ``clip(adv, x - r, x + r)`` with
    r a share a of ``||adv - x||_∞`` (the projection onto the ball, as in HopSkipJump)."""
    led = oracle.ledger
    x = led.x[idx]
    radius = (adv - x).abs().amax(1, keepdim=True)
    low = torch.zeros(idx.numel(), 1, device=x.device, dtype=x.dtype)
    high = torch.ones_like(low)

    def at(a: torch.Tensor, rows) -> torch.Tensor:
        if p == 2:
            return x[rows] + a * (adv[rows] - x[rows])
        r = a * radius[rows]
        return torch.minimum(torch.maximum(adv[rows], x[rows] - r), x[rows] + r)

    for _ in range(steps):
        rows = torch.nonzero(led.left(idx) > 0).squeeze(1)
        if rows.numel() == 0:
            break
        mid = (low[rows] + high[rows]) / 2
        ok = oracle.adversarial(at(mid, rows), idx[rows])[:, None]
        high[rows] = torch.where(ok, mid, high[rows])
        low[rows] = torch.where(ok, low[rows], mid)
    return at(high, torch.arange(idx.numel(), device=x.device))


def bisection_steps(theta: float) -> int:
    """Halvings of [0, 1] until it is no longer than ``theta``."""
    return max(1, math.ceil(math.log2(1.0 / theta)))


def decision_attack(target, x, y, goal, *, p: float, max_queries: int, run):
    """The frame of a decision-based attack: a ledger and a label oracle over ``x``, the clean
    pass paid for and settled, then ``run(oracle, ledger, clean_pred)``; when the target's budget
    runs out the best points found so far are kept and the record says why. Returns Perturbed."""
    from advkit.attacks.base import Perturbed
    from advkit.errors import BudgetExhausted

    shape, n = tuple(x.shape[1:]), x.shape[0]
    led = Ledger(x.reshape(n, -1), p, max_queries)
    oracle = LabelOracle(target, goal, y, shape, led)
    clean_pred = target.labels(x, check=False).to(y.device)
    led.spend(torch.arange(n, device=x.device))
    led.settle(goal.success(clean_pred, y))
    exhausted = None
    try:
        run(oracle, led, clean_pred)
    except BudgetExhausted as exc:
        exhausted = str(exc)
    return Perturbed(led.best.reshape(x.shape), clean_pred=clean_pred,
                     extra=led.extra(exhausted))


def on_the_boundary(oracle: LabelOracle, clean_pred, bounds, tries: int, generator, steps: int,
                    p: float):
    """(idx, cur): the attacked points that found an adversarial start (``start_points``), moved
    to the boundary by a ``steps``-step binary search toward their originals, both offered to
    the ledger; None when no point has a start."""
    led = oracle.ledger
    idx = torch.nonzero(led.attacked).squeeze(1)
    if idx.numel() == 0:
        return None
    start, found = start_points(oracle, idx, bounds, tries, generator, clean_pred)
    idx, cur = idx[found], start[found]
    if idx.numel() == 0:
        return None
    led.offer(idx, cur)
    cur = line_search(oracle, idx, cur, steps, p)
    led.offer(idx, cur)
    return idx, cur
