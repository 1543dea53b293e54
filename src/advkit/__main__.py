"""``python -m advkit``: the command line, as the ``advkit`` entry point runs it."""

from advkit.cli.main import run

if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    run()
