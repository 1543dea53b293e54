"""Validity checks for evasion evaluations: signs that an attack under-reports the threat.

Each check returns an ``advkit.audit.report.Finding`` with ``passed=True`` when nothing is wrong;
a check that does not apply (or cannot run) is ``skipped=True`` with severity "info", never
passed. The signs follow Athalye, Carlini & Wagner (2018), "Obfuscated gradients give a false
sense of security", ICML, and Carlini et al. (2019),
"On evaluating adversarial robustness", arXiv:1902.06705.

The one-point rule: comparisons of robust accuracies measured on the same n points allow a slack of
one point, 1/n, for the randomness of the attacks (random starts, random search); a difference
larger than one point is flagged. Accuracies are given as ``EvasionResult``s, ``Proportion``s (which
carry n) or plain floats with ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch

from advkit import registry
from advkit.attacks.base import input_grad
from advkit.audit.report import Finding
from advkit.errors import InvalidParameterError
from advkit.targets.base import Target, looks_like_probabilities

SATURATION = 1e-30  # 1 - max softmax below this: float32 cross-entropy gradients underflow


def _acc(r, n: int | None) -> tuple[float, int]:
    if hasattr(r, "robust_accuracy"):
        r = r.robust_accuracy()
    if hasattr(r, "k") and hasattr(r, "n"):
        return r.value, r.n
    if n is None or n < 1:
        raise InvalidParameterError("n", n, "the number of evaluated points (>= 1) when "
                                    "accuracies are plain floats")
    return float(r), int(n)


def _excess(higher, lower, n: int | None) -> tuple[float, float, bool]:
    """(higher - lower, the one-point slack 1/n, whether the excess exceeds the slack)."""
    (h, nh), (lo, nl) = _acc(higher, n), _acc(lower, n)
    gap, slack = h - lo, 1.0 / min(nh, nl)
    return gap, slack, gap > slack + 1e-12


def _finding(check, fired, severity, metric, value, threshold, why, fix, scenario=None):
    return Finding(check=check, severity=severity if fired else "info", metric=metric,
                   value=None if value is None else float(value),
                   threshold=None if threshold is None else float(threshold),
                   why=why, fix=fix, scenario=scenario, passed=not fired)


def skipped(check, reason, scenario=None):
    """A check that could not run: skipped, not passed (it vouches for nothing)."""
    return Finding(check=check, severity="info", metric="not applicable", value=None,
                   threshold=None, why=reason, fix="", scenario=scenario, passed=False,
                   skipped=True)


_not_applicable = skipped


def probabilities_instead_of_logits(target: Target, x, *, threshold: float = 0.5,
                                    saturation: float = SATURATION) -> Finding:
    """Fires when the target was declared ``output='probabilities'``, when its logits look like
    probabilities, or when on more than ``threshold`` of the points 1 - max softmax <
    ``saturation`` (computed in float64 from the logits; 1e-30 is a logit margin of about 69, where
    the off-class probabilities that carry the float32 cross-entropy gradient approach float32's
    smallest normal number, 1.2e-38, once multiplied through a network: the gradient vanishes, as
    with defensive distillation, Carlini & Wagner 2016)."""
    name = "probabilities_instead_of_logits"
    caps = target.capabilities
    if not caps.gradients:
        return _not_applicable(name, "the target offers no gradients; saturation only hurts "
                               "gradient attacks (score-based ones use the scores as they are)")
    with torch.no_grad():
        scores = target.predict_scores(x).double()
    if caps.logits:
        top = scores.argmax(1, keepdim=True)
        rest = scores.scatter(1, top, -math.inf).logsumexp(1)
        log_gap = rest - scores.logsumexp(1)  # log(1 - max softmax)
    else:
        log_gap = torch.log1p(-scores.max(1).values.clamp(max=1.0))
    share = float((log_gap < math.log(saturation)).float().mean())
    declared = getattr(target, "output", "logits") == "probabilities"
    looks = caps.logits and looks_like_probabilities(scores)
    fired = declared or looks or share > threshold
    cause = ("the model ends in a softmax (declared output='probabilities'); " if declared else
             "the scores given as logits sum to one per row; " if looks else "")
    return _finding(
        name, fired, "warning", f"share of points with 1 - max softmax < {saturation:g}", share,
        threshold,
        cause + "saturated probabilities make cross-entropy gradients vanish, so gradient attacks "
        "stall and robustness is overstated",
        "attack the logits (remove the final softmax), use a margin loss (APGD-DLR, C&W) or a "
        "score-based black-box attack (square)")


def random_forward(target: Target, x, *, atol: float = 1e-4) -> Finding:
    """Fires when two forward passes on the same inputs differ by more than ``atol`` (beyond
    floating-point noise): a randomised model or defense."""
    with torch.no_grad():
        a, b = target.predict_scores(x), target.predict_scores(x)
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    return _finding(
        "random_forward", diff > atol, "warning", "max |scores difference| between two passes",
        diff, atol,
        "the model is randomised: one attack run sees one draw of the randomness, and gradients "
        "of a single draw point the wrong way (Athalye 2018, stochastic gradients)",
        "attack with Expectation over Transformation (average gradients over draws) and report "
        "accuracy over repeated predictions")


def zero_or_nan_gradients(target: Target, x, y, *, threshold: float = 0.5) -> Finding:
    """Fires when more than ``threshold`` of the samples have an input gradient of the
    cross-entropy that is all zero or holds a NaN (shattered or vanishing gradients)."""
    name = "zero_or_nan_gradients"
    if not target.capabilities.gradients:
        return _not_applicable(name, "the target offers no gradients")
    x = target.check_inputs(x)
    y = target.check_labels(y, x.shape[0]).to(x.device)
    g = input_grad(target, x, y)[0].flatten(1)
    bad = (g == 0).all(1) | torch.isnan(g).any(1)
    share = float(bad.float().mean())
    return _finding(
        name, share > threshold, "critical", "share of samples with all-zero or NaN input gradient",
        share, threshold,
        "gradient attacks cannot move these points, so robust accuracy measures the masked "
        "gradient, not robustness (Athalye 2018, shattered gradients)",
        "approximate the non-differentiable part with BPDA (identity gradient), attack the logits, "
        "or use a black-box attack (square)")


def robust_accuracy_rises_with_eps(eps_list, robust_acc_list, n: int | None = None, *,
                                   scenario: str | None = None) -> Finding:
    """Fires when robust accuracy at a larger eps exceeds that at a smaller eps by more than one
    point (1/n): balls are nested, so a working attack can only do better with more budget."""
    if len(eps_list) != len(robust_acc_list):
        raise InvalidParameterError("robust_acc_list", len(robust_acc_list),
                                    f"one accuracy per eps ({len(eps_list)})")
    accs = [_acc(a, n) for a in robust_acc_list]
    n_pts = min(k for _, k in accs) if accs else 1
    pts = sorted(zip((float(e) for e in eps_list), (a for a, _ in accs), strict=True))
    rise = max((b - a for i, (ea, a) in enumerate(pts) for eb, b in pts[i + 1:] if eb > ea),
               default=0.0)
    rise = max(rise, 0.0)  # a curve that only falls has no rise
    slack = 1.0 / n_pts
    return _finding(
        "robust_accuracy_rises_with_eps", rise > slack + 1e-12, "critical",
        "largest rise of robust accuracy with eps", rise, slack,
        "robust accuracy went up when the adversary got a larger budget: the attack is not "
        "finding adversarial examples it provably could (step size, masking or a bug)",
        "use more steps and restarts, a step size tied to eps, APGD, and check gradients",
        scenario)


def not_zero_at_unbounded(target: Target, x, y, attack_factory: Callable | None = None, *,
                          threshold: float = 0.01, generator: torch.Generator | None = None
                          ) -> Finding:
    """Runs an attack whose L∞ ball covers the whole input range (eps = hi - lo; by default PGD
    with 100 steps) and fires when robust accuracy exceeds ``threshold`` ("about 0" means at most
    1 % of the points survive). Every input is then reachable, so only a model that predicts the
    point's class everywhere could keep it."""
    from advkit.attacks.evasion.pgd import PGD

    lo, hi = target.contract.bounds
    eps = hi - lo
    attack = attack_factory(eps) if attack_factory is not None else PGD(eps=eps, steps=100)
    acc = attack.attack(target, x, y, generator=generator).robust_accuracy().value
    return _finding(
        "not_zero_at_unbounded", acc > threshold, "critical",
        f"robust accuracy at eps = {eps:g} (whole input range)", acc, threshold,
        "with an unbounded budget any input can be turned into any other, yet the attack left "
        "points correctly classified: it is failing, not the model resisting",
        "debug the attack on this model (gradients, loss, step size) before trusting any number")


def not_converged(result_a, result_b, n: int | None = None, *, scenario: str | None = None
                  ) -> Finding:
    """``result_b`` is the same attack with more steps or restarts than ``result_a``; fires when
    it lowers robust accuracy by more than one point (1/n)."""
    drop, slack, fired = _excess(result_a, result_b, n)
    return _finding(
        "not_converged", fired, "warning",
        "robust accuracy drop with more steps/restarts", drop, slack,
        "more iterations still find new adversarial examples, so the reported number is an "
        "overestimate of robustness",
        "raise steps and restarts until robust accuracy stops falling", scenario)


def single_step_beats_iterative(fgsm_acc, pgd_acc, n: int | None = None, *,
                                scenario: str | None = None) -> Finding:
    """Fires when a single-step attack (FGSM) leaves fewer points robust than an iterative one
    (PGD) at the same eps by more than one point (1/n)."""
    gap, slack, fired = _excess(pgd_acc, fgsm_acc, n)
    return _finding(
        "single_step_beats_iterative", fired, "critical",
        "iterative minus single-step robust accuracy", gap, slack,
        "an iterative attack contains the single step; doing worse signals a masked or noisy "
        "local gradient (Athalye 2018)",
        "check for gradient masking: more restarts, larger steps, BPDA or a black-box attack",
        scenario)


def blackbox_beats_whitebox(blackbox_acc, whitebox_acc, n: int | None = None, *,
                            scenario: str | None = None) -> Finding:
    """Fires when a black-box attack leaves fewer points robust than the white-box attacks at the
    same eps by more than one point (1/n): gradients are obfuscated."""
    gap, slack, fired = _excess(whitebox_acc, blackbox_acc, n)
    return _finding(
        "blackbox_beats_whitebox", fired, "critical",
        "white-box minus black-box robust accuracy", gap, slack,
        "an attack without gradients did better than attacks with them: the gradients are "
        "masked (Athalye 2018), so white-box numbers overstate robustness",
        "report the worst case over all attacks and adapt the white-box attack (BPDA, EoT)",
        scenario)


def _is_blackbox(name: str) -> bool:
    try:
        return "gradients" not in registry.get(name).cls.requires
    except InvalidParameterError:
        return False


def run_evasion_checks(target: Target, x, y, results: Mapping[str, Mapping[float, object]], *,
                       unbounded: bool = False, generator: torch.Generator | None = None,
                       target_checks: bool = True, label: str = "") -> list[Finding]:
    """The cheap checks for one target: ``results[attack][eps]`` holds an ``EvasionResult`` or a
    robust-accuracy ``Proportion``. Runs the target checks, the eps-monotonicity check per attack
    and, per eps, FGSM vs the best iterative white-box attack and the best black-box attack vs the
    best white-box one; ``unbounded=True`` adds the unbounded-PGD check (one more attack run).
    ``target_checks=False`` skips the three checks of the target itself (when already run);
    ``label`` (e.g. the norm) is appended to each finding's scenario."""
    out = [probabilities_instead_of_logits(target, x), random_forward(target, x),
           zero_or_nan_gradients(target, x, y)] if target_checks else []
    sfx = f" ({label})" if label else ""
    for name, by_eps in results.items():
        if len(by_eps) >= 2:
            eps = list(by_eps)
            out.append(robust_accuracy_rises_with_eps(eps, [by_eps[e] for e in eps],
                                                      scenario=name + sfx))
    for eps in sorted({e for by_eps in results.values() for e in by_eps}):
        at = {name: _acc(r[eps], None) for name, r in results.items() if eps in r}
        white = {k: v for k, v in at.items() if not _is_blackbox(k)}
        black = {k: v for k, v in at.items() if _is_blackbox(k)}
        iterative = {k: v for k, v in white.items() if k != "fgsm"}
        if "fgsm" in white and iterative:
            best = min(iterative, key=lambda k: iterative[k][0])
            out.append(single_step_beats_iterative(
                white["fgsm"][0], iterative[best][0], min(white["fgsm"][1], iterative[best][1]),
                scenario=f"fgsm vs {best} @ eps={eps:g}{sfx}"))
        if white and black:
            bw = min(white, key=lambda k: white[k][0])
            bb = min(black, key=lambda k: black[k][0])
            out.append(blackbox_beats_whitebox(
                black[bb][0], white[bw][0], min(black[bb][1], white[bw][1]),
                scenario=f"{bb} vs {bw} @ eps={eps:g}{sfx}"))
    if unbounded and target.capabilities.gradients:
        out.append(not_zero_at_unbounded(target, x, y, generator=generator))
    return out


__all__ = ["probabilities_instead_of_logits", "random_forward", "zero_or_nan_gradients",
           "robust_accuracy_rises_with_eps", "not_zero_at_unbounded", "not_converged",
           "single_step_beats_iterative", "blackbox_beats_whitebox", "run_evasion_checks",
           "SATURATION", "skipped"]
