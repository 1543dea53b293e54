"""Neural Cleanse on a BadNets LeNet/MNIST: time for all 10 classes and its ratio to the floor.

The floor (DESIGN §6) of a gradient search is its forward+backward passes: here every step runs
one forward+backward (gradient w.r.t. the stamped inputs) over (active classes x batch) images, so
floor = rows forwarded in all / rows of a full step x median time of one full step's
forward+backward, measured on the same model in the same run (the same stamping arithmetic
included, no optimiser). The backdoored LeNet comes from ``advkit.testing.backdoor_lab``
(its recipe and cache).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/neural_cleanse.py [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch
from torch import nn

from advkit.attacks.poisoning.badnets import BadNets
from advkit.data import load
from advkit.defenses.detectors.neural_cleanse import NeuralCleanse
from advkit.errors import AdvkitWarning
from advkit.testing import backdoor_lab


def step_time(model, x, k: int, b: int, repeats: int, gen) -> float:
    """Median seconds of one forward+backward over k x b stamped images (no optimiser)."""
    c, h, w = x.shape[1:]
    raw_m = torch.randn((k, 1, h, w), generator=gen)
    raw_p = torch.randn((k, c, h, w), generator=gen)
    tgt = torch.arange(k).repeat_interleave(b)
    times = []
    for i in range(repeats + 2):
        xb = x[torch.randint(len(x), (b,), generator=gen)]
        t0 = time.perf_counter()
        pm, pp = raw_m.clone().requires_grad_(True), raw_p.clone().requires_grad_(True)
        m, p = (torch.tanh(pm) + 1) / 2, (torch.tanh(pp) + 1) / 2
        xs = ((1 - m).unsqueeze(1) * xb.unsqueeze(0) + (m * p).unsqueeze(1)).reshape(-1, c, h, w)
        loss = nn.functional.cross_entropy(model(xs), tgt) + m.sum()
        torch.autograd.grad(loss, (pm, pp))
        if i >= 2:  # warm-up
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="Neural Cleanse runs (median reported)")
    ap.add_argument("--quick", action="store_true", help="digits/MLP instead of MNIST/LeNet")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = backdoor_lab.QUICK if args.quick else backdoor_lab.FULL
    ds = load(cfg["dataset"])
    x, y, xc, yc = backdoor_lab.split(ds, cfg, args.seed)
    p = BadNets(size=cfg["size"], target=0, rate=0.1).poison(
        x, y, rng=np.random.default_rng(args.seed))
    model, _, cached = backdoor_lab.train(cfg, ds.info, p.x, p.y, args.seed, "badnets")
    nc_params = dict(cfg["nc"])
    runs = []
    for r in range(args.repeats):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AdvkitWarning)
            nc = NeuralCleanse(**nc_params).fit(model, xc, yc,
                                                generator=torch.Generator().manual_seed(r))
        k, b = nc.n_classes_, nc.batch_size
        full = step_time(model, xc, k, b, 20, torch.Generator().manual_seed(r))
        floor = nc.rows_ / (k * b) * full
        runs.append(dict(seconds=nc.seconds_, steps=nc.steps_, rows=nc.rows_,
                         full_step_seconds=full, floor_seconds=floor,
                         ratio=nc.seconds_ / floor, flagged=nc.flagged_.tolist(),
                         target_index=float(nc.anomaly_index_[0])))
        print(json.dumps(runs[-1]), flush=True)
    med = {key: statistics.median(r[key] for r in runs)
           for key in ("seconds", "floor_seconds", "ratio", "steps", "rows")}
    print(json.dumps({"model": cfg["model"], "dataset": cfg["dataset"], "classes": 10,
                      "neural_cleanse": nc_params, "threads": torch.get_num_threads(),
                      "model_from_cache": cached, "median": med}, indent=1))


if __name__ == "__main__":
    main()
