"""``advkit export MODEL --out F.onnx``: write a PyTorch or scikit-learn model to ONNX with
advkit's input contract in its metadata, verified against the original (``advkit.models.onnx_export``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import typer

from advkit.cli.output import echo
from advkit.errors import AdvkitWarning, InvalidParameterError

EXPORTABLE = ("torch", "torch (user class)", "sklearn")


def _contract(loaded, dataset: str | None):
    """The contract and sample inputs: the dataset's when named, else the model's saved config."""
    from advkit.targets.base import InputContract

    if dataset is not None:
        from advkit.data import load

        ds = load(dataset)
        return ds.contract(), ds.x_test[:64], ds.info.name
    cfg = loaded.config
    info = cfg.get("dataset") if isinstance(cfg.get("dataset"), dict) else {}
    if "input_shape" not in cfg or "n_classes" not in cfg:
        raise InvalidParameterError(
            "--dataset", None, f"the dataset the model takes (a built-in name such as "
            f"breast_cancer, or a data file): {loaded.path} does not record its input shape")
    bounds = tuple(info.get("bounds", (0.0, 1.0)))
    return InputContract(tuple(cfg["input_shape"]), cfg["n_classes"], bounds), None, \
        info.get("name")


def export(
    model: Path = typer.Argument(..., help="A model advkit can load: a save_model folder, a skops "
                                 "file, or a pickle-based file with --trust-pickle."),
    out: Path = typer.Option(..., "--out", "-o", help="The ONNX file to write (ends in .onnx)."),
    dataset: str = typer.Option(
        None, "--dataset", help="The data the model takes (built-in name or file): its shape, "
        "classes and bounds go into the file, and its test points check the export. Needed for "
        "scikit-learn models; a save_model folder records its own."),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Load a pickle-based MODEL (runs its code: only for files "
        "you trust)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    n_check: int = typer.Option(64, "--n-check", min=1, max=100000,
                                help="Random inputs within the bounds the export is checked on "
                                "(besides the dataset's test points)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random check inputs."),
) -> int:
    """Export a PyTorch or scikit-learn model to ONNX (torch.onnx / skl2onnx) with its input
    contract (shape, classes, bounds, dataset) in the file's metadata, and check that onnxruntime
    reproduces its scores. Exit 0: written and verified; 2: refused or bad input (an export that
    differs from the original is not written)."""
    from advkit.models.io import load_model
    from advkit.models.onnx_export import export_onnx

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AdvkitWarning)
        loaded = load_model(model, trust_pickle=trust_pickle)
    for w in caught:
        echo(f"warning: {w.message}", err=True)
    if loaded.kind not in EXPORTABLE:
        raise InvalidParameterError(
            "MODEL", f"{model} ({loaded.kind})",
            "a PyTorch module or a scikit-learn classifier (ONNX export covers "
            f"{', '.join(EXPORTABLE)}; a {loaded.kind} model is audited as it is)")
    contract, samples, name = _contract(loaded, dataset)
    res = export_onnx(loaded.model, out, contract, dataset=name, samples=samples,
                      n_random=n_check, seed=seed, force=force)
    echo(f"exported {model} ({loaded.kind}) -> {res.path} (onnx, {res.scores})")
    echo(f"verified with onnxruntime on {res.n_checked} inputs: max abs difference "
         f"{res.max_abs_diff:.3g}, labels agree on {res.labels_agree:.1%}")
    echo(f"audit it with a spec holding `model: {{path: {res.path}}}` and its dataset")
    return 0
