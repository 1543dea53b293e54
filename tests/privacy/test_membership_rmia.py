"""RMIA (Zarifzadeh et al. 2024): hand-computed scores (its digits run shares the shadow models
of test_membership_attacks.py and lives there)."""

import pytest
import torch

from advkit.attacks.privacy.rmia import RMIA
from advkit.errors import InvalidParameterError


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
