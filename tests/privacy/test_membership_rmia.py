"""RMIA (Zarifzadeh et al. 2024): hand-computed scores and a leave-one-out run on digits MLPs."""

import pytest
import torch

from advkit.attacks.privacy.loss_threshold import LossThreshold
from advkit.attacks.privacy.rmia import RMIA
from advkit.attacks.privacy.shadow import ShadowTrainer
from advkit.data.datasets import load
from advkit.errors import InvalidParameterError
from advkit.evaluation.privacy import roc_auc
from advkit.models.zoo import build


def test_rmia_hand_computed():
    rx = torch.full((2, 2), 0.5)  # two references, OUT of both points
    rz = torch.full((2, 3), 0.5)
    r = RMIA().scores_from_probabilities(torch.tensor([0.9, 0.5]), rx,
                                         torch.tensor([0.5, 0.8, 0.2]), rz)
    # offline Pr(x) = ((1 + 0.3) 0.5 + 0.7) / 2 = 0.675; ratios x: 1.333, 0.741; z: 1, 1.6, 0.4
    assert list(r) == ["offline"]
    assert torch.allclose(r["offline"], torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))
    # online: Pr(x) is the mean of all references (one IN, one OUT)
    rx2 = torch.tensor([[0.9, 0.6], [0.3, 0.2]])
    mask = torch.tensor([[1, 0], [0, 1]]).bool()
    r2 = RMIA(gamma=1.0).scores_from_probabilities(torch.tensor([0.9, 0.5]), rx2,
                                                   torch.tensor([0.5, 0.8, 0.2]), rz, mask)
    # x0: 0.9 / 0.6 = 1.5 -> z with ratio <= 1.5: {1, 0.4}; x1: 0.5 / 0.4 = 1.25 -> {1, 0.4}
    assert torch.allclose(r2["online"], torch.tensor([2 / 3, 2 / 3], dtype=torch.float64))


def test_rmia_bad_inputs():
    with pytest.raises(InvalidParameterError, match="gamma"):
        RMIA(gamma=0.0)
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\]"):
        RMIA().scores_from_probabilities(torch.tensor([1.5]), torch.ones(2, 1),
                                         torch.ones(1), torch.ones(2, 1))
    with pytest.raises(InvalidParameterError, match="target_x"):
        RMIA().scores_from_probabilities(torch.ones(2), torch.ones(2, 3), torch.ones(1),
                                         torch.ones(2, 1))


def test_rmia_beats_loss_on_overfit_mlp():
    d = load("digits")
    x, y = d.x_train[:200], d.y_train[:200]
    s = ShadowTrainer(n_models=9, epochs=40, batch_size=64).train(
        lambda g: build("mlp", input_shape=(1, 8, 8), n_classes=10, generator=g, hidden=(64,)),
        x, y, generator=torch.Generator().manual_seed(0))
    net, mem = s.model(0), s.masks[0]
    f = lambda v: torch.softmax(net(v), 1)  # noqa: E731
    r = RMIA().scores(f, x, y, s, d.x_test[:200], d.y_test[:200], exclude=0)
    loss = LossThreshold().scores(f, x, y)
    assert set(r) == {"online", "offline"}
    assert roc_auc(r["online"][mem], r["online"][~mem]) > roc_auc(loss[mem], loss[~mem])
    assert roc_auc(r["offline"][mem], r["offline"][~mem]) > 0.6
