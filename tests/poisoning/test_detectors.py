"""Activation clustering and spectral signatures: oracles on synthetic activations, end to end on
a small digits backdoor, and the retrain-without-flagged helper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from advkit.attacks.poisoning.badnets import BadNets
from advkit.attacks.poisoning.base import PoisonedData
from advkit.attacks.poisoning.train import retrain_without, train_poisoned
from advkit.defenses.detectors.activation_clustering import ActivationClustering, layer_activations
from advkit.defenses.detectors.spectral import SpectralSignatures, spectral_scores
from advkit.errors import InvalidParameterError


def _synthetic(n_per_class=200, d=20, k=4, n_poison=20, seed=0):
    """Gaussian activations per class; class 0 also holds a tight cluster of poisoned samples."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn((k, d), generator=g) * 4
    y = torch.arange(k).repeat_interleave(n_per_class)
    acts = centres[y] + torch.randn((len(y), d), generator=g)
    far = centres[0] + 6 * torch.randn(d, generator=g) / math.sqrt(d) * 3
    pois = far + 0.3 * torch.randn((n_poison, d), generator=g)
    acts = torch.cat([acts, pois])
    y_all = torch.cat([y, torch.zeros(n_poison, dtype=torch.int64)])
    idx = torch.arange(len(y), len(y_all))
    pd = PoisonedData(x=acts, y=y_all, indices=idx, trigger=None, target=0, rate=0.0,
                      y_clean=y_all)
    return acts, y_all, pd


@pytest.mark.parametrize("reduction", ["ica", "pca"])
def test_activation_clustering_finds_a_separated_small_cluster(reduction):
    acts, y, pd = _synthetic()
    ac = ActivationClustering(reduction=reduction, criterion="size")
    ac.fit_activations(acts, y, rng=np.random.default_rng(0))
    prec, rec = ac.score(pd)
    assert prec.value == 1.0 and rec.value == 1.0
    assert ac.flagged_classes_ == [0]
    assert ac.per_class_[0]["relative_size"] == pytest.approx(20 / 220)



def test_silhouette_criterion_flags_only_the_well_separated_class():
    acts, y, pd = _synthetic()
    acs = ActivationClustering(reduction="pca", criterion="silhouette", silhouette_threshold=0.4)
    acs.fit_activations(acts, y, rng=np.random.default_rng(0))
    assert torch.equal(acs.poisoned_mask_, pd.poisoned_mask)
    sil = {c: s["silhouette"] for c, s in acs.per_class_.items()}
    assert sil[0] > 0.4 > max(sil[1], sil[2], sil[3])


def _half_poisoned(n_per_class=150, d=12, k=4, seed=0):
    """Features where the poison is half of class 0: points of classes 1..3 (their own centres)
    plus a shift along 4 'trigger' dimensions clean points leave at zero, labelled 0."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn((k, d), generator=g) * 3
    centres[:, -4:] = 0
    y = torch.arange(k).repeat_interleave(n_per_class)
    acts = centres[y] + 0.7 * torch.randn((len(y), d), generator=g)
    acts[:, -4:] = 0.05 * torch.randn((len(y), 4), generator=g)
    src = 1 + torch.arange(n_per_class) % (k - 1)
    pois = centres[src] + 0.7 * torch.randn((n_per_class, d), generator=g)
    pois[:, -4:] = 8.0 + 0.3 * torch.randn((n_per_class, 4), generator=g)
    acts = torch.cat([acts, pois])
    y_all = torch.cat([y, torch.zeros(n_per_class, dtype=torch.int64)])
    idx = torch.arange(len(y), len(y_all))
    pd = PoisonedData(x=acts, y=y_all, indices=idx, trigger=None, target=0, rate=0.0,
                      y_clean=torch.cat([y, src]))
    return acts, y_all, pd


def test_reclassification_finds_poison_that_is_half_of_its_class():
    acts, y, pd = _half_poisoned()
    size = ActivationClustering(reduction="pca", criterion="size")
    size.fit_activations(acts, y, rng=np.random.default_rng(0))
    assert 0 not in size.flagged_classes_  # relative size 0.5: the size rule cannot see it
    ac = ActivationClustering(reduction="pca")
    ac.fit_activations(acts, y, rng=np.random.default_rng(0))
    prec, rec = ac.score(pd)
    assert ac.flagged_classes_ == [0]
    assert prec.value >= 0.95 and rec.value >= 0.95
    first = ac.per_class_[0]["rounds"][0]["reclassification"]
    # the poison cluster's points go back to their source classes 1..3
    assert min(r["ratio"] for r in first) < 0.3


def test_reclassification_keeps_legitimate_clusters():
    acts, y, _ = _synthetic(n_poison=0)
    ac = ActivationClustering(reduction="pca")
    ac.fit_activations(acts, y, rng=np.random.default_rng(0))
    assert ac.flagged_classes_ == [] and not bool(ac.poisoned_mask_.any())
    for st in ac.per_class_.values():
        assert all(r["ratio"] is None or r["ratio"] >= 0.3 for r in st["reclassification"])


def test_reclassification_stats_count_label_and_top_other_class():
    from advkit.defenses.detectors.ac_reclassify import reclassification_stats

    probs = np.eye(4)[[0, 0, 2, 2, 2, 3]] * 0.9 + 0.025
    st = reclassification_stats(probs, 0)
    assert (st["l"], st["p"], st["source"]) == (2, 3, 2)
    assert st["ratio"] == pytest.approx(2 / 3) and st["confidence"] == pytest.approx(0.925)


def test_activation_clustering_is_deterministic_given_rng():
    acts, y, _ = _synthetic()
    a = ActivationClustering(reduction="pca").fit_activations(acts, y, rng=np.random.default_rng(3))
    b = ActivationClustering(reduction="pca").fit_activations(acts, y, rng=np.random.default_rng(3))
    assert a.per_class_[0]["rounds"] == b.per_class_[0]["rounds"]
    assert torch.equal(a.poisoned_mask_, b.poisoned_mask_)


def test_spectral_scores_match_a_numpy_svd():
    acts, y, _ = _synthetic()
    r = acts[y == 1].double().numpy()
    rc = r - r.mean(0)
    v = np.linalg.svd(rc, full_matrices=False)[2][0]
    want = (rc @ v) ** 2
    np.testing.assert_allclose(spectral_scores(acts[y == 1].double()).numpy(), want, rtol=1e-9)


def test_spectral_removes_the_stated_share_per_class_and_the_poison_first():
    acts, y, pd = _synthetic()
    ss = SpectralSignatures(expected_rate=0.08).fit_activations(acts, y)
    for c, st in ss.per_class_.items():
        n_c = int((y == c).sum())
        assert st["removed"] == math.floor(1.5 * 0.08 * n_c + 0.5)
        assert int(ss.poisoned_mask_[y == c].sum()) == st["removed"]
    prec, rec = ss.score(pd)
    assert rec.value == 1.0  # 26 removed from class 0, all 20 poisoned among them
    assert prec.k == 20 and prec.n == int(ss.poisoned_mask_.sum())
    # the removed samples have the highest scores of their class
    c0 = y == 0
    assert ss.scores_[c0 & ss.poisoned_mask_].min() >= ss.scores_[c0 & ~ss.poisoned_mask_].max()


def test_layer_activations_auto_is_the_input_of_the_last_linear_and_named_is_an_output():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    model.train()
    x = torch.rand((10, 1, 4, 4), generator=g)
    auto = layer_activations(model, x, batch_size=3)
    assert torch.allclose(auto, model[:3](x))
    named = layer_activations(model, x, layer="1")
    assert torch.allclose(named, model[:2](x))
    assert model.training  # mode restored
    with pytest.raises(InvalidParameterError):
        layer_activations(model, x, layer="nope")
    with pytest.raises(InvalidParameterError):
        layer_activations(nn.Sequential(nn.Flatten()), x)


@pytest.mark.parametrize(
    "cls,kw",
    [(ActivationClustering, dict(n_components=0)),
     (ActivationClustering, dict(reduction="tsne")),
     (ActivationClustering, dict(criterion="gap")),
     (ActivationClustering, dict(size_threshold=0.7)),
     (ActivationClustering, dict(reclass_threshold=0.0)),
     (ActivationClustering, dict(max_rounds=0)),
     (SpectralSignatures, dict(expected_rate=0.0)), (SpectralSignatures, dict(removal_factor=-1.0)),
     (SpectralSignatures, dict(batch_size=0))],
)
def test_detector_bad_parameters(cls, kw):
    with pytest.raises(InvalidParameterError):
        cls(**kw)


def test_unfitted_detector_cannot_score():
    _, _, pd = _synthetic()
    with pytest.raises(InvalidParameterError):
        SpectralSignatures().score(pd)


# end to end on digits (an MLP trains in a few seconds) -------------------------------------------
@pytest.fixture(scope="module")
def digits_backdoor():
    from advkit.data import load

    ds = load("digits")
    model, p, m = train_poisoned(ds, attack=BadNets(size=3, target=0, rate=0.05),
                                 model_name="mlp", epochs=10, seed=0, progress=False)
    return ds, model, p, m


def test_digits_backdoor_works(digits_backdoor):
    _, _, p, m = digits_backdoor
    assert m.attack_success.value >= 0.9
    assert m.clean_accuracy.value >= 0.9
    assert m.n_poisoned_train == p.n_poisoned == round(0.05 * p.n)


def test_digits_activation_clustering(digits_backdoor):
    _, model, p, _ = digits_backdoor
    # on digits' MLP the poison does not form its own cluster (the 2-means split of class 0 mixes
    # it), so exclusionary reclassification has nothing clean to judge; the size rule is tested
    ac = ActivationClustering(reduction="pca", criterion="size").fit(
        model, p.x, p.y, rng=np.random.default_rng(0))
    prec, rec = ac.score(p)
    assert 0 in ac.flagged_classes_
    assert rec.value >= 0.75 and prec.value >= 0.5


def test_digits_spectral_signatures(digits_backdoor):
    _, model, p, _ = digits_backdoor
    ss = SpectralSignatures(expected_rate=0.05).fit(model, p.x, p.y)
    in_target = ss.poisoned_mask_ & (p.y == 0)
    # what it removes from the target class is nearly all poison
    assert (p.poisoned_mask[in_target]).double().mean() >= 0.8
    share = p.n_poisoned / int((p.y == 0).sum())  # the poisoned share of the target class
    _, rec = SpectralSignatures(expected_rate=share).fit(model, p.x, p.y).score(p)
    assert rec.value >= 0.6


def test_retraining_without_the_poison_removes_the_backdoor(digits_backdoor):
    ds, _, p, m = digits_backdoor
    _, m2 = retrain_without(ds, p, p.poisoned_mask, model_name="mlp", epochs=10, seed=0,
                            progress=False)
    assert m2.n_poisoned_train == 0 and m2.n_train == p.n - p.n_poisoned
    assert m2.attack_success.value <= 0.2 < m.attack_success.value
    assert m2.clean_accuracy.value >= m.clean_accuracy.value - 0.03


# SPECTRE ------------------------------------------------------------------------------------------
def test_que_scores_limits():
    from advkit.defenses.detectors.spectre import que_scores

    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 5))
    z[:, 0] *= 3  # one dominant direction
    # alpha = 0: Q = I, the score is the squared norm over k
    np.testing.assert_allclose(que_scores(z, 0.0), (z**2).sum(1) / 5, rtol=1e-9)
    # large alpha: only the top direction counts
    m = z.T @ z / len(z)
    v = np.linalg.eigh(m)[1][:, -1]
    np.testing.assert_allclose(que_scores(z, 200.0), (z @ v) ** 2, rtol=1e-3, atol=1e-6)


def test_spectre_removes_planted_poison_and_registry_entry():
    from advkit import registry
    from advkit.defenses.detectors.spectre import Spectre

    acts, y, pd = _synthetic(n_poison=20)
    sp = registry.create("spectre", expected_rate=0.1, n_components=10)
    assert isinstance(sp, Spectre)
    sp.fit_activations(acts, y)
    prec, rec = sp.score(pd)
    assert rec.value == 1.0  # 33 removed from class 0, the 20 poisoned among them
    c0 = y == 0
    assert sp.scores_[c0 & pd.poisoned_mask].min() > sp.scores_[c0 & ~pd.poisoned_mask].max()
    with pytest.raises(InvalidParameterError):
        Spectre(expected_rate=0.6)
