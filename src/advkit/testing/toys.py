"""Tiny seeded toy models and data for tests and conformance checks (no I/O, no downloads).

The image toy is a small CNN trained for a few full-batch steps on separable synthetic images
(each class a bright blob in its own quadrant), so attacks face a model with real decision
boundaries rather than a random one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from advkit.targets.base import InputContract
from advkit.targets.sklearn import SklearnTarget
from advkit.targets.torch import TorchTarget


def toy_images(n: int = 64, *, size: int = 8, n_classes: int = 4, seed: int = 0):
    """Images in [0, 1] of shape (n, 1, size, size): class c lights up region c of a 2x2 grid."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % n_classes
    x = torch.rand((n, 1, size, size), generator=g) * 0.3
    h = size // 2
    for c in range(n_classes):
        r, col = divmod(c % 4, 2)
        idx = y == c
        x[idx, :, r * h : (r + 1) * h, col * h : (col + 1) * h] += 0.6
    return x.clamp(0, 1), y


class ToyCNN(nn.Module):
    def __init__(self, size: int = 8, n_classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * (size // 2) ** 2, n_classes)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = nn.functional.max_pool2d(h, 2)
        return self.fc(h.flatten(1))


def toy_image_target(
    *, seed: int = 0, size: int = 8, n_classes: int = 4, n: int = 64, steps: int = 60
):
    """(TorchTarget, x, y): a small CNN trained on ``toy_images`` and held-out inputs."""
    g = torch.Generator().manual_seed(seed)
    model = ToyCNN(size, n_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    xtr, ytr = toy_images(256, size=size, n_classes=n_classes, seed=seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xtr), ytr).backward()
        opt.step()
    model.eval()
    x, y = toy_images(n, size=size, n_classes=n_classes, seed=seed + 2)
    contract = InputContract(shape=(1, size, size), n_classes=n_classes, bounds=(0.0, 1.0))
    return TorchTarget(contract, model=model), x, y


def toy_linear_target(*, seed: int = 0, n_features: int = 10, n_classes: int = 3, n: int = 64):
    """(SklearnTarget around a LogisticRegression, x, y) on Gaussian blobs scaled into [0, 1]."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    centers = rng.uniform(0.25, 0.75, size=(n_classes, n_features))
    ytr = np.arange(400) % n_classes
    xtr = np.clip(centers[ytr] + rng.normal(0, 0.08, size=(400, n_features)), 0, 1)
    est = LogisticRegression(max_iter=500).fit(xtr, ytr)
    y = np.arange(n) % n_classes
    x = np.clip(centers[y] + rng.normal(0, 0.08, size=(n, n_features)), 0, 1)
    contract = InputContract(shape=(n_features,), n_classes=n_classes, bounds=(0.0, 1.0))
    return (
        SklearnTarget(contract, estimator=est),
        torch.tensor(x, dtype=torch.float32),
        torch.tensor(y, dtype=torch.int64),
    )
