"""``advkit train``: train a zoo model on a dataset and save safetensors weights plus a JSON config."""

from __future__ import annotations

from pathlib import Path

import typer

from advkit.cli.output import echo


def train(
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="Built-in name (digits, mnist, ...) or a data file."
    ),
    model: str = typer.Option(
        ..., "--model", "-m", help="Zoo model: mlp, cnn-small, lenet, cnn-madry, cnn-wong."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder to write model.safetensors and config.json."
    ),
    epochs: int = typer.Option(3, "--epochs", min=1),
    lr: float = typer.Option(1e-3, "--lr", help="Adam's learning rate (the peak one if cyclic)."),
    lr_schedule: str = typer.Option(
        "constant", "--lr-schedule", help="constant, or cyclic: 0 -> lr at 40% -> 0 (Wong 2020)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    label_column: str = typer.Option(None, "--label-column", help="CSV files: the label column."),
    poison: str = typer.Option(
        None,
        "--poison",
        help="Poison the training data first: badnets, "
        "blended, label_flip, tabular_backdoor (see advkit list poisoning).",
    ),
    poison_rate: float = typer.Option(
        None, "--poison-rate", help="Share of training points poisoned."
    ),
    target: int = typer.Option(None, "--target", help="The backdoor's target class."),
    defense: str = typer.Option(
        None,
        "--defense",
        help="Train robustly: pgd-at (Madry 2018), "
        "fast-fgsm (Wong 2020), trades (Zhang 2019), gaussian (Cohen 2019).",
    ),
    eps: float = typer.Option(0.3, "--eps", help="--defense pgd-at/fast-fgsm/trades: L∞ budget."),
    sigma: float = typer.Option(0.25, "--sigma", help="--defense gaussian: noise level."),
    warmup_batches: int = typer.Option(
        0, "--warmup-batches", help="Ramp eps up linearly over this many batches."
    ),
    steps: int = typer.Option(
        None, "--steps", help="--defense pgd-at/trades: attack steps per batch (default 40)."
    ),
    step_size: float = typer.Option(
        None, "--step-size", help="--defense pgd-at/trades: attack step (default 2.5 eps/steps)."
    ),
    progress: bool = typer.Option(None, "--progress/--no-progress"),
) -> int:
    """Train a model from the zoo (optionally on poisoned data) and save it safely (no pickle)."""
    import torch

    from advkit.errors import InvalidParameterError, check_seed
    from advkit.paths import prepare_out_dir

    check_seed("--seed", seed)
    prepare_out_dir(out)  # before the data is loaded: an unusable --out fails now
    if poison is not None and defense is not None:
        raise InvalidParameterError("--defense", defense, "no --defense together with --poison")
    if poison is not None and lr_schedule != "constant":
        raise InvalidParameterError(
            "--lr-schedule", lr_schedule, "constant with --poison (poisoned training is plain Adam)"
        )
    if poison is not None:
        return _train_poisoned(dataset, model, out, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                               label_column=label_column, poison=poison, poison_rate=poison_rate,
                               target=target, progress=progress)
    if poison_rate is not None or target is not None:
        raise InvalidParameterError(
            "--poison", None, "a poisoning attack name when --poison-rate or --target is given"
        )

    from advkit.data import load
    from advkit.models.io import save_model
    from advkit.models.train import evaluate_accuracy
    from advkit.models.train import train as fit
    from advkit.models.zoo import build, kwargs_for_data

    ds = load(dataset, label_column=label_column)
    gen = torch.Generator().manual_seed(seed)
    net = build(model, input_shape=ds.info.shape, n_classes=ds.info.n_classes, generator=gen,
                **kwargs_for_data(model, {}, ds.info))
    attack = {k: v for k, v in (("steps", steps), ("step_size", step_size)) if v is not None}
    hook, loss_fn, robust = _defense(defense, eps, sigma, warmup_batches, seed, ds.info.bounds,
                                     attack)
    hist = fit(
        net,
        ds.x_train,
        ds.y_train,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        generator=gen,
        progress=progress,
        batch_hook=hook,
        loss_fn=loss_fn,
        lr_schedule=lr_schedule,
    )
    acc = evaluate_accuracy(net, ds.x_test, ds.y_test)
    path = save_model(
        net,
        out,
        dataset_info=ds.info,
        extra={
            "training": {
                "epochs": epochs,
                "lr": lr,
                "lr_schedule": lr_schedule,
                "batch_size": batch_size,
                "seed": seed,
                "test_accuracy": acc,
                "seconds": hist.total_seconds,
                "defense": robust,
            }
        },
    )
    echo(
        f"trained {model} on {ds.info.name}: test accuracy {acc:.4f} ({ds.x_test.shape[0]} points)"
    )
    echo(f"saved to {path}")
    return 0


def _defense(defense, eps, sigma, warmup_batches, seed, bounds, attack):
    """(batch_hook, loss_fn, record) for ``--defense``; all None without one. ``attack``: the
    ``steps``/``step_size`` given, for the defenses that run PGD."""
    import torch

    from advkit.errors import InvalidParameterError

    if defense is None:
        return None, None, None
    if attack and defense not in ("pgd-at", "trades"):
        raise InvalidParameterError(
            "--steps/--step-size", attack, "only with --defense pgd-at or trades"
        )
    gen = torch.Generator().manual_seed(seed + 1)
    if defense in ("pgd-at", "fast-fgsm"):
        from advkit.defenses.training import adversarial_batch_hook

        hook = adversarial_batch_hook(
            defense, eps, generator=gen, warmup_batches=warmup_batches, bounds=bounds, **attack
        )
        return hook, None, {"defense": defense, "eps": eps, "warmup_batches": warmup_batches,
                            **attack}
    if defense == "trades":
        from advkit.defenses.training import TRADES

        trades = TRADES(eps=eps, bounds=bounds, **attack)
        return (
            None,
            lambda m, xb, yb: trades.loss(m, xb, yb, gen),
            {"defense": "trades", "eps": eps, **attack},
        )
    if defense == "gaussian":
        from advkit.defenses.certify.smoothing import gaussian_augmentation_hook

        return gaussian_augmentation_hook(sigma, gen), None, {"defense": "gaussian", "sigma": sigma}
    raise InvalidParameterError("--defense", defense, "one of pgd-at, fast-fgsm, trades, gaussian")


def _train_poisoned(dataset, model, out, *, epochs, lr, batch_size, seed, label_column, poison,
                    poison_rate, target, progress) -> int:
    import torch

    from advkit import registry
    from advkit.attacks.poisoning.train import train_poisoned
    from advkit.data import load
    from advkit.errors import InvalidParameterError
    from advkit.models.io import save_model

    if poison not in registry.list("poisoning"):
        raise InvalidParameterError(
            "--poison", poison, f"one of {', '.join(registry.list('poisoning'))}"
        )
    params = {k: v for k, v in (("rate", poison_rate), ("target", target)) if v is not None}
    ds = load(dataset, label_column=label_column)
    attack = registry.create(poison, **params)
    net, poisoned, metrics = train_poisoned(
        ds,
        attack=attack,
        model_name=model,
        epochs=epochs,
        seed=seed,
        progress=progress,
        batch_size=batch_size,
        lr=lr,
    )
    record = {
        "attack": poison,
        "params": attack.params(),
        "n_poisoned": int(poisoned.indices.numel()),
        "target": poisoned.target,
        "clean_accuracy": metrics.clean_accuracy.as_dict(),
        "attack_success": None
        if metrics.attack_success is None
        else metrics.attack_success.as_dict(),
    }
    if isinstance(net, torch.nn.Module):
        path = save_model(
            net,
            out,
            dataset_info=ds.info,
            extra={
                "training": {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed},
                "poisoning": record,
            },
        )
    else:
        import skops.io

        out.mkdir(parents=True, exist_ok=True)
        path = out / "model.skops"
        skops.io.dump(net, path)
    echo(
        f"trained {model} on {ds.info.name} poisoned by {poison} "
        f"({record['n_poisoned']} of {ds.x_train.shape[0]} training points)"
    )
    echo(f"clean accuracy {metrics.clean_accuracy}")
    if metrics.attack_success is not None:
        echo(f"attack success {metrics.attack_success}")
    echo(f"saved to {path}")
    return 0
