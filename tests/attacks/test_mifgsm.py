"""MI-FGSM (Dong 2018): conformance, mu=0 equals BIM, and the momentum update by hand."""

import pytest
import torch
import torch.nn.functional as F

from advkit.attacks.evasion.bim import BIM
from advkit.attacks.evasion.mifgsm import MIFGSM
from advkit.testing import check_evasion_attack, toy_image_target


@pytest.fixture(scope="module")
def toy():
    return toy_image_target(seed=1, n=32)


@pytest.mark.parametrize("norm", ["inf", 2])
def test_conformance(toy, norm):
    target, x, y = toy
    check_evasion_attack("mifgsm", target, x, y, params={"eps": 0.3, "norm": norm})


def test_bad_decay_raises():
    from advkit.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="mu"):
        MIFGSM(mu=-0.5)


def test_zero_momentum_is_bim_linf(toy):
    target, x, y = toy
    mi = MIFGSM(eps=0.25, steps=6, step_size=0.05, mu=0.0).attack(target, x, y)
    bim = BIM(eps=0.25, steps=6, step_size=0.05).attack(target, x, y)
    assert torch.equal(mi.x_adv, bim.x_adv)
    assert not torch.equal(mi.x_adv, x)


def test_zero_momentum_is_bim_l2(toy):
    target, x, y = toy
    mi = MIFGSM(eps=1.5, norm=2, steps=3, step_size=0.3, mu=0.0).attack(target, x, y)
    bim = BIM(eps=1.5, norm=2, steps=3, step_size=0.3).attack(target, x, y)
    # same direction g/|g|_2 up to float32 rounding of the extra L1 division (~1e-7 relative),
    # which later gradients carry forward; a wrong direction would differ by ~step_size = 0.3
    torch.testing.assert_close(mi.x_adv, bim.x_adv, rtol=0, atol=1e-5)


def test_two_steps_match_hand_momentum(toy):
    target, x, y = toy
    model, eps, a = target.model, 0.3, 0.04

    def grad(xx):
        xx = xx.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xx), y, reduction="sum"), xx)
        return g

    def l1(g):
        return g.abs().flatten(1).sum(1).reshape(-1, 1, 1, 1)

    g0 = grad(x)
    x1 = (x + a * (g0 / l1(g0)).sign()).clamp(x - eps, x + eps).clamp(0, 1)
    g1 = grad(x1)
    x2 = (x1 + a * (g0 / l1(g0) + g1 / l1(g1)).sign()).clamp(x - eps, x + eps).clamp(0, 1)
    res = MIFGSM(eps=eps, steps=2, step_size=a, mu=1.0).attack(target, x, y)
    with torch.no_grad():
        live = (model(x).argmax(1) == y) & (model(x1).argmax(1) == y)  # not frozen by a success
    assert live.sum() >= 8
    torch.testing.assert_close(res.x_adv[live], x2[live], rtol=0, atol=1e-6)
    # with momentum the second step differs from plain BIM's on some points
    bim = BIM(eps=eps, steps=2, step_size=a).attack(target, x, y)
    assert not torch.equal(res.x_adv[live], bim.x_adv[live])
