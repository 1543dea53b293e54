"""LOSS / modified entropy / LiRA on tiny digits MLPs, and the shadow trainer's two paths."""

import math

import pytest
import torch

from advkit.attacks.privacy.entropy import ModifiedEntropy
from advkit.attacks.privacy.lira import VARIANTS, LiRA
from advkit.attacks.privacy.loss_threshold import LossThreshold
from advkit.attacks.privacy.rmia import RMIA
from advkit.attacks.privacy.shadow import ShadowTrainer, balanced_masks, train_separately
from advkit.data.datasets import load
from advkit.errors import InvalidParameterError
from advkit.evaluation.privacy import membership_metrics, roc_auc
from advkit.models.zoo import build
from advkit.targets import InputContract, TorchTarget


def _mlp(g):
    return build("mlp", input_shape=(1, 8, 8), n_classes=10, generator=g, hidden=(64,))


@pytest.fixture(scope="module")
def pool():
    d = load("digits")
    return d.x_train[:200], d.y_train[:200]


@pytest.fixture(scope="module")
def shadows(pool):
    x, y = pool  # 9 models: model 0 is the target, 8 are its shadows (leave-one-out)
    return ShadowTrainer(n_models=9, epochs=40, batch_size=64).train(
        _mlp, x, y, generator=torch.Generator().manual_seed(0))


def test_masks_balanced():
    m = balanced_masks(8, 50, torch.Generator().manual_seed(1))
    assert m.shape == (8, 50) and torch.all(m.sum(0) == 4)


def test_loss_and_entropy_on_overfit_model(pool, shadows):
    x, y = pool
    net, mem = shadows.model(0), shadows.masks[0]
    assert torch.all(net(x).argmax(1)[mem] == y[mem])  # 100 % train accuracy: overfit
    target = TorchTarget(InputContract(shape=(1, 8, 8), n_classes=10, bounds=(0.0, 1.0)),
                         model=net)
    for attack in (LossThreshold(), LossThreshold(score="confidence"), ModifiedEntropy()):
        s = attack.scores(target, x, y)  # the Target path
        assert s.shape == (200,) and s.dtype == torch.float64
        assert roc_auc(s[mem], s[~mem]) > 0.6
    # any probs callable works too, and gives the same scores
    s2 = LossThreshold().scores(lambda v: torch.softmax(net(v), 1), x, y)
    assert torch.allclose(s2, LossThreshold().scores(target, x, y))


def test_modified_entropy_hand_computed():
    p = torch.tensor([[0.9, 0.05, 0.05]], dtype=torch.float64)
    want = -(0.1 * -math.log(0.9) + 2 * 0.05 * -math.log(0.95))
    got = ModifiedEntropy().scores_from_probabilities(p, torch.tensor([0]))
    assert math.isclose(float(got), want, rel_tol=1e-9)
    # confidently wrong is worse than uncertain
    wrong = ModifiedEntropy().scores_from_probabilities(p, torch.tensor([1]))
    assert float(wrong) < float(got)


@pytest.mark.parametrize("p, y, match", [
    (torch.tensor([[0.5, 0.5]]), torch.tensor([2]), "class indices in"),
    (torch.tensor([[float("nan"), 0.5]]), torch.tensor([0]), "NaN"),
    (torch.tensor([[2.0, -1.0]]), torch.tensor([0]), "softmax"),
    (torch.tensor([0.5, 0.5]), torch.tensor([0]), r"\(N, K\)"),
    (torch.tensor([[0.5, 0.5]]), torch.tensor([0, 1]), "one per row"),
])
def test_bad_inputs(p, y, match):
    with pytest.raises(InvalidParameterError, match=match):
        LossThreshold().scores_from_probabilities(p, y)


def test_bad_parameters():
    with pytest.raises(InvalidParameterError, match="score"):
        LossThreshold(score="entropy")
    with pytest.raises(InvalidParameterError, match="n_models"):
        ShadowTrainer(n_models=1)


def test_lira_variants_labelled_and_stronger(pool, shadows):
    x, y = pool
    net, mem = shadows.model(0), shadows.masks[0]
    f = lambda v: torch.softmax(net(v), 1)  # noqa: E731 (score-only target)
    r = LiRA().scores(f, x, y, shadows, exclude=0)
    assert tuple(r.scores) == VARIANTS and torch.all(r.n_in + r.n_out == 8)
    m = {k: membership_metrics(v[mem], v[~mem], label=k) for k, v in r.scores.items()}
    loss = LossThreshold().scores(f, x, y)
    auc_loss = roc_auc(loss[mem], loss[~mem])
    assert m["online"].auc > 0.65 and m["offline"].auc > 0.6
    assert m["online"].auc > auc_loss
    assert m["online"].to_dict()["label"] == "online"


def test_rmia_beats_loss_on_overfit_mlp(pool, shadows):
    x, y = pool
    net, mem = shadows.model(0), shadows.masks[0]
    f = lambda v: torch.softmax(net(v), 1)  # noqa: E731
    d = load("digits")
    r = RMIA().scores(f, x, y, shadows, d.x_test[:200], d.y_test[:200], exclude=0)
    loss = LossThreshold().scores(f, x, y)
    assert set(r) == {"online", "offline"}
    assert roc_auc(r["online"][mem], r["online"][~mem]) > roc_auc(loss[mem], loss[~mem])
    assert roc_auc(r["offline"][mem], r["offline"][~mem]) > 0.6


def test_lira_hand_computed():
    # two examples, 4 shadows: IN {2, 4} and OUT {0, 2} for both (sample std sqrt(2))
    shadow = torch.tensor([[2.0, 2.0], [4.0, 4.0], [0.0, 0.0], [2.0, 2.0]])
    mask = torch.tensor([[1, 1], [1, 1], [0, 0], [0, 0]]).bool()
    r = LiRA().scores_from_confidences(torch.tensor([3.0, 1.0]), shadow, mask)
    sd = math.sqrt(2.0)
    # online: log N(3; 3, sd) - log N(3; 1, sd) = (2/sd)^2 / 2 = 1
    assert torch.allclose(r.scores["online"], torch.tensor([1.0, -1.0], dtype=torch.float64))
    z = (3.0 - 1.0) / sd  # offline: -log(1 - Phi(z))
    assert math.isclose(float(r.scores["offline"][0]),
                        -math.log(0.5 * math.erfc(z / math.sqrt(2))), rel_tol=1e-9)
    assert math.isclose(float(r.scores["offline-density"][0]),
                        0.5 * z * z + math.log(sd) + 0.5 * math.log(2 * math.pi), rel_tol=1e-9)
    with pytest.raises(InvalidParameterError, match="OUT"):
        LiRA().scores_from_confidences(torch.zeros(2), shadow, torch.ones(4, 2).bool())
    with pytest.raises(InvalidParameterError, match="finite"):
        LiRA().scores_from_confidences(torch.tensor([float("nan"), 0.0]), shadow, mask)


def test_vectorized_equals_one_by_one(pool):
    x, y = pool
    x, y = x[:120], y[:120]
    out = {}
    for vec in (True, False):
        s = ShadowTrainer(n_models=4, epochs=6, batch_size=40, vectorized=vec).train(
            _mlp, x, y, generator=torch.Generator().manual_seed(3))
        net = s.model(0)
        f = lambda v, net=net: torch.softmax(net(v), 1)  # noqa: E731
        r = LiRA().scores(f, x, y, s, exclude=0)
        out[vec] = (s, {k: membership_metrics(v[s.masks[0]], v[~s.masks[0]])
                        for k, v in r.scores.items()})
    (sv, mv), (ss, ms) = out[True], out[False]
    assert "online" in mv and "offline-fixed-var" in mv
    assert torch.equal(sv.masks, ss.masks)
    assert torch.allclose(sv.logits(x), ss.logits(x), atol=1e-4)
    for k in mv:
        assert abs(mv[k].auc - ms[k].auc) < 1e-3, k
        assert abs(mv[k].tpr_at[0.01].tpr - ms[k].tpr_at[0.01].tpr) < 0.02, k


def test_shadow_trainer_bad_inputs(pool):
    x, y = pool
    g = torch.Generator().manual_seed(0)
    tr = ShadowTrainer(n_models=2, epochs=1)
    with pytest.raises(InvalidParameterError, match="class indices"):
        tr.train(_mlp, x[:10], y[:10] + 10, generator=g)
    with pytest.raises(InvalidParameterError, match="batch norm"):
        tr.train(lambda g: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10),
                                               torch.nn.BatchNorm1d(10)), x[:10], y[:10],
                 generator=g)
    with pytest.raises(InvalidParameterError, match="generator"):
        tr.train(_mlp, x[:10], y[:10], generator=None)


def test_train_separately_fits_each_model_on_its_own_members(pool):
    """The one-by-one path any trainer can use (DP-SGD references): each ``fit`` gets exactly
    its model's members of the pool, and the stacked models answer as the fitted ones."""
    x, y = pool[0][:40], pool[1][:40]
    seen = []

    def fit(net, xm, ym, g):
        seen.append((net, xm.clone(), ym.clone()))
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, generator=g))

    s = train_separately(_mlp, fit, x, y, n_models=4, generator=torch.Generator().manual_seed(0))
    assert s.masks.shape == (4, 40) and torch.all(s.masks.sum(0) == 2)
    assert len(seen) == 4
    logits = s.logits(x)
    for m, (net, xm, ym) in enumerate(seen):
        assert torch.equal(xm, x[s.masks[m]]) and torch.equal(ym, y[s.masks[m]])
        with torch.no_grad():
            assert torch.allclose(logits[m], net(x), atol=1e-6)
    assert not torch.allclose(logits[0], logits[1])
    with pytest.raises(InvalidParameterError, match="generator"):
        train_separately(_mlp, fit, x, y, n_models=4, generator=None)
    with pytest.raises(InvalidParameterError, match="n_models"):
        train_separately(_mlp, fit, x, y, n_models=1, generator=torch.Generator())
