"""Decision-tree extraction by path finding.

Tramèr, Zhang, Juels, Reiter & Ristenpart (2016), "Stealing Machine Learning Models via
Prediction APIs", USENIX Security, §4.2 (Algorithm 1, the path-finding attack). A tree cuts the
input space into boxes, one per leaf. The attack needs an API that tells the leaves apart: the
paper's BigML API returns a confidence value with each label, distinct per leaf, used as a leaf
*identifier*. From one query x reaching leaf id, for every feature i the attack searches the line
through x along axis i over the whole feature range: along an axis the set of values reaching one
leaf is an interval (an intersection of half-lines), so two ends with the same identifier hold no
other leaf between them, and different ends are bisected to the split threshold (precision
``eps``). The interval around x_i is the leaf's predicate on feature i; one point in each other
interval is queued as a new query. Every leaf is found: each internal node's split is crossed by
the line search from a point in its region, so both children get visited (by induction from the
root). The stolen model is the set of leaf boxes, each with its label; a point is classified by the
box holding it.

What the API must return: ``(label, confidence)`` where the confidence (a number or a vector, e.g.
scikit-learn's class distribution at the leaf from ``predict_proba``, or the leaf index from
``apply``) differs between leaves. What fails otherwise:

- *labels only*: leaves of the same class cannot be told apart and a line whose two ends share a
  label may hide another class between them; the attack refuses such a victim
  (``IncompatibleTargetError``) and names Copycat.
- *confidences shared by several leaves* (pure leaves all answer (1, 0), say): leaves that share
  an identifier merge into one, boxes are missed, and fidelity drops. ``result.duplicate_ids``
  counts the identifiers seen with two disjoint boxes (a sign of this), and points outside every
  found box are classified by the nearest box. Rounded confidences merge leaves the same way.
- *categorical features or missing-value queries*: the paper's top-down variant uses incomplete
  queries (BigML); this implementation covers continuous features only, as scikit-learn's
  DecisionTreeClassifier takes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from advkit.attacks.privacy.extraction_equations import QueryOracle, as_oracle
from advkit.errors import BudgetExhausted
from advkit.params import check_params, param


@dataclass
class StolenTree:
    """Leaf boxes ``lo``/``hi`` (``(L, d)``, a point x is in leaf l when lo < x <= hi per
    feature, thresholds halfway between the last queried value on each side) and their
    ``labels`` (``(L,)``). ``labels_of(x)`` classifies by the box holding x (nearest box when
    none does); ``__call__`` gives one-hot scores, so metrics treat it like a model."""

    lo: torch.Tensor
    hi: torch.Tensor
    labels: torch.Tensor
    n_classes: int

    @property
    def n_leaves(self) -> int:
        return int(self.labels.shape[0])

    def labels_of(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x).reshape(len(x), -1).to(torch.float64)
        below = (self.lo.unsqueeze(0) - x.unsqueeze(1)).clamp_min(0)  # (N, L, d)
        above = (x.unsqueeze(1) - self.hi.unsqueeze(0)).clamp_min(0)
        inside = (x.unsqueeze(1) > self.lo.unsqueeze(0)) & (x.unsqueeze(1) <= self.hi.unsqueeze(0))
        dist = (below + above).sum(2) + (~inside.all(2)).to(torch.float64) * 1e-300
        return self.labels[dist.argmin(1)]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.labels_of(x), self.n_classes).to(torch.float32)

    def to_dict(self) -> dict:
        return {"lo": self.lo.tolist(), "hi": self.hi.tolist(), "labels": self.labels.tolist(),
                "n_classes": self.n_classes}


@dataclass
class TreeResult:
    """The stolen tree, the victim queries spent, and ``duplicate_ids``: identifiers answered
    for two disjoint boxes (leaves the API does not tell apart; 0 when the extraction is sound).
    ``complete`` is False when the query budget ran out before every leaf was explored."""

    tree: StolenTree
    queries: int
    duplicate_ids: int = 0
    complete: bool = True

    @property
    def model(self) -> StolenTree:
        return self.tree

    def to_dict(self) -> dict:
        return {"tree": self.tree.to_dict(), "queries": self.queries,
                "duplicate_ids": self.duplicate_ids, "complete": self.complete}


@dataclass(frozen=True, kw_only=True)
class TreePathFinding:
    """Path-finding extraction of a decision tree (Tramèr et al. 2016, §4.2, Algorithm 1).

    ``eps``: width below which a split threshold's bisection stops, as a share of the feature's
    range. ``max_queries``: stop exploring (``complete=False``) rather than exceed it (None:
    no limit but the victim's own budget). ``id_decimals``: confidences are rounded to this many
    decimals before they serve as leaf identifiers (None: compared exactly)."""

    eps: float = param(1e-10, float, lo=0, lo_open=True, hi=1)
    max_queries: int | None = param(None, int, lo=1, optional=True)
    id_decimals: int | None = param(9, int, lo=0, hi=15, optional=True)

    def __post_init__(self):
        check_params(self)

    def extract(self, victim, *, generator: torch.Generator | None = None,
                **oracle_kwargs) -> TreeResult:
        """Steal the tree behind ``victim`` (a Target answering probabilities, or a callable
        answering ``(labels, confidence)`` or probabilities; see ``as_oracle``)."""
        o = as_oracle(victim, **oracle_kwargs)
        o.require("confidence", "decision-tree path finding",
                  "use Copycat (advkit.attacks.privacy.copycat), which needs labels only")
        return _Search(self, o, generator).run()


@dataclass
class _Search:
    cfg: TreePathFinding
    o: QueryOracle
    generator: torch.Generator | None
    boxes: dict = field(default_factory=dict)  # id -> (lo, hi, label)
    duplicates: int = 0

    def _ids(self, x: torch.Tensor) -> tuple[list, torch.Tensor]:
        limit = self.cfg.max_queries
        if limit is not None and self.o.queries - self.start + x.shape[0] > limit:
            raise BudgetExhausted(f"max_queries={limit} reached")
        a = self.o.ask(x.reshape(x.shape[0], *self.o.input_shape))
        if a.probabilities is None and a.confidence is None:
            self.o.require("confidence", "decision-tree path finding", "use Copycat")
        conf = a.probabilities if a.probabilities is not None else a.confidence
        conf = conf.reshape(x.shape[0], -1)
        if self.cfg.id_decimals is not None:
            conf = torch.round(conf, decimals=self.cfg.id_decimals)
        ids = [(int(lab), *row) for lab, row in zip(a.labels.tolist(), conf.tolist(), strict=True)]
        return ids, a.labels

    def run(self) -> TreeResult:
        o, d = self.o, self.o.d
        self.start = o.queries
        x0 = o.uniform(1, self.generator, torch.float64).reshape(1, d)
        (id0,), _ = self._ids(x0)
        queue, complete = deque([(x0[0], id0)]), True
        try:
            while queue:
                x, ident = queue.popleft()
                if ident in self.boxes:
                    if not self._inside(ident, x):
                        self.duplicates += 1
                    continue
                self._explore(x, ident, queue)
        except BudgetExhausted:
            # unexplored leaves keep the one point known to reach them (a degenerate box)
            complete = False
            for y, y_id in [(x, ident), *queue]:
                if y_id not in self.boxes:
                    self.boxes[y_id] = (y - 1e-12, y.clone(), y_id[0])
        ids = list(self.boxes)
        lo = torch.stack([self.boxes[i][0] for i in ids])
        hi = torch.stack([self.boxes[i][1] for i in ids])
        labels = torch.tensor([i[0] for i in ids], dtype=torch.long)
        tree = StolenTree(lo, hi, labels, o.n_classes)
        return TreeResult(tree, o.queries - self.start, self.duplicates, complete)

    def _inside(self, ident, x) -> bool:
        lo, hi, _ = self.boxes[ident]
        return bool(((x > lo) & (x <= hi)).all())

    def _explore(self, x: torch.Tensor, ident, queue: deque) -> None:
        """Line searches along every axis through ``x``: the leaf's box, and one query point in
        each other interval (queued)."""
        o, d = self.o, self.o.d
        flo, fhi = o.lo, o.hi
        # segments per feature: [(a, b, id_a, id_b)], start with [lo_i, x_i] and [x_i, hi_i]
        ends = torch.cat([x.repeat(d, 1), x.repeat(d, 1)])
        idx = torch.arange(d)
        ends[idx, idx] = flo
        ends[d + idx, idx] = fhi
        end_ids, _ = self._ids(ends)
        segs = []  # (feature, a, b, id_a, id_b)
        for i in range(d):
            segs.append((i, float(flo[i]), float(x[i]), end_ids[i], ident))
            segs.append((i, float(x[i]), float(fhi[i]), ident, end_ids[d + i]))
        cuts = {i: [] for i in range(d)}  # feature -> [(threshold, id_left, id_right, a, b)]
        tol = self.cfg.eps * (fhi - flo)
        while segs:
            todo = [s for s in segs if s[3] != s[4] and s[2] - s[1] > float(tol[s[0]])]
            for s in segs:
                if s[3] != s[4] and s[2] - s[1] <= float(tol[s[0]]):
                    cuts[s[0]].append(s)
            if not todo:
                break
            mids = x.repeat(len(todo), 1)
            for r, s in enumerate(todo):
                mids[r, s[0]] = (s[1] + s[2]) / 2
            mid_ids, _ = self._ids(mids)
            segs = []
            for s, m_id in zip(todo, mid_ids, strict=True):
                m = (s[1] + s[2]) / 2
                segs += [(s[0], s[1], m, s[3], m_id), (s[0], m, s[2], m_id, s[4])]
        lo, hi = flo.clone() - 1e-12, fhi.clone()
        for i, cs in cuts.items():
            for _, a, b, ia, ib in sorted(cs, key=lambda c: c[1]):
                t = (a + b) / 2
                if b <= float(x[i]):
                    lo[i] = max(float(lo[i]), t)
                elif a >= float(x[i]):
                    hi[i] = min(float(hi[i]), t)
                # a point in the next interval: just past the cut, moved halfway to the next
                # cut (or the range's end) so that it is not on a threshold
                nxt = [c[1] for c in cs if c[1] > a]
                far = min(nxt) if a >= float(x[i]) and nxt else None
                prev = [c[2] for c in cs if c[2] < b]
                near = max(prev) if b <= float(x[i]) and prev else None
                if a >= float(x[i]):
                    p = (b + (far if far is not None else float(fhi[i]))) / 2
                    p = min(max(p, b), float(fhi[i]))
                    other = ib
                else:
                    p = (a + (near if near is not None else float(flo[i]))) / 2
                    p = max(min(p, a), float(flo[i]))
                    other = ia
                y = x.clone()
                y[i] = p
                queue.append((y, other))
        self.boxes[ident] = (lo, hi, ident[0])
