"""MI-Face model inversion: reconstruct what a model has learned of a class from its gradients.

Fredrikson, Jha & Ristenpart (2015), "Model Inversion Attacks that Exploit Confidence Information
and Basic Countermeasures", ACM CCS, Algorithm 1. For a class ``t`` the cost

    c(x) = 1 - f_t(x) + AuxTerm(x)

(``f_t``: the model's confidence in ``t``) is minimised by gradient descent on the input from
``x_0 = 0``: ``x_i = Process(x_{i-1} - λ ∇c(x_{i-1}))``. The descent stops after ``α`` steps, when
the cost has not fallen below the largest of the last ``β`` costs (no progress), or when the cost
reaches ``γ``; the iterate with the lowest cost is returned. Here:

- ``steps`` = α, ``patience`` = β, ``lr`` = λ (the paper's 5000, 100, 0.1);
- ``min_confidence`` states γ as a confidence: the descent stops once ``f_t(x) >= min_confidence``
  (cost ``<= 1 - min_confidence``; the paper sets γ = 0.99 without saying which side it means for
  a cost that starts near 1, so it is stated here as a confidence and reported);
- ``Process`` is the paper's image-processing step, denoising: a Gaussian filter of width
  ``denoise`` (pixels; 0 turns it off) on image inputs ``(N, C, H, W)``, then the input bounds;
- ``AuxTerm`` is ``tv_weight`` times the total variation of the image (0 by default, the paper's
  setting without auxiliary information), a smoothness prior for noisy reconstructions.

All classes asked for are inverted in one batch; each sample stops on its own (a stopped sample's
input is frozen, its queries still counted since the batch is answered whole).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.attacks.base import grad_of
from advkit.errors import InvalidParameterError
from advkit.params import check_params, param


@dataclass(frozen=True)
class InversionResult:
    """Reconstructions ``x`` (one per entry of ``labels``), the model's confidence in the label at
    each, the cost and the step at which each was reached, and the queries spent."""

    x: torch.Tensor
    labels: torch.Tensor
    confidence: torch.Tensor
    cost: torch.Tensor
    best_step: torch.Tensor
    steps_run: torch.Tensor
    queries: int


def _gaussian_kernel(sigma: float, channels: int, dtype, device) -> torch.Tensor:
    r = max(1, math.ceil(2 * sigma))
    t = torch.arange(-r, r + 1, dtype=dtype, device=device)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2)
    k1 = k1 / k1.sum()
    return (k1[:, None] * k1[None, :]).expand(channels, 1, 2 * r + 1, 2 * r + 1).contiguous()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image of ``(N, C, H, W)``: the sum of absolute differences
    between horizontal and vertical neighbours."""
    return ((x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
            + (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1))


@dataclass(frozen=True, kw_only=True)
class MIFace:
    """Fredrikson et al. (2015) MI-Face; needs the target's input gradients."""

    steps: int = param(5000, int, lo=1, hi=1_000_000, doc="α: the most descent steps")
    patience: int = param(100, int, lo=1, hi=100_000,
                          doc="β: stop when the cost is no lower than the largest of the last β")
    lr: float = param(0.1, float, lo=0.0, lo_open=True, hi=1e6, doc="λ: the step size")
    min_confidence: float = param(0.99, float, lo=0.0, hi=1.0,
                                  doc="γ as a confidence: stop once f_t(x) reaches it")
    denoise: float = param(0.0, float, lo=0.0, hi=10.0,
                           doc="Process: Gaussian denoising width in pixels (0: none)")
    tv_weight: float = param(0.0, float, lo=0.0, hi=1e6,
                             doc="AuxTerm: weight of the total variation (0: none)")

    requires = frozenset({"gradients", "logits"})

    def __post_init__(self):
        check_params(self)

    def _process(self, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        if self.denoise > 0 and x.dim() == 4:
            k = _gaussian_kernel(self.denoise, x.shape[1], x.dtype, x.device)
            pad = k.shape[-1] // 2
            x = torch.nn.functional.conv2d(
                torch.nn.functional.pad(x, (pad,) * 4, mode="replicate"), k, groups=x.shape[1])
        return x.clamp(lo, hi)

    def _cost(self, target, x: torch.Tensor, labels: torch.Tensor):
        logits = target.logits(x, check=False)
        conf = torch.softmax(logits, 1).gather(1, labels[:, None]).squeeze(1)
        cost = 1.0 - conf
        if self.tv_weight > 0 and x.dim() == 4:
            cost = cost + self.tv_weight * total_variation(x)
        return cost, conf

    def invert(self, target, labels, *, x0: torch.Tensor | None = None) -> InversionResult:
        """Invert each class of ``labels`` (int tensor, repeats allowed) from ``x0`` (default the
        paper's all-zeros input, clipped to the target's bounds)."""
        target.require(self.requires, "MI-Face", hint="model inversion reads input gradients; "
                       "audit a PyTorch model, or use attribute inference, which needs scores")
        c = target.contract
        labels = torch.as_tensor(labels).long().reshape(-1)
        if labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= c.n_classes:
            raise InvalidParameterError("labels", labels.tolist()[:10],
                                        f"a non-empty list of classes in 0..{c.n_classes - 1}")
        lo, hi = (float(b) for b in c.bounds)
        n = labels.numel()
        if x0 is None:
            x = torch.zeros((n, *c.shape), dtype=c.dtype).clamp(lo, hi)
        else:
            x = target.check_inputs(x0).detach().clone()
            if x.shape[0] != n:
                raise InvalidParameterError("x0", f"{x.shape[0]} inputs", f"{n}, one per label")
        q0 = target.queries
        history = torch.full((self.patience, n), float("inf"), dtype=torch.float64)
        best_x, best_cost = x.clone(), torch.full((n,), float("inf"), dtype=torch.float64)
        best_conf = torch.zeros(n, dtype=torch.float64)
        best_step = torch.zeros(n, dtype=torch.long)
        steps_run = torch.zeros(n, dtype=torch.long)
        active = torch.ones(n, dtype=torch.bool)
        for i in range(self.steps + 1):
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                cost, conf = self._cost(target, xg, labels)
                grad = grad_of(target, cost.sum(), xg) if i < self.steps else None
            cost, conf = cost.detach().double(), conf.detach().double()
            better = active & (cost < best_cost)
            best_cost = torch.where(better, cost, best_cost)
            best_conf = torch.where(better, conf, best_conf)
            best_step = torch.where(better, torch.full_like(best_step, i), best_step)
            best_x[better] = x[better].detach()
            if i > 0:  # Algorithm 1: no progress over the last β costs, or the goal reached
                stalled = cost >= history.max(0).values
                active &= ~(stalled | (conf >= self.min_confidence))
            if i == self.steps or not active.any():
                break
            history = torch.roll(history, 1, 0)
            history[0] = torch.where(active, cost, history[0])
            steps_run += active.long()
            step = self._process(x.detach() - self.lr * grad, lo, hi)
            x = torch.where(active.view(-1, *([1] * (x.dim() - 1))), step, x.detach())
        return InversionResult(best_x, labels, best_conf, best_cost, best_step, steps_run,
                               int(target.queries - q0))
