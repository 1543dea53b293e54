"""advkit's model-file scan vs picklescan, modelscan and fickling on advkit's hostile-input corpus.

The corpus (advkit.testing.corpus, built in a temporary folder) holds malicious files of every
format advkit reads, built from published scanner bypasses, and benign ones. Each installed tool
scans every file through its documented Python API:

- advkit: ``advkit.models.scan_model_file``; flagged = verdict ``dangerous`` or ``unknown`` (the
  verdicts on which ``load_model`` refuses even with ``trust_pickle``); a false alarm is a benign
  file called ``dangerous`` (an ordinary pickle is ``requires-trust``, not a false alarm);
- picklescan: ``picklescan.scanner.scan_file_path`` (``scan_directory_path`` for a folder);
  flagged = an infected file or a dangerous global reported; error = ``scan_err``;
- modelscan: ``modelscan.modelscan.ModelScan().scan(path)``; flagged = any issue; error = an entry
  in its ``errors``; a file it skips is neither;
- fickling: ``fickling.scan_file(path, graceful=True)``; flagged = severity above
  ``LIKELY_SAFE``; error = an entry in its ``errors`` or an exception.

A miss is a malicious file a tool neither flagged nor failed on; "errors" counts files where it
failed (raised, or said it could not scan) without flagging, so a caller that treats an error as a
refusal would have refused them. No payload runs: each would only create a marker file, checked
after every tool. Needs the optional benchmark venv (never a test dependency):
    .venv-bench/bin/python benchmarks/compare_scanners.py [--json out.json] [--techniques]
A tool that is not installed is skipped and said so.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.metadata
import io
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _advkit():
    from advkit.models import scan_model_file

    def scan(path: Path) -> tuple[bool, bool, bool]:
        res = scan_model_file(path)
        return res.verdict in ("dangerous", "unknown"), res.verdict == "dangerous", False
    return scan


def _picklescan():
    from picklescan.scanner import scan_directory_path, scan_file_path

    def scan(path: Path) -> tuple[bool, bool, bool]:
        res = (scan_directory_path if path.is_dir() else scan_file_path)(str(path))
        flagged = res.infected_files > 0 or res.issues_count > 0
        return flagged, flagged, bool(res.scan_err)
    return scan


def _modelscan():
    from modelscan.modelscan import ModelScan

    def scan(path: Path) -> tuple[bool, bool, bool]:
        res = ModelScan().scan(path)
        flagged = bool(res.get("issues"))
        return flagged, flagged, bool(res.get("errors"))
    return scan


def _fickling():
    import fickling

    def one(path: Path) -> tuple[bool, bool]:
        res = fickling.scan_file(str(path), graceful=True)
        return not res.is_safe, bool(res.errors)

    def scan(path: Path) -> tuple[bool, bool, bool]:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        found = [one(p) for p in files]
        flagged = any(f for f, _ in found)
        return flagged, flagged, any(e for _, e in found)
    return scan


TOOLS = {"advkit": ("advkit", _advkit), "picklescan": ("picklescan", _picklescan),
         "modelscan": ("modelscan", _modelscan), "fickling": ("fickling", _fickling)}


def run_tool(name: str, make, entries, marker: Path) -> dict:
    scan = make()
    rows = []
    t0 = time.perf_counter()
    for e in entries:
        sink = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sink), \
                    contextlib.redirect_stderr(sink):
                warnings.simplefilter("ignore")
                flagged, alarm, error = scan(e.path)
        except Exception as exc:  # noqa: BLE001 - a crash of the tool is what is measured
            flagged, alarm, error = False, False, True
            crash = f"{type(exc).__name__}: {str(exc)[:120]}"
        else:
            crash = ""
        rows.append({"name": e.name, "technique": e.technique, "format": e.format,
                     "expected": e.expected, "flagged": flagged, "alarm": alarm, "error": error,
                     "crash": crash})
    seconds = time.perf_counter() - t0
    mal = [r for r in rows if r["expected"] == "malicious"]
    ben = [r for r in rows if r["expected"] == "benign"]
    return {
        "tool": name, "seconds": round(seconds, 1), "rows": rows,
        "malicious": len(mal), "benign": len(ben),
        "flagged": sum(r["flagged"] for r in mal),
        "misses": sum(not r["flagged"] and not r["error"] for r in mal),
        "errors_malicious": sum(r["error"] and not r["flagged"] for r in mal),
        "false_alarms": sum(r["alarm"] for r in ben),
        "errors_benign": sum(r["error"] for r in ben),
        "crashes": sum(bool(r["crash"]) for r in rows),
        "marker_created": marker.exists(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write every tool's per-file results here")
    ap.add_argument("--techniques", action="store_true",
                    help="also print, per technique, what each tool missed")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of tools")
    args = ap.parse_args(argv)
    logging.disable(logging.CRITICAL)  # the scanners log every finding

    from advkit.testing.corpus import build_corpus

    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "marker"
        entries = build_corpus(Path(tmp) / "corpus", marker)
        n_mal = sum(e.expected == "malicious" for e in entries)
        print(f"corpus: {n_mal} malicious, {len(entries) - n_mal} benign files "
              f"({', '.join(f'{k} {v}' for k, v in sorted(collections.Counter(e.format for e in entries if e.expected == 'benign').items()))} benign)")  # noqa: E501
        results = []
        for name in args.tools.split(","):
            dist, make = TOOLS[name]
            version = _version(dist)
            if version is None:
                print(f"{name}: not installed, skipped")
                continue
            res = run_tool(name, make, entries, marker)
            res["version"] = version
            results.append(res)

    head = ("tool", "version", "flagged", "misses", "errors (mal.)", "false alarms",
            "errors (benign)", "crashes", "seconds")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in results:
        print(f"| {r['tool']} | {r['version']} | {r['flagged']}/{r['malicious']} | {r['misses']} "
              f"| {r['errors_malicious']} | {r['false_alarms']}/{r['benign']} | "
              f"{r['errors_benign']} | {r['crashes']} | {r['seconds']} |")
    if any(r["marker_created"] for r in results):
        print("WARNING: the marker file was created: a payload ran")
    if args.techniques:
        techniques = sorted({row["technique"] for row in results[0]["rows"]
                             if row["expected"] == "malicious"}) if results else []
        print("\nmalicious files missed (not flagged, no error) per technique:\n")
        print("| technique | files | " + " | ".join(r["tool"] for r in results) + " |")
        print("|---|---|" + "---|" * len(results))
        for t in techniques:
            cells = []
            for r in results:
                rows = [x for x in r["rows"] if x["technique"] == t and x["expected"] == "malicious"]
                cells.append(str(sum(not x["flagged"] and not x["error"] for x in rows)))
            total = sum(x["technique"] == t and x["expected"] == "malicious"
                        for x in results[0]["rows"])
            print(f"| {t} | {total} | " + " | ".join(cells) + " |")
        for r in results:
            fa = [f"{x['format']}: {x['name']}" for x in r["rows"]
                  if x["expected"] == "benign" and x["alarm"]]
            if fa:
                print(f"\n{r['tool']} false alarms: " + "; ".join(fa[:10])
                      + (f" and {len(fa) - 10} more" if len(fa) > 10 else ""))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    advkit = next((r for r in results if r["tool"] == "advkit"), None)
    return 1 if advkit and (advkit["misses"] or advkit["marker_created"]) else 0


if __name__ == "__main__":
    sys.exit(main())
