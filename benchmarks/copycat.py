"""Copycat on MNIST LeNet: fidelity and time at 100 / 300 / 1,000 / 3,000 queries (issue 13).

The victim is a LeNet trained with ``advkit.models.train`` on all of MNIST (``--victim-epochs``,
seed 0), cached under ``/tmp/advkit-copycat-victim`` (safetensors, ``advkit.models.io``). The
attacker steals it with Copycat (Correia-Silva et al. 2018; a LeNet substitute trained on the
victim's labels only) for each query choice: ``random`` (uniform images), ``natural`` (Fashion-
MNIST test images: another dataset, as Copycat's non-problem-domain data) and ``adaptive``
(Knockoff Nets' gradient bandit over k-means clusters of the same Fashion-MNIST pool). Reported
per run: fidelity on the MNIST test split and on uniform images, the stolen model's test
accuracy, queries spent and the wall time of the extraction (querying + training).

    OMP_NUM_THREADS=2 PYTHONPATH=src .venv/bin/python benchmarks/copycat.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from advkit.attacks.privacy.copycat import Copycat
from advkit.data import load
from advkit.evaluation.fidelity import evaluate_extraction
from advkit.models.io import load_model, save_model
from advkit.models.train import evaluate_accuracy, train
from advkit.models.zoo import build
from advkit.targets.torch import TorchTarget

CACHE = Path("/tmp/advkit-copycat-victim")


def victim(ds, epochs: int):
    if (CACHE / "model.safetensors").exists():
        return load_model(CACHE).model.eval()
    g = torch.Generator().manual_seed(0)
    model = build("lenet", input_shape=(1, 28, 28), n_classes=10, generator=g)
    train(model, ds.x_train, ds.y_train, epochs=epochs, batch_size=128, lr=1e-3, generator=g,
          progress=False)
    save_model(model.eval(), CACHE, dataset_info=ds.info)
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="100,300,1000,3000")
    ap.add_argument("--strategies", default="random,natural,adaptive")
    ap.add_argument("--victim-epochs", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ds = load("mnist")
    t0 = time.perf_counter()
    model = victim(ds, args.victim_epochs)
    acc = evaluate_accuracy(model, ds.x_test, ds.y_test)
    print(f"victim LeNet: test accuracy {acc:.4f} ({time.perf_counter() - t0:.1f} s to "
          f"load or train); threads {torch.get_num_threads()}")
    pool = load("fashion_mnist").x_test
    rows = []
    for strategy in args.strategies.split(","):
        for n in (int(b) for b in args.budgets.split(",")):
            target = TorchTarget(ds.contract(), model=model)
            atk = Copycat(queries=n, strategy=strategy, architecture="lenet",
                          epochs=args.epochs, rounds=5)
            t1 = time.perf_counter()
            res = atk.steal(target, pool=None if strategy == "random" else pool,
                            generator=torch.Generator().manual_seed(0))
            dt = time.perf_counter() - t1
            rep = evaluate_extraction(target, res.model, ds.x_test, ds.y_test,
                                      queries=res.queries, n_uniform=2000,
                                      generator=torch.Generator().manual_seed(1))
            row = {"strategy": strategy, "budget": n, "queries": res.queries, "seconds": dt,
                   "fidelity_test": rep.test.value, "fidelity_uniform": rep.uniform.value,
                   "accuracy": rep.accuracy.value}
            rows.append(row)
            print(f"| {strategy} | {n} | {res.queries} | {rep.test.value:.4f} | "
                  f"{rep.uniform.value:.4f} | {rep.accuracy.value:.4f} | {dt:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"victim_accuracy": acc, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
