"""Reference: a training-set sanitiser against BadNets on LeNet/MNIST at 1, 5 and 10 % poison,
3 seeds (issue 15's Done-when).

Per seed and rate: a LeNet trained (CPU setting of ``advkit.testing.backdoor_lab``: 20,000
training images, 3 epochs) on BadNets-poisoned data (3x3 white patch, bottom-right, target 0);
label consistency (``advkit.defenses.detectors.label_consistency``) against a model trained on
the 6,000 held-out clean training images; a LeNet retrained from scratch (same recipe and seed) on
the samples it kept. Bars: precision >= 0.9 and recall >= 0.9 at every rate and seed, backdoor
success of the retrained model <= 0.05, clean-accuracy cost <= 1 point. Each run's figures are
printed (run with -s). The same measurements with the other detectors: benchmarks/README.md.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advkit.attacks.poisoning.badnets import BadNets
from advkit.attacks.poisoning.train import evaluate_poison
from advkit.data import load
from advkit.defenses.detectors.label_consistency import LabelConsistency
from advkit.testing import backdoor_lab

pytestmark = pytest.mark.slow
SEEDS, RATES = range(3), (0.01, 0.05, 0.1)
CFG = backdoor_lab.FULL


@pytest.fixture(scope="module")
def figures():
    ds = load("mnist")
    out = []
    for seed in SEEDS:
        x, y, xc, yc = backdoor_lab.split(ds, CFG, seed)
        for rate in RATES:
            p = BadNets(size=3, position="bottom-right", pattern="white", target=0,
                        rate=rate).poison(x, y, rng=np.random.default_rng(seed))
            bd, _, _ = backdoor_lab.train(CFG, ds.info, p.x, p.y, seed, "badnets", cache=False)
            acc, succ = evaluate_poison(bd, p, ds.x_test, ds.y_test)
            det = LabelConsistency().fit(bd, p.x, p.y, x_trusted=xc, y_trusted=yc,
                                         generator=torch.Generator().manual_seed(seed))
            prec, rec = det.score(p)
            keep = ~det.poisoned_mask_
            re, _, _ = backdoor_lab.train(CFG, ds.info, p.x[keep], p.y[keep], seed, "retrained",
                                          cache=False)
            acc2, succ2 = evaluate_poison(re, p, ds.x_test, ds.y_test)
            row = {"seed": seed, "rate": rate, "clean_acc": acc.value, "success": succ.value,
                   "precision": prec.value, "recall": rec.value,
                   "flagged_classes": det.flagged_classes_, "retrained_success": succ2.value,
                   "cost_points": 100 * (acc.value - acc2.value)}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def test_the_backdoor_is_implanted(figures):
    assert all(r["success"] >= 0.9 for r in figures), figures


def test_precision_and_recall_at_every_rate_and_seed(figures):
    bad = [r for r in figures if r["precision"] < 0.9 or r["recall"] < 0.9]
    assert not bad, bad


def test_retraining_on_the_kept_samples_removes_the_backdoor_cheaply(figures):
    bad = [r for r in figures if r["retrained_success"] > 0.05 or r["cost_points"] > 1.0]
    assert not bad, bad
