"""``advkit scan FILE``: say what a model file is and what loading it would do, without loading it."""

from __future__ import annotations

import json
from pathlib import Path

import typer

EXIT = {"safe": 0, "requires-trust": 1, "unknown": 1, "dangerous": 1}


def scan(
    path: Path = typer.Argument(..., help="A model file or a save_model folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the scan as JSON."),
) -> int:
    """Scan a model file for code that would run when it is loaded (exit 1 unless it is safe)."""
    from advkit.models.scan import scan_model_file

    res = scan_model_file(path)
    if as_json:
        typer.echo(json.dumps(res.as_dict(), indent=2))
        return EXIT[res.verdict]
    typer.echo(f"{res.path}: {res.format}, verdict {res.verdict.upper()}")
    typer.echo(f"sha256 {res.sha256}")
    if res.dangerous and res.format == "torchscript":
        typer.echo("refused code (not on the allow-list of inert operators; TorchScript code "
                   "runs when the file is loaded or called):")
    elif res.dangerous:
        typer.echo("dangerous imports (they run when the file is loaded):")
    for name, why in res.dangerous.items():
        typer.echo(f"  {name}: {why}")
    if res.unknown:
        typer.echo(f"other imports not known to be harmless: {', '.join(res.unknown)}")
    for issue in res.issues:
        typer.echo(f"note: {issue}")
    if res.needs_trust and not res.dangerous:
        typer.echo(
            "loading it runs pickle code; convert it to safetensors (torch) or skops (scikit-learn), "
            "or pass --trust-pickle if you trust its origin"
        )
    return EXIT[res.verdict]
