"""DP-SGD through Opacus (advkit.defenses.training.dp): the accountant's epsilon against the
empirical epsilon lower bound of a membership attack, and leakage against the same recipe
trained without DP at the same seed."""

from __future__ import annotations

import sys

import pytest
import torch

from advkit.errors import InvalidParameterError, MissingDependencyError
from advkit.models.cache import Recipe

pytest.importorskip("opacus")

# digits, 150 members: a 256-unit MLP that overfits without DP (100 % train accuracy)
N_TRAIN, SEED = 150, 0
BASE = {"zoo": "mlp", "epochs": 40, "batch_size": 75, "lr": 1e-2, "kwargs": {"hidden": [256]}}
DP = {"noise_multiplier": 16.0, "max_grad_norm": 1.0, "delta": 1e-5}


def _loss_attack(model, ds):
    from advkit.attacks.privacy.loss_threshold import LossThreshold
    from advkit.evaluation.privacy import membership_metrics

    n = ds.x_train.shape[0]
    xo, yo = ds.x_test[:n], ds.y_test[:n]
    with torch.no_grad():
        p_in, p_out = model(ds.x_train).softmax(-1), model(xo).softmax(-1)
    a = LossThreshold()
    return membership_metrics(a.scores_from_probabilities(p_in, ds.y_train).double(),
                              a.scores_from_probabilities(p_out, yo).double(), delta=DP["delta"])


@pytest.fixture(scope="module")
def trained():
    from advkit.data import load, subset_train
    from advkit.models.cache import train_recipe

    ds = subset_train(load("digits"), N_TRAIN, seed=SEED)
    out = {}
    for name, dp in (("plain", None), ("dp", DP)):
        model, facts = train_recipe(ds.x_train, ds.y_train, Recipe(**BASE, dp=dp), info=ds.info,
                                    seed=SEED, cache=False)
        out[name] = (model, facts, _loss_attack(model, ds))
    return out


def test_empirical_epsilon_within_the_accountants_and_leakage_falls(trained):
    plain_model, plain_facts, plain = trained["plain"]
    _, facts, dp = trained["dp"]
    eps = facts["dp"]["epsilon"]
    assert "dp" not in plain_facts
    assert 0 < eps < 2 and facts["dp"]["steps"] > 0
    # the bound holds for the DP model ...
    assert dp.epsilon.epsilon <= eps
    # ... and is not vacuous: the same recipe without DP leaks more than the accountant allows
    assert plain.epsilon.epsilon > eps
    assert plain_facts["history"]["accuracy"][-1] == 1.0  # overfit: the leaky baseline
    assert dp.auc < plain.auc
    assert dp.advantage < plain.advantage


def test_dp_training_is_deterministic_and_recorded(trained):
    from advkit.data import load, subset_train
    from advkit.models.cache import train_recipe

    ds = subset_train(load("digits"), N_TRAIN, seed=SEED)
    recipe = Recipe(**{**BASE, "epochs": 2}, dp=DP)
    a, fa = train_recipe(ds.x_train, ds.y_train, recipe, info=ds.info, seed=3, cache=False)
    b, fb = train_recipe(ds.x_train, ds.y_train, recipe, info=ds.info, seed=3, cache=False)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert fa["dp"] == fb["dp"]
    assert fa["dp"]["noise_multiplier"] == 16.0 and fa["dp"]["accountant"] == "rdp"
    assert not a.training


def test_dp_recipe_cached_with_its_epsilon(tmp_path, monkeypatch):
    from advkit.data import load, subset_train
    from advkit.models.cache import train_recipe

    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path))
    ds = subset_train(load("digits"), 100, seed=SEED)
    recipe = Recipe(**{**BASE, "epochs": 1}, dp=DP)
    _, first = train_recipe(ds.x_train, ds.y_train, recipe, info=ds.info, seed=1)
    _, again = train_recipe(ds.x_train, ds.y_train, recipe, info=ds.info, seed=1)
    assert first["trained_now"] and not again["trained_now"]
    assert again["dp"] == first["dp"]
    plain = Recipe(**{**BASE, "epochs": 1})
    assert "dp" not in plain.as_dict() and recipe.as_dict()["dp"]["noise_multiplier"] == 16.0


@pytest.mark.parametrize("dp, name", [({"noise_multiplier": 0}, "noise_multiplier"),
                                      ({"max_grad_norm": -1.0}, "max_grad_norm"),
                                      ({"delta": 1.0}, "delta"),
                                      ({"accountant": "moments"}, "accountant"),
                                      ({"sigma": 1.0}, "sigma"),
                                      ("strong", "dp")])
def test_bad_dp_settings_are_refused(dp, name):
    with pytest.raises(InvalidParameterError, match=name):
        Recipe(zoo="mlp", dp=dp)


def test_dp_needs_a_constant_rate():
    with pytest.raises(InvalidParameterError, match="lr_schedule"):
        Recipe(zoo="mlp", lr_schedule="cyclic", dp={})


def test_missing_opacus_names_the_extra(monkeypatch):
    from advkit.defenses.training.dp import DPSGD

    monkeypatch.setitem(sys.modules, "opacus", None)
    with pytest.raises(MissingDependencyError, match=r"advkit\[privacy\]"):
        DPSGD().train(torch.nn.Linear(2, 2), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long),
                      epochs=1, batch_size=2, lr=0.1)


def test_spec_dp_needs_a_recipe():
    from advkit.audit.spec import parse_spec
    from advkit.errors import AuditSpecError

    with pytest.raises(AuditSpecError, match="dp"):
        parse_spec({"dataset": {"name": "digits"}, "model": {"path": "m.safetensors",
                                                             "dp": {}}, "attacks": []})
    with pytest.raises(AuditSpecError, match="noise_multiplier"):
        parse_spec({"dataset": {"name": "digits"},
                    "model": {"zoo": "mlp", "dp": {"noise_multiplier": -1}}, "attacks": []})
