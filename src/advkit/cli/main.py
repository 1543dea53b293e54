"""``advkit`` entry point: typed advkit errors print without a traceback and exit 2."""

from __future__ import annotations

import io
import logging
import os
import sys

import typer
from rich.console import Console
from rich.text import Text
from typer.exceptions import TyperException

from advkit.cli import audit as audit_cmd
from advkit.cli import catalog, convert, export, scan, serve, train, web
from advkit.cli import history as history_cmd
from advkit.cli.output import clean
from advkit.errors import AdvkitError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="advkit: audit machine-learning models for security.",
)
app.command("audit")(audit_cmd.audit)
app.command("train")(train.train)
app.command("list")(catalog.list_cmd)
app.command("describe")(catalog.describe)
app.command("scan")(scan.scan)
app.command("convert")(convert.convert)
app.command("export")(export.export)
app.command("serve-model")(serve.serve_model)
app.command("serve")(web.serve)
app.command("history")(history_cmd.history)
app.command("compare")(history_cmd.compare)

err = Console(stderr=True, highlight=False)


def _version(value: bool) -> None:
    if value:
        from advkit import __version__

        typer.echo(f"advkit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print advkit's version and exit."
    ),
) -> None:
    """advkit: audit machine-learning models for security."""


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and, as a script, exits with) the exit code."""
    logging.basicConfig(
        level=os.environ.get("ADVKIT_LOG", "WARNING").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        rv = app(args=argv, standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except AdvkitError as exc:
        # the message may quote user input: no markup, control characters escaped
        msg = Text.assemble(("error:", "bold red"), f" {type(exc).__name__}: {clean(exc)}")
        err.print(msg, soft_wrap=True)
        code = 2
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        err.print("aborted")
        code = 130
    except TyperException as exc:  # usage errors: unknown option, missing argument, bad value
        buf = io.StringIO()
        if hasattr(exc, "show"):
            exc.show(file=buf)
        else:
            buf.write(f"error: {exc.format_message()}\n")
        sys.stderr.write(clean(buf.getvalue()))
        code = 2
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":  # pragma: no cover
    run()
