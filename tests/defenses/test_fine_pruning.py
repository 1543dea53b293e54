"""Fine-pruning: channels pruned in increasing order of clean activity, the stopping rule, pruned
channels staying silent through fine-tuning, and the user's model left alone."""

from __future__ import annotations

import copy

import pytest
import torch

from advkit.defenses.detectors.fine_pruning import FinePruning, accuracy, zero_channels
from advkit.errors import IncompatibleTargetError, InvalidParameterError
from advkit.testing.toys import toy_image_target, toy_images


@pytest.fixture(scope="module")
def toy():
    target, _, _ = toy_image_target(seed=0)
    x, y = toy_images(256, seed=5)
    xv, yv = toy_images(128, seed=6)
    return target.model, x, y, xv, yv


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_prunes_in_increasing_activity_order_within_the_drop(toy):
    model, x, y, xv, yv = toy
    before = _state(model)
    fp = FinePruning(max_drop=0.05, finetune_epochs=0).fit(model, x, y, x_val=xv, y_val=yv)
    for k, v in model.state_dict().items():  # the user's model is untouched
        assert torch.equal(v, before[k])
    order = torch.argsort(fp.activity_).tolist()
    n = len(fp.pruned_channels_)
    assert fp.pruned_channels_ == order[:n]
    assert fp.layer_ == "conv"
    assert fp.val_acc_before_ - fp.val_acc_pruned_ <= 0.05 + 1e-9
    assert fp.val_acc_pruned_ == pytest.approx(accuracy(fp.model_, xv, yv))
    if n < int(0.9 * len(order)):  # stopped by the drop: one more channel would break it
        nxt = copy.deepcopy(fp.model_)
        zero_channels(nxt, nxt.conv, [order[n]])
        assert fp.val_acc_before_ - accuracy(nxt, xv, yv) > 0.05


def test_dead_channels_go_first_and_ratio_caps(toy):
    model, x, y, xv, yv = toy
    dead = copy.deepcopy(model)
    zero_channels(dead, dead.conv, [2, 5])
    fp = FinePruning(max_drop=1.0, max_ratio=0.5, finetune_epochs=0).fit(
        dead, x, y, x_val=xv, y_val=yv)
    assert fp.activity_[2] == 0 and fp.activity_[5] == 0
    n_dead = int((fp.activity_ == 0).sum())  # a ReLU channel may be dormant already
    assert {2, 5} <= set(fp.pruned_channels_[:n_dead])
    assert len(fp.pruned_channels_) == 4  # max_drop=1 never stops it; the ratio does (8 * 0.5)


def test_pruned_channels_stay_zero_through_fine_tuning(toy):
    model, x, y, xv, yv = toy
    fp = FinePruning(max_drop=0.2, finetune_epochs=2, lr=1e-2).fit(
        model, x, y, x_val=xv, y_val=yv, generator=torch.Generator().manual_seed(0))
    assert fp.pruned_channels_
    conv = fp.model_.conv
    assert torch.all(conv.weight[fp.pruned_channels_] == 0)
    assert torch.all(conv.bias[fp.pruned_channels_] == 0)
    kept = [c for c in range(8) if c not in fp.pruned_channels_]
    assert not torch.equal(conv.weight[kept], model.conv.weight[kept])  # it did fine-tune
    assert not fp.model_.training
    m2, pruned = FinePruning(max_drop=0.2, finetune_epochs=2, lr=1e-2).defend(
        model, x, y, x_val=xv, y_val=yv, generator=torch.Generator().manual_seed(0))
    assert pruned == fp.pruned_channels_
    for k, v in m2.state_dict().items():  # same generator, same result
        assert torch.equal(v, fp.model_.state_dict()[k])


@pytest.mark.parametrize("name,value", [("max_drop", -0.1), ("max_ratio", 0.0),
                                        ("finetune_epochs", -1), ("lr", 0.0),
                                        ("val_share", 1.0), ("batch_size", 0)])
def test_bad_parameters_raise_naming_them(name, value):
    with pytest.raises(InvalidParameterError, match=name):
        FinePruning(**{name: value})


def test_bad_layer_and_no_conv(toy):
    model, x, y, _, _ = toy
    with pytest.raises(InvalidParameterError, match="layer"):
        FinePruning(layer="nope").fit(model, x, y)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))
    with pytest.raises(IncompatibleTargetError, match="Conv2d"):
        FinePruning().fit(mlp, x, y)


def test_pruning_curve_records_every_step_and_the_stop(toy):
    model, x, y, xv, yv = toy

    def trig(xb):
        out = xb.clone()
        out[..., -2:, -2:] = 1.0
        return out

    fp = FinePruning(max_drop=0.05, finetune_epochs=1).fit(
        model, x, y, x_val=xv, y_val=yv, trigger=trig, target=0,
        generator=torch.Generator().manual_seed(0))
    c = fp.curve_
    n = len(fp.pruned_channels_)
    assert [p["n_pruned"] for p in c] == list(range(len(fp.activity_) + 1))  # max_ratio 1: all
    assert c[0]["clean_accuracy"] == fp.val_acc_before_
    assert c[n]["clean_accuracy"] == fp.val_acc_pruned_
    assert all(fp.val_acc_before_ - p["clean_accuracy"] <= 0.05 + 1e-9 for p in c[: n + 1])
    assert n < len(fp.activity_) and fp.val_acc_before_ - c[n + 1]["clean_accuracy"] > 0.05
    assert c[-1]["fraction_pruned"] == 1.0
    # with every channel of the only conv layer silenced the output no longer depends on x
    assert c[-1]["clean_accuracy"] <= 0.5
    for p in c:
        assert 0.0 <= p["backdoor_success"] <= 1.0
    want = float((fp.model_(trig(xv[yv != 0])).argmax(1) == 0).float().mean())
    assert fp.backdoor_success_after_ == pytest.approx(want)
    with pytest.raises(InvalidParameterError, match="target"):
        FinePruning().fit(model, x, y, trigger=trig)
