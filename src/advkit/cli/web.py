"""``advkit serve``: the web demo and audit browser (:mod:`advkit.serve.web`)."""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path

import typer

from advkit.cli.history import history_option
from advkit.cli.output import echo
from advkit.errors import InvalidParameterError, MissingDependencyError


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
    model: list[Path] = typer.Option(
        None, "--model", help="A model file or folder to offer besides the default and the cached "
        "zoo models (repeat); the browser can pick only these."),
    runs_dir: Path = typer.Option(
        Path("advkit-runs"), "--runs-dir", help="Folder for the reports of audits started here."),
    max_upload_mb: float = typer.Option(4.0, "--max-upload-mb", help="Largest image upload (MiB)."),
    parallel_audits: int = typer.Option(
        1, "--parallel-audits", help="Audits that may run at once (one by default)."),
    history: Path = history_option(),
) -> int:
    """Serve the playground (attack a digit in the browser), the audit history and the run page
    at http://HOST:PORT/."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("advkit serve", exc.name or "fastapi", "serve") from None
    from advkit.errors import check_range
    from advkit.serve.web.app import WebOptions
    from advkit.serve.web.app import serve as run_server

    if not 1 <= port <= 65535:
        raise InvalidParameterError("--port", port, "a port in 1..65535")
    if not (math.isfinite(max_upload_mb) and 0 < max_upload_mb <= 64):
        raise InvalidParameterError("--max-upload-mb", max_upload_mb, "a number in (0, 64]")
    check_range("--parallel-audits", parallel_audits, lo=1, hi=8, kind=int)
    opts = WebOptions(history=history, runs_dir=runs_dir, model_files=list(model or []),
                      max_upload_bytes=int(max_upload_mb * (1 << 20)),
                      max_parallel_audits=parallel_audits)
    if not is_loopback(host):
        echo(f"WARNING: serving on {host}:{port}: anyone who reaches this port can run attacks "
             "and audits on this machine and read its audit reports; there is no login", err=True)
    echo(f"advkit serve: http://{host}:{port}/ (Ctrl-C stops it)", err=True)
    run_server(opts, host=host, port=port)
    return 0
