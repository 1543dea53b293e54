"""Trigger-set watermarking (Adi et al. 2018): the marked model is claimed, an independent one is
not, the binomial tail is exact, and the removal attacks leave the user's model alone."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import pytest
import torch
from scipy.stats import binom

from advkit.attacks.poisoning.train import predict
from advkit.attacks.privacy.copycat import Copycat
from advkit.data import load
from advkit.defenses.watermark import (
    TriggerSetWatermark,
    binomial_tail,
    false_claim_probability,
    prune,
    robustness,
)
from advkit.errors import InputContractError, InvalidParameterError
from advkit.models.train import train
from advkit.models.zoo import build
from advkit.targets.base import InputContract
from advkit.targets.torch import TorchTarget

EPOCHS, LR = 10, 3e-3


@pytest.fixture(scope="module")
def marked():
    ds = load("digits")
    x = ds.x_train.reshape(len(ds.x_train), -1)
    xt = ds.x_test.reshape(len(ds.x_test), -1)
    wm = TriggerSetWatermark(k=50, repeat=10)
    g = torch.Generator().manual_seed(0)
    trig = wm.trigger_set((64,), 10, generator=g)
    model = build("mlp", input_shape=(64,), n_classes=10, hidden=(64,), generator=g)
    wm.embed(model, x, ds.y_train, trig, epochs=EPOCHS, lr=LR, generator=g)
    gi = torch.Generator().manual_seed(100)
    ind = build("mlp", input_shape=(64,), n_classes=10, hidden=(64,), generator=gi)
    train(ind, x, ds.y_train, epochs=EPOCHS, lr=LR, generator=gi, progress=False)
    return wm, trig, model.eval(), ind.eval(), x, ds.y_train, xt, ds.y_test


def _acc(m, x, y):
    return float((predict(m, x) == y).float().mean())


def test_marked_claimed_independent_not(marked):
    wm, trig, model, ind, _, _, xt, yt = marked
    v = wm.verify(model, trig)
    assert v.p_value < 1e-6 and v.claimed  # measured: 50/50 agreements, p = 1e-50
    lo, hi = v.to_dict()["agreement_interval"]
    assert lo <= v.agreement <= hi and hi - lo > 0  # Wilson interval of the agreement
    assert v.p_value == pytest.approx(binom.sf(v.agreements - 1, 50, 0.1), rel=1e-9)
    vi = wm.verify(ind, trig)
    assert vi.p_value > 0.05 and not vi.claimed  # measured: 4/50 agreements, p = 0.75
    # the mark costs little utility (measured 0.961 against 0.958)
    assert _acc(model, xt, yt) > 0.9 and _acc(ind, xt, yt) > 0.9
    # a Target is verified through its labels, with the same answer
    target = TorchTarget(InputContract(shape=(64,), n_classes=10), model=model)
    assert wm.verify(target, trig).agreements == v.agreements


def test_false_claims_are_calibrated_for_an_unmarked_model(marked):
    """The null: for a model independent of the secret labels, P[p <= alpha] <= alpha."""
    wm, _, _, ind, _, _, _, _ = marked
    g = torch.Generator().manual_seed(7)
    ps = [wm.verify(ind, wm.trigger_set((64,), 10, generator=g)).p_value for _ in range(400)]
    exact = binom.sf(binom.isf(0.05, 50, 0.1), 50, 0.1)  # largest attainable level <= 0.05
    share = sum(p <= 0.05 for p in ps) / len(ps)
    sd = (exact * (1 - exact) / len(ps)) ** 0.5
    assert share <= exact + 4 * sd, (share, exact)


@pytest.mark.parametrize("c", [2, 3, 10])
def test_binomial_tail_is_exact_against_a_direct_sum(c):
    p = Fraction(1, c)
    for k in range(0, 13):
        for a in range(0, k + 1):
            direct = sum(comb(k, i) * p**i * (1 - p) ** (k - i) for i in range(a, k + 1))
            got = false_claim_probability(a, k, c)
            assert got == pytest.approx(float(direct), rel=1e-12, abs=0)
    assert false_claim_probability(0, 7, c) == 1.0
    assert false_claim_probability(200, 200, c) == pytest.approx(c ** -200.0, rel=1e-9)
    # far tail where a naive float sum would underflow: still matches scipy
    assert binomial_tail(900, 1000, 0.1) == pytest.approx(binom.sf(899, 1000, 0.1), rel=1e-9)


def test_trigger_set_is_deterministic_from_the_generator():
    wm = TriggerSetWatermark(k=20)
    a = wm.trigger_set((1, 8, 8), 10, bounds=(-1, 2), generator=torch.Generator().manual_seed(3))
    b = wm.trigger_set((1, 8, 8), 10, bounds=(-1, 2), generator=torch.Generator().manual_seed(3))
    c = wm.trigger_set((1, 8, 8), 10, bounds=(-1, 2), generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert a.x.shape == (20, 1, 8, 8) and a.k == 20
    assert float(a.x.min()) >= -1 and float(a.x.max()) <= 2
    assert int(a.y.min()) >= 0 and int(a.y.max()) <= 9
    xu, yu = TriggerSetWatermark(k=20, repeat=3).training_set(torch.zeros(5, 1, 8, 8),
                                                              torch.zeros(5, dtype=torch.long), a)
    assert xu.shape == (65, 1, 8, 8) and torch.equal(yu[5:], a.y.repeat(3))


def test_bad_parameters_raise_typed_errors():
    for kw in ({"k": 0}, {"repeat": 0}, {"threshold": 0.0}, {"threshold": 1.5}, {"k": 2.5}):
        with pytest.raises(InvalidParameterError):
            TriggerSetWatermark(**kw)
    wm = TriggerSetWatermark(k=5)
    with pytest.raises(InvalidParameterError):
        wm.trigger_set((64,), 1)
    for shape in (None, (), (0, 8), ("a",)):
        with pytest.raises(InvalidParameterError):
            wm.trigger_set(shape, 10)
    for bounds in ((1, 0), (0, float("inf")), ("x", 1), 3):
        with pytest.raises(InvalidParameterError):
            wm.trigger_set((64,), 10, bounds=bounds)
    with pytest.raises(InvalidParameterError):
        false_claim_probability(6, 5, 10)
    with pytest.raises(InvalidParameterError):
        false_claim_probability(-1, 5, 10)
    with pytest.raises(InvalidParameterError):
        binomial_tail(1, 5, 1.0)
    trig = wm.trigger_set((64,), 10)
    with pytest.raises(InputContractError):
        wm.training_set(torch.zeros(4, 32), torch.zeros(4, dtype=torch.long), trig)
    with pytest.raises(InvalidParameterError):
        wm.verify("not a model", trig)
    lin = torch.nn.Linear(4, 2)
    for rate in (-0.1, 1.5, True):
        with pytest.raises(InvalidParameterError):
            prune(lin, rate)
    with pytest.raises(InvalidParameterError):
        robustness(wm, lin, trig, x_clean=None, y_clean=None, finetune_epochs=(),
                   prune_rates=(), copycat_queries=(10,))


def test_pruning_zeroes_the_smallest_share_and_leaves_the_model_alone():
    lin = torch.nn.Linear(10, 10)
    before = lin.weight.detach().clone()
    out = prune(lin, 0.3)
    assert torch.equal(lin.weight, before)
    w = out.weight.detach()
    assert int((w == 0).sum()) == 30
    assert float(before.abs()[w == 0].max()) <= float(before.abs()[w != 0].min())
    assert torch.equal(out.bias, lin.bias)
    assert torch.equal(prune(lin, 0.0).weight, before)


def test_robustness_rows(marked):
    wm, trig, model, _, x, y, xt, yt = marked
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    cc = Copycat(architecture="mlp", hidden=(64,), epochs=5, min_steps=150, batch_size=32,
                 lr=1e-2, strategy="natural")
    rows = robustness(wm, model, trig, x_clean=x, y_clean=y, x_test=xt, y_test=yt,
                      finetune_epochs=(3,), prune_rates=(0.3, 0.9), copycat=cc,
                      copycat_queries=(300,), pool=x, generator=torch.Generator().manual_seed(0))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert model.training  # its mode is untouched too
    model.eval()
    by = {(r["attack"], r["setting"]): r for r in rows}
    assert set(by) == {("none", None), ("fine_tune", 3), ("prune", 0.3), ("prune", 0.9),
                       ("copycat", 300)}
    # measured (seed 0): fine-tuning 3 epochs at 1e-4 and 30 % pruning keep all 50 agreements
    assert by[("fine_tune", 3)]["claimed"] and by[("prune", 0.3)]["claimed"]
    # 90 % pruning breaks the model (measured test accuracy 0.53)
    assert by[("prune", 0.9)]["test_accuracy"] < by[("none", None)]["test_accuracy"] - 0.2
    # the Copycat copy learns the task but not the mark (measured 6/50 agreements, p = 0.38)
    cp = by[("copycat", 300)]
    assert cp["queries"] == 300 and cp["test_accuracy"] > 0.85 and not cp["claimed"]
