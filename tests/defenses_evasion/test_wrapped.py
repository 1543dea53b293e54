"""Defended targets: BPDA / EOT gradients, naive vs adaptive, output hardening, the detector."""

from __future__ import annotations

import pytest
import torch

from advkit.attacks.base import input_grad
from advkit.attacks.evasion.pgd import PGD
from advkit.defenses.detectors.squeeze_detector import FeatureSqueezingDetector
from advkit.defenses.output import LabelsOnly, Rounded, TopK
from advkit.defenses.transforms import JPEG, BitDepth, GaussianNoise, MedianSmoothing
from advkit.errors import AdvkitError, IncompatibleTargetError, InvalidParameterError
from advkit.targets.wrapped import HardenedOutputTarget, TransformedTarget
from advkit.testing.toys import toy_image_target


@pytest.fixture(scope="module")
def toy():
    return toy_image_target(seed=0, n=48)


def _grad_of_inner_at(target, z, y):
    g, _, _ = input_grad(target, z, y)
    return g


@pytest.mark.parametrize("transform", [JPEG(quality=75), BitDepth(bits=3)])
def test_bpda_gradient_is_the_inner_gradient_at_the_transformed_point(toy, transform):
    target, x, y = toy
    adaptive = target.with_transforms(transform)
    assert isinstance(adaptive, TransformedTarget) and adaptive.mode == "adaptive"
    g_adaptive = _grad_of_inner_at(adaptive, x, y)
    g_expected = _grad_of_inner_at(target, transform(x), y)
    assert torch.allclose(g_adaptive, g_expected, atol=1e-6)
    assert g_adaptive.abs().sum() > 0
    # naive: autograd through rounding gives nothing to follow
    g_naive = _grad_of_inner_at(adaptive.with_mode("naive"), x, y)
    assert g_naive.abs().max() == 0
    assert adaptive.describe()["bpda"] == [transform.label]
    assert adaptive.with_mode("naive").describe()["bpda"] == []


def test_exact_transform_keeps_autograd_in_both_modes(toy):
    target, x, y = toy
    t = target.with_transforms(MedianSmoothing(kernel=3))
    assert t.bpda == ()
    g_a = _grad_of_inner_at(t, x, y)
    g_n = _grad_of_inner_at(t.with_mode("naive"), x, y)
    assert torch.allclose(g_a, g_n) and g_a.abs().sum() > 0


def test_eot_averages_the_gradient_over_draws(toy):
    target, x, y = toy
    noise = GaussianNoise(sigma=0.2)
    t = TransformedTarget(target, (noise,), eot_samples=4, seed=7)
    assert t.eot == 4 and t.randomized == (noise.label,)
    g = _grad_of_inner_at(t, x, y)
    # reference: the same draws (the target's generator stream), identity Jacobian of the noise,
    # scores averaged over the draws, then the gradient of the loss
    xg = x.clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(7)
    draws = [xg + (noise(x, (0.0, 1.0), gen) - x) for _ in range(4)]
    logits = sum(target.logits(d, check=False) for d in draws) / 4
    (g_ref,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y, reduction="sum"),
                                   xg)
    assert torch.allclose(g, g_ref, atol=1e-5)
    # predictions use one draw of the deployed defense and count one query per point
    q0 = t.queries
    t.labels(x)
    assert t.queries - q0 == x.shape[0]
    # a differentiable call counts every draw
    q0 = t.queries
    _grad_of_inner_at(t, x, y)
    assert t.queries - q0 == 4 * x.shape[0]


def test_adaptive_attack_is_at_least_as_strong_as_naive(toy):
    target, x, y = toy
    pgd = PGD(eps=0.3, steps=10)
    for tr in (JPEG(quality=75), BitDepth(bits=2), GaussianNoise(sigma=0.1)):
        defended = TransformedTarget(target, (tr,), eot_samples=4, seed=0)
        adaptive = pgd.attack(defended, x, y, generator=torch.Generator().manual_seed(0))
        naive = pgd.attack(defended.with_mode("naive"), x, y,
                           generator=torch.Generator().manual_seed(0))
        n = x.shape[0]
        assert adaptive.robust.sum() <= naive.robust.sum() + 1, (tr, n)
        assert adaptive.robust_accuracy().value < adaptive.clean_accuracy().value


def test_transformed_target_keeps_mode_and_validates(toy):
    target, x, y = toy
    target.model.train()
    try:
        t = target.with_transforms(JPEG(quality=50), MedianSmoothing(kernel=2))
        _grad_of_inner_at(t, x, y)
        assert target.model.training
    finally:
        target.model.eval()
    assert t.capabilities == target.capabilities
    with pytest.raises(InvalidParameterError, match="mode"):
        TransformedTarget(target, (JPEG(),), mode="sideways")
    with pytest.raises(InvalidParameterError, match="transforms"):
        target.with_transforms(lambda z: z)
    with pytest.raises(InvalidParameterError, match="eot_samples"):
        TransformedTarget(target, (JPEG(),), eot_samples=0)


def test_output_hardening(toy):
    target, x, y = toy
    p = target.probabilities(x)
    r = target.with_output(Rounded(decimals=1))
    assert isinstance(r, HardenedOutputTarget)
    assert torch.allclose(r.probabilities(x), torch.round(p, decimals=1))
    assert not r.capabilities.gradients and not r.capabilities.logits
    top = target.with_output(TopK(k=2)).probabilities(x)
    assert ((top > 0).sum(1) <= 2).all()
    assert torch.allclose(top.max(1).values, p.max(1).values)
    lab = target.with_output(LabelsOnly())
    assert not lab.capabilities.probabilities
    assert torch.equal(lab.labels(x), target.labels(x))
    with pytest.raises(IncompatibleTargetError):
        PGD(eps=0.1, steps=2).attack(lab, x, y)
    with pytest.raises(InvalidParameterError):
        TopK(k=0)


def test_feature_squeezing_detector(toy):
    target, x, y = toy
    det = FeatureSqueezingDetector(squeezers=(BitDepth(bits=1), MedianSmoothing(kernel=2)),
                                   fpr=0.1)
    with pytest.raises(AdvkitError, match="fit"):
        det.predict(target, x)
    det.fit(target, x)
    flagged = det.predict(target, x)
    assert flagged.float().mean() <= 0.1 + 1e-9
    assert det.threshold_ == pytest.approx(float(torch.quantile(det.clean_scores_.double(), 0.9,
                                                                   interpolation="higher")))
    s = det.score(target, x)
    assert s.shape == (x.shape[0],) and (s >= 0).all() and (s <= 2 + 1e-6).all()
    with pytest.raises(InvalidParameterError, match="fpr"):
        FeatureSqueezingDetector(fpr=0.0)


def test_transforms_in_front_of_a_labels_only_scikit_learn_model():
    from sklearn.neighbors import KNeighborsClassifier

    from advkit.targets.base import InputContract
    from advkit.targets.sklearn import SklearnTarget

    x, y = _toy_flat()
    est = KNeighborsClassifier(n_neighbors=3).fit(x.reshape(len(x), -1).numpy(), y.numpy())
    target = SklearnTarget(InputContract(shape=(1, 8, 8), n_classes=4), estimator=est)
    defended = target.with_transforms(BitDepth(bits=2), MedianSmoothing(kernel=2))
    assert defended.capabilities == target.capabilities and not defended.capabilities.gradients
    expected = target.labels(MedianSmoothing(kernel=2)(BitDepth(bits=2)(x)))
    assert torch.equal(defended.labels(x), expected)
    assert defended.queries == x.shape[0]


def _toy_flat():
    from advkit.testing.toys import toy_images

    return toy_images(40, seed=5)
