"""Learning-based model stealing: Copycat, with random, natural and adaptive (Knockoff) queries.

Correia-Silva, Berriel, Badue, de Souza & Oliveira-Santos (2018), "Copycat CNN: Stealing Knowledge
by Persuading Confession with Random Non-Labeled Data", IJCNN: query the victim on data the
attacker has (random or natural images, not the victim's training data), keep only its *labels*,
and train a substitute of a chosen architecture on them. Labels suffice, so this works against
label-only APIs.

Query choice (``strategy``):

- ``random``: uniform in the input bounds;
- ``natural``: drawn without replacement from a pool of another dataset's points (Copycat's
  non-problem-domain data);
- ``adaptive``: Knockoff Nets (Orekondy, Schiele & Fritz 2019, "Knockoff Nets: Stealing
  Functionality of Black-Box Models", CVPR, §4.2): the pool is split into actions (its class
  labels, else k-means clusters), and a gradient bandit (Sutton & Barto §2.8) learns which
  actions to query. Each round draws actions from the softmax of the preferences H, a pool point
  per action, queries the victim, trains the substitute on everything answered so far, and scores
  each point with the paper's rewards: *certainty* (margin between the victim's top two
  probabilities), *diversity* (how far the answer is above the running mean answer), *loss* (the
  substitute's disagreement with the victim, 1 - exp(-cross-entropy)), or the mean of the three
  (``all``). Update: H_a += α (r - r̄)(1 - π_a) for the chosen a, H_b -= α (r - r̄) π_b otherwise,
  r̄ the running mean reward.

The stolen model is a zoo ``nn.Module`` (``advkit.models.zoo``) that returns logits, so evasion
can use it as a transfer surrogate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from advkit.attacks.privacy.extraction_equations import QueryOracle, as_oracle
from advkit.errors import InputContractError, InvalidParameterError
from advkit.models.train import train
from advkit.models.zoo import ZOO_NAMES, build
from advkit.params import check_params, param

STRATEGIES = ("random", "natural", "adaptive")
REWARDS = ("certainty", "diversity", "loss", "all")


@dataclass
class CopycatResult:
    """The stolen ``model`` (logits), the victim ``queries`` spent, the queried inputs ``x`` and
    the victim's labels ``y`` for them; adaptive runs add ``action_counts`` (queries per action)
    and ``policy`` (the final action probabilities)."""

    model: nn.Module
    queries: int
    x: torch.Tensor
    y: torch.Tensor
    strategy: str
    action_counts: list[int] = field(default_factory=list)
    policy: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"queries": self.queries, "strategy": self.strategy,
                "action_counts": list(self.action_counts), "policy": list(self.policy),
                "rewards": list(self.rewards)}


@dataclass(frozen=True, kw_only=True)
class Copycat:
    """Copycat (Correia-Silva et al. 2018) with random, natural or adaptive (Knockoff Nets,
    Orekondy et al. 2019) query choice; see the module docstring.

    ``architecture``/``hidden``: the substitute from the zoo (``hidden`` for ``mlp``).
    ``epochs``, ``batch_size``, ``lr``: its training (Adam, hard labels), with at least
    ``min_steps`` optimizer steps however few the queries. Adaptive: ``rounds`` policy updates
    (the queries split evenly), ``reward``, ``bandit_lr`` (α), ``clusters`` (k-means actions
    when the pool has no groups), ``round_epochs`` (substitute training per round)."""

    queries: int = param(1000, int, lo=1)
    strategy: str = param("random", str, choices=STRATEGIES)
    architecture: str = param("lenet", str, choices=ZOO_NAMES)
    hidden: tuple | None = param(None, "ints", lo=1, optional=True)
    epochs: int = param(10, int, lo=1)
    batch_size: int = param(64, int, lo=1)
    lr: float = param(1e-3, float, lo=0, lo_open=True)
    min_steps: int = param(300, int, lo=0)
    rounds: int = param(10, int, lo=1)
    reward: str = param("all", str, choices=REWARDS)
    bandit_lr: float = param(0.5, float, lo=0, lo_open=True)
    clusters: int = param(10, int, lo=2)
    round_epochs: int = param(2, int, lo=1)

    def __post_init__(self):
        check_params(self)
        if self.hidden is not None and self.architecture != "mlp":
            raise InvalidParameterError(
                "hidden", self.hidden, "None unless architecture='mlp' (only the MLP takes "
                "hidden widths)", owner="Copycat")

    def substitute(self, o: QueryOracle, generator: torch.Generator | None) -> nn.Module:
        kw = {"hidden": tuple(self.hidden)} if self.hidden is not None else {}
        return build(self.architecture, input_shape=o.input_shape, n_classes=o.n_classes,
                     generator=generator, **kw)

    def steal(self, victim, *, pool=None, pool_groups=None,
              generator: torch.Generator | None = None, **oracle_kwargs) -> CopycatResult:
        """Steal ``victim`` (a Target or callable, see ``as_oracle``). ``pool``: the natural or
        adaptive strategy's candidate queries ``(M, *input_shape)``, within the bounds;
        ``pool_groups``: its action per point (e.g. its dataset's class labels; None: k-means
        clusters)."""
        o = as_oracle(victim, **oracle_kwargs)
        if self.strategy != "random":
            pool = self._check_pool(o, pool)
        elif pool is not None:
            raise InvalidParameterError("pool", "given", "None for strategy='random' (it draws "
                                        "uniform queries; use strategy='natural' for a pool)")
        model = self.substitute(o, generator)
        start = o.queries
        if self.strategy == "adaptive":
            return self._adaptive(o, model, pool, pool_groups, generator, start)
        if self.strategy == "random":
            x = o.uniform(self.queries, generator, torch.float32)
        else:
            x = pool[torch.randperm(pool.shape[0], generator=generator)[: self.queries]]
        y = o.ask(x).labels
        self._train(model, x, y, self.epochs, generator)
        return CopycatResult(model, o.queries - start, x, y, self.strategy)

    # -- helpers ---------------------------------------------------------------------------------
    def _check_pool(self, o: QueryOracle, pool) -> torch.Tensor:
        if pool is None:
            raise InvalidParameterError(
                "pool", None, f"a tensor of candidate queries for strategy={self.strategy!r} "
                "(another dataset's points, shaped like the victim's inputs)", owner="Copycat")
        pool = torch.as_tensor(np.asarray(pool) if not isinstance(pool, torch.Tensor) else pool)
        if pool.dim() != len(o.input_shape) + 1 or tuple(pool.shape[1:]) != o.input_shape:
            raise InputContractError(
                f"the pool has shape {tuple(pool.shape)} but the victim takes (N, "
                f"{', '.join(map(str, o.input_shape))}); fix: reshape the pool's points")
        if pool.shape[0] < self.queries:
            raise InvalidParameterError(
                "queries", self.queries, f"at most the pool's {pool.shape[0]} points (queries "
                "are drawn without replacement); fix: a bigger pool or fewer queries",
                owner="Copycat")
        flat = pool.reshape(pool.shape[0], -1).to(torch.float64)
        tol = 1e-5 * float((o.hi - o.lo).clamp_min(1.0).max())
        if bool(((flat < o.lo - tol) | (flat > o.hi + tol)).any()) \
                or not bool(torch.isfinite(flat).all()):
            raise InputContractError(
                "the pool holds points outside the victim's input bounds (or NaN); fix: scale "
                "the pool into the bounds the victim declares")
        return pool.to(torch.float32)

    def _train(self, model, x, y, epochs, generator) -> None:
        steps_per_epoch = math.ceil(x.shape[0] / self.batch_size)
        epochs = max(epochs, math.ceil(self.min_steps / steps_per_epoch))
        train(model, x, y, epochs=epochs, batch_size=self.batch_size, lr=self.lr,
              generator=generator, progress=False)

    def _groups(self, pool, pool_groups, generator) -> torch.Tensor:
        if pool_groups is not None:
            g = torch.as_tensor(np.asarray(pool_groups)).long().reshape(-1)
            if g.shape[0] != pool.shape[0]:
                raise InputContractError(f"pool_groups has {g.shape[0]} entries for "
                                         f"{pool.shape[0]} pool points; they must match")
            return torch.unique(g, return_inverse=True)[1]
        from sklearn.cluster import KMeans

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        flat = pool.reshape(pool.shape[0], -1).numpy()
        km = KMeans(n_clusters=min(self.clusters, pool.shape[0]), n_init=3, random_state=seed)
        return torch.as_tensor(km.fit_predict(flat)).long()

    def _adaptive(self, o, model, pool, pool_groups, generator, start) -> CopycatResult:
        groups = self._groups(pool, pool_groups, generator)
        n_act = int(groups.max()) + 1
        members = [torch.nonzero(groups == a).squeeze(1) for a in range(n_act)]
        members = [m[torch.randperm(m.numel(), generator=generator)] for m in members]
        used = [0] * n_act
        h = torch.zeros(n_act, dtype=torch.float64)
        baseline, n_seen = 0.0, 0
        xs, ys, counts, rewards = [], [], [0] * n_act, []
        mean_answer = torch.zeros(o.n_classes, dtype=torch.float64)
        per_round = [self.queries // self.rounds + (r < self.queries % self.rounds)
                     for r in range(self.rounds)]
        for size in (s for s in per_round if s):
            acts, idx = [], []
            for _ in range(size):
                left = torch.tensor([used[a] < members[a].numel() for a in range(n_act)])
                pi = torch.softmax(h, 0) * left
                a = int(torch.multinomial(pi / pi.sum(), 1, generator=generator))
                idx.append(int(members[a][used[a]]))
                used[a] += 1
                acts.append(a)
            x = pool[torch.tensor(idx)]
            ans = o.ask(x)
            soft = ans.probabilities if ans.probabilities is not None else \
                nn.functional.one_hot(ans.labels, o.n_classes).to(torch.float64)
            r = self._rewards(model, x, soft, mean_answer, n_seen)
            pi = torch.softmax(h, 0)
            for a, ri in zip(acts, r.tolist(), strict=True):
                n_seen += 1
                baseline += (ri - baseline) / n_seen
                step = self.bandit_lr * (ri - baseline)
                grad = -pi * step
                grad[a] += step
                h += grad
                counts[a] += 1
            mean_answer = mean_answer + (soft.sum(0) - soft.shape[0] * mean_answer) / n_seen
            rewards.append(float(r.mean()))
            xs.append(x)
            ys.append(ans.labels)
            self._train(model, torch.cat(xs), torch.cat(ys), self.round_epochs, generator)
        x, y = torch.cat(xs), torch.cat(ys)
        self._train(model, x, y, self.epochs, generator)
        return CopycatResult(model, o.queries - start, x, y, "adaptive", counts,
                             torch.softmax(h, 0).tolist(), rewards)

    def _rewards(self, model, x, soft, mean_answer, n_seen) -> torch.Tensor:
        """Per-point rewards in [0, 1] (Orekondy et al. 2019, §4.2)."""
        top2 = soft.topk(2, 1).values
        cert = top2[:, 0] - top2[:, 1]
        div = (soft - mean_answer).clamp_min(0).sum(1) if n_seen else torch.ones(len(x))
        div = div.to(torch.float64).clamp(0, 1)
        with torch.no_grad():
            logp = torch.log_softmax(model(x).to(torch.float64), 1)
        loss = 1 - torch.exp((soft * logp).sum(1))
        parts = {"certainty": cert, "diversity": div, "loss": loss}
        if self.reward == "all":
            return (cert + div + loss) / 3
        return parts[self.reward]
