"""``advkit train``: train a zoo model on a dataset and save safetensors weights plus a JSON config."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Built-in name (digits, mnist, ...) or a data file."),
    model: str = typer.Option(..., "--model", "-m", help="Zoo model: mlp, cnn-small, lenet, cnn-madry."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write model.safetensors and config.json."),
    epochs: int = typer.Option(3, "--epochs", min=1),
    lr: float = typer.Option(1e-3, "--lr"),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    seed: int = typer.Option(0, "--seed"),
    label_column: str = typer.Option(None, "--label-column", help="CSV files: the label column."),
    progress: bool = typer.Option(None, "--progress/--no-progress"),
) -> int:
    """Train a model from the zoo and save it safely (no pickle)."""
    import torch

    from advkit.data import load
    from advkit.models.io import save_model
    from advkit.models.train import evaluate_accuracy
    from advkit.models.train import train as fit
    from advkit.models.zoo import build

    ds = load(dataset, label_column=label_column)
    gen = torch.Generator().manual_seed(seed)
    net = build(model, input_shape=ds.info.shape, n_classes=ds.info.n_classes, generator=gen)
    hist = fit(net, ds.x_train, ds.y_train, epochs=epochs, batch_size=batch_size, lr=lr, generator=gen,
               progress=progress)
    acc = evaluate_accuracy(net, ds.x_test, ds.y_test)
    path = save_model(net, out, dataset_info=ds.info,
                      extra={"training": {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed,
                                          "test_accuracy": acc, "seconds": hist.total_seconds}})
    typer.echo(f"trained {model} on {ds.info.name}: test accuracy {acc:.4f} ({ds.x_test.shape[0]} points)")
    typer.echo(f"saved to {path}")
    return 0
