"""What every membership-inference attack shares: reading a model's probabilities (from a Target
or any callable ``probs(x) -> (N, K)``), checking them against the labels, and the per-example
statistics computed from them (log-probability of the true class, the logit-scaled confidence)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from advkit.errors import InvalidParameterError

ProbsFn = Callable[[torch.Tensor], torch.Tensor]
_TINY = 1e-30  # floor of a probability before logs (float64)


def as_probs_fn(source) -> ProbsFn:
    """A callable ``x -> (N, K) probabilities`` from an advkit Target (its ``probabilities``;
    works for score-only remote targets) or from a callable that already is one."""
    if callable(getattr(source, "probabilities", None)):
        return source.probabilities
    if callable(source):
        return source
    raise InvalidParameterError(
        "target", type(source).__name__,
        "an advkit Target with probabilities() or a callable x -> (N, K) probabilities")


def check_probs(p, y) -> tuple[torch.Tensor, torch.Tensor]:
    """``p`` as float64 (N, K) probabilities and ``y`` as int64 labels in [0, K); raises a typed
    error naming the problem and the fix for wrong shapes, NaN, logits, labels out of range."""
    p = torch.as_tensor(p).detach()
    y = torch.as_tensor(y).detach()
    if p.ndim != 2 or p.shape[1] < 2:
        raise InvalidParameterError(
            "probabilities", f"tensor of shape {tuple(p.shape)}",
            "an (N, K) tensor of class probabilities with K >= 2")
    if y.ndim != 1 or y.shape[0] != p.shape[0]:
        raise InvalidParameterError(
            "y", f"labels of shape {tuple(y.shape)}",
            f"1-D class indices, one per row of the probabilities ({p.shape[0]})")
    if y.is_floating_point():
        if not torch.all(y == y.round()):
            raise InvalidParameterError("y", "fractional labels", "integer class indices")
    y = y.long()
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= p.shape[1]):
        raise InvalidParameterError(
            "y", f"labels in [{int(y.min())}, {int(y.max())}]",
            f"class indices in [0, {p.shape[1] - 1}] (the model has {p.shape[1]} classes)")
    p = p.to(torch.float64)
    if not torch.all(torch.isfinite(p)):
        raise InvalidParameterError(
            "probabilities", "NaN or infinite values", "finite probabilities (check the model)")
    if float(p.min()) < -1e-6 or not torch.allclose(p.sum(1), torch.ones_like(p[:, 0]),
                                                     atol=1e-3):
        raise InvalidParameterError(
            "probabilities", "rows that are not probability vectors (logits?)",
            "non-negative rows summing to 1: apply softmax to logits first")
    return p.clamp(0.0, 1.0), y


def query(source, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Ask ``source`` (Target or callable) for the probabilities of ``x`` and check them."""
    with torch.no_grad():
        p = as_probs_fn(source)(x)
    return check_probs(p, y)


def true_class_logprob(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p_y (float64), p floored at 1e-30."""
    return p.gather(1, y[:, None]).squeeze(1).clamp_min(_TINY).log()


def logit_confidence(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini et al. (2022) logit scaling φ = log(p_y / (1 - p_y)), with 1 - p_y computed as the
    sum of the other classes (no cancellation when p_y rounds to 1)."""
    py = p.gather(1, y[:, None]).squeeze(1)
    rest = p.sum(1) - py
    others = p.scatter(1, y[:, None], 0.0).sum(1)
    rest = torch.where(others > 0, others, rest)
    return py.clamp_min(_TINY).log() - rest.clamp_min(_TINY).log()


def logit_confidence_from_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """φ from logits of shape (..., N, K), stably: z_y - logsumexp over the other classes."""
    z = logits.to(torch.float64)
    idx = y.expand(*z.shape[:-1])[..., None]
    zy = z.gather(-1, idx).squeeze(-1)
    masked = z.scatter(-1, idx, float("-inf"))
    return zy - torch.logsumexp(masked, dim=-1)


class ProbabilityScorer:
    """Membership scores from predicted probabilities (subclasses define ``_score(p, y)``),
    from given probabilities or by querying a Target / callable."""

    def scores_from_probabilities(self, p, y) -> torch.Tensor:
        p, y = check_probs(p, y)
        return self._score(p, y)

    def scores(self, target, x, y) -> torch.Tensor:
        """Scores of ``(x, y)`` against ``target``: an advkit Target (``probabilities``) or any
        callable ``x -> (N, K)`` probabilities, so a score-only remote model works."""
        p, y = query(target, x, y)
        return self._score(p, y)
