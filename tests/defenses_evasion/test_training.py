"""Adversarial training wrappers (PGD-AT, fast FGSM, TRADES) and the train() batch hook."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advkit.attacks.evasion.pgd import PGD
from advkit.defenses.training import (
    TRADES,
    FastFGSMTraining,
    PGDAdversarialTraining,
    adversarial_batch_hook,
)
from advkit.errors import InvalidParameterError
from advkit.models.train import train
from advkit.models.zoo import build
from advkit.targets.base import InputContract
from advkit.targets.torch import TorchTarget
from advkit.testing.toys import ToyCNN, toy_images

WRAPPERS = [PGDAdversarialTraining(eps=0.2, steps=5), FastFGSMTraining(eps=0.2),
            TRADES(eps=0.2, steps=5)]


@pytest.fixture(scope="module")
def model_and_batch():
    g = torch.Generator().manual_seed(0)
    model = ToyCNN(8, 4)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    x, y = toy_images(32, seed=3)
    return model, x, y


@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: type(w).__name__)
def test_perturbation_in_ball_and_bounds_mode_and_grads_untouched(model_and_batch, wrapper):
    model, x, y = model_and_batch
    model.train()
    try:
        xa = wrapper.perturb(model, x, y, torch.Generator().manual_seed(1))
        assert model.training
        assert all(p.grad is None for p in model.parameters())
    finally:
        model.eval()
    assert xa.shape == x.shape and xa.dtype == x.dtype and not xa.requires_grad
    assert (xa - x).abs().max() <= wrapper.eps + 1e-6
    assert xa.min() >= 0 and xa.max() <= 1
    again = wrapper.perturb(model, x, y, torch.Generator().manual_seed(1))
    assert torch.equal(xa, again)
    assert not model.training


@pytest.mark.parametrize("wrapper", WRAPPERS[:2], ids=lambda w: type(w).__name__)
def test_perturbation_raises_the_loss(model_and_batch, wrapper):
    model, x, y = model_and_batch
    xa = wrapper.perturb(model, x, y, torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert F.cross_entropy(model(xa), y) > F.cross_entropy(model(x), y)
    loss = wrapper.loss(model, x, y, torch.Generator().manual_seed(2))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)


def test_trades_loss_decomposes(model_and_batch):
    model, x, y = model_and_batch
    with torch.no_grad():
        ce = F.cross_entropy(model(x), y)
        zero = TRADES(eps=0.2, beta=0.0, steps=3).loss(model, x, y, torch.Generator())
        six = TRADES(eps=0.2, beta=6.0, steps=3).loss(model, x, y, torch.Generator())
    assert zero == pytest.approx(ce.item(), rel=1e-6)
    assert six > zero  # KL >= 0, and > 0 once the inner maximisation moved the prediction


def test_pgd_at_step_defaults_and_validation():
    assert PGDAdversarialTraining(eps=0.3, steps=40).alpha == pytest.approx(2.5 * 0.3 / 40)
    assert FastFGSMTraining(eps=0.3).step == pytest.approx(0.375)
    for cls, bad in ((PGDAdversarialTraining, {"eps": -0.1}),
                     (PGDAdversarialTraining, {"steps": 0}), (FastFGSMTraining, {"alpha": 0.0}),
                     (TRADES, {"beta": -1.0}),
                     (PGDAdversarialTraining, {"bounds": (1.0, 0.0)})):
        with pytest.raises(InvalidParameterError, match=next(iter(bad))):
            cls(**bad)
    with pytest.raises(InvalidParameterError, match="kind"):
        adversarial_batch_hook("trades", 0.3)
    with pytest.raises(InvalidParameterError, match="kind"):
        adversarial_batch_hook("free", 0.3)


def test_warmup_ramps_eps(model_and_batch):
    model, x, y = model_and_batch
    hook = adversarial_batch_hook("fast-fgsm", 0.3, warmup_batches=4,
                                  generator=torch.Generator().manual_seed(0))
    sizes = [(hook(x, y, model)[0] - x).abs().max().item() for _ in range(5)]
    assert sizes[0] <= 0.3 / 4 + 1e-6 and sizes[-1] > 0.3 / 4
    assert sizes[-1] <= 0.3 + 1e-6


def test_batch_hook_training_makes_a_more_robust_model():
    x, y = toy_images(256, seed=11)
    xt, yt = toy_images(128, seed=12)
    contract = InputContract(shape=(1, 8, 8), n_classes=4)
    robust = {}
    for kind in ("none", "fast-fgsm", "pgd-at"):
        gen = torch.Generator().manual_seed(0)
        model = build("mlp", input_shape=(1, 8, 8), n_classes=4, generator=gen, hidden=(64,))
        params = {"steps": 5} if kind == "pgd-at" else {}
        hook = (None if kind == "none" else
                adversarial_batch_hook(kind, 0.25, generator=torch.Generator().manual_seed(0),
                                       **params))
        train(model, x, y, epochs=5, batch_size=32, generator=gen, progress=False,
              batch_hook=hook)
        assert not model.training
        res = PGD(eps=0.25, steps=10).attack(TorchTarget(contract, model=model), xt, yt,
                                             generator=torch.Generator().manual_seed(0))
        assert res.clean_accuracy().value > 0.9
        robust[kind] = res.robust_accuracy()
    assert robust["fast-fgsm"].lo > robust["none"].hi
    assert robust["pgd-at"].lo > robust["none"].hi
