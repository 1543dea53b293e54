"""Recipe and data settings the YAML presets need: the ``step`` learning-rate schedule
(``lr_milestones``) and a random subset of the training split (``dataset.n_train``)."""

from __future__ import annotations

import pytest
import torch

from advkit.audit.spec import parse_spec
from advkit.errors import AuditSpecError, InvalidParameterError
from advkit.models.train import train
from advkit.models.zoo import build

SPEC = {"seed": 3, "dataset": "digits", "model": {"zoo": "mlp", "epochs": 2},
        "attacks": [{"name": "fgsm", "eps": [0.1]}]}


def test_step_schedule_divides_the_rate_by_ten_after_each_milestone(monkeypatch):
    made = []

    class Spy(torch.optim.Adam):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(torch.optim, "Adam", Spy)
    g = torch.Generator().manual_seed(0)
    net = build("mlp", input_shape=(4,), n_classes=2, generator=g, hidden=(4,))
    x, y = torch.rand(32, 4, generator=g), torch.randint(0, 2, (32,), generator=g)
    rates = []
    train(net, x, y, epochs=4, lr=0.1, batch_size=8, generator=g, progress=False,
          lr_schedule="step", lr_milestones=[1, 3],
          on_epoch=lambda e, h: rates.append(made[0].param_groups[0]["lr"]))
    assert rates == pytest.approx([0.1, 0.01, 0.01, 0.001])


@pytest.mark.parametrize("kw", [dict(lr_schedule="step"), dict(lr_milestones=[1]),
                                dict(lr_schedule="step", lr_milestones=[4]),
                                dict(lr_schedule="step", lr_milestones=[2, 1])])
def test_bad_milestones_are_refused(kw):
    net = build("mlp", input_shape=(4,), n_classes=2, generator=torch.Generator(), hidden=(4,))
    with pytest.raises(InvalidParameterError, match="lr_milestones"):
        train(net, torch.rand(8, 4), torch.zeros(8, dtype=torch.long), epochs=4,
              progress=False, **kw)


def test_a_spec_with_milestones_past_its_epochs_fails_when_read():
    with pytest.raises(AuditSpecError, match="lr_milestones"):
        parse_spec({**SPEC, "model": {"zoo": "lenet", "epochs": 3, "lr_schedule": "step",
                                      "lr_milestones": [3]}})
    ok = parse_spec({**SPEC, "model": {"zoo": "lenet", "epochs": 3, "lr_schedule": "step",
                                       "lr_milestones": [2]}})
    from advkit.models.cache import Recipe

    assert Recipe.from_spec(ok.model).lr_milestones == (2,)


def test_n_train_draws_a_seeded_subset_of_the_training_split(tmp_path, monkeypatch):
    from advkit.audit.subject import load_subject
    from advkit.data import load

    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path))
    full = load("digits")
    spec = parse_spec({**SPEC, "dataset": {"name": "digits", "n_train": 300}})
    a, b = load_subject(spec, progress=False), load_subject(spec, progress=False)
    ds = a.dataset
    assert ds.x_train.shape[0] == 300 and torch.equal(ds.x_train, b.dataset.x_train)
    assert torch.equal(ds.x_test, full.x_test)  # the test split is untouched
    assert ds.info.as_dict()["train_subset"] == {"n": 300, "of": full.x_train.shape[0], "seed": 3}
    rows = {tuple(r.tolist()) for r in full.x_train.flatten(1)}
    assert all(tuple(r.tolist()) in rows for r in ds.x_train.flatten(1))
    other = parse_spec({**SPEC, "seed": 4, "dataset": {"name": "digits", "n_train": 300}})
    assert not torch.equal(load_subject(other, progress=False).dataset.x_train, ds.x_train)
    too_many = parse_spec({**SPEC, "dataset": {"name": "digits", "n_train": 100000}})
    with pytest.raises(AuditSpecError, match="n_train"):
        load_subject(too_many, progress=False)


def test_the_model_cache_key_holds_torch_thread_count(tmp_path, monkeypatch):
    """A model trained at 2 threads differs in its last bits from one trained at 1: a run at 1
    thread must not be served the 2-thread model, so the key (the folder) changes with the
    count, and only with it."""
    from advkit.models.cache import cache_folder

    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path))
    before = torch.get_num_threads()
    x = torch.arange(6.0)
    try:
        torch.set_num_threads(1)
        one = cache_folder("models", "mlp", {"seed": 0}, x)
        torch.set_num_threads(2)
        two = cache_folder("models", "mlp", {"seed": 0}, x)
        assert cache_folder("models", "mlp", {"seed": 0}, x) == two
    finally:
        torch.set_num_threads(before)
    assert one != two
    assert one.parent == two.parent == tmp_path / "models"
