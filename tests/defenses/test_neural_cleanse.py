"""Neural Cleanse: the MAD anomaly index against a hand computation, the batched search's
mechanics, its NaN guard, and mitigations that return new models.

The behaviour test trains a small MLP on scikit-learn's digits (8x8) with and without a 2x2 white
BadNets patch (target 0) once per module; the 5-seed LeNet/MNIST check is in
tests/reference/test_backdoor_reference.py (slow).
"""

from __future__ import annotations

import statistics
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advkit.attacks.poisoning.badnets import BadNets
from advkit.data import load
from advkit.defenses.detectors.neural_cleanse import (
    MAD_CONSISTENCY,
    NeuralCleanse,
    anomaly_index,
    decision_margin,
    flag_classes,
)
from advkit.errors import AdvkitWarning, InvalidParameterError
from advkit.models.train import train
from advkit.models.zoo import build

FAST = dict(epochs=20, steps_per_epoch=8, batch_size=16)


# -- the anomaly index -------------------------------------------------------------------------
def _hand_index(norms: list[float]) -> list[float]:
    med = statistics.median(norms)
    mad = statistics.median([abs(v - med) for v in norms])
    return [abs(v - med) / (1.4826 * mad) for v in norms]


def test_anomaly_index_hand_example():
    norms = [10.0, 10.0, 10.0, 11.0, 9.0, 1.0]
    # median 10; |deviations| 0 0 0 1 1 9; MAD = median = 0.5; index = dev / (1.4826 * 0.5)
    want = np.array([0, 0, 0, 1, 1, 9]) / (1.4826 * 0.5)
    np.testing.assert_allclose(anomaly_index(norms), want, rtol=1e-12)
    assert flag_classes(norms).tolist() == [5]
    assert MAD_CONSISTENCY == 1.4826


def test_large_norm_outlier_is_not_flagged():
    # a class far ABOVE the median has a large index but is no backdoor target
    norms = [10.0, 11.0, 9.0, 10.5, 9.5, 100.0]
    assert anomaly_index(norms)[5] > 2
    assert flag_classes(norms).size == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.5, 500.0, allow_nan=False), min_size=3, max_size=12, unique=True))
def test_anomaly_index_matches_hand_computation(norms):
    np.testing.assert_allclose(anomaly_index(norms), _hand_index(norms), rtol=1e-9)
    med = statistics.median(norms)
    want = [i for i, (v, a) in enumerate(zip(norms, _hand_index(norms), strict=True))
            if v < med and a > 2]
    assert flag_classes(norms).tolist() == want


def test_anomaly_index_degenerate_cases():
    idx = anomaly_index([5.0, 5.0, 5.0, 1.0])  # MAD 0: the odd one out is infinitely anomalous
    assert idx.tolist()[:3] == [0.0, 0.0, 0.0] and np.isinf(idx[3])
    idx = anomaly_index([4.0, np.nan, 5.0, 6.0, 100.0])  # NaN (a failed class) is left out
    assert np.isnan(idx[1])
    np.testing.assert_allclose(np.delete(idx, 1), _hand_index([4.0, 5.0, 6.0, 100.0]))


# -- parameters ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,value", [("epochs", 0), ("batch_size", -1), ("lr", 0.0),
                                        ("init_cost", -1e-3), ("cost_multiplier", 1.0),
                                        ("success_threshold", 1.5), ("patience", 2.5),
                                        ("threshold", float("nan"))])
def test_bad_parameters_raise_naming_them(name, value):
    with pytest.raises(InvalidParameterError, match=name):
        NeuralCleanse(**{name: value})


# -- a small backdoored and clean model on digits -------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load("digits")


def _model(ds, poisoned: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x, y = ds.x_train, ds.y_train
    if poisoned:
        p = BadNets(size=2, target=0, rate=0.1).poison(x, y, rng=np.random.default_rng(seed))
        x, y = p.x, p.y
    model = build("mlp", input_shape=(1, 8, 8), n_classes=10, generator=g, hidden=(64,))
    train(model, x, y, epochs=30, lr=3e-3, batch_size=64, generator=g, progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def backdoored(digits):
    return _model(digits, True)


@pytest.fixture(scope="module")
def fitted(digits, backdoored):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvkitWarning)
        return NeuralCleanse(**FAST).fit(backdoored, digits.x_test, digits.y_test,
                                         generator=torch.Generator().manual_seed(0))


def test_flags_the_backdoor_target_and_nothing_on_a_clean_model(digits, fitted):
    assert fitted.flagged_.tolist() == [0]
    assert int(np.argmin(fitted.mask_norms_)) == 0
    clean = _model(digits, False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvkitWarning)
        nc = NeuralCleanse(**FAST).fit(clean, digits.x_test, digits.y_test,
                                       generator=torch.Generator().manual_seed(0))
    assert nc.flagged_.tolist() == []


def test_learned_attributes_are_consistent(digits, fitted):
    k, (c, h, w) = 10, digits.x_test.shape[1:]
    assert fitted.masks_.shape == (k, h, w) and fitted.patterns_.shape == (k, c, h, w)
    assert fitted.masks_.min() >= 0 and fitted.masks_.max() <= 1
    assert fitted.patterns_.min() >= 0 and fitted.patterns_.max() <= 1
    np.testing.assert_allclose(fitted.mask_norms_, fitted.masks_.sum((1, 2)).double().numpy(),
                               rtol=1e-5)
    np.testing.assert_allclose(fitted.anomaly_index_, _hand_index(list(fitted.mask_norms_)))
    trig = fitted.trigger(0)
    assert torch.equal(trig.mask, fitted.masks_[0])
    assert torch.equal(trig.pattern, fitted.patterns_[0])


def test_decision_margin_hand_examples():
    norms = [10.0, 100.0, 90.0, 110.0, 95.0, 105.0]  # median 97.5, MAD 7.5
    idx = (97.5 - 10.0) / (1.4826 * 7.5)
    assert decision_margin(norms, 2.0) == pytest.approx(idx - 2.0)
    assert decision_margin(norms, 20.0) == pytest.approx(idx - 20.0)
    assert idx - 20.0 < 0
    # the large-norm outlier does not count: only classes below the median can be flagged
    high = [100.0, 101.0, 99.0, 500.0, 100.5]
    assert decision_margin(high, 2.0) == pytest.approx(anomaly_index(high)[2] - 2.0)
    assert decision_margin([5.0, 5.0, 5.0], 2.0) == -2.0
    assert np.isnan(decision_margin([np.nan, np.nan]))


def test_margin_and_final_success_on_the_backdoored_model(digits, backdoored, fitted):
    assert fitted.margin_ == pytest.approx(decision_margin(fitted.mask_norms_, fitted.threshold))
    assert fitted.margin_ > 0 and fitted.anomaly_index_[0] == pytest.approx(
        fitted.margin_ + fitted.threshold)
    fs = fitted.final_success_
    assert fs.shape == (10,) and np.all((fs >= 0) & (fs <= 1))
    assert fs[0] >= 0.9  # the target's reversed trigger works on the fixed evaluation draw


def test_too_few_clean_images_of_a_class_warns(digits, backdoored):
    x, y = digits.x_test, digits.y_test
    keep = (y != 3) | (torch.cumsum((y == 3).long(), 0) <= 5)
    with pytest.warns(AdvkitWarning, match=r"classes \[3\] have fewer than 20"):
        NeuralCleanse(epochs=1, steps_per_epoch=1, batch_size=4).fit(
            backdoored, x[keep], y[keep], generator=torch.Generator().manual_seed(0))


def test_reversed_target_trigger_succeeds(digits, backdoored, fitted):
    x, y = digits.x_test, digits.y_test
    with torch.no_grad():
        pred = backdoored(fitted.trigger(0).apply(x[y != 0])).argmax(1)
    assert float((pred == 0).float().mean()) >= 0.9
    assert fitted.reached_[0]


def test_all_classes_share_each_step(digits, fitted):
    # one forward+backward per step over (active classes x batch): rows never exceed K * B per
    # step, and equal it while no class has stopped early
    assert fitted.resets_.sum() == 0
    assert fitted.steps_ == int(fitted.epochs_.max()) * FAST["steps_per_epoch"]
    assert fitted.rows_ <= fitted.steps_ * 10 * FAST["batch_size"]
    active_epochs = int(fitted.epochs_.sum())
    assert fitted.rows_ == active_epochs * FAST["steps_per_epoch"] * FAST["batch_size"]


def test_early_stop_per_class_shrinks_the_batch():
    # a linear model where every class is trivially reachable: classes stop early, and the
    # rows forwarded equal the per-class epochs actually run
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(16, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.randn((4, 16), generator=g))
        lin.bias.zero_()
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.rand((64, 1, 4, 4), generator=g)
    nc = NeuralCleanse(epochs=60, steps_per_epoch=2, batch_size=8, patience=1,
                       early_stop_patience=2, init_cost=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvkitWarning)
        nc.fit(model, x, torch.zeros(64, dtype=torch.long),
               generator=torch.Generator().manual_seed(0))
    assert nc.epochs_.min() < 60
    assert nc.rows_ == int(nc.epochs_.sum()) * 2 * 8


def test_same_seed_same_result_and_model_untouched(digits, backdoored):
    before = {k: v.clone() for k, v in backdoored.state_dict().items()}
    kw = dict(epochs=3, steps_per_epoch=2, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AdvkitWarning)
        a = NeuralCleanse(**kw).fit(backdoored, digits.x_test, digits.y_test,
                                    generator=torch.Generator().manual_seed(3))
        b = NeuralCleanse(**kw).fit(backdoored, digits.x_test, digits.y_test,
                                    generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.masks_, b.masks_) and torch.equal(a.patterns_, b.patterns_)
    assert not backdoored.training
    for k, v in backdoored.state_dict().items():
        assert torch.equal(v, before[k])


class _NaNAfter(nn.Module):
    """A linear classifier whose outputs are NaN on forward calls number ``bad`` (1-based)."""

    def __init__(self, bad):
        super().__init__()
        self.lin = nn.Linear(16, 4)
        self.calls, self.bad = 0, set(bad)

    def forward(self, x):
        self.calls += 1
        out = self.lin(x.flatten(1))
        return out * float("nan") if self.calls in self.bad else out


def test_non_finite_loss_resets_the_class_with_a_smaller_lr():
    g = torch.Generator().manual_seed(0)
    x = torch.rand((32, 1, 4, 4), generator=g)
    model = _NaNAfter(bad={3}).eval()  # call 1 reads the class count; call 3 is step 2
    with pytest.warns(AdvkitWarning):
        nc = NeuralCleanse(epochs=4, steps_per_epoch=2, batch_size=4).fit(
            model, x, torch.zeros(32, dtype=torch.long), generator=g)
    assert nc.resets_.tolist() == [1, 1, 1, 1]
    assert nc.failed_.size == 0
    assert np.isfinite(nc.mask_norms_).all() and torch.isfinite(nc.masks_).all()


def test_always_non_finite_gives_up_and_reports():
    g = torch.Generator().manual_seed(0)
    x = torch.rand((32, 1, 4, 4), generator=g)
    model = _NaNAfter(bad=set(range(3, 1000))).eval()  # a model NaN from the start is refused
    with pytest.warns(AdvkitWarning, match="diverged"):
        nc = NeuralCleanse(epochs=6, steps_per_epoch=1, batch_size=4, max_resets=2).fit(
            model, x, torch.zeros(32, dtype=torch.long), generator=g)
    assert nc.failed_.tolist() == [0, 1, 2, 3]
    assert np.isnan(nc.mask_norms_).all() and nc.flagged_.size == 0


# -- mitigations --------------------------------------------------------------------------------
def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_unlearn_returns_a_new_model_and_leaves_the_original(digits, backdoored, fitted):
    before = _state(backdoored)
    new = fitted.unlearn(backdoored, digits.x_train, digits.y_train, epochs=2,
                         generator=torch.Generator().manual_seed(0))
    assert new is not backdoored and not new.training and not backdoored.training
    for k, v in backdoored.state_dict().items():
        assert torch.equal(v, before[k])
    assert any(not torch.equal(v, before[k]) for k, v in new.state_dict().items())
    bn = BadNets(size=2, target=0, rate=0.1)
    x, y = digits.x_test, digits.y_test
    with torch.no_grad():
        old = (backdoored(bn.apply_trigger(x[y != 0])).argmax(1) == 0).float().mean()
        now = (new(bn.apply_trigger(x[y != 0])).argmax(1) == 0).float().mean()
    assert now < old  # the true trigger works less after unlearning the reversed one


def test_dilated_trigger_grows_the_mask_by_whole_pixels(fitted):
    plain, grown = fitted.trigger(0), fitted.trigger(0, dilate=1)
    assert torch.equal(grown.pattern, plain.pattern)
    # oracle: the max over each pixel's 3x3 neighbourhood, written out
    m = torch.nn.functional.pad(plain.mask, (1, 1, 1, 1))
    h, w = plain.mask.shape
    want = torch.stack([m[i:i + h, j:j + w] for i in range(3) for j in range(3)]).amax(0)
    assert torch.equal(grown.mask, want)
    assert (grown.mask >= plain.mask).all() and (grown.mask > plain.mask).any()
    for bad in (dict(dilate=-1), dict(lr_decay=0.0), dict(lr_decay=1.5), dict(epochs=0)):
        with pytest.raises(InvalidParameterError, match=next(iter(bad))):
            fitted.unlearn(torch.nn.Linear(2, 2), torch.zeros(4, 2), torch.zeros(4).long(), **bad)


def test_unlearn_without_flagged_classes_warns_and_copies(digits, backdoored, fitted):
    with pytest.warns(AdvkitWarning, match="nothing to unlearn"):
        new = fitted.unlearn(backdoored, digits.x_train, digits.y_train, classes=[])
    assert new is not backdoored
    for k, v in backdoored.state_dict().items():
        assert torch.equal(v, new.state_dict()[k])


def test_prune_silences_channels_of_a_copy(digits, backdoored, fitted):
    before = _state(backdoored)
    new = fitted.prune(backdoored, digits.x_test, digits.y_test, layer="classifier.0",
                       max_ratio=0.5)
    for k, v in backdoored.state_dict().items():
        assert torch.equal(v, before[k])
    pruned = fitted.pruned_channels_
    assert 0 < len(pruned) <= 32
    w = dict(new.named_modules())["classifier.0"].weight
    assert torch.all(w[pruned] == 0)
    with pytest.raises(InvalidParameterError, match="layer"):
        fitted.prune(backdoored, digits.x_test, digits.y_test, layer="nope")
