import time

import pytest
import torch

from advkit.errors import InputContractError, InvalidParameterError
from advkit.models.train import TrainHistory, evaluate_accuracy, schedule_lr, train
from advkit.models.zoo import build


def _blobs(n=120, d=6, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 3
    y = torch.randint(0, k, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


def _mlp(seed=0, d=6, k=3):
    return build("mlp", input_shape=(d,), n_classes=k, hidden=(16,),
                 generator=torch.Generator().manual_seed(seed))


def _digits():
    from sklearn.datasets import load_digits

    data, target = load_digits(return_X_y=True)
    x = torch.tensor(data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1437], perm[1437:]
    return x[tr], y[tr], x[te], y[te]


def test_same_generator_same_model_and_history():
    x, y = _blobs()
    runs = []
    for _ in range(2):
        m = _mlp()
        h = train(m, x, y, epochs=3, batch_size=16, generator=torch.Generator().manual_seed(5))
        runs.append((m.state_dict(), h))
    (sd1, h1), (sd2, h2) = runs
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert h1.loss == h2.loss and h1.accuracy == h2.accuracy
    other = _mlp()
    train(other, x, y, epochs=3, batch_size=16, generator=torch.Generator().manual_seed(6))
    assert not all(torch.equal(sd1[k], other.state_dict()[k]) for k in sd1)


def test_history_and_eval_mode_after_training():
    x, y = _blobs()
    m = _mlp()
    m.train()
    seen_modes = []
    h = train(m, x, y, epochs=4, batch_size=32, generator=torch.Generator().manual_seed(0),
              batch_hook=lambda xb, yb, model: seen_modes.append(model.training))
    assert isinstance(h, TrainHistory) and h.epochs == 4
    assert len(h.accuracy) == len(h.seconds) == 4 and all(s >= 0 for s in h.seconds)
    assert h.loss[-1] < h.loss[0]
    assert not m.training and all(seen_modes)
    assert h.total_seconds == pytest.approx(sum(h.seconds))


def test_batch_hook_replaces_the_batch():
    x, y = _blobs()
    m = _mlp()
    calls = []

    def hook(xb, yb, model):
        calls.append(xb.shape[0])
        return xb, torch.full_like(yb, 2)  # relabel everything as class 2

    h = train(m, x, y, epochs=5, batch_size=40, lr=1e-2, generator=torch.Generator().manual_seed(0),
              batch_hook=hook)
    assert calls == [40, 40, 40] * 5
    assert (m(x).argmax(1) == 2).all()
    assert h.accuracy[-1] == 1.0  # accuracy on the batches actually trained on


def test_on_epoch_can_stop_early():
    x, y = _blobs()
    seen = []
    h = train(_mlp(), x, y, epochs=10, generator=torch.Generator().manual_seed(0),
              on_epoch=lambda epoch, hist: seen.append(epoch) or epoch == 2)
    assert seen == [1, 2] and h.epochs == 2


def test_numpy_inputs_and_quiet_by_default(capsys):
    x, y = _blobs()
    h = train(_mlp(), x.numpy(), y.numpy(), epochs=1, generator=torch.Generator().manual_seed(0))
    assert h.epochs == 1
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_evaluate_accuracy_matches_a_direct_count_and_restores_mode():
    x, y = _blobs()
    m = _mlp()
    train(m, x, y, epochs=2, generator=torch.Generator().manual_seed(0))
    m.train()
    acc = evaluate_accuracy(m, x, y, batch_size=7)
    assert m.training
    m.eval()
    with torch.no_grad():
        assert acc == pytest.approx((m(x).argmax(1) == y).float().mean().item())


def test_cyclic_schedule_rises_to_lr_at_40_percent_then_falls_to_zero():
    assert schedule_lr("constant", 0.1, 0.9) == 0.1
    assert schedule_lr("cyclic", 0.1, 0.0) == 0.0
    assert schedule_lr("cyclic", 0.1, 0.2) == pytest.approx(0.05)
    assert schedule_lr("cyclic", 0.1, 0.4) == pytest.approx(0.1)
    assert schedule_lr("cyclic", 0.1, 0.7) == pytest.approx(0.05)
    assert schedule_lr("cyclic", 0.1, 1.0) == 0.0


def test_cyclic_schedule_sets_the_optimizer_lr_every_batch(monkeypatch):
    seen = []
    step = torch.optim.Adam.step

    def recording_step(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return step(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    x, y = _blobs()  # 120 points, batch 40: 3 batches per epoch, 15 in all
    train(_mlp(), x, y, epochs=5, batch_size=40, lr=0.02, generator=torch.Generator().manual_seed(0),
          lr_schedule="cyclic")
    expected = [schedule_lr("cyclic", 0.02, (b + 0.5) / 15) for b in range(15)]
    assert seen == pytest.approx(expected)
    assert max(seen) == pytest.approx(0.02 * (1 - 6.5 / 15) / 0.6)  # batch 6, just past the peak
    assert seen[0] < seen[5] and seen[-1] < seen[7]


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"lr": "big"},
                                    {"weight_decay": -1.0}, {"generator": 1},
                                    {"lr_schedule": "cosine"}])
def test_bad_parameters_raise(kwargs):
    x, y = _blobs()
    with pytest.raises(InvalidParameterError):
        train(_mlp(), x, y, **kwargs)


def test_bad_data_raises():
    x, y = _blobs()
    with pytest.raises(InputContractError, match="out of range"):
        train(_mlp(), x, y + 3, epochs=1)
    with pytest.raises(InputContractError, match="labels"):
        train(_mlp(), x, y[:-1], epochs=1)
    with pytest.raises(InputContractError, match="1-D integer"):
        train(_mlp(), x, torch.nn.functional.one_hot(y).float(), epochs=1)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InputContractError, match="NaN"):
        train(_mlp(), bad, y, epochs=1)
    with pytest.raises(InvalidParameterError):
        train(object(), x, y)


def test_cnn_small_learns_digits():
    x_tr, y_tr, x_te, y_te = _digits()
    m = build("cnn-small", input_shape=(1, 8, 8), n_classes=10,
              generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    train(m, x_tr, y_tr, epochs=5, lr=3e-3, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - t0
    acc = evaluate_accuracy(m, x_te, y_te)
    print(f"cnn-small digits: test accuracy {acc:.4f}, {seconds:.1f}s training")
    assert acc >= 0.95


@pytest.mark.slow
def test_lenet_reaches_98_percent_on_mnist_in_3_epochs():
    data = pytest.importorskip("advkit.data")
    try:
        ds = data.load("mnist")
    except Exception as exc:  # noqa: BLE001 - MNIST needs the [data] extra
        pytest.skip(f"mnist unavailable: {exc}")
    m = build("lenet", input_shape=tuple(ds.info.shape), n_classes=ds.info.n_classes,
              generator=torch.Generator().manual_seed(0))
    t0 = time.perf_counter()
    train(m, ds.x_train, ds.y_train, epochs=3, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - t0
    acc = evaluate_accuracy(m, ds.x_test, ds.y_test)
    print(f"lenet mnist: test accuracy {acc:.4f}, {seconds:.1f}s training")
    assert acc >= 0.98
