"""MI-Face (Fredrikson et al. 2015), its scores, and attribute inference (Fredrikson et al. 2014 /
Yeom et al. 2018) with Newcombe's paired interval. Small toys: each test runs in seconds."""

import math

import pytest
import torch
from torch import nn

from advkit.attacks.privacy.attribute_inference import AttributeInference, confusion_matrix
from advkit.attacks.privacy.mi_face import MIFace, _gaussian_kernel, total_variation
from advkit.errors import IncompatibleTargetError, InvalidParameterError
from advkit.evaluation.inversion import (
    attribute_metrics,
    paired_difference_interval,
    score_reconstructions,
)
from advkit.targets import InputContract, TorchTarget
from advkit.testing.toys import ToyCNN, toy_image_target, toy_images


def _quadrant(x: torch.Tensor) -> torch.Tensor:
    """Which 4x4 quadrant of an 8x8 image is brightest (toy class c lights up quadrant c)."""
    q = [x[:, 0, :4, :4], x[:, 0, :4, 4:], x[:, 0, 4:, :4], x[:, 0, 4:, 4:]]
    return torch.stack([v.mean((1, 2)) for v in q], 1).argmax(1)


@pytest.fixture(scope="module")
def toy():
    return toy_image_target()[0]


def test_mi_face_reconstructs_each_class_of_a_trained_model(toy):
    classes = torch.arange(4)
    r = MIFace(steps=200, patience=20).invert(toy, classes)
    assert torch.equal(_quadrant(r.x), classes)  # each reconstruction lights its class's quadrant
    assert torch.all(r.confidence >= 0.99)  # stopped at the goal, before the step limit
    assert torch.all(r.steps_run < 200) and torch.all(r.best_step <= r.steps_run)
    assert r.queries == 4 * (int(r.steps_run.max()) + 1)  # one batched forward per step
    assert r.x.min() >= 0 and r.x.max() <= 1
    xp, yp = toy_images(256, seed=1)
    xh, yh = toy_images(128, seed=5)
    s = score_reconstructions(r.x, classes, x_private=xp, y_private=yp, x_held_out=xh,
                              y_held_out=yh, n_classes=4)
    assert s.held_out_accuracy.k == 4 and s.nearest_mean_accuracy.k == 4
    assert torch.all(s.similarity_own > s.similarity_other)
    # control: an untrained model's "reconstructions" show no class
    blank = TorchTarget(toy.contract, model=ToyCNN().eval())
    rb = MIFace(steps=50, patience=20).invert(blank, classes)
    sb = score_reconstructions(rb.x, classes, x_private=xp, y_private=yp, x_held_out=xh,
                               y_held_out=yh, n_classes=4)
    assert sb.held_out_accuracy.k < 4


def test_mi_face_one_step_is_algorithm_1(toy):
    """x1 = clip(x0 - lr * grad c(x0)) from x0 = 0; the lower-cost iterate is returned."""
    x0 = torch.zeros(2, 1, 8, 8, requires_grad=True)
    labels = torch.tensor([1, 2])
    cost = 1 - torch.softmax(toy.model(x0), 1)[torch.arange(2), labels]
    (g,) = torch.autograd.grad(cost.sum(), x0)
    x1 = (x0 - 0.5 * g).detach().clamp(0, 1)
    with torch.no_grad():
        c1 = 1 - torch.softmax(toy.model(x1), 1)[torch.arange(2), labels]
    r = MIFace(steps=1, lr=0.5).invert(toy, labels)
    for i in range(2):
        want_x, want_c = (x1[i], c1[i]) if c1[i] < cost[i] else (x0[i].detach(), cost[i])
        assert torch.allclose(r.x[i], want_x, atol=1e-6)
        assert abs(float(r.cost[i]) - float(want_c)) < 1e-5
    assert r.queries == 2 * 2


def test_mi_face_process_and_aux_term():
    k = _gaussian_kernel(0.7, 1, torch.float64, "cpu")
    assert math.isclose(float(k.sum()), 1.0, rel_tol=1e-12)
    const = torch.full((1, 1, 5, 5), 0.3, dtype=torch.float64)
    out = MIFace(denoise=0.7)._process(const, 0.0, 1.0)
    assert torch.allclose(out, const)  # denoising leaves a flat image flat
    img = torch.zeros(1, 1, 2, 2)
    img[0, 0, 0, 0] = 1.0
    assert float(total_variation(img)) == 2.0


def test_mi_face_needs_gradients_and_valid_parameters(toy):
    from advkit.defenses.output import LabelsOnly

    with pytest.raises(IncompatibleTargetError, match="gradients"):
        MIFace(steps=1).invert(toy.with_output(LabelsOnly()), torch.tensor([0]))
    with pytest.raises(InvalidParameterError):
        MIFace(lr=0.0)
    with pytest.raises(InvalidParameterError, match="labels"):
        MIFace(steps=1).invert(toy, torch.tensor([4]))


def _attribute_data(n=400, seed=0):
    """Records (s one-hot, 3 noise features) with P(s=1)=0.3 and y = s for 90 % of them."""
    g = torch.Generator().manual_seed(seed)
    s = (torch.rand(n, generator=g) < 0.3).long()
    flip = torch.rand(n, generator=g) < 0.1
    y = torch.where(flip, 1 - s, s)
    x = torch.cat([nn.functional.one_hot(s, 2).float(), torch.rand(n, 3, generator=g)], 1)
    return x, y, s


def _linear_target(w_s: float):
    net = nn.Linear(5, 2)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[0, 0], net.weight[1, 1] = w_s, w_s  # class c follows s = c
    return TorchTarget(InputContract(shape=(5,), n_classes=2, bounds=(0.0, 1.0)), model=net.eval())


def test_attribute_inference_beats_the_marginal_only_when_the_model_uses_the_feature():
    x, y, s = _attribute_data()
    prior = torch.tensor([float((s == 0).sum()), float((s == 1).sum())])
    cand = torch.eye(2)
    for method in ("fredrikson", "yeom"):
        g = AttributeInference(method=method).infer(_linear_target(3.0), x, y, columns=[0, 1],
                                                    candidates=cand, prior=prior)
        m = attribute_metrics(g.guess, g.baseline, s)
        assert m["baseline_accuracy"]["k"] == int((s == 0).sum())
        assert m["advantage"] > 0.1 and m["advantage_ci"][0] > 0, (method, m)
        assert g.queries == 2 * len(x) and g.used == "probabilities"
    blind = AttributeInference().infer(_linear_target(0.0), x, y, columns=[0, 1],
                                       candidates=cand, prior=prior)
    m = attribute_metrics(blind.guess, blind.baseline, s)
    assert m["advantage"] == 0.0 and m["advantage_ci"][0] <= 0 <= m["advantage_ci"][1]


def test_attribute_inference_on_labels_only_uses_the_confusion_matrix():
    from advkit.defenses.output import LabelsOnly

    x, y, s = _attribute_data()
    t = _linear_target(3.0).with_output(LabelsOnly())
    c = confusion_matrix(t.labels(x), y, 2)
    assert torch.allclose(c.sum(1), torch.ones(2, dtype=torch.float64))
    prior = torch.tensor([float((s == 0).sum()), float((s == 1).sum())])
    g = AttributeInference().infer(t, x, y, columns=[0, 1], candidates=torch.eye(2), prior=prior,
                                   confusion=c)
    assert g.used == "confusion matrix"
    assert attribute_metrics(g.guess, g.baseline, s)["advantage_ci"][0] > 0
    with pytest.raises(InvalidParameterError, match="confusion"):
        AttributeInference().infer(t, x, y, columns=[0, 1], candidates=torch.eye(2), prior=prior)


def test_newcombe_paired_interval():
    # large n: close to the Wald interval of the paired difference
    a, b, c, d = 4000, 1500, 1000, 3500
    n = a + b + c + d
    theta = (b - c) / n
    half = 1.959964 * math.sqrt((b + c) / n - theta ** 2) / math.sqrt(n)
    lo, hi = paired_difference_interval(a, b, c, d)
    assert abs(lo - (theta - half)) < 2e-3 and abs(hi - (theta + half)) < 2e-3
    # no discordant pairs: the interval holds 0 and is not a point
    lo, hi = paired_difference_interval(168, 0, 0, 32)
    assert lo < 0 < hi
    # small n: inside [-1, 1] and around the estimate
    lo, hi = paired_difference_interval(0, 5, 0, 0)
    assert -1 <= lo < 1.0 <= hi <= 1
