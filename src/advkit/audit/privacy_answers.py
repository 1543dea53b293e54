"""What a membership attacker reads from a target behind output hardening
(``advkit.defenses.output``: rounded or top-k probabilities), for the privacy stages.

- The target's answers: a rounded or top-k row need not sum to 1, so it is read as the
  distribution it implies, each row over its sum (an all-zero row, possible when rounding to few
  decimals, as uniform). This is post-processing of the answer alone: no information is added.
- The reference models of LiRA and RMIA stay the undefended ones (the model behind the API is
  the same), but the attacker knows the API's hardening (Kerckhoffs) and passes the references'
  probabilities through it, and the same reading, so that target and references are compared on
  the same scale: the adaptive evaluation a defense must survive (Tramèr, Carlini, Brendel &
  Madry 2020, "On Adaptive Attacks to Adversarial Example Defenses", NeurIPS).

Without a hardening every function is the plain path (reference logits, the stable logit
confidence).
"""

from __future__ import annotations

import torch


def hardening(target):
    """The probability hardening behind ``target`` (rounding, top-k), or None (none, or labels
    only: no probabilities to read)."""
    h = getattr(target, "hardening", None)
    return h if h is not None and getattr(h, "probabilities", False) else None


def as_distribution(a: torch.Tensor) -> torch.Tensor:
    """Hardened answers (…, K) as probability rows: each over its sum, an all-zero row uniform."""
    a = a.to(torch.float64).clamp_min(0.0)
    s = a.sum(-1, keepdim=True)
    return torch.where(s > 0, a / s.clamp_min(1e-300), torch.full_like(a, 1.0 / a.shape[-1]))


def reference_probabilities(refs, x: torch.Tensor, target) -> torch.Tensor:
    """(M, N, K) probabilities of the references on ``x``, hardened as ``target`` answers."""
    q = torch.softmax(refs.logits(x).double(), -1)
    h = hardening(target)
    if h is None:
        return q
    m, n, k = q.shape
    return as_distribution(h.harden(q.reshape(m * n, k))).view(m, n, k)


def reference_confidence(refs, x: torch.Tensor, y: torch.Tensor, target) -> torch.Tensor:
    """(M, N) logit-scaled confidences φ of the references (LiRA's statistic), on the scale of
    ``target``'s answers."""
    from advkit.attacks.privacy.common import logit_confidence, logit_confidence_from_logits

    if hardening(target) is None:
        return logit_confidence_from_logits(refs.logits(x), y)
    q = reference_probabilities(refs, x, target)
    m, n, k = q.shape
    return logit_confidence(q.reshape(m * n, k), y.repeat(m)).view(m, n)
