"""Auto-PGD (APGD) with the cross-entropy or DLR loss, and its targeted variant APGD-T.

Croce & Hein (2020), "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML. PGD with momentum (``momentum`` = 0.75) whose step size starts at
``2·eps`` and is halved at checkpoints ``w_j = ceil(p_j·steps)`` (``p_0 = 0``, ``p_1 = 0.22``,
``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``) when, since the previous checkpoint, the loss
increased on fewer than ``rho`` (0.75) of the steps, or the step size was not halved and the best
loss did not improve. On halving, the iterate returns to the best point found. Per sample the
attack keeps a successful iterate if one was found, else the highest-loss point.

The Difference of Logits Ratio loss (sorted logits ``z_π1 >= z_π2 >= ...``) is
``DLR = -(z_y - max_{i≠y} z_i) / (z_π1 - z_π3)``, and its targeted version towards class ``t`` is
``-(z_y - z_t) / (z_π1 - (z_π3 + z_π4)/2)``. With three classes ``π4`` is read as ``π3``; with two
classes no scale-invariant denominator exists and the denominator is 1 (the plain logit margin).

APGD-T (``apgd-t``) runs targeted-DLR APGD towards each of the ``n_target_classes`` most likely
non-true classes in turn, each time only on the points not yet misclassified; its success is
misclassification, since its purpose is robust accuracy.

Implementation: one forward+backward per step (the gradient of the best point is stored, so a
return to it costs nothing); every restart starts uniformly at random in the ball, as in the
authors' evaluation; points that reach the goal leave the batch at the next checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.attacks.base import EvasionAttack, Perturbed, input_grad
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import WHITE_BOX_EVASION


def _b(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``v`` (one value per point) shaped to broadcast over ``like``, in ``like``'s dtype when
    floating (float64 inputs, as tabular unit space, with a float32 model's losses)."""
    v = v.reshape((-1,) + (1,) * (like.dim() - 1))
    return v.to(like.dtype) if v.is_floating_point() else v


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_1 < w_2 < ...`` (below ``steps``) at which the step size may be halved."""
    p_prev, p, out = 0.0, 0.22, []
    while p <= 1:
        w = math.ceil(p * steps - 1e-9)  # p_j·steps up to float error
        if 0 < w < steps and (not out or w > out[-1]):
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)
    return out


def _sorted_denominator(z: torch.Tensor, targeted: bool) -> torch.Tensor:
    k = z.shape[1]
    if k < 3:
        return torch.ones_like(z[:, 0])
    zs = z.sort(dim=1, descending=True).values
    if targeted:
        return zs[:, 0] - (zs[:, 2] + zs[:, min(3, k - 1)]) / 2
    return zs[:, 0] - zs[:, 2]


def dlr_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample untargeted DLR loss (higher = closer to misclassification)."""
    z_y = z.gather(1, y[:, None]).squeeze(1)
    others = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), -math.inf).amax(1)
    return -(z_y - others) / (_sorted_denominator(z, False) + 1e-12)


def dlr_targeted_loss(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-sample targeted DLR loss towards class ``t`` (higher = ``z_t`` further above ``z_y``)."""
    z_y = z.gather(1, y[:, None]).squeeze(1)
    z_t = z.gather(1, t[:, None]).squeeze(1)
    return -(z_y - z_t) / (_sorted_denominator(z, True) + 1e-12)


def _loss_fn(loss: str, targeted: bool):
    """loss(z, y, lab) to ascend, where ``lab`` is the target class when ``targeted``."""
    if loss == "ce":
        if targeted:
            return lambda z, y, t: -F.cross_entropy(z, t, reduction="none")
        return lambda z, y, t: F.cross_entropy(z, y, reduction="none")
    if targeted:
        return dlr_targeted_loss
    return lambda z, y, t: dlr_loss(z, y)


class _APGDBase(EvasionAttack):
    """The APGD iteration shared by ``apgd`` and ``apgd-t`` (fields come from the leaves)."""

    suggest: ClassVar[str | None] = "square"  # score-based, for targets without gradients

    def _run(self, target, x, y, lab, loss_fn, targeted, generator, acc) -> int:
        """One APGD run on (x, y, lab); merges each point's outcome into ``acc`` (global buffers).

        Returns the number of forward+backward passes (over the shrinking batch).
        """
        ball, n_steps, (lo, hi) = self.threat, self.steps, target.contract.bounds
        act = acc["idx"]
        ckpts, k_last = set(checkpoints(n_steps)), 0

        def box_of(xc):  # the L∞ ball intersected with the bounds is a box
            if ball.p != math.inf:
                return None
            return (xc - ball.eps).clamp_min(lo), (xc + ball.eps).clamp_max(hi)

        def proj(v, xc, bx):
            if bx is not None:
                return torch.clamp(v, bx[0], bx[1])
            return ball.project(v, xc).clamp(lo, hi)

        box = box_of(x)
        xk = proj(ball.random_init(x, generator), x, box)
        s = {}
        for k in range(n_steps):
            grad, logits, lk = input_grad(target, xk, y, lambda z, yy, t=lab: loss_fn(z, yy, t))
            pred = logits.argmax(1)
            ok = pred == lab if targeted else pred != y
            acc["sample_passes"] += x.shape[0]
            if k == 0:
                s = dict(x_best=xk, l_best=lk, g_best=grad, l_prev=lk, cnt=torch.zeros_like(lk),
                         f_ckpt=lk, reduced=torch.zeros_like(ok), x_succ=xk, found=ok, xprev=xk,
                         eta=torch.full_like(lk, 2 * ball.eps), w=torch.ones_like(lk))
            else:
                s["cnt"] = s["cnt"] + (lk > s["l_prev"]).to(lk.dtype)
                s["l_prev"] = lk
                better = lk > s["l_best"]
                s["x_best"] = torch.where(_b(better, xk), xk, s["x_best"])
                s["g_best"] = torch.where(_b(better, xk), grad, s["g_best"])
                s["l_best"] = torch.where(better, lk, s["l_best"])
                s["x_succ"] = torch.where(_b(ok & ~s["found"], xk), xk, s["x_succ"])
                s["found"] = s["found"] | ok
            if k == n_steps - 1:
                break
            if k in ckpts:
                few_gains = s["cnt"] < self.rho * (k - k_last)
                red = few_gains | (~s["reduced"] & (s["l_best"] <= s["f_ckpt"]))
                s["eta"] = torch.where(red, s["eta"] / 2, s["eta"])
                xk = torch.where(_b(red, xk), s["x_best"], xk)
                grad = torch.where(_b(red, xk), s["g_best"], grad)
                s.update(reduced=red, f_ckpt=s["l_best"], cnt=torch.zeros_like(lk),
                         w=torch.where(red, 1.0, self.momentum).to(lk.dtype))
                k_last = k
                found = s["found"]
                if found.any():  # one host sync per checkpoint: finished points leave the batch
                    self._store(acc, act[found], {key: v[found] for key, v in s.items()})
                    keep = ~found
                    if not keep.any():
                        return k + 1
                    act, x, y, lab = act[keep], x[keep], y[keep], lab[keep]
                    xk, grad = xk[keep], grad[keep]
                    s = {key: v[keep] for key, v in s.items()}
                    box = box_of(x)
            z = proj(torch.addcmul(xk, _b(s["eta"], xk), ball.normalize_grad(grad)), x, box)
            # x + w(z - x) + (1 - w)(x - x_prev) = lerp(2x - x_prev, z, w); w = 1 on a fresh start
            w = _b(s["w"], xk) if k == 0 or k in ckpts else self.momentum
            xk, s["xprev"] = proj(torch.lerp(torch.lerp(s["xprev"], xk, 2.0), z, w), x, box), xk
        self._store(acc, act, s)
        return n_steps

    @staticmethod
    def _store(acc, idx, s):
        """Merge a run's per-sample outcome into the global buffers (success, else best loss)."""
        found = s["found"]
        better = ~found & ~acc["found"][idx] & (s["l_best"] > acc["loss"][idx])
        x_new = torch.where(_b(found, s["x_succ"]), s["x_succ"], s["x_best"])
        upd = found | better
        acc["x"][idx] = torch.where(_b(upd, x_new), x_new, acc["x"][idx])
        acc["loss"][idx] = torch.where(better, s["l_best"], acc["loss"][idx])
        acc["found"][idx] = acc["found"][idx] | found

    def _new_acc(self, x):
        n = x.shape[0]
        return {"x": x.clone(), "loss": torch.full((n,), -math.inf, device=x.device, dtype=x.dtype),
                "found": torch.zeros(n, dtype=torch.bool, device=x.device), "sample_passes": 0,
                "idx": None}

    def _restarts(self, target, x, y, lab, loss_fn, targeted, generator, acc):
        passes = 0
        for _ in range(self.restarts):
            todo = torch.nonzero(~acc["found"]).squeeze(1)
            if todo.numel() == 0:
                break
            acc["idx"] = todo
            passes += self._run(target, x[todo], y[todo], lab[todo], loss_fn, targeted, generator,
                                acc)
        return passes


@register("apgd", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class APGD(_APGDBase):
    """Auto-PGD (Croce & Hein 2020): step-size-free PGD with momentum, CE or DLR loss, L∞ and L2."""

    eps: float = param(0.1, float, lo=0, doc="radius of the Lp ball")
    norm: float | str = param(math.inf, "norm", choices=(math.inf, 2.0),
                              doc="APGD is defined for L∞ and L2")
    steps: int = param(100, int, lo=1)
    restarts: int = param(1, int, lo=1)
    loss: str = param("ce", str, choices=("ce", "dlr"),
                      doc="ce (cross-entropy) or dlr (difference of logits ratio)")
    rho: float = param(0.75, float, lo=0, hi=1)
    momentum: float = param(0.75, float, lo=0, hi=1)

    def __post_init__(self):
        check_params(self)

    def _perturb(self, target, x, y, goal, generator):
        acc = self._new_acc(x)
        lab = goal.labels_for(y)
        fn = _loss_fn(self.loss, goal.targeted)
        passes = self._restarts(target, x, y, lab, fn, goal.targeted, generator, acc)
        return Perturbed(acc["x"], passes=passes, extra={"sample_passes": acc["sample_passes"]})


@register("apgd-t", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class APGDT(_APGDBase):
    """APGD-T (Croce & Hein 2020): targeted-DLR APGD towards each of the top non-true classes."""

    eps: float = param(0.1, float, lo=0, doc="radius of the Lp ball")
    norm: float | str = param(math.inf, "norm", choices=(math.inf, 2.0),
                              doc="APGD is defined for L∞ and L2")
    steps: int = param(100, int, lo=1)
    restarts: int = param(1, int, lo=1)
    n_target_classes: int = param(9, int, lo=1)
    rho: float = param(0.75, float, lo=0, hi=1)
    momentum: float = param(0.75, float, lo=0, hi=1)

    def __post_init__(self):
        check_params(self)

    def _perturb(self, target, x, y, goal, generator):
        acc = self._new_acc(x)
        with torch.no_grad():
            z = target.logits(x, check=False)
        clean_pred = z.argmax(1)
        passes = 0
        if goal.targeted:  # a given target class: one targeted-DLR run towards it
            lab = goal.labels_for(y)
            passes = self._restarts(target, x, y, lab, dlr_targeted_loss, True, generator, acc)
        else:
            others = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), -math.inf)
            ranked = others.argsort(1, descending=True)
            for j in range(min(self.n_target_classes, z.shape[1] - 1)):
                passes += self._restarts(target, x, y, ranked[:, j], dlr_targeted_loss, False,
                                         generator, acc)
        return Perturbed(acc["x"], clean_pred=clean_pred, passes=passes,
                         extra={"sample_passes": acc["sample_passes"]})
