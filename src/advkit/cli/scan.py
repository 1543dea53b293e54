"""``advkit scan PATH``: say what model files are and what loading them would do, without loading.

Exit codes: 0 every file is safe; 1 some file is unsafe (dangerous, or needs trust because loading
it runs pickle code); 2 bad input: the path does not exist, or (with no unsafe file) some file
could not be read or is not a model format advkit recognizes, or the folder holds no file at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from advkit.cli.output import echo
from advkit.models.scan import ScanResult
from advkit.models.scan_tree import UNSAFE, TreeScan, reasons

EXIT_SAFE, EXIT_UNSAFE, EXIT_BAD_INPUT = 0, 1, 2


def _say(text: object, *, err: bool = False) -> None:
    """One line for the terminal: control characters, newlines included, shown as escapes (file
    names and scan findings come from files of unknown origin)."""
    echo(str(text).replace("\n", "\\n"), err=err)


def exit_code(tree: TreeScan) -> int:
    """0 all safe, 1 any unsafe, 2 otherwise when something could not be judged."""
    verdicts = {r.verdict for r in tree.results}
    if verdicts & set(UNSAFE):
        return EXIT_UNSAFE
    if "unknown" in verdicts or not tree.results:
        return EXIT_BAD_INPUT
    return EXIT_SAFE


def scan(
    path: Path = typer.Argument(
        ..., help="A model file, a save_model folder, or any folder (scanned recursively)."),
    as_json: bool = typer.Option(
        False, "--json", help="Print a JSON list with one object per file scanned."),
    sarif: Path = typer.Option(
        None, "--sarif", help="Also write the findings as SARIF 2.1.0 to this file."),
) -> int:
    """Scan model files for code that would run when they are loaded, by content, whatever their
    names. Exit 0: all safe; 1: a file is dangerous or needs trust; 2: a path is missing or a file
    is unreadable, empty or of a format advkit does not recognize (with no unsafe file)."""
    from advkit import __version__
    from advkit.models.scan_tree import scan_tree

    tree = scan_tree(path)
    if sarif is not None:
        from advkit.report.sarif import to_sarif

        _write(sarif, json.dumps(to_sarif(tree, version=__version__), indent=2) + "\n")
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in tree.results], indent=2))
        for p, why in tree.skipped:
            _say(f"skipped {p}: {why}", err=True)
    elif len(tree.results) == 1 and not tree.skipped and tree.results[0].path == path:
        _detail(tree.results[0])
    else:
        _listing(tree)
    return exit_code(tree)


def _write(target: Path, text: str) -> None:
    from advkit.errors import InvalidParameterError

    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidParameterError("--sarif", str(target), f"a writable file path ({exc})") \
            from exc


def _listing(tree: TreeScan) -> None:
    for res in tree.results:
        why = "; ".join(reasons(res))
        _say(f"{res.verdict.upper():<14} {res.path} ({res.format})" + (f": {why}" if why
                                                                              else ""))
    for p, why in tree.skipped:
        _say(f"{'SKIPPED':<14} {p}: {why}")
    counts = tree.counts()
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n) or "nothing to scan"
    _say(f"{len(tree.results)} scanned: {summary}"
               + (f"; {len(tree.skipped)} skipped" if tree.skipped else ""))
    if counts["requires-trust"] and not counts["dangerous"]:
        _say("files that need trust run pickle code when loaded: convert them with "
                   "`advkit convert FILE OUT --trust-pickle` if you trust their origin")


def _detail(res: ScanResult) -> None:
    _say(f"{res.path}: {res.format}, verdict {res.verdict.upper()}")
    _say(f"sha256 {res.sha256}")
    if res.dangerous and res.format == "torchscript":
        _say("refused code (not on the allow-list of inert operators; TorchScript code "
                   "runs when the file is loaded or called):")
    elif res.dangerous and res.format == "torch-export":
        _say("refused content (torch.export.load would unpickle, load native code or evaluate "
             "it, or the graph would call it):")
    elif res.dangerous and res.format == "onnx":
        _say("refused content (onnxruntime would run operators outside the ONNX standard or "
             "read files outside the model's folder):")
    elif res.dangerous:
        _say("dangerous imports (they run when the file is loaded):")
    for name, why in res.dangerous.items():
        _say(f"  {name}: {why}")
    if res.unknown:
        _say(f"other imports not known to be harmless: {', '.join(res.unknown)}")
    for issue in res.issues:
        _say(f"note: {issue}")
    if res.needs_trust and not res.dangerous:
        _say(
            "loading it runs pickle code; convert it with `advkit convert FILE OUT "
            "--trust-pickle` (safetensors for torch, skops for scikit-learn) if you trust its "
            "origin, or pass --trust-pickle to load it as it is"
        )
    if res.verdict == "unknown":
        _say("not a model advkit can vouch for: re-create or re-download the file")
