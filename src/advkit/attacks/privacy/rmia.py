"""Robust Membership Inference Attack (RMIA).

Zarifzadeh, Liu, Mittal & Shokri (2024), "Low-Cost High-Power Membership Inference Attacks",
ICML. RMIA compares the target point ``x`` with population points ``z`` (drawn from the same
distribution, members of no model) through the pairwise likelihood ratio

    LR(x, z) = (Pr(x | θ) / Pr(x)) / (Pr(z | θ) / Pr(z)),

where ``Pr(· | θ)`` is the target model's probability of the true label and ``Pr(·)`` its average
over reference models. The score of ``x`` is the share of population points it dominates,
``Pr_z[LR(x, z) >= γ]`` (higher = more likely a member).

- ``online``: ``Pr(x)`` is the mean over all reference models (about half trained on ``x``);
- ``offline``: only reference models OUT of ``x`` exist; the paper approximates the missing IN
  models linearly, ``Pr(x) = ½((1 + a) Pr_OUT(x) + (1 - a))``, with ``a`` in [0, 1] (the paper tunes
  it on one reference model; ``offline_a`` here).

``Pr(z)`` is the mean over the reference models (the population points are OUT of all of them).
Reference models come from ``advkit.attacks.privacy.shadow``. Only the true-label probability is
used (the paper's augmentation queries are not implemented).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advkit.attacks.privacy.common import check_probs, query
from advkit.attacks.privacy.shadow import ShadowModels
from advkit.errors import InvalidParameterError
from advkit.params import check_params, param

_TINY = 1e-30


def _true(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return p.gather(-1, y.expand(*p.shape[:-1])[..., None]).squeeze(-1)


@dataclass(frozen=True, kw_only=True)
class RMIA:
    """Zarifzadeh et al. (2024) RMIA; ``scores`` returns {"online": ..., "offline": ...}."""

    gamma: float = param(1.0, float, lo=0, lo_open=True, doc="threshold on LR(x, z)")
    offline_a: float = param(0.3, float, lo=0, hi=1, doc="offline approximation of Pr_IN")

    def __post_init__(self):
        check_params(self)

    def scores_from_probabilities(self, target_x, ref_x, target_z, ref_z,
                                  in_mask=None) -> dict[str, torch.Tensor]:
        """True-label probabilities: ``target_x`` (N,), ``ref_x`` (M, N), ``target_z`` (Z,),
        ``ref_z`` (M, Z); ``in_mask`` (M, N) says which references trained on each ``x`` (None:
        none did; only the offline score is then computed)."""
        tx, rx = (torch.as_tensor(v).to(torch.float64) for v in (target_x, ref_x))
        tz, rz = (torch.as_tensor(v).to(torch.float64) for v in (target_z, ref_z))
        if (tx.ndim != 1 or rx.shape != (rx.shape[0], tx.shape[0]) or tz.ndim != 1
                or rz.shape != (rx.shape[0], tz.shape[0])):
            raise InvalidParameterError(
                "ref_x", f"shapes {tuple(tx.shape)}, {tuple(rx.shape)}, {tuple(tz.shape)}, "
                f"{tuple(rz.shape)}", "target_x (N,), ref_x (M, N), target_z (Z,), ref_z (M, Z)")
        for v in (tx, rx, tz, rz):
            if not torch.all(torch.isfinite(v)) or float(v.min()) < 0 or float(v.max()) > 1:
                raise InvalidParameterError("probabilities", "values outside [0, 1] or NaN",
                                            "true-label probabilities in [0, 1]")
        mask = (torch.zeros_like(rx, dtype=torch.bool) if in_mask is None
                else torch.as_tensor(in_mask).bool())
        if mask.shape != rx.shape:
            raise InvalidParameterError("in_mask", f"shape {tuple(mask.shape)}",
                                        f"one flag per reference and point {tuple(rx.shape)}")
        ratio_z = tz / rz.mean(0).clamp_min(_TINY)
        out = {}
        if in_mask is not None and bool(mask.any(0).all()):
            out["online"] = self._dominance(tx / rx.mean(0).clamp_min(_TINY), ratio_z)
        n_out = (~mask).sum(0)
        if int(n_out.min()) == 0:
            raise InvalidParameterError(
                "in_mask", "a point that every reference model trained on",
                "at least one OUT reference model per point (train more reference models)")
        p_out = (rx * (~mask)).sum(0) / n_out
        a = self.offline_a
        p_x = 0.5 * ((1 + a) * p_out + (1 - a))
        out["offline"] = self._dominance(tx / p_x.clamp_min(_TINY), ratio_z)
        return out

    def _dominance(self, ratio_x: torch.Tensor, ratio_z: torch.Tensor) -> torch.Tensor:
        """Share of z with ratio_x / ratio_z >= gamma, i.e. ratio_z <= ratio_x / gamma."""
        srt = ratio_z.sort().values
        return torch.searchsorted(srt, ratio_x / self.gamma, right=True).to(torch.float64) / (
            srt.numel())

    def scores(self, target, x, y, shadows: ShadowModels, z, yz, *, in_mask=None,
               exclude: int | None = None) -> dict[str, torch.Tensor]:
        """RMIA scores of ``(x, y)`` against ``target`` (an advkit Target or a callable returning
        probabilities), with population points ``(z, yz)`` that no model trained on. ``x`` is
        the reference models' pool (their ``masks`` apply) unless ``in_mask`` is given;
        ``exclude`` leaves one reference model out (the target, in a leave-one-out run)."""
        px, y = query(target, x, y)
        pz, yz = query(target, z, yz)
        ref_x, _ = check_probs(torch.softmax(shadows.logits(x).double(), -1).reshape(
            -1, px.shape[1]), y.repeat(shadows.n_models))
        ref_z, _ = check_probs(torch.softmax(shadows.logits(z).double(), -1).reshape(
            -1, pz.shape[1]), yz.repeat(shadows.n_models))
        m = shadows.n_models
        rx = _true(ref_x.view(m, -1, px.shape[1]), y)
        rz = _true(ref_z.view(m, -1, pz.shape[1]), yz)
        mask = shadows.masks.cpu() if in_mask is None else torch.as_tensor(in_mask).bool()
        if mask.shape != rx.shape:
            raise InvalidParameterError(
                "x", f"{rx.shape[1]} points against a mask of shape {tuple(mask.shape)}",
                "the reference models' pool (or pass in_mask for other points)")
        keep = [i for i in range(m) if i != exclude]
        return self.scores_from_probabilities(_true(px, y), rx[keep], _true(pz, yz), rz[keep],
                                              mask[keep])
