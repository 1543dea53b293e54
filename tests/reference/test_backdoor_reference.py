"""Reference: Neural Cleanse against BadNets on LeNet/MNIST, 5 seeds (issue 4's Done-when).

Wang et al. (2019) report that Neural Cleanse flags the BadNets target on MNIST and that
unlearning with the reversed trigger removes the backdoor at a small cost. Here, per seed: a clean
and a BadNets LeNet (3x3 white patch, bottom-right, target 0, 10 % poisoned) trained with the
CPU setting of ``advkit.testing.backdoor_lab``
(20,000 training images, 3 epochs, >= 98 % clean accuracy), Neural
Cleanse (batch 16 per class, all 10 classes together) on 6,000 held-out clean training images, and
unlearning of the flagged classes on the same images. Bars: class 0 flagged (index > 2) in >= 4 of
5 seeds; no class flagged on the clean model in >= 4 of 5; where class 0 is flagged, unlearning
brings backdoor success to <= 0.05 with a clean-accuracy drop of <= 2 points. Each seed's figures
are printed (run with -s) and written to $ADVKIT_REFERENCE_OUT or
/tmp/advkit-backdoor-reference.json.

The trained models, and so every figure, differ with the thread count (and the CPU), while each run
is deterministic. The bars are the paper's and are meant to hold for any such model: unlearning
uses ``NeuralCleanse.unlearn``'s defaults (3 epochs with a step-decayed learning rate, the reversed
mask dilated by one pixel), because the earlier recipe (2 epochs at a constant rate, the bare
mask) left 0.097 backdoor success on CI's seed-0 model at 2 threads. Measured with
``OMP_NUM_THREADS=1`` and ``2``: figures in benchmarks/README.md ("Reference reproductions").
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import pytest
import torch

from advkit.attacks.poisoning.badnets import BadNets
from advkit.data import load
from advkit.defenses.detectors.fine_pruning import predict
from advkit.defenses.detectors.neural_cleanse import NeuralCleanse
from advkit.errors import AdvkitWarning
from advkit.evaluation.metrics import backdoor_success_rate, clean_accuracy
from advkit.testing import backdoor_lab

pytestmark = pytest.mark.slow
SEEDS = range(5)
CFG = backdoor_lab.FULL


@pytest.fixture(scope="module")
def figures():
    ds = load("mnist")
    xt, yt = ds.x_test, ds.y_test
    attack = BadNets(size=3, position="bottom-right", pattern="white", target=0, rate=0.1)
    xt_trig = attack.apply_trigger(xt)

    def measure(model):
        return (clean_accuracy(predict(model, xt), yt).value,
                backdoor_success_rate(predict(model, xt_trig), yt, 0).value)

    out = []
    for seed in SEEDS:
        t0 = time.perf_counter()
        x, y, xc, yc = backdoor_lab.split(ds, CFG, seed)
        p = attack.poison(x, y, rng=np.random.default_rng(seed))
        clean, _, _ = backdoor_lab.train(CFG, ds.info, x, y, seed, "clean", cache=False)
        bd, _, _ = backdoor_lab.train(CFG, ds.info, p.x, p.y, seed, "badnets", cache=False)
        rec = {"seed": seed}
        for name, model in (("clean", clean), ("backdoored", bd)):
            acc, succ = measure(model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AdvkitWarning)
                nc = NeuralCleanse(**CFG["nc"]).fit(model, xc, yc,
                                                    generator=torch.Generator().manual_seed(seed))
            rec[name] = {"clean_acc": acc, "backdoor_success": succ,
                         "flagged": nc.flagged_.tolist(),
                         "mask_norms": np.round(nc.mask_norms_, 3).tolist(),
                         "anomaly_index": np.round(nc.anomaly_index_, 3).tolist(),
                         "nc_seconds": round(nc.seconds_, 2), "nc_steps": nc.steps_}
            if name == "backdoored" and len(nc.flagged_):
                unl = nc.unlearn(bd, xc, yc, generator=torch.Generator().manual_seed(seed))
                u_acc, u_succ = measure(unl)
                rec["unlearning"] = {"clean_acc": u_acc, "backdoor_success": u_succ,
                                     "clean_acc_drop": acc - u_acc, "classes": nc.flagged_.tolist()}
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(rec), flush=True)
        out.append(rec)
    path = os.environ.get("ADVKIT_REFERENCE_OUT", "/tmp/advkit-backdoor-reference.json")
    try:
        with open(path, "w") as fh:
            json.dump(out, fh, indent=1)
    except OSError:
        pass
    return out


def test_backdoor_is_implanted_at_high_clean_accuracy(figures):
    for r in figures:
        assert r["backdoored"]["backdoor_success"] >= 0.95, r
        assert r["backdoored"]["clean_acc"] >= 0.98, r
        assert r["clean"]["clean_acc"] >= 0.98, r
        assert r["clean"]["backdoor_success"] <= 0.05, r


def test_neural_cleanse_flags_the_target(figures):
    hits = [r["seed"] for r in figures if 0 in r["backdoored"]["flagged"]]
    assert len(hits) >= 4, [(r["seed"], r["backdoored"]["anomaly_index"][0]) for r in figures]
    for r in figures:
        if 0 in r["backdoored"]["flagged"]:
            assert r["backdoored"]["anomaly_index"][0] > 2


def test_neural_cleanse_flags_nothing_on_clean_models(figures):
    quiet = [r["seed"] for r in figures if not r["clean"]["flagged"]]
    assert len(quiet) >= 4, [(r["seed"], r["clean"]["flagged"]) for r in figures]


def test_unlearning_removes_the_backdoor_cheaply(figures):
    done = [r for r in figures if 0 in r["backdoored"]["flagged"]]
    assert len(done) >= 4
    for r in done:
        assert r["unlearning"]["backdoor_success"] <= 0.05, r
        assert r["unlearning"]["clean_acc_drop"] <= 0.02, r
