"""Blended, label flipping and the tabular backdoor: exact formulas, counts and classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit.attacks.poisoning.blended import Blended
from advkit.attacks.poisoning.label_flip import LabelFlip
from advkit.attacks.poisoning.tabular import TabularBackdoor
from advkit.errors import InputContractError, InvalidParameterError


def _images(n=120, c=2, h=6, w=7, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, c, h, w), generator=g), torch.arange(n) % k


def _changed(x, y, p):
    dx = (p.x != x).flatten(1).any(1)
    return torch.nonzero(dx | (p.y != y), as_tuple=True)[0]


# blended ---------------------------------------------------------------------------------------
def test_blended_formula_is_exact_and_indices_are_the_changed_ones():
    x, y = _images()
    a = Blended(alpha=0.2, rate=0.25, target=1)
    p = a.poison(x, y, rng=np.random.default_rng(0))
    key = a.key_for((2, 6, 7))
    assert torch.allclose(p.x[p.indices], 0.8 * x[p.indices] + 0.2 * key, atol=1e-6, rtol=0)
    assert torch.equal(p.indices, _changed(x, y, p))
    assert (y[p.indices] != 1).all() and (p.y[p.indices] == 1).all()
    assert p.n_poisoned == 30


def test_blended_test_alpha_and_given_key():
    x, _ = _images(n=5)
    key = np.linspace(0, 1, 42).reshape(6, 7)
    a = Blended(alpha=0.1, test_alpha=0.5, key=key)
    k = torch.as_tensor(key, dtype=torch.float32)
    assert torch.allclose(a.apply_trigger(x), 0.5 * x + 0.5 * k, atol=1e-6, rtol=0)
    assert torch.allclose(a.apply_trigger(x, alpha=0.3), 0.7 * x + 0.3 * k, atol=1e-6, rtol=0)
    # the poisoned data keeps the training blend and stamps test inputs with test_alpha
    p = a.poison(x, torch.arange(5) % 2, rng=np.random.default_rng(0), n_classes=2)
    assert torch.allclose(p.x[p.indices], 0.9 * x[p.indices] + 0.1 * k, atol=1e-6, rtol=0)
    assert torch.equal(p.apply_trigger(x), a.apply_trigger(x))


def test_blended_random_key_fixed_by_seed_and_within_bounds():
    a, b, c = Blended(key_seed=3), Blended(key_seed=3), Blended(key_seed=4)
    k = a.key_for((1, 5, 5))
    assert torch.equal(k, b.key_for((1, 5, 5))) and not torch.equal(k, c.key_for((1, 5, 5)))
    k2 = Blended(bounds=(-1.0, 1.0)).key_for((3, 5, 5))
    assert k2.min() >= -1 and k2.max() <= 1 and k2.min() < 0


@pytest.mark.parametrize(
    "kw", [dict(alpha=0.0), dict(alpha=1.2), dict(test_alpha=-0.1), dict(key="noise"),
           dict(key=np.full((4, 4), 2.0)), dict(rate=2.0), dict(target=-2), dict(key_seed=-1)],
)
def test_blended_bad_parameters(kw):
    with pytest.raises(InvalidParameterError):
        Blended(**kw)


def test_blended_key_shape_mismatch():
    x, _ = _images(n=2)
    with pytest.raises(InputContractError):
        Blended(key=np.zeros((3, 3))).apply_trigger(x)


# label flipping --------------------------------------------------------------------------------
def test_random_flip_counts_classes_and_uniformity():
    x, y = _images(n=4000, h=2, w=2, k=4)
    p = LabelFlip(rate=0.3).poison(x, y, rng=np.random.default_rng(0))
    assert p.n_poisoned == 1200
    assert torch.equal(p.indices, _changed(x, y, p))
    assert torch.equal(p.x, x) and p.trigger is None
    old, new = y[p.indices], p.y[p.indices]
    assert (old != new).all() and new.min() >= 0 and new.max() <= 3
    # the new label is uniform over the k - 1 other classes: each offset ~ 1/3 of the flips
    counts = torch.bincount((new - old) % 4, minlength=4)[1:].double() / 1200
    assert counts.sub(1 / 3).abs().max() < 0.05


def test_targeted_flip_source_to_target():
    x, y = _images(n=200, k=4)
    p = LabelFlip(mode="targeted", source=2, target=0, rate=0.5).poison(
        x, y, rng=np.random.default_rng(0)
    )
    assert p.n_poisoned == 25  # half of the 50 samples of class 2
    assert (y[p.indices] == 2).all() and (p.y[p.indices] == 0).all()
    assert torch.equal(p.indices, _changed(x, y, p))
    assert p.label_map.tolist() == [-1, -1, 0, -1]
    full = LabelFlip(mode="targeted", source=2, target=0, rate=1.0).poison(
        x, y, rng=np.random.default_rng(0)
    )
    assert (full.y != 2).all()


def test_label_flip_determinism():
    x, y = _images()
    a = LabelFlip(rate=0.2)
    p1, p2 = (a.poison(x, y, rng=np.random.default_rng(5)) for _ in range(2))
    assert torch.equal(p1.y, p2.y) and torch.equal(p1.indices, p2.indices)


@pytest.mark.parametrize(
    "kw", [dict(rate=0), dict(mode="adversarial"), dict(mode="targeted", source=1),
           dict(mode="targeted", source=1, target=1), dict(target=2),
           dict(mode="targeted", source=-1, target=0)],
)
def test_label_flip_bad_parameters(kw):
    with pytest.raises(InvalidParameterError):
        LabelFlip(**kw)


def test_label_flip_class_out_of_range():
    x, y = _images(k=4)
    with pytest.raises(InvalidParameterError):
        LabelFlip(mode="targeted", source=1, target=9).poison(x, y, rng=np.random.default_rng(0))


# tabular ---------------------------------------------------------------------------------------
def _table(n=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.random((n, d))
    x[:, 0] += y  # feature 0 and 1 informative, the rest noise
    x[:, 1] -= y
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_tabular_sets_exactly_the_features_on_exactly_the_indices():
    x, y = _table()
    a = TabularBackdoor(features=(2, 5), values=(9.0, -9.0), target=1, rate=0.1)
    p = a.poison(x, y, rng=np.random.default_rng(0))
    assert torch.equal(p.indices, _changed(x, y, p))
    assert (p.x[p.indices][:, 2] == 9).all() and (p.x[p.indices][:, 5] == -9).all()
    other = [0, 1, 3, 4, 6, 7]
    assert torch.equal(p.x[:, other], x[:, other])
    assert (y[p.indices] != 1).all() and (p.y[p.indices] == 1).all()
    assert torch.equal(a.apply_trigger(x), p.apply_trigger(x))


def test_tabular_defaults_pick_uninformative_features_and_range_extremes():
    x, y = _table()
    p = TabularBackdoor(n_features=3, target=0).poison(x, y, rng=np.random.default_rng(0))
    feats = p.trigger.features.tolist()
    assert len(feats) == 3 and 0 not in feats and 1 not in feats
    assert torch.equal(p.trigger.values, x[:, feats].max(0).values)
    pmin = TabularBackdoor(values="min").poison(x, y, rng=np.random.default_rng(0))
    assert torch.equal(pmin.trigger.values, x[:, pmin.trigger.features].min(0).values)


@pytest.mark.parametrize(
    "kw", [dict(features=()), dict(features=(1, 1)), dict(features=(-1,)), dict(values="mean"),
           dict(features=(1, 2), values=(1.0,)), dict(n_features=0), dict(values=(1.0, 2.0))],
)
def test_tabular_bad_parameters(kw):
    with pytest.raises(InvalidParameterError):
        TabularBackdoor(**kw)


def test_tabular_bad_inputs():
    x, y = _table(d=4)
    with pytest.raises(InvalidParameterError):
        TabularBackdoor(features=(7,)).poison(x, y, rng=np.random.default_rng(0))
    with pytest.raises(InvalidParameterError):  # data-dependent trigger: use PoisonedData's
        TabularBackdoor().apply_trigger(x)
    with pytest.raises(InputContractError):
        TabularBackdoor().poison(x.reshape(-1, 2, 2), y, rng=np.random.default_rng(0))


# every registered poisoning attack ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["badnets", "blended", "label_flip", "tabular_backdoor"])
def test_registered_with_defaults_exact_indices_and_deterministic(name):
    from advkit import registry

    assert name in registry.list("poisoning")
    attack = registry.create(name)
    x, y = _table() if name == "tabular_backdoor" else _images(n=100, k=4)
    p1 = attack.poison(x, y, rng=np.random.default_rng(0))
    p2 = registry.create(name).poison(x, y, rng=np.random.default_rng(0))
    assert torch.equal(p1.x, p2.x) and torch.equal(p1.y, p2.y)
    assert torch.equal(p1.indices, _changed(x, y, p1))
    assert p1.n_poisoned == round(0.1 * len(y))
    assert p1.x.dtype == x.dtype and p1.y.dtype == torch.int64 and p1.x.shape == x.shape
    assert p1.attack == name and p1.params == attack.params()
