"""Shadow models for membership inference: 16 MLPs trained together (one vmap pass over stacked
parameters) against one by one (a torch.optim.Adam loop per model), on digits.

Both paths draw the same initial weights, membership halves and batch order from one seed
(``advkit.attacks.privacy.shadow``), so they train the same models; the script checks that (the
largest logit difference and the LiRA online AUC of model 0 against the others, both ways) and
reports the median wall time of each path over interleaved repeats, and their ratio.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/shadow_models.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from advkit.attacks.privacy.lira import LiRA
from advkit.attacks.privacy.shadow import ShadowTrainer
from advkit.data import load
from advkit.evaluation.privacy import membership_metrics
from advkit.models.zoo import build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=16)
    ap.add_argument("--pool", type=int, default=1000, help="digits training points in the pool")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    d = load("digits")
    x, y = d.x_train[: a.pool], d.y_train[: a.pool]

    def make(g):
        return build("mlp", input_shape=tuple(x.shape[1:]), n_classes=10, generator=g,
                     hidden=(a.hidden,))

    times: dict[str, list[float]] = {"together": [], "one-by-one": []}
    last = {}
    for _ in range(a.repeats):
        for name, vec in (("together", True), ("one-by-one", False)):  # interleaved
            tr = ShadowTrainer(n_models=a.models, epochs=a.epochs, batch_size=a.batch_size,
                               vectorized=vec)
            t0 = time.perf_counter()
            last[name] = tr.train(make, x, y, generator=torch.Generator().manual_seed(a.seed))
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    aucs = {}
    for name, s in last.items():
        net = s.model(0)
        r = LiRA().scores(lambda v, net=net: torch.softmax(net(v), 1), x, y, s, exclude=0)
        sc, mem = r.scores["online"], s.masks[0]
        aucs[name] = membership_metrics(sc[mem], sc[~mem]).auc
    diff = float((last["together"].logits(x) - last["one-by-one"].logits(x)).abs().max())
    out = {"threads": torch.get_num_threads(), "models": a.models, "pool": a.pool,
           "epochs": a.epochs, "batch_size": a.batch_size, "hidden": a.hidden,
           "median_s": med, "times_s": times, "ratio": med["one-by-one"] / med["together"],
           "max_logit_diff": diff, "lira_online_auc_model0": aucs}
    print(f"threads={out['threads']} models={a.models} pool={a.pool} epochs={a.epochs} "
          f"batch={a.batch_size} hidden={a.hidden}")
    for k in times:
        print(f"{k:11s} median {med[k]:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times[k])})"
              f"  LiRA online AUC of model 0: {aucs[k]:.4f}")
    print(f"ratio one-by-one / together: {out['ratio']:.2f}x; max |logit difference| {diff:.2e}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
