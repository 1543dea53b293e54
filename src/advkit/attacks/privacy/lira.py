"""The Likelihood Ratio Attack (LiRA).

Carlini, Chien, Nasr, Song, Terzis & Tramèr (2022), "Membership Inference Attacks From First
Principles", IEEE S&P. Shadow (reference) models are trained on random halves of a population pool
(``advkit.attacks.privacy.shadow``). Per example, the model's confidence in the true class is
logit-scaled, ``φ = log(p_y / (1 - p_y))``, which makes its distribution over models close to a
Gaussian; LiRA fits the IN Gaussian (models that trained on the example) and the OUT Gaussian
(models that did not) and scores the target model's ``φ``:

- ``online``: the likelihood ratio ``log N(φ; μ_in, σ_in²) - log N(φ; μ_out, σ_out²)``;
- ``offline``: the paper's one-sided test against OUT only, ``1 - Pr[Z > φ]`` with
  ``Z ~ N(μ_out, σ_out²)``; reported as ``-log Pr[Z > φ]`` (the same ranking, resolved in the tail);
- ``offline-density``: the reference code's offline score, ``-log N(φ; μ_out, σ_out²)``, a
  two-sided density ratio against a flat IN;
- each also with a **fixed (global) variance**: σ_in and σ_out pooled over all examples instead of
  per example (the paper's choice when there are few shadow models), labelled ``...-fixed-var``.

Every variant comes back labelled in ``LiraScores.scores``; higher means "more likely a member".
Only one query per example is used (the paper's augmentation queries are not implemented).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from advkit.attacks.privacy.common import logit_confidence, logit_confidence_from_logits, query
from advkit.attacks.privacy.shadow import ShadowModels
from advkit.errors import InvalidParameterError
from advkit.params import check_params, param

VARIANTS = ("online", "online-fixed-var", "offline", "offline-fixed-var", "offline-density",
            "offline-density-fixed-var")
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class LiraScores:
    """LiRA scores of one target, one tensor (N,) per variant label, and the shadow counts."""

    scores: dict[str, torch.Tensor]
    n_in: torch.Tensor  # per example: shadow models that trained on it
    n_out: torch.Tensor
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"scores": {k: v.tolist() for k, v in self.scores.items()},
                "n_in": self.n_in.tolist(), "n_out": self.n_out.tolist(), "notes": self.notes}


def _gauss_logpdf(v, mu, sd):
    return -0.5 * ((v - mu) / sd) ** 2 - sd.log() - _LOG_SQRT_2PI


def _fit(phi: torch.Tensor, mask: torch.Tensor, min_std: float):
    """Per-example mean and std of ``phi`` (M, N) over the models where ``mask``; the global
    (pooled) std; examples with fewer than 2 observations take the global std."""
    w = mask.to(phi.dtype)
    n = w.sum(0)
    mu = (phi * w).sum(0) / n.clamp_min(1)
    dev2 = ((phi - mu) ** 2 * w)
    var = dev2.sum(0) / (n - 1).clamp_min(1)
    pooled = (dev2.sum() / (n.sum() - (n > 0).sum()).clamp_min(1)).sqrt().clamp_min(min_std)
    sd = torch.where(n >= 2, var.sqrt(), pooled).clamp_min(min_std)
    return mu, sd, pooled, n


@dataclass(frozen=True, kw_only=True)
class LiRA:
    """Carlini et al. (2022) likelihood ratio attack, every variant at once (labelled)."""

    min_std: float = param(1e-4, float, lo=0, lo_open=True, doc="floor of every fitted std")

    def __post_init__(self):
        check_params(self)

    def scores_from_confidences(self, target_phi, shadow_phi, in_mask) -> LiraScores:
        """``target_phi`` (N,): the target's logit-scaled confidences; ``shadow_phi`` (M, N) and
        ``in_mask`` (M, N, bool): the shadow models' and which of them trained on each example."""
        t = torch.as_tensor(target_phi).to(torch.float64)
        s = torch.as_tensor(shadow_phi).to(torch.float64)
        mask = torch.as_tensor(in_mask).bool()
        if t.ndim != 1 or s.ndim != 2 or s.shape[1] != t.shape[0] or mask.shape != s.shape:
            raise InvalidParameterError(
                "shadow_phi", f"shapes target {tuple(t.shape)}, shadows {tuple(s.shape)}, "
                f"mask {tuple(mask.shape)}", "target (N,), shadow confidences and mask (M, N)")
        if not (torch.all(torch.isfinite(t)) and torch.all(torch.isfinite(s))):
            raise InvalidParameterError("target_phi", "NaN or infinite confidences",
                                        "finite logit-scaled confidences")
        mu_o, sd_o, g_o, n_out = _fit(s, ~mask, self.min_std)
        mu_i, sd_i, g_i, n_in = _fit(s, mask, self.min_std)
        out: dict[str, torch.Tensor] = {}
        notes = []
        if int(n_out.min()) == 0:
            raise InvalidParameterError(
                "in_mask", "an example that every shadow model trained on",
                "at least one OUT shadow model per example (train more shadow models)")
        for tag, so, si in (("", sd_o, sd_i), ("-fixed-var", g_o.expand_as(t), g_i.expand_as(t))):
            z = (t - mu_o) / so
            out["offline" + tag] = -torch.special.log_ndtr(-z)
            out["offline-density" + tag] = -_gauss_logpdf(t, mu_o, so)
            if int(n_in.min()) > 0:
                out["online" + tag] = _gauss_logpdf(t, mu_i, si) - _gauss_logpdf(t, mu_o, so)
        if int(n_in.min()) == 0:
            notes.append("online variants omitted: some examples have no IN shadow model")
        if int(torch.minimum(n_in, n_out).min()) < 2:
            notes.append("examples with < 2 IN or OUT models use the pooled std")
        ordered = {k: out[k] for k in VARIANTS if k in out}
        return LiraScores(ordered, n_in.long(), n_out.long(), notes)

    def scores(self, target, x, y, shadows: ShadowModels, *, in_mask=None,
               exclude: int | None = None) -> LiraScores:
        """Score ``(x, y)`` against ``target`` (an advkit Target or a callable returning
        probabilities). ``x`` is the shadows' pool (their ``masks`` apply) unless ``in_mask``
        (M, N) is given. ``exclude``: a shadow model to leave out (the target itself, in a
        leave-one-out evaluation)."""
        p, y = query(target, x, y)
        phi_t = logit_confidence(p, y)
        mask = shadows.masks if in_mask is None else torch.as_tensor(in_mask).bool()
        phi_s = logit_confidence_from_logits(shadows.logits(x), y.to(x.device if hasattr(
            x, "device") else "cpu"))
        if mask.shape != phi_s.shape:
            raise InvalidParameterError(
                "x", f"{phi_s.shape[1]} points against a mask of shape {tuple(mask.shape)}",
                "the shadow models' pool (or pass in_mask for other points)")
        if exclude is not None:
            keep = [m for m in range(phi_s.shape[0]) if m != exclude]
            phi_s, mask = phi_s[keep], mask[keep]
        return self.scores_from_confidences(phi_t, phi_s.cpu(), mask.cpu())
