"""Adversarial patch (Brown 2017): pasting, EoT training, held-out success vs a random patch."""

import pytest
import torch

from advkit.attacks.evasion.patch import AdversarialPatch, Patch, paste
from advkit.errors import IncompatibleTargetError, InvalidParameterError
from advkit.goals import Targeted
from advkit.testing import toy_image_target, toy_linear_target


@pytest.fixture(scope="module")
def image():
    return toy_image_target(seed=0, n=160)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_paste_writes_the_patch_exactly_in_its_window():
    g = _gen(1)
    x = torch.rand(5, 3, 9, 7, generator=g)
    patch = torch.rand(3, 4, 4, generator=g)
    rows, cols = torch.tensor([0, 5, 2, 3, 1]), torch.tensor([0, 3, 1, 0, 2])
    out = paste(x, patch, rows, cols)
    for i in range(5):
        r, c = int(rows[i]), int(cols[i])
        assert torch.equal(out[i, :, r:r + 4, c:c + 4], patch)
        outside = torch.ones(9, 7, dtype=torch.bool)
        outside[r:r + 4, c:c + 4] = False
        assert torch.equal(out[i][:, outside], x[i][:, outside])


def test_paste_gradient_counts_each_patch_pixel_once_per_image():
    x = torch.zeros(6, 1, 8, 8)
    patch = torch.zeros(1, 3, 3, requires_grad=True)
    out = paste(x, patch, torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([5, 4, 3, 2, 1, 0]))
    out.sum().backward()
    assert torch.equal(patch.grad, torch.full((1, 3, 3), 6.0))


def test_optimised_patch_beats_a_random_patch_on_held_out_images(image):
    target, x, y = image
    x_fit, y_fit, x_out, y_out = x[:80], y[:80], x[80:], y[80:]
    attack = Patch(size=0.5, steps=120)
    trained = attack.fit(target, x_fit, y_fit, generator=_gen())
    assert trained.patch.shape == (1, 4, 4)
    held = trained.success_rate(target, x_out, y_out, generator=_gen(1))
    noise = torch.rand(trained.patch.shape, generator=_gen(5))
    rnd = AdversarialPatch(noise, (0.0, 1.0)).success_rate(target, x_out, y_out, generator=_gen(1))
    assert held.lo > rnd.hi, (held, rnd)


def test_attack_pastes_one_patch_and_reports_its_footprint(image):
    target, x, y = image
    res = Patch(size=0.25, steps=20).attack(target, x[:16], y[:16], generator=_gen())
    patch, loc = res.extra["patch"], res.extra["location"]
    assert patch.shape == (1, 2, 2) and loc.shape == (16, 2)
    for i in range(16):
        r, c = loc[i].tolist()
        assert torch.equal(res.x_adv[i, :, r:r + 2, c:c + 2], patch)
    assert torch.all(res.extra["l0_share"] <= 4 / 64 + 1e-9)
    assert torch.allclose(res.distance, (res.x_adv - x[:16]).flatten(1).norm(dim=1))
    assert res.passes == 20 and Patch().threat is None


def test_targeted_patch_moves_points_to_the_target(image):
    # a 6x6 patch on 8x8 images always covers the centre, so one patch can imitate any class
    target, x, y = image
    trained = Patch(size=0.75, steps=120).fit(target, x[:80], y[:80], goal=Targeted(1),
                                              generator=_gen())
    held = trained.success_rate(target, x[80:], y[80:], goal=Targeted(1), generator=_gen(2))
    noise = AdversarialPatch(torch.rand(1, 6, 6, generator=_gen(5)), (0.0, 1.0))
    rnd = noise.success_rate(target, x[80:], y[80:], goal=Targeted(1), generator=_gen(2))
    assert held.lo > rnd.hi, (held, rnd)


def test_patch_refuses_vector_inputs():
    target, x, y = toy_linear_target(seed=0, n=8)
    assert Patch.images_only
    with pytest.raises(IncompatibleTargetError, match="image"):
        Patch(steps=2).attack(target, x, y)


@pytest.mark.parametrize("bad", [dict(size=0.0), dict(size=1.5), dict(steps=0),
                                 dict(step_size=0.0), dict(batch_size=0),
                                 dict(scale_range=(0.0, 1.0)), dict(scale_range=(1.2, 0.9))])
def test_bad_parameters_raise(bad):
    with pytest.raises(InvalidParameterError, match=next(iter(bad))):
        Patch(**bad)
