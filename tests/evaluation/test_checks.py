"""Validity checks: each fires on a constructed bad case and passes on a good one; the gradient-
masking demo (a 1-bit input quantiser in front of a toy CNN) makes PGD fail and Square succeed."""

import pytest
import torch
from torch import nn

from advkit.attacks.evasion.fgsm import FGSM
from advkit.attacks.evasion.pgd import PGD
from advkit.attacks.evasion.square import Square
from advkit.audit.report import Finding
from advkit.errors import InvalidParameterError
from advkit.evaluation import checks
from advkit.evaluation.metrics import proportion_of
from advkit.targets.torch import TorchTarget
from advkit.testing import toy_image_target


class Quantised(nn.Module):
    """Rounds inputs to 1 bit before the model: the gradient is zero almost everywhere."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x))


class Scaled(nn.Module):
    """Logits times a large constant (like defensive distillation at test time): saturates."""

    def __init__(self, model, factor):
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


class Softmaxed(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return torch.softmax(self.model(x), 1)


class Noisy(nn.Module):
    """A randomised defence: Gaussian noise on the input at every call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x + 0.1 * torch.randn_like(x))


@pytest.fixture(scope="module")
def toy():
    return toy_image_target(seed=0, n=48)


def _wrap(target, module, **kw):
    return TorchTarget(target.contract, model=module.eval(), **kw)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _fired(f: Finding) -> bool:
    assert isinstance(f, Finding) and f.why and f.severity in ("info", "warning", "critical")
    if not f.passed:
        assert f.fix and f.severity != "info"
    return not f.passed


def test_probabilities_check(toy):
    target, x, _ = toy
    assert not _fired(checks.probabilities_instead_of_logits(target, x))
    declared = _wrap(target, Softmaxed(target.model), output="probabilities")
    assert _fired(checks.probabilities_instead_of_logits(declared, x))
    scaled = _wrap(target, Scaled(target.model, 100.0))
    saturated = checks.probabilities_instead_of_logits(scaled, x)
    assert _fired(saturated) and saturated.value == 1.0


def test_target_checks_do_not_apply_without_gradients():
    from sklearn.ensemble import RandomForestClassifier

    from advkit.targets.sklearn import SklearnTarget
    from advkit.testing import toy_linear_target

    lin, x, y = toy_linear_target(seed=0, n=40)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x.numpy(), y.numpy())
    target = SklearnTarget(lin.contract, estimator=forest)
    for f in (checks.probabilities_instead_of_logits(target, x),
              checks.zero_or_nan_gradients(target, x, y)):
        assert f.skipped and not f.passed and f.metric == "not applicable"
    assert not _fired(checks.random_forward(target, x))


def test_random_forward_check(toy):
    target, x, _ = toy
    assert not _fired(checks.random_forward(target, x))
    assert _fired(checks.random_forward(_wrap(target, Noisy(target.model)), x))


def test_zero_gradient_check(toy):
    target, x, y = toy
    good = checks.zero_or_nan_gradients(target, x, y)
    assert not _fired(good) and good.value == 0.0
    bad = checks.zero_or_nan_gradients(_wrap(target, Quantised(target.model)), x, y)
    assert _fired(bad) and bad.value == 1.0 and bad.severity == "critical"


def test_robust_accuracy_rises_with_eps_allows_one_point():
    n = 100
    ok = checks.robust_accuracy_rises_with_eps([0.1, 0.2, 0.3], [0.9, 0.6, 0.2], n)
    assert not _fired(ok)
    # unsorted input, a rise of exactly one point (1/n) is tolerated, two points are not
    assert not _fired(checks.robust_accuracy_rises_with_eps([0.3, 0.1, 0.2], [0.51, 0.9, 0.50], n))
    bad = checks.robust_accuracy_rises_with_eps([0.1, 0.2, 0.3], [0.9, 0.5, 0.52], n)
    assert _fired(bad) and bad.value == pytest.approx(0.02) and bad.threshold == pytest.approx(0.01)
    # Proportions carry their own n
    props = [proportion_of(50, 100), proportion_of(60, 100)]
    assert _fired(checks.robust_accuracy_rises_with_eps([0.1, 0.2], props))
    with pytest.raises(InvalidParameterError, match="n"):
        checks.robust_accuracy_rises_with_eps([0.1, 0.2], [0.5, 0.4])


def test_pairwise_checks_use_the_one_point_rule():
    assert _fired(checks.not_converged(0.40, 0.30, 100))
    assert not _fired(checks.not_converged(0.40, 0.39, 100))
    assert _fired(checks.single_step_beats_iterative(0.20, 0.35, 100))
    assert not _fired(checks.single_step_beats_iterative(0.40, 0.35, 100))
    assert _fired(checks.blackbox_beats_whitebox(0.10, 0.80, 100))
    assert not _fired(checks.blackbox_beats_whitebox(0.81, 0.80, 100))


def test_not_zero_at_unbounded(toy):
    target, x, y = toy
    good = checks.not_zero_at_unbounded(target, x, y, generator=_gen())
    assert not _fired(good) and good.value <= 0.01
    masked = _wrap(target, Quantised(target.model))
    factory = lambda eps: PGD(eps=eps, steps=20, random_start=False)  # noqa: E731
    bad = checks.not_zero_at_unbounded(masked, x, y, factory, generator=_gen())
    assert _fired(bad) and bad.value == 1.0


def test_gradient_masking_demo_pgd_fails_square_succeeds_and_checks_fire(toy):
    target, x, y = toy
    masked = _wrap(target, Quantised(target.model))
    assert (masked.labels(x) == y).all()  # rounding keeps the toy's classes
    eps = 0.3
    results = {}
    for name, t in (("masked", masked), ("plain", target)):
        fgsm = FGSM(eps=eps).attack(t, x, y, generator=_gen())
        pgd = PGD(eps=eps).attack(t, x, y, generator=_gen())
        square = Square(eps=eps, n_queries=300).attack(t, x, y, generator=_gen())
        results[name] = {"fgsm": {eps: fgsm}, "pgd": {eps: pgd}, "square": {eps: square}}
    m = results["masked"]
    assert m["pgd"][eps].robust_accuracy().value == 1.0  # zero gradients: PGD goes nowhere
    assert m["square"][eps].robust_accuracy().value <= 0.5  # black-box random search gets through
    fired = {f.check for f in checks.run_evasion_checks(masked, x, y, m) if not f.passed}
    assert {"zero_or_nan_gradients", "blackbox_beats_whitebox"} <= fired
    found = checks.run_evasion_checks(target, x, y, results["plain"])
    assert {f.check for f in found} >= {"probabilities_instead_of_logits", "random_forward",
                                        "zero_or_nan_gradients", "single_step_beats_iterative",
                                        "blackbox_beats_whitebox"}
    assert all(f.passed for f in found), [f for f in found if not f.passed]
