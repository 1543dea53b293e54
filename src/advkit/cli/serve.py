"""``advkit serve-model MODEL``: serve a model advkit can load as a prediction API (for auditing
it as a black box through ``model: {url: ...}``, and for testing API clients with faults)."""

from __future__ import annotations

import ipaddress
import math
import os
from pathlib import Path

import typer

from advkit.cli.output import echo
from advkit.errors import InputContractError, InvalidParameterError, MissingDependencyError


def _contract(loaded, input_shape: list[int] | None, n_classes: int | None):
    """The model's input shape and classes: from its advkit config or the estimator itself,
    else from --input-shape / --n-classes. Bounds are wide: the server checks shape and finite
    values, not the data's bounds (a client may send raw tabular features); an ONNX file written
    by `advkit export` keeps the bounds it records."""
    from advkit.targets.base import InputContract

    cfg, model = loaded.config, loaded.model
    shape = input_shape or cfg.get("input_shape")
    k = n_classes or cfg.get("n_classes")
    if shape is None and isinstance(getattr(model, "n_features_in_", None), int):
        shape = [model.n_features_in_]
    if k is None and getattr(model, "classes_", None) is not None:
        k = len(model.classes_)
    if not shape or not k:
        raise InputContractError(
            f"{loaded.path}: the model does not say its input shape or number of classes; "
            "fix: pass --input-shape (e.g. --input-shape 1 --input-shape 28 --input-shape 28) "
            "and --n-classes")
    big = 3e38
    bounds = cfg.get("bounds") if loaded.kind == "onnx" else None  # exported for these bounds
    return InputContract(shape=tuple(shape), n_classes=k, bounds=tuple(bounds or (-big, big)))


def serve_model(
    model: Path = typer.Argument(..., help="A model file or folder advkit can load."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (local by default)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="Needed to bind an address other than loopback."),
    labels_only: bool = typer.Option(False, "--labels-only", help="Answer labels only."),
    round_: int = typer.Option(None, "--round", help="Round probabilities to K decimals."),
    api_key_env: str = typer.Option(
        None, "--api-key-env", help="Require the API key held by this environment variable."),
    api_key_file: Path = typer.Option(
        None, "--api-key-file", help="Require the API key held in this file."),
    drop_rate: float = typer.Option(0.0, "--drop-rate", help="Fault: share of dropped connections."),
    rate_429: float = typer.Option(0.0, "--429-rate", help="Fault: share of 429 answers."),
    retry_after: int = typer.Option(1, "--retry-after", help="Retry-After (s) of the 429 answers."),
    latency_ms: float = typer.Option(0.0, "--latency-ms", help="Fault: added latency per request."),
    seed: int = typer.Option(0, "--seed", help="Seed of the injected faults."),
    max_rows: int = typer.Option(1024, "--max-rows", help="Most rows per request."),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", help="Largest request body (MiB)."),
    input_shape: list[int] = typer.Option(
        None, "--input-shape", help="Input shape, when the model file does not say (repeat)."),
    n_classes: int = typer.Option(None, "--n-classes", help="Classes, when the file does not say."),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle",
        help="Load a pickle-based model file (runs its code: only for files you trust)."),
) -> int:
    """Serve MODEL at http://HOST:PORT/predict (POST {"inputs": [[...]]}), /health and /stats."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("advkit serve-model", exc.name or "fastapi", "serve") from None
    from advkit.models.io import load_model, target_for
    from advkit.serve.model_api import ServeOptions, serve

    if not 1 <= port <= 65535:
        raise InvalidParameterError("--port", port, "a port in 1..65535")
    try:
        local = ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = host == "localhost"
    if not local and not allow_remote:
        raise InvalidParameterError(
            "--host", host, "a loopback address (127.0.0.1); to serve other machines pass "
            "--allow-remote as well (anyone who reaches the port can query the model)")
    if api_key_env is not None and api_key_file is not None:
        raise InvalidParameterError("--api-key-env", api_key_env,
                                    "either --api-key-env or --api-key-file, not both")
    key = None
    if api_key_env is not None:
        key = os.environ.get(api_key_env, "").strip()
        if not key:
            raise InvalidParameterError("--api-key-env", api_key_env,
                                        "the name of a set, non-empty environment variable")
    if api_key_file is not None:
        try:
            with api_key_file.open("rb") as f:  # a key, not a whole file: its start only
                key = f.read(4096).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError):
            key = ""
        if not key:
            raise InvalidParameterError("--api-key-file", str(api_key_file),
                                        "a readable file holding the key")
    if not (math.isfinite(max_body_mb) and max_body_mb > 0):
        raise InvalidParameterError("--max-body-mb", max_body_mb, "a positive number")
    opts = ServeOptions(labels_only=labels_only, round=round_, api_key=key, drop_rate=drop_rate,
                        rate_429=rate_429, retry_after_s=retry_after, latency_ms=latency_ms,
                        seed=seed, max_rows=max_rows, max_body_bytes=int(max_body_mb * (1 << 20)))
    loaded = load_model(model, trust_pickle=trust_pickle)
    target = target_for(loaded, _contract(loaded, input_shape, n_classes))
    if not local:
        echo(f"WARNING: serving {model} on {host}:{port}, reachable from other machines"
             + ("" if key else " and without an API key"), err=True)
    faults = [f"{name} {v:g}" for name, v in (("drop rate", drop_rate), ("429 rate", rate_429),
                                               ("latency ms", latency_ms)) if v]
    echo(f"serving {model.name} ({loaded.kind}) at http://{host}:{port}/predict"
         + (f"; faults: {', '.join(faults)}" if faults else ""), err=True)
    serve(target, opts, host=host, port=port)
    return 0
