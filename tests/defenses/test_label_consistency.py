"""Label consistency against a trusted model: dirty-label poison flagged in its target class only,
clean training data flags nothing, bad inputs refused, the same generator gives the same flags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit import registry
from advkit.attacks.poisoning.badnets import BadNets
from advkit.defenses.detectors.label_consistency import LabelConsistency
from advkit.errors import InputContractError, InvalidParameterError


@pytest.fixture(scope="module")
def digits_split():
    """600 trusted digits for the defender; the other ~1,200 are the training set (BadNets 10 %
    into class 0), and an MLP trained on the poisoned set."""
    from advkit.data import load
    from advkit.models.train import train
    from advkit.models.zoo import build

    ds = load("digits")
    xt, yt, x, y = ds.x_train[:600], ds.y_train[:600], ds.x_train[600:], ds.y_train[600:]
    p = BadNets(size=2, target=0, rate=0.1).poison(x, y, rng=np.random.default_rng(0))
    g = torch.Generator().manual_seed(0)
    model = build("mlp", input_shape=tuple(ds.info.shape), n_classes=10, generator=g)
    train(model, p.x, p.y, epochs=20, lr=3e-3, generator=g, progress=False)
    return model.eval(), p, x, y, xt, yt


def _fit(model, x, y, xt, yt, seed=0, **kw):
    det = registry.create("label_consistency", epochs=20, lr_milestones=None, **kw)
    return det.fit(model, x, y, x_trusted=xt, y_trusted=yt,
                   generator=torch.Generator().manual_seed(seed))


def test_dirty_label_poison_is_flagged_in_its_target_class(digits_split):
    model, p, _, _, xt, yt = digits_split
    det = _fit(model, p.x, p.y, xt, yt)
    prec, rec = det.score(p)
    assert det.flagged_classes_ == [0]
    assert prec.value >= 0.85 and rec.value >= 0.85, (prec, rec)
    zero = det.per_class_[0]
    assert zero["p_value"] < 0.01 / 10 and zero["share"] > zero["held_out_share"]
    assert det.trusted_accuracy_ > 0.85
    again = _fit(model, p.x, p.y, xt, yt)
    assert torch.equal(again.poisoned_mask_, det.poisoned_mask_)


def test_clean_training_data_flags_nothing(digits_split):
    model, _, x, y, xt, yt = digits_split
    det = _fit(model, x, y, xt, yt)
    assert det.flagged_classes_ == [] and not det.poisoned_mask_.any()
    assert all(v["p_value"] > 0.01 / 10 for v in det.per_class_.values())


def test_bad_inputs_are_refused(digits_split):
    model, p, _, _, xt, yt = digits_split
    with pytest.raises(InputContractError, match="shape"):
        _fit(model, p.x, p.y, xt[:, :, :4], yt)
    with pytest.raises(InvalidParameterError, match="every class"):
        _fit(model, p.x, p.y, xt[yt < 5], yt[yt < 5])
    with pytest.raises(InvalidParameterError):
        LabelConsistency(tau=1.5)
    with pytest.raises(InvalidParameterError, match="fit first"):
        LabelConsistency().score(p)
