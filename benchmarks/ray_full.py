"""Wall time of ``advkit audit --preset full`` with the local executor and with the ray executor
(a local Ray instance sized to this machine), each from an empty model cache and an empty progress
store; the per-stage time table; the critical path through the plan's dependencies; and the
speed-up predicted for 4, 16 and 64 nodes.

The prediction (Amdahl, 1967): with ``S`` the serial part of the local run (everything outside the
stages: loading the data, training the audited model, building the report, measured as the local
wall time minus the sum of its stage times) and ``P`` the sum of the stage times, N nodes take at
least ``S + max(P / N, C)``, where ``C`` is the critical path (the longest chain of stages that
wait for one another, which no number of nodes shortens). Speed-up = local wall / that. It assumes
one stage per node at a time, stage times as measured locally and no scheduling or transfer cost
(the measured Ray overhead on this machine is printed beside it).

Run: ``python benchmarks/ray_full.py [--json out.json]`` (about 10 minutes on 2 idle cores);
``--preset NAME [--quick]`` times another preset the same way. Both runs
must give the same report (``advkit.audit.report_read.run_independent``); the script says whether
they do.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def differences(a, b, path: str = "") -> list[str]:
    """The paths at which two report documents differ (where a report diverges, not only if)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in (differences(a.get(k), b.get(k), f"{path}.{k}") if k in a and k in b
                          else [f"{path}.{k} (only in {'local' if k in a else 'ray'})"])]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path} (lengths {len(a)} and {len(b)})"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {str(a)[:60]} != {str(b)[:60]}"]


def _run(executor: str, base: Path, preset: str, quick: bool,
         spec_path: Path | None = None) -> tuple[float, dict, tuple]:
    from advkit.audit import presets, runner
    from advkit.audit.executors import get_executor
    from advkit.audit.spec import load_spec
    from advkit.report.json import report_dict

    os.environ["ADVKIT_CACHE_DIR"] = str(base / f"cache-{executor}")  # empty: everything trains
    spec, sha = load_spec(spec_path or presets.preset_path(preset, quick=quick))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    rep = runner.run_audit(spec, out_dir=base / f"out-{executor}", spec_sha256=sha,
                           progress=False, resume=False, executor=get_executor(executor))
    wall = time.perf_counter() - t0
    return wall, json.loads(json.dumps(report_dict(rep))), (load0, os.getloadavg())


def critical_path(tasks: dict[str, dict]) -> tuple[float, list[str]]:
    """The longest chain of stages (by time) through the ``deps`` of each task."""
    best: dict[str, tuple[float, list[str]]] = {}

    def longest(sid: str) -> tuple[float, list[str]]:
        if sid not in best:
            before = max((longest(d) for d in tasks[sid]["deps"] if d in tasks),
                         default=(0.0, []), key=lambda t: t[0])
            best[sid] = (before[0] + tasks[sid]["seconds"], before[1] + [sid])
        return best[sid]

    return max((longest(s) for s in tasks), key=lambda t: t[0])


def predicted(wall: float, serial: float, parallel: float, crit: float, n: int) -> float:
    return wall / (serial + max(parallel / n, crit))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--preset", default="full", help="the preset to run (default: full)")
    ap.add_argument("--quick", action="store_true", help="its quick version")
    ap.add_argument("--spec", type=Path, help="time this spec file instead of a preset")
    args = ap.parse_args()
    os.environ.setdefault("CI", "true")
    import torch

    from advkit.audit.report_read import run_independent

    out: dict = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    runs = {}
    with tempfile.TemporaryDirectory(prefix="advkit-ray-bench-") as tmp:
        for ex in ("local", "ray"):  # each printed when done: a slow machine still shows one
            runs[ex] = _run(ex, Path(tmp), args.preset, args.quick, args.spec)
            w, doc, load = runs[ex]
            print(f"{ex}: {w:.1f} s (load average before {load[0][0]:.1f}, after "
                  f"{load[1][0]:.1f})", flush=True)
            if args.json:
                args.json.with_suffix(f".{ex}.json").write_text(json.dumps(
                    {"wall_s": w, "load": load, "tasks": doc["manifest"]["executor"]["tasks"]}))
    (lw, ldoc, lload), (rw, rdoc, rload) = runs["local"], runs["ray"]
    same = run_independent(ldoc) == run_independent(rdoc)
    ltasks = ldoc["manifest"]["executor"]["tasks"]
    rtasks = rdoc["manifest"]["executor"]["tasks"]
    parallel = sum(t["seconds"] for t in ltasks.values())
    serial = lw - parallel
    crit, chain = critical_path(ltasks)
    print(f"machine: {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"ray speed-up over local: {lw / rw:.2f}x")
    print(f"reports equal (run_independent): {same}")
    diffs = differences(run_independent(ldoc), run_independent(rdoc))
    for d in diffs[:30]:
        print(f"  differs at {d}")
    print(f"\n{'stage':58s} {'local s':>8s} {'ray s':>8s}  deps")
    for sid, t in sorted(ltasks.items(), key=lambda kv: -kv[1]["seconds"]):
        r = rtasks.get(sid, {}).get("seconds")
        print(f"{sid[:58]:58s} {t['seconds']:8.2f} {r if r is not None else float('nan'):8.2f}  "
              f"{', '.join(t['deps'])}")
    print(f"\nstages: {len(ltasks)}; sum of stage times P = {parallel:.1f} s; serial part "
          f"S = local wall - P = {serial:.1f} s ({serial / lw:.0%})")
    print(f"critical path C = {crit:.1f} s: {' -> '.join(chain)}")
    pred = {n: predicted(lw, serial, parallel, crit, n) for n in (4, 16, 64)}
    for n, s in pred.items():
        print(f"predicted speed-up on {n:2d} nodes: {s:.2f}x (S + max(P/{n}, C) = "
              f"{serial + max(parallel / n, crit):.1f} s)")
    print(f"limit (infinitely many nodes): {lw / (serial + crit):.2f}x")
    out.update(local_s=lw, ray_s=rw, load_local=lload, load_ray=rload, equal=same,
               serial_s=serial, parallel_s=parallel, critical_path_s=crit, critical_path=chain,
               predicted=pred, local_tasks=ltasks, differences=diffs,
               ray_tasks={k: {"seconds": v["seconds"], "pid": v["pid"]} for k, v in rtasks.items()})
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
