"""Projected Gradient Descent, one implementation for every Lp norm.

Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR. From a uniform random start in the ball (optional), repeat: step of size
``step_size`` along the steepest-ascent direction of the loss for the norm, project back onto the ball
and the input bounds. Restarts run only on points not yet fooled; per point the attack keeps, over
steps and restarts, the iterate with the highest loss among those that fooled the model; a point no
iterate fooled gets the
final iterate of its last run, as in plain PGD. Each step costs one forward+backward: iterates are
scored by the forward of their own gradient step, and only the final iterate is scored by the
template's closing forward.

``early_stop=True`` stops stepping a point once an iterate fools the model and returns that first
fooling iterate; the working set is compacted once the fooled points are an eighth of it. Each
point's trajectory is independent of the others, so on a deterministic model the verdicts (robust
accuracy) are those of the full run, for fewer passes (``extra["sample_passes"]`` counts the rows
stepped). Not for randomised models: there the full run's highest-loss iterate is the safer one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.attacks.base import EvasionAttack, Perturbed, input_grad, take_rows_
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import WHITE_BOX_EVASION


@register("pgd", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class PGD(EvasionAttack):
    """Projected Gradient Descent (Madry 2018) for L∞, L2 and L1 balls, with restarts."""

    eps: float = param(0.1, float, lo=0, doc="radius of the Lp ball")
    norm: float | str = param(math.inf, "norm")
    steps: int = param(40, int, lo=1)
    step_size: float | None = param(None, float, lo=0, lo_open=True,
                                    doc="None: 2.5 * eps / steps (Madry et al.)")
    random_start: bool = param(True, bool)
    restarts: int = param(1, int, lo=1)
    # stop stepping a point once it is fooled (its first fooling iterate is returned): the same
    # robust accuracy, since a point fooled at any step counts, for fewer passes
    early_stop: bool = param(False, bool, doc="stop stepping a point once it is fooled")

    def __post_init__(self):
        check_params(self)

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def _perturb(self, target, x, y, goal, generator):
        ball, (lo, hi) = self.threat, target.contract.bounds
        labels = goal.labels_for(y)
        sign = -1.0 if goal.targeted else 1.0
        n = x.shape[0]
        best_x = x.clone()
        best_loss = torch.full((n,), -math.inf, device=x.device)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        clean_pred, rows_run = None, 0
        for restart in range(self.restarts):
            act = torch.nonzero(~done).squeeze(1)  # batch positions of the run's rows
            if act.numel() == 0:
                break
            whole = act.numel() == n  # the first run: no gather, b_* are the batch-wide tensors
            x0, lab, y0, b_x, b_loss, b_ok = (
                t if whole else t[act] for t in (x, labels, y, best_x, best_loss, done)
            )
            project = self._projector(ball, x0, lo, hi)
            xa = ball.random_init(x0, generator).clamp(lo, hi) if self.random_start else x0.clone()

            def keep(xa, logits, loss, b_x, b_loss, b_ok, y0):
                # only fooled iterates are ever returned, so only they are tracked (in place);
                # with early_stop a point keeps its first fooling iterate
                ok = goal.success(logits.argmax(1), y0)
                better = ok & ~b_ok if self.early_stop else ok & (~b_ok | (loss > b_loss))
                return take_rows_(b_x, xa, better), torch.where(better, loss, b_loss), b_ok | ok

            for step in range(self.steps):
                grad, logits, loss = input_grad(target, xa, lab, sign=sign)
                rows_run += xa.shape[0]
                if clean_pred is None and step == 0 and not self.random_start:
                    clean_pred = logits.argmax(1)
                b_x, b_loss, b_ok = keep(xa, logits, loss, b_x, b_loss, b_ok, y0)
                if self.early_stop and int(b_ok.sum()) >= max(1, xa.shape[0] // 8):
                    # drop the fooled rows once they are an eighth of the working set
                    self._flush(act, b_ok, (b_x, b_loss, b_ok), (best_x, best_loss, done))
                    if bool(b_ok.all()):
                        break
                    kept = torch.nonzero(~b_ok).squeeze(1)
                    act, x0, lab, y0, xa, grad, b_x, b_loss, b_ok = (
                        t[kept] for t in (act, x0, lab, y0, xa, grad, b_x, b_loss, b_ok)
                    )
                    project = self._projector(ball, x0, lo, hi)
                xa = project(xa.add_(ball.normalize_grad(grad), alpha=self.alpha))
            else:
                if restart < self.restarts - 1:  # the next restart needs to know who is fooled
                    with torch.no_grad():
                        logits = target.logits(xa, check=False)
                    loss = torch.nn.functional.cross_entropy(logits, lab, reduction="none") * sign
                    b_x, b_loss, b_ok = keep(xa, logits, loss, b_x, b_loss, b_ok, y0)
                else:  # last run: points no iterate fooled get the final iterate (template scores it)
                    b_x = take_rows_(xa, b_x, b_ok)
                self._flush(act, None, (b_x, b_loss, b_ok), (best_x, best_loss, done))
        extra = {"sample_passes": rows_run}
        return Perturbed(best_x, clean_pred=clean_pred, passes=math.ceil(rows_run / n), extra=extra)

    @staticmethod
    def _flush(act, sel, run, batch):
        """Write the run's rows (those in mask ``sel``, or all) back to the batch-wide tensors."""
        pos = act if sel is None else act[sel]
        for src, dst in zip(run, batch, strict=True):
            if src.data_ptr() != dst.data_ptr():  # the first run's rows may be the batch itself
                dst[pos] = src if sel is None else src[sel]

    @staticmethod
    def _projector(ball, x0, lo, hi):
        """Projection onto the ball around ``x0`` intersected with the bounds. For L∞ both are
        boxes, so their intersection is one precomputed box and each step is a single clamp."""
        if ball.p == math.inf:
            lower = (x0 - ball.eps).clamp_min(lo)
            upper = (x0 + ball.eps).clamp_max(hi)
            return lambda z: z.clamp_(lower, upper)
        return lambda z: ball.project(z, x0).clamp_(lo, hi)
