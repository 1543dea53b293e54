"""Query-based black-box attacks (HopSkipJump L2/L∞, Boundary, Sign-OPT, SimBA pixel/DCT, ZOO):
time against the forward-pass floor, success and median norm, on a digits CNN and a breast_cancer
random forest, all at the same per-point query budget.

The floor of a black-box attack is its number of queries times the per-sample time of one forward
pass of the same model at batch 256, measured in the same run (DESIGN §6; median of ``--repeats``
timings). Decision-based attacks query in many small batches (a binary-search step is one query a
point), so their ratio also holds the per-call cost of the model (large for scikit-learn forests,
whose predict_proba has a fixed cost per call).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/decision_attacks.py \
        [--n 100] [--queries 1000] [--only zoo sign-opt hopskipjump] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from advkit import registry
from advkit.targets.base import InputContract

CONFIGS = [  # (label, registry name, params); DCT only on images
    ("hopskipjump L2", "hopskipjump", {"norm": "l2"}),
    ("hopskipjump Linf", "hopskipjump", {"norm": "linf"}),
    ("boundary L2", "boundary", {}),
    ("simba pixel", "simba", {"basis": "pixel", "step": 0.2}),
    ("simba dct", "simba", {"basis": "dct", "step": 0.2}),
    ("sign-opt L2", "sign-opt", {}),
    ("zoo L2", "zoo", {}),
]
# the forest answers piecewise-constant scores: ZOO's difference quotient needs a step of the order
# of its split spacing (with the paper's h = 1e-4 it sees a zero derivative almost everywhere)
FOREST_PARAMS = {"zoo": {"h": 0.2, "learning_rate": 0.05}}


def digits_cnn(n: int):
    """(TorchTarget, x, y, per-sample forward seconds fn): cnn-small trained on digits."""
    from advkit.audit.spec import ModelSpec
    from advkit.data import load
    from advkit.models.cache import trained_zoo_model
    from advkit.targets.torch import TorchTarget

    ds = load("digits")
    model, _ = trained_zoo_model(ds, ModelSpec(zoo="cnn-small", epochs=10), seed=0,
                                 progress=False)
    model.eval()
    target = TorchTarget(ds.contract(), model=model)
    x, y = ds.x_test[:n].float(), ds.y_test[:n].long()

    def forward(batch):
        with torch.no_grad():
            model(batch)

    return target, x, y, forward, ds.x_test[:256].float()


def breast_cancer_forest(n: int):
    """(SklearnTarget, x, y, forward fn, batch): a 100-tree random forest, inputs in [0, 1]."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier

    from advkit.targets.sklearn import SklearnTarget

    xs, ys = load_breast_cancer(return_X_y=True)
    xs = (xs - xs.min(0)) / (xs.max(0) - xs.min(0))
    perm = np.random.default_rng(0).permutation(len(xs))
    tr, te = perm[:400], perm[400:]
    rf = RandomForestClassifier(n_estimators=100, random_state=0).fit(xs[tr], ys[tr])
    target = SklearnTarget(InputContract(shape=(30,), n_classes=2), estimator=rf)
    x = torch.tensor(xs[te][:n], dtype=torch.float32)
    y = torch.tensor(ys[te][:n])
    batch = torch.tensor(np.resize(xs[te], (256, 30)), dtype=torch.float32)
    return target, x, y, lambda b: rf.predict_proba(b.numpy()), batch


def per_sample_forward(forward, batch, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        forward(batch)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) / batch.shape[0]


def run(model_name: str, build, args) -> list[dict]:
    target, x, y, forward, batch = build(args.n)
    rows = []
    for label, name, params in CONFIGS:
        if name == "simba" and params.get("basis") == "dct" and x.dim() < 4:
            continue
        if args.only and name not in args.only:
            continue
        if x.dim() < 4:
            params = {**params, **FOREST_PARAMS.get(name, {})}
        attack = registry.create(name, max_queries=args.queries, **params)
        target.reset_queries()
        w, c = time.perf_counter(), time.process_time()
        res = attack.attack(target, x, y, generator=torch.Generator().manual_seed(0))
        wall, cpu = time.perf_counter() - w, time.process_time() - c
        per = per_sample_forward(forward, batch, args.repeats)  # same run, right after
        queries = int(res.extra["queries"].sum())  # the attack's own (no scoring pass)
        floor = queries * per
        fooled = res.success & (res.clean_pred == y)
        row = {"model": model_name, "attack": label, "points": int(x.shape[0]),
               "max_queries": args.queries, "queries": queries, "seconds": wall,
               "cpu_seconds": cpu, "floor_seconds": floor, "ratio": wall / floor,
               "success": res.success_rate().value,
               "median_norm": float(res.distance[fooled].median()) if fooled.any() else None,
               "norm": "Linf" if res.norm == float("inf") else "L2"}
        rows.append(row)
        med = "-" if row["median_norm"] is None else f"{row['median_norm']:.3f}"
        print(f"| {model_name} | {label} | {row['points']} | {queries} | {wall:.2f} | "
              f"{floor:.2f} | {wall / floor:.1f} | {row['success']:.3f} | {med} "
              f"({row['norm']}) |", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="points per model")
    ap.add_argument("--queries", type=int, default=1000, help="max queries per point")
    ap.add_argument("--repeats", type=int, default=7, help="timings of the forward floor")
    ap.add_argument("--only", nargs="*", default=None, help="registry names to run (all: none)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    print(f"threads {torch.get_num_threads()} (OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS')}); load {os.getloadavg()[0]:.2f}")
    print("| model | attack | points | queries | seconds | floor s | ratio | success | "
          "median norm |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = run("digits cnn-small", digits_cnn, args) + run("breast_cancer RF-100",
                                                          breast_cancer_forest, args)
    print(f"load after {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
