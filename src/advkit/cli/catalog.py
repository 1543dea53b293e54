"""``advkit list`` and ``advkit describe NAME``: read the registry."""

from __future__ import annotations

import inspect
import json

import typer

from advkit import registry


def list_cmd(
    family: str = typer.Argument(None, help=f"One of {', '.join(registry.FAMILIES)}."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
) -> int:
    """List registered attacks and defenses."""
    if family is not None and family not in registry.FAMILIES:
        from advkit.errors import InvalidParameterError

        raise InvalidParameterError("family", family, f"one of {', '.join(registry.FAMILIES)}")
    if as_json:
        from advkit.catalog import list_entries

        typer.echo(json.dumps(list_entries(family), indent=2, ensure_ascii=False, allow_nan=False))
        return 0
    entries = registry.entries(family)
    width = max((len(e.name) for e in entries), default=4)
    for e in entries:
        req = ",".join(sorted(getattr(e.cls, "requires", ()) or ()))
        typer.echo(
            f"{e.family:<10} {e.name:<{width}}  {e.summary}" + (f"  [needs: {req}]" if req else "")
        )
    return 0


def describe(
    name: str = typer.Argument(..., help="A registered name, e.g. pgd."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
) -> int:
    """Show an attack's or defense's documentation, threat tag and parameters."""
    e = registry.get(name)
    if as_json:
        from advkit.catalog import describe_entry

        typer.echo(json.dumps(describe_entry(e), indent=2, ensure_ascii=False, allow_nan=False))
        return 0
    from advkit.catalog import parameters, threat_line

    typer.echo(f"{e.name} ({e.family}) — {e.cls.__module__}.{e.cls.__qualname__}")
    typer.echo(threat_line(e))
    req = sorted(getattr(e.cls, "requires", ()) or ())
    if req:
        typer.echo(f"needs: {', '.join(req)}")
    typer.echo("")
    typer.echo(inspect.getdoc(e.cls) or "")
    mod_doc = inspect.getdoc(inspect.getmodule(e.cls))
    if mod_doc:
        typer.echo("")
        typer.echo(mod_doc)
    typer.echo("\nparameters:")
    for p in parameters(e):
        default = "required" if p["required"] else f"default {p['default']!r}"
        typer.echo(f"  {p['name']:<20} {default}; {p['allowed'] or p['type']}")
        if p["doc"]:
            typer.echo(f"  {'':<20} {p['doc']}")
    return 0
