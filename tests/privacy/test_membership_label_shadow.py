"""Label-only membership inference (Choquette-Choo et al. 2021) and Shokri et al. (2017)
per-class shadow-model attack on an overfit digits MLP: 9 MLPs trained on random halves of 200
digits (each point IN 4 of them; model 0 is the target, 1-8 its shadow models). All 1,797 digits
are scored: the target's ~100 members against ~1,700 non-members (the rest of the pool and every
other digit). The AUC of a score unrelated to membership then has a standard deviation of about
0.031: ``CHANCE`` (0.62) is about four of them above 0.5.

Measured here (seed 0; target 100 % on its members, 90 % on the others; LOSS AUC 0.717): label-only
noise (sigma 0.2, 20 copies) 0.654, boundary (150 queries) 0.667, Shokri logistic 0.697. The translation
attack scores 0.565, about the gap attack's 0.548: an MLP on 8x8 digits never saw shifted digits
and a one-pixel shift is an eighth of the image, so its robustness to them says little about
membership (the paper's translations are for CNNs trained with augmentation); it is tested for
its mechanics only."""

import pytest
import torch

from advkit.attacks.privacy.label_only import LabelOnly, shift, shifts
from advkit.attacks.privacy.shadow import ShadowTrainer
from advkit.attacks.privacy.shokri import Shokri
from advkit.data.datasets import load
from advkit.defenses.output import LabelsOnly
from advkit.errors import InvalidParameterError
from advkit.evaluation.privacy import roc_auc
from advkit.models.zoo import build
from advkit.targets import InputContract, TorchTarget
from advkit.targets.wrapped import HardenedOutputTarget

CONTRACT = InputContract(shape=(1, 8, 8), n_classes=10, bounds=(0.0, 1.0))


class LabelsOnlyAPI(HardenedOutputTarget):
    """A labels-only API whose score interfaces fail loudly if anything asks them."""

    def _refuse(self, *a, **k):
        raise AssertionError("a label-only attack read scores")

    probabilities = logits = predict_scores = _refuse


CHANCE = 0.62
POOL = 200


@pytest.fixture(scope="module")
def setting():
    d = load("digits")
    x, y = torch.cat([d.x_train, d.x_test]), torch.cat([d.y_train, d.y_test])
    shadows = ShadowTrainer(n_models=9, epochs=40, batch_size=32).train(
        lambda g: build("mlp", input_shape=(1, 8, 8), n_classes=10, generator=g, hidden=(64,)),
        x[:POOL], y[:POOL], generator=torch.Generator().manual_seed(0))
    net = shadows.model(0)
    mem = torch.cat([shadows.masks[0], torch.zeros(x.shape[0] - POOL, dtype=torch.bool)])
    assert torch.all(net(x).argmax(1)[mem] == y[mem])  # 100 % train accuracy: overfit
    target = TorchTarget(CONTRACT, model=net)
    return x, y, shadows, target, mem


def _auc(s, mem):
    return roc_auc(s[mem], s[~mem])


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("params, per_point, chance", [
    ({}, 5, None),  # translations by 1 pixel: 4 shifts and the source (mechanics only)
    ({"augmentation": "noise", "n_noise": 20}, 21, CHANCE),
    ({"variant": "boundary", "max_queries": 150}, None, CHANCE),
])
def test_label_only_finds_members_from_labels_alone(setting, params, per_point, chance):
    x, y, _, target, mem = setting
    n = x.shape[0]
    api = LabelsOnlyAPI(target, LabelsOnly())
    r = LabelOnly(**params).scores(api, x, y, generator=_g())
    assert r.scores.shape == (n,) and r.scores.dtype == torch.float64
    if chance is not None:
        assert _auc(r.scores, mem) > chance, _auc(r.scores, mem)
    wrong = r.pred != y
    assert wrong[~mem].any() and not wrong[mem].any()
    if per_point is None:  # misclassified: distance 0; at most max_queries per point
        assert torch.all(r.scores[wrong] == 0) and torch.all(r.scores[~wrong] > 0)
        assert n < r.queries <= n * 150
    else:  # the source is one of the copies: a misclassified point never scores 1
        assert torch.all(r.scores[wrong] < 1) and r.queries == n * per_point
    assert r.queries == api.queries


@pytest.mark.parametrize("params", [{"augmentation": "noise", "n_noise": 5},
                                    {"variant": "boundary", "max_queries": 60}])
def test_label_only_same_seed_same_scores(setting, params):
    x, y, _, target, _ = setting
    a = LabelOnly(**params).scores(target, x[:40], y[:40], generator=_g(3))
    b = LabelOnly(**params).scores(target, x[:40], y[:40], generator=_g(3))
    c = LabelOnly(**params).scores(target, x[:40], y[:40], generator=_g(4))
    assert torch.equal(a.scores, b.scores) and a.queries == b.queries
    assert not torch.equal(a.scores, c.scores)


def test_translations_are_the_papers():
    assert shifts(1) == [(0, 0), (-1, 0), (0, -1), (0, 1), (1, 0)]
    s2 = shifts(2)
    assert len(s2) == 9 and all(abs(i) + abs(j) == 2 for i, j in s2[1:])
    img = torch.arange(9.0).view(1, 1, 3, 3)
    down_right = shift(img, 1, 1, -1.0)[0, 0]
    assert down_right.tolist() == [[-1, -1, -1], [-1, 0, 1], [-1, 3, 4]]
    up = shift(img, -1, 0, 0.0)[0, 0]
    assert up.tolist() == [[3, 4, 5], [6, 7, 8], [0, 0, 0]]


def test_shokri_per_class_attack_finds_members(setting):
    x, y, shadows, target, mem = setting
    probs = torch.softmax(shadows.logits(x[:POOL]).double(), -1)
    fit = Shokri().fit(probs, y[:POOL], shadows.masks, generator=_g(), exclude=0)
    assert sorted(fit.per_class) == list(range(10)) and fit.fallback is None
    s = fit.scores(target, x, y)
    assert s.shape == (x.shape[0],) and torch.all((s >= 0) & (s <= 1))
    auc = _auc(s, mem)
    assert auc > CHANCE, auc
    # the attack model of each class scores that class: the same points scored one class at a
    # time give the same scores
    p = target.probabilities(x)
    one = torch.cat([fit.scores_from_probabilities(p[y == c], y[y == c]) for c in range(10)])
    order = torch.cat([torch.nonzero(y == c).squeeze(1) for c in range(10)])
    assert torch.allclose(one, s[order])


def test_shokri_mlp_same_seed_same_scores(setting):
    x, y, shadows, target, _ = setting
    probs = torch.softmax(shadows.logits(x[:POOL]).double(), -1)
    att = Shokri(model="mlp", hidden=16, max_iter=50, max_per_class=300)
    a = att.fit(probs, y[:POOL], shadows.masks, generator=_g(1), exclude=0).scores(target, x, y)
    b = att.fit(probs, y[:POOL], shadows.masks, generator=_g(1), exclude=0).scores(target, x, y)
    assert torch.equal(a, b)
    # classes too small for their own model share one trained on every class
    few = Shokri(min_per_class=10_000).fit(probs, y[:POOL], shadows.masks, generator=_g())
    assert few.per_class == {} and few.fallback is not None and "share one" in few.notes[0]
    assert few.scores(target, x[:5], y[:5]).shape == (5,)


@pytest.mark.parametrize("cls, params, match", [
    (LabelOnly, {"variant": "distance"}, "variant"),
    (LabelOnly, {"max_shift": 0}, "max_shift"),
    (LabelOnly, {"noise": 0.0}, "noise"),
    (LabelOnly, {"max_queries": 5}, "max_queries"),
    (Shokri, {"model": "forest"}, "model"),
    (Shokri, {"hidden": 0}, "hidden"),
])
def test_bad_parameters(cls, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        cls(**params)


def test_bad_inputs(setting):
    x, y, shadows, target, _ = setting
    flat = TorchTarget(InputContract(shape=(64,), n_classes=10),
                       model=torch.nn.Sequential(torch.nn.Linear(64, 10)).eval())
    with pytest.raises(InvalidParameterError, match="translations need images"):
        LabelOnly(augmentation="translate").scores(flat, x[:4].flatten(1), y[:4])
    with pytest.raises(InvalidParameterError, match="image side"):
        LabelOnly(max_shift=8).scores(target, x[:4], y[:4])
    with pytest.raises(InvalidParameterError, match="advkit Target"):
        LabelOnly().scores(lambda v: v, x[:4], y[:4])
    with pytest.raises(InvalidParameterError, match="generator"):
        LabelOnly().scores(target, x[:4], y[:4], generator=0)
    probs = torch.softmax(shadows.logits(x[:POOL]).double(), -1)
    with pytest.raises(InvalidParameterError, match="IN mask"):
        Shokri().fit(probs, y[:POOL], shadows.masks[:, :10], generator=_g())
    with pytest.raises(InvalidParameterError, match="softmax"):
        Shokri().fit(probs * 3, y[:POOL], shadows.masks, generator=_g())
    fit = Shokri().fit(probs[:3], y[:POOL], shadows.masks[:3], generator=_g())
    with pytest.raises(InvalidParameterError, match="10 classes"):
        fit.scores_from_probabilities(torch.full((2, 5), 0.2), torch.tensor([0, 1]))
