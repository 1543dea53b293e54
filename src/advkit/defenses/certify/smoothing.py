"""Randomized smoothing: PREDICT and CERTIFY with Gaussian noise, and Gaussian training.

Cohen, Rosenfeld & Kolter (2019), "Certified Adversarial Robustness via Randomized Smoothing",
ICML. The smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) is robust within L2
radius sigma * Phi^-1(pA) around x when the top class has probability at least pA > 1/2.

- CERTIFY (the paper's Algorithm "certify"): draw n0 noisy copies to *select* the top class cA,
  then n fresh copies to *estimate* it; pA_lower is the one-sided (1 - alpha) Clopper-Pearson lower
  bound on P(f(x + noise) = cA); abstain when pA_lower < 1/2, else return cA with radius
  sigma * Phi^-1(pA_lower).
- PREDICT: draw n copies, take the two most frequent classes with counts nA >= nB; return cA when
  the two-sided binomial test of nA successes in nA + nB trials at p = 1/2 has p-value <= alpha,
  else abstain.

The base classifier f is any target that answers labels (a ``TorchTarget``, a ``SklearnTarget``, a
remote target); every noisy copy is one counted query. Noise is drawn from an explicit generator in
batches of up to ``batch_size`` copies per forward pass (copies of several points share a batch
when n is small). Noisy inputs leave the contract's bounds by design, so they are sent with
``check=False``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm

from advkit.errors import InvalidParameterError, check_range
from advkit.evaluation.metrics import Proportion, proportion
from advkit.params import check_params, param
from advkit.registry import register
from advkit.targets.base import Target
from advkit.threat_tags import MITIGATES_EVASION

ABSTAIN = -1


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on p from k successes in n trials.

    The alpha quantile of Beta(k, n - k + 1) (0 when k = 0): the lower end of the two-sided
    1 - 2 alpha Clopper-Pearson interval, as in Cohen et al.
    """
    if not 0 <= k <= n or n < 1:
        raise InvalidParameterError("k", (k, n), "0 <= k <= n with n >= 1")
    if k == 0:
        return 0.0
    return float(beta_dist.ppf(alpha, k, n - k + 1))


def binomial_p_value(k: int, n: int, p: float = 0.5) -> float:
    """Two-sided exact binomial test p-value of k successes in n trials at success rate p."""
    if n == 0:
        return 1.0
    return float(binomtest(int(k), int(n), p, alternative="two-sided").pvalue)


def certified_radius(p_lower: float, sigma: float) -> float:
    """sigma * Phi^-1(p_lower) (the L2 radius Cohen et al. certify; -inf when p_lower is 0)."""
    return float(sigma * norm.ppf(p_lower))


@dataclass
class SmoothedCertification:
    """Per-point outcome of CERTIFY (``prediction`` is -1 where it abstained, radius then 0)."""

    prediction: torch.Tensor  # int64 (N,)
    radius: torch.Tensor  # float64 (N,)
    pA_lower: torch.Tensor  # float64 (N,), the Clopper-Pearson lower bound on pA
    counts: torch.Tensor  # int64 (N, K): class counts of the n estimation samples
    sigma: float
    n0: int
    n: int
    alpha: float
    queries: int
    seconds: float

    @property
    def abstained(self) -> torch.Tensor:
        return self.prediction == ABSTAIN

    def certified_mask(self, y: torch.Tensor, r: float) -> torch.Tensor:
        """Correct with radius >= r (abstain counts as wrong)."""
        y = torch.as_tensor(y).to(self.prediction.device)
        return (self.prediction == y) & ~self.abstained & (self.radius >= r)

    def certified_accuracy(self, y: torch.Tensor, r: float = 0.0) -> Proportion:
        return proportion(self.certified_mask(y, r))


@dataclass
class SmoothedPrediction:
    """Per-point outcome of PREDICT (``prediction`` is -1 where it abstained)."""

    prediction: torch.Tensor
    p_value: torch.Tensor  # float64 (N,)
    counts: torch.Tensor  # int64 (N, K)
    queries: int
    seconds: float

    @property
    def abstained(self) -> torch.Tensor:
        return self.prediction == ABSTAIN


def certified_accuracy_curve(result: SmoothedCertification, y, radii) -> list[Proportion]:
    """Certified accuracy at each radius in ``radii`` (never rises with the radius)."""
    return [result.certified_accuracy(y, float(r)) for r in radii]


def gaussian_augmentation_hook(sigma: float, generator: torch.Generator | None = None):
    """A ``batch_hook`` for :func:`advkit.models.train.train`: train the base classifier on
    ``x + N(0, sigma^2 I)`` (Cohen et al. train with the noise they smooth with; no clipping)."""
    check_range("sigma", sigma, lo=0, lo_open=True)

    def hook(xb: torch.Tensor, yb: torch.Tensor, model) -> tuple[torch.Tensor, torch.Tensor]:
        return xb + sigma * _randn(xb.shape, xb, generator), yb

    return hook


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    dev = generator.device if generator is not None else like.device
    z = torch.randn(shape, generator=generator, device=dev, dtype=like.dtype)
    return z if z.device == like.device else z.to(like.device)


@register("randomized-smoothing", family="defense", threat=MITIGATES_EVASION)
@dataclass(frozen=True, kw_only=True)
class RandomizedSmoothing:
    """Randomized smoothing (Cohen 2019): PREDICT and CERTIFY with Gaussian noise of std sigma."""

    sigma: float = param(0.25, float, lo=0, lo_open=True, doc="std of the Gaussian noise")
    n0: int = param(100, int, lo=1, doc="samples to guess the top class")
    n: int = param(100_000, int, lo=1, doc="samples to estimate its probability")
    alpha: float = param(0.001, float, lo=0, hi=1, lo_open=True, hi_open=True,
                         doc="failure probability of the certificate")
    batch_size: int = param(1000, int, lo=1)

    def __post_init__(self):
        check_params(self)

    # -- sampling ---------------------------------------------------------------------------
    def sample_counts(self, target: Target, x: torch.Tensor, num: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Class counts (N, K) of the base classifier on ``num`` noisy copies of each point.

        The N * num copies are processed in order, ``batch_size`` per forward pass.
        """
        k = target.contract.n_classes
        m = x.shape[0]
        total = m * num
        counts = torch.zeros(m * k, dtype=torch.int64, device=x.device)
        gen_dev = generator.device if generator is not None else x.device
        # one noise buffer, refilled in place on the generator's device (no allocation per batch)
        buf = torch.empty((min(self.batch_size, total),) + tuple(x.shape[1:]), dtype=x.dtype,
                          device=gen_dev)
        for start in range(0, total, self.batch_size):
            stop = min(total, start + self.batch_size)
            first, last = start // num, (stop - 1) // num
            z = buf[: stop - start].normal_(0.0, self.sigma, generator=generator)
            if gen_dev != x.device:
                z = z.to(x.device)
            if first == last:  # all copies of one point: broadcast, no gather
                noisy = z.add_(x[first:first + 1])
                pred = target.labels(noisy, check=False).to(x.device)
                counts[first * k:(first + 1) * k] += torch.bincount(pred, minlength=k)
                continue
            owner = torch.arange(start, stop, device=x.device) // num
            pred = target.labels(z.add_(x[owner]), check=False).to(x.device)
            counts += torch.bincount(owner * k + pred, minlength=m * k)
        return counts.reshape(m, k)

    # -- the two algorithms -----------------------------------------------------------------
    def certify(self, target: Target, x, *, generator: torch.Generator | None = None
                ) -> SmoothedCertification:
        """CERTIFY for each point of ``x`` (Cohen et al., Algorithm 1, right)."""
        x = target.check_inputs(x).detach()
        q0, t0 = target.queries, time.perf_counter()
        with torch.no_grad():
            c_hat = self.sample_counts(target, x, self.n0, generator).argmax(1)
            counts = self.sample_counts(target, x, self.n, generator)
        n_a = counts.gather(1, c_hat[:, None]).squeeze(1).cpu().tolist()
        p_low = [lower_confidence_bound(int(k), self.n, self.alpha) for k in n_a]
        pred, radius = [], []
        for c, p in zip(c_hat.cpu().tolist(), p_low, strict=True):
            if p < 0.5:
                pred.append(ABSTAIN)
                radius.append(0.0)
            else:
                pred.append(int(c))
                radius.append(certified_radius(p, self.sigma))
        return SmoothedCertification(
            prediction=torch.tensor(pred, dtype=torch.int64),
            radius=torch.tensor(radius, dtype=torch.float64),
            pA_lower=torch.tensor(p_low, dtype=torch.float64),
            counts=counts.cpu(), sigma=self.sigma, n0=self.n0, n=self.n, alpha=self.alpha,
            queries=target.queries - q0, seconds=time.perf_counter() - t0,
        )

    def predict(self, target: Target, x, *, generator: torch.Generator | None = None
                ) -> SmoothedPrediction:
        """PREDICT for each point of ``x`` (Cohen et al., Algorithm 1, left)."""
        x = target.check_inputs(x).detach()
        q0, t0 = target.queries, time.perf_counter()
        with torch.no_grad():
            counts = self.sample_counts(target, x, self.n, generator)
        return self._decide(counts.cpu(), target.queries - q0, time.perf_counter() - t0)

    def _decide(self, counts: torch.Tensor, queries: int, seconds: float) -> SmoothedPrediction:
        top2 = counts.topk(2, dim=1)
        pred, pvals = [], []
        for (n_a, n_b), (c_a, _) in zip(top2.values.tolist(), top2.indices.tolist(), strict=True):
            p = binomial_p_value(n_a, n_a + n_b, 0.5)
            pvals.append(p)
            pred.append(int(c_a) if p <= self.alpha else ABSTAIN)
        return SmoothedPrediction(prediction=torch.tensor(pred, dtype=torch.int64),
                                  p_value=torch.tensor(pvals, dtype=torch.float64),
                                  counts=counts, queries=queries, seconds=seconds)

    def max_radius(self) -> float:
        """The largest radius CERTIFY can return with n samples: sigma * Phi^-1(alpha^(1/n))."""
        return certified_radius(self.alpha ** (1.0 / self.n), self.sigma)


def radii_grid(max_radius: float, steps: int = 20) -> list[float]:
    """``steps`` + 1 evenly spaced radii from 0 to ``max_radius``."""
    check_range("steps", steps, lo=1, kind=int)
    if not math.isfinite(max_radius) or max_radius <= 0:
        return [0.0]
    return [max_radius * i / steps for i in range(steps + 1)]
