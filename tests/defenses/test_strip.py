"""STRIP (Gao et al. 2019): entropy oracle, threshold at the set FRR, triggered inputs flagged."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advkit import registry
from advkit.attacks.poisoning.badnets import BadNets
from advkit.attacks.poisoning.train import train_poisoned
from advkit.defenses.detectors.strip import Strip
from advkit.errors import InputContractError, InvalidParameterError


class _Const(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits.expand(len(x), -1) + 0 * self.w


def test_entropy_oracle_uniform_and_certain():
    x = torch.rand((20, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    uni = Strip(n_overlays=5).fit(_Const([0.0, 0.0, 0.0, 0.0]), x)
    assert torch.allclose(uni.entropy(x), torch.full((20,), 2.0, dtype=torch.float64))
    sure = Strip(n_overlays=5).fit(_Const([50.0, 0.0, 0.0, 0.0]), x)
    assert float(sure.entropy(x).max()) < 1e-12
    p = torch.softmax(torch.tensor([1.0, 0.0]).double(), 0)
    want = float(-(p * torch.log2(p)).sum())
    assert math.isclose(float(Strip(n_overlays=3).fit(_Const([1.0, 0.0]), x).entropy(x)[0]), want,
                        rel_tol=1e-6)


@pytest.fixture(scope="module")
def digits_bd():
    from advkit.data import load

    ds = load("digits")
    model, p, m = train_poisoned(ds, attack=BadNets(size=3, target=0, rate=0.1),
                                 model_name="mlp", epochs=10, seed=0, progress=False)
    assert m.attack_success.value >= 0.9
    return ds, model, p


def test_frr_on_held_out_clean_data_is_near_the_set_rate_and_triggers_are_caught(digits_bd):
    ds, model, p = digits_bd
    xt, yt = ds.x_test, ds.y_test
    half = len(xt) // 2
    st = registry.create("strip", n_overlays=20, frr=0.1)
    st.fit(model, xt[:half], generator=torch.Generator().manual_seed(0))
    assert st.frr_.value == pytest.approx(0.1, abs=0.01)  # on the data it was set on
    held = xt[half:]
    ev = st.evaluate(held, p.apply_trigger(held[yt[half:] != 0]),
                     generator=torch.Generator().manual_seed(1))
    assert 0.03 <= ev["frr"].value <= 0.2  # held-out FRR near the 10 % it was set to
    assert ev["far"].value <= 0.3  # most triggered inputs have a low entropy
    # a stricter FRR lowers the threshold and can only let more triggered inputs through
    st2 = Strip(n_overlays=20, frr=0.02).fit(model, xt[:half],
                                             generator=torch.Generator().manual_seed(0))
    assert st2.threshold_ <= st.threshold_


def test_strip_bad_parameters_and_inputs():
    for kw in (dict(frr=0.0), dict(frr=1.0), dict(n_overlays=0), dict(alpha=0.0)):
        with pytest.raises(InvalidParameterError):
            Strip(**kw)
    with pytest.raises(InvalidParameterError):
        Strip().detect(torch.zeros((2, 1, 4, 4)))
    x = torch.rand((10, 1, 4, 4))
    st = Strip(n_overlays=2).fit(_Const([0.0, 1.0]), x)
    with pytest.raises(InputContractError):
        st.entropy(torch.zeros((2, 1, 5, 5)))
