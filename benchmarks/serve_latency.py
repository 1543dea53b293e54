"""``advkit serve`` latency: a playground round trip of PGD-40 on the default digits model, and a
page load, over real HTTP (uvicorn in a thread on 127.0.0.1, httpx as the client).

Each figure is the median of ``--repeats`` requests after one warm-up (which loads or trains the
default model: about 15 s on 2 cores the first time, then read from the advkit cache). The floor
of the round trip is PGD-40's 40 forward+backward passes plus the 3 forward passes that score it,
on the same model and the same one input, measured in the same run (``benchmarks/common.py``); the
ratio shows what the web layer (JSON, PNG encoding, top-5s, HTTP) adds.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/serve_latency.py [--repeats 21]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import fwd, fwd_bwd  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    import httpx
    import uvicorn

    from advkit.serve.web.app import WebOptions, build_app

    tmp = Path(tempfile.mkdtemp(prefix="advkit-serve-bench-"))
    app = build_app(WebOptions(history=tmp / "history.sqlite", runs_dir=tmp / "runs",
                               scan_cache=False))
    port = _port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=srv.run, daemon=True).start()
    while not srv.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    body = {"model": "default", "sample": 0, "attack": "pgd",
            "params": {"eps": "0.1", "steps": "40", "restarts": "1"}}
    times: dict[str, list[float]] = {"pgd40_round_trip": [], "page_load": [], "floor": []}
    with httpx.Client(timeout=300) as client:
        t0 = time.perf_counter()
        r = client.post(base + "/api/attack", json=body)  # warm-up: loads (or trains) the model
        r.raise_for_status()
        warm = time.perf_counter() - t0
        client.get(base + "/").raise_for_status()
        target, ds = app.state.models.load("default")
        model, x, y = target.model, ds.x_test[:1], ds.y_test[:1]
        for _ in range(args.repeats):  # interleaved: load changes hit all three alike
            t = time.perf_counter()
            client.post(base + "/api/attack", json=body).raise_for_status()
            times["pgd40_round_trip"].append(time.perf_counter() - t)
            t = time.perf_counter()
            client.get(base + "/").raise_for_status()
            times["page_load"].append(time.perf_counter() - t)
            t = time.perf_counter()
            fwd_bwd(model, x, y, passes=40)
            fwd(model, x, passes=3)
            times["floor"].append(time.perf_counter() - t)
    srv.should_exit = True
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"threads": torch.get_num_threads(), "repeats": args.repeats, "warm_up_s": warm,
           **{f"{k}_median_s": v for k, v in med.items()},
           "round_trip_over_floor": med["pgd40_round_trip"] / med["floor"]}
    for k, v in out.items():
        print(f"{k:28s} {v:.4f}" if isinstance(v, float) else f"{k:28s} {v}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
