"""advkit's PGD L∞ equals a plain reference loop written here (random start off)."""

import pytest
import torch
from torch import nn

from advkit import registry
from advkit.targets import InputContract, TorchTarget


def _trained_digits_model():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target)
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 16, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p.shape[-1]) ** 0.5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    perm = torch.randperm(len(y), generator=g)
    train, test = perm[:1400], perm[1400:]
    for _ in range(15):
        for i in range(0, 1400, 64):
            idx = train[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval(), x[test], y[test]


def _reference_pgd(model, x, y, eps, alpha, steps):
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xa), y)
        (g,) = torch.autograd.grad(loss, xa)
        xa = xa.detach() + alpha * g.sign()
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    return xa.detach()


@pytest.fixture(scope="module")
def digits_model():
    return _trained_digits_model()


# (0.2, 0.02) is the setting; the smaller budgets leave many points robust, so the
# comparison also bites where robust accuracy is far from 0
@pytest.mark.parametrize("eps,alpha", [(0.2, 0.02), (0.1, 0.01), (0.05, 0.005)])
def test_pgd_linf_matches_reference_loop(digits_model, eps, alpha):
    model, x, y = digits_model
    target = TorchTarget(InputContract(shape=(1, 8, 8), n_classes=10), model=model)
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
    assert clean_ok.float().mean() > 0.9  # the comparison is only meaningful on a good model
    ref = _reference_pgd(model, x, y, eps, alpha, 40)
    with torch.no_grad():
        ref_robust = (clean_ok & (model(ref).argmax(1) == y)).float().mean().item()
    res = registry.create("pgd", eps=eps, step_size=alpha, steps=40, random_start=False).attack(
        target, x, y
    )
    ours = res.robust_accuracy().value
    assert abs(ours - ref_robust) <= 0.01, (ours, ref_robust)
    assert res.robust_accuracy().n == x.shape[0]


@pytest.mark.parametrize("restarts,random_start", [(1, False), (3, True)])
def test_early_stop_gives_the_same_verdict_for_fewer_passes(digits_model, restarts, random_start):
    """A point's trajectory does not depend on the others in the batch, so dropping fooled points
    leaves every verdict as it was; each returned fooled point is its first fooling iterate."""
    model, x, y = digits_model
    target = TorchTarget(InputContract(shape=(1, 8, 8), n_classes=10), model=model)
    kw = dict(eps=0.1, step_size=0.01, steps=40, restarts=restarts, random_start=random_start)
    full = registry.create("pgd", **kw).attack(target, x, y, generator=torch.Generator().manual_seed(3))
    fast = registry.create("pgd", early_stop=True, **kw).attack(
        target, x, y, generator=torch.Generator().manual_seed(3)
    )
    assert 0.2 < full.robust_accuracy().value < 0.9  # both fooled and robust points in the batch
    assert torch.equal(full.robust, fast.robust)
    assert (fast.distance <= 0.1 + 1e-6).all() and fast.x_adv.min() >= 0 and fast.x_adv.max() <= 1
    assert fast.extra["sample_passes"] < full.extra["sample_passes"]
    assert fast.passes < full.passes
