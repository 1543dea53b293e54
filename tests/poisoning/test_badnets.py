"""BadNets: indices are exactly the changed samples, the trigger lands where and as specified."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit.attacks.poisoning.badnets import BadNets
from advkit.errors import InputContractError, InvalidParameterError


def _data(n=200, c=1, h=10, w=12, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, c, h, w), generator=g) * 0.9, torch.arange(n) % k


def _changed(x, y, p):
    dx = (p.x != x).flatten(1).any(1)
    return torch.nonzero(dx | (p.y != y), as_tuple=True)[0]


@pytest.mark.parametrize("mode", ["all-to-one", "all-to-all"])
@pytest.mark.parametrize("pattern", ["white", "checkerboard"])
def test_indices_are_exactly_the_changed_samples(mode, pattern):
    x, y = _data()
    p = BadNets(rate=0.15, target=2, mode=mode, pattern=pattern).poison(
        x, y, rng=np.random.default_rng(1)
    )
    assert p.indices.dtype == torch.int64
    assert torch.equal(p.indices, _changed(x, y, p))
    assert p.n_poisoned == round(0.15 * len(y))
    assert torch.equal(p.y_clean, y)
    # untouched samples are bit-identical
    keep = ~p.poisoned_mask
    assert torch.equal(p.x[keep], x[keep]) and torch.equal(p.y[keep], y[keep])


def test_all_to_one_never_picks_the_target_and_relabels_to_it():
    x, y = _data()
    p = BadNets(rate=0.5, target=3).poison(x, y, rng=np.random.default_rng(0))
    assert (y[p.indices] != 3).all()
    assert (p.y[p.indices] == 3).all()
    assert p.target == 3 and p.label_map is None
    assert torch.equal(p.target_labels(y), torch.full_like(y, 3))


def test_all_to_all_maps_y_to_y_plus_one_mod_k():
    x, y = _data(k=5)
    p = BadNets(rate=0.4, mode="all-to-all").poison(x, y, rng=np.random.default_rng(0))
    assert torch.equal(p.y[p.indices], (y[p.indices] + 1) % 5)
    assert torch.equal(p.label_map, torch.tensor([1, 2, 3, 4, 0]))
    assert p.target is None
    # all classes are eligible in all-to-all
    assert set(y[p.indices].tolist()) == set(range(5))


@pytest.mark.parametrize(
    "position,corner",
    [("bottom-right", (7, 9)), ("top-left", (0, 0)), ("top-right", (0, 9)),
     ("bottom-left", (7, 0)), ("center", (3, 4)), ((2, 5), (2, 5))],
)
def test_trigger_at_exactly_the_position_and_nowhere_else(position, corner):
    x, _ = _data(n=8, c=3)
    xt = BadNets(size=3, position=position).apply_trigger(x)
    r, c = corner
    region = torch.zeros(10, 12, dtype=torch.bool)
    region[r : r + 3, c : c + 3] = True
    assert (xt[:, :, region] == 1.0).all()
    assert torch.equal(xt[:, :, ~region], x[:, :, ~region])


def test_checkerboard_and_array_patterns():
    x, _ = _data(n=4, c=2)
    xt = BadNets(size=3, pattern="checkerboard", position="top-left").apply_trigger(x)
    want = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]])
    assert torch.equal(xt[:, :, :3, :3], want.expand(4, 2, 3, 3))
    pat = np.linspace(0, 1, 18).reshape(2, 3, 3)
    xt = BadNets(size=3, pattern=pat, position=(1, 1)).apply_trigger(x)
    want = torch.as_tensor(pat, dtype=torch.float32).expand(4, 2, 3, 3)
    assert torch.equal(xt[:, :, 1:4, 1:4], want)
    # the trigger object agrees with apply_trigger
    trig = BadNets(size=3, pattern=pat, position=(1, 1)).trigger_for((2, 10, 12))
    assert int(trig.mask.sum()) == 9 and torch.equal(trig.apply(x), xt)


def test_poisoned_samples_equal_apply_trigger_and_respect_bounds():
    x, y = _data()
    a = BadNets(rate=0.2, bounds=(-1.0, 2.0))
    p = a.poison(x, y, rng=np.random.default_rng(0))
    assert torch.equal(p.x[p.indices], a.apply_trigger(x[p.indices]))
    assert (p.x[p.indices][..., -3:, -3:] == 2.0).all()
    assert torch.equal(p.apply_trigger(x), a.apply_trigger(x))


def test_deterministic_given_rng_and_varies_with_it():
    x, y = _data()
    a = BadNets(rate=0.1)
    p1 = a.poison(x, y, rng=np.random.default_rng(7))
    p2 = a.poison(x, y, rng=np.random.default_rng(7))
    p3 = a.poison(x, y, rng=np.random.default_rng(8))
    assert torch.equal(p1.indices, p2.indices) and torch.equal(p1.x, p2.x)
    assert not torch.equal(p1.indices, p3.indices)


def test_detection_scores_against_truth():
    x, y = _data()
    p = BadNets(rate=0.1).poison(x, y, rng=np.random.default_rng(0))
    flagged = p.poisoned_mask.clone()
    flagged[p.indices[:5]] = False  # miss 5 of 20
    flagged[(~p.poisoned_mask).nonzero()[:5, 0]] = True  # 5 false alarms
    prec, rec = p.detection_scores(flagged)
    assert (prec.k, prec.n, rec.k, rec.n) == (15, 20, 15, 20)


@pytest.mark.parametrize(
    "kw",
    [dict(size=0), dict(rate=0.0), dict(rate=1.5), dict(target=-1), dict(mode="some"),
     dict(position="middle"), dict(position=(1, -1)), dict(pattern="stripes"),
     dict(pattern=np.ones((2, 2))), dict(pattern=np.full((3, 3), 5.0)), dict(bounds=(1.0, 0.0)),
     dict(size=2.5)],
)
def test_bad_parameters_raise(kw):
    with pytest.raises(InvalidParameterError):
        BadNets(**kw)


def test_bad_inputs_raise():
    x, y = _data()
    with pytest.raises(InputContractError):
        BadNets(size=20).apply_trigger(x)
    with pytest.raises(InvalidParameterError):  # target outside the classes
        BadNets(target=7).poison(x, y, rng=np.random.default_rng(0))
    with pytest.raises(InvalidParameterError):  # more poison than eligible samples
        BadNets(rate=0.9).poison(x, y, rng=np.random.default_rng(0))
    with pytest.raises(InputContractError):
        BadNets().poison(x, y[:-1], rng=np.random.default_rng(0))
    with pytest.raises(InputContractError):
        BadNets().apply_trigger(x.flatten(1))
    with pytest.raises(InputContractError):
        BadNets().poison(x[:0], y[:0], rng=np.random.default_rng(0))
    with pytest.raises(InvalidParameterError):
        BadNets().poison(x, y, rng=0)
    with pytest.raises(InvalidParameterError):  # fewer classes than the labels need
        BadNets().poison(x, y, rng=np.random.default_rng(0), n_classes=3)
    with pytest.raises(InputContractError):
        BadNets().poison(x.int(), y, rng=np.random.default_rng(0))
