"""Square Attack, advkit vs torchattacks, over several seeds (LeNet/MNIST, 256 points, L∞ eps 0.3).

Square is random search: how many iterations it needs until the last point falls depends on the
random stream, and advkit's and torchattacks' streams differ, so one seed compares luck as much as
speed (with seed 0 torchattacks needs 241 queries per point at most, advkit 447). This runs both on
``--seeds`` seeds, interleaved (the order alternates), and reports median wall and CPU time per
library, and the time per 1000 point-queries (every row the model is fed, counted by a forward
hook, the libraries' own clean and scoring passes included), which factors the luck out. Needs the
benchmark venv (see benchmarks/README.md):

    OMP_NUM_THREADS=2 .venv-bench/bin/python benchmarks/compare_square_seeds.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import lenet_mnist  # noqa: E402

from advkit import registry  # noqa: E402
from advkit.models.io import target_for  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    cfg = ap.parse_args(argv)
    import torchattacks as ta

    torch.set_num_threads(cfg.threads)
    model, ds = lenet_mnist()
    x, y = ds.x_test[:cfg.n], ds.y_test[:cfg.n].long()
    target = target_for(model, ds, batch_size=cfg.n)
    ours = registry.create("square", eps=0.3, n_queries=cfg.queries, p_init=0.8)

    def run(lib, seed):
        if lib == "torchattacks":
            return ta.Square(model, norm="Linf", eps=0.3, n_queries=cfg.queries, n_restarts=1,
                             p_init=0.8, loss="margin", resc_schedule=True, seed=seed,
                             verbose=False)(x, y)
        return ours.attack(target, x, y, generator=torch.Generator().manual_seed(seed)).x_adv

    times = {"advkit": [], "torchattacks": []}
    rows_fed = {lib: [] for lib in times}
    count = [0, 0]  # rows fed, forward calls

    def hook(_m, inp, _out):
        count[0] += inp[0].shape[0]
        count[1] += 1

    model.register_forward_hook(hook)
    calls = {lib: [] for lib in times}
    for seed in range(cfg.seeds):
        for lib in (list(times) if seed % 2 == 0 else list(times)[::-1]):
            count[:] = [0, 0]
            w, c = time.perf_counter(), time.process_time()
            x_adv = run(lib, seed)
            times[lib].append((time.perf_counter() - w, time.process_time() - c))
            rows_fed[lib].append(count[0])
            calls[lib].append(count[1])
            with torch.no_grad():
                robust = (model(x_adv).argmax(1) == y).float().mean().item()
            print(f"{lib:<13} seed {seed}: {times[lib][-1][0]:.3f} s wall, "
                  f"{times[lib][-1][1]:.3f} s CPU, {rows_fed[lib][-1]} point-queries in "
                  f"{calls[lib][-1]} forward calls, robust accuracy "
                  f"{robust:.3f}", flush=True)
    out = {lib: {"median_wall": statistics.median(t[0] for t in ts),
                 "median_cpu": statistics.median(t[1] for t in ts),
                 "ms_per_1000_point_queries": 1e6 * sum(t[0] for t in ts) / sum(rows_fed[lib])}
           for lib, ts in times.items()}
    for lib, m in out.items():
        print(f"{lib:<13} median {m['median_wall']:.3f} s wall, {m['median_cpu']:.3f} s CPU "
              f"over {cfg.seeds} seeds, {m['ms_per_1000_point_queries']:.1f} ms per 1000 "
              f"point-queries, torch threads {cfg.threads}")
    return out


if __name__ == "__main__":
    main()
