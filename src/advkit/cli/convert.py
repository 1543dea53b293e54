"""``advkit convert SRC OUT``: turn a trusted pickle-based model file into a safe format, once."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import typer

from advkit.cli.output import echo
from advkit.errors import AdvkitWarning, InvalidParameterError


def _say(text: object, *, err: bool = False) -> None:
    """One line for the terminal: control characters, newlines included, shown as escapes (file
    names and scan findings come from files of unknown origin)."""
    echo(str(text).replace("\n", "\\n"), err=err)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape:
        raise InvalidParameterError("--input-shape", text,
                                    "integers separated by commas, e.g. 1,8,8 or 64")
    return shape


def _zoo_args(zoo: str | None, input_shape: str | None, n_classes: int | None,
              zoo_kwargs: str | None):
    from advkit.models.convert import ZooArgs

    given = [zoo is not None, input_shape is not None, n_classes is not None]
    if not any(given) and zoo_kwargs is None:
        return None
    if not all(given):
        raise InvalidParameterError(
            "--zoo/--input-shape/--n-classes", "only some of them",
            "all three together (the architecture of a bare state dict), or none")
    try:
        kwargs = json.loads(zoo_kwargs) if zoo_kwargs else {}
    except json.JSONDecodeError as exc:
        raise InvalidParameterError("--zoo-kwargs", zoo_kwargs, f"a JSON object ({exc})") from exc
    if not isinstance(kwargs, dict):
        raise InvalidParameterError("--zoo-kwargs", zoo_kwargs, 'a JSON object, e.g. {"hidden": [64]}')
    return ZooArgs(zoo, _shape(input_shape), n_classes, kwargs)


def convert(
    src: Path = typer.Argument(
        ..., help="A pickle-based model file you trust (torch.save, pickle, joblib)."),
    out: Path = typer.Argument(
        ..., help="Output: a folder (model.safetensors + config.json) for a PyTorch zoo model, a "
        "file such as model.skops for a scikit-learn estimator."),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle",
        help="Required: SRC is loaded once with pickle, which runs its code."),
    allow_dangerous: bool = typer.Option(
        False, "--allow-dangerous",
        help="Also convert a SRC whose scan found dangerous imports (with --trust-pickle)."),
    force: bool = typer.Option(
        False, "--force", help="Replace OUT if it exists (a file or a save_model folder)."),
    zoo: str = typer.Option(
        None, "--zoo", help="For a bare state dict: its zoo model (mlp, cnn-small, lenet, cnn-madry, "
        "cnn-wong)."),
    input_shape: str = typer.Option(None, "--input-shape", help="With --zoo: e.g. 1,8,8."),
    n_classes: int = typer.Option(None, "--n-classes", help="With --zoo: number of classes."),
    zoo_kwargs: str = typer.Option(
        None, "--zoo-kwargs", help='With --zoo: options as JSON, e.g. {"hidden": [64]}.'),
) -> int:
    """Convert a trusted pickle-based model once, so it never needs trust again: an advkit zoo
    model (or its state dict) becomes safetensors + config.json, a scikit-learn estimator a skops
    file. A state dict needs --zoo/--input-shape/--n-classes or the config.json save_model wrote
    beside it. Exit 0: written and scanned; 1: the output does not scan as expected; 2: refused
    (no --trust-pickle, a dangerous SRC, OUT exists without --force) or bad input."""
    from advkit.models.convert import convert_model

    args = _zoo_args(zoo, input_shape, n_classes, zoo_kwargs)
    if allow_dangerous and trust_pickle:
        _say(f"WARNING: --allow-dangerous: {src} is loaded (its code runs) even if its "
                   "scan finds imports that run commands, touch files or the network, or "
                   "evaluate code; do this only in a sandbox, for a file you made.", err=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AdvkitWarning)
        try:
            conv = convert_model(src, out, trust_pickle=trust_pickle,
                                 allow_dangerous=allow_dangerous, zoo=args, force=force)
        finally:
            for w in caught:
                _say(f"warning: {w.message}", err=True)
    res = conv.scan
    _say(f"converted {src} ({conv.source.format}) -> {conv.out} ({conv.kind})")
    _say(f"scan of {conv.out}: {res.format}, verdict {res.verdict.upper()}")
    if conv.kind == "skops" and res.verdict == "requires-trust" and not res.dangerous:
        _say("types skops does not trust by default (check them; load with --trust-pickle "
                   f"if you expect them): {', '.join(res.globals)}")
        return 0
    return 0 if res.verdict == "safe" else 1
