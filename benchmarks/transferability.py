"""The transferability matrix (Papernot, McDaniel & Goodfellow 2016) on breast_cancer and digits.

Source family (rows) x victim family (columns): the share of the source's L∞ PGD examples that
the victim misclassifies, among test points both classify correctly, with 95 % Wilson intervals.
Decision tree, k-NN and the ensemble craft through a substitute trained from their labels with
Jacobian-based augmentation (Papernot et al. 2017). breast_cancer is min-max scaled to [0, 1] on
the training split; digits is divided by 16 and flattened (64 features). No downloads.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/transferability.py \
        --eps-cancer 0.1 --eps-digits 0.2 --n-test 200 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch


def data(name: str, seed: int):
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.preprocessing import MinMaxScaler

    if name == "breast_cancer":
        x, y = load_breast_cancer(return_X_y=True)
    else:
        x, y = load_digits(return_X_y=True)
        x = x / 16.0
    p = np.random.default_rng(seed).permutation(len(x))
    x, y = x[p], y[p]
    n = int(0.7 * len(x))
    if name == "breast_cancer":
        sc = MinMaxScaler().fit(x[:n])
        x = np.clip(sc.transform(x), 0, 1)
    return x[:n].astype(np.float32), y[:n], x[n:].astype(np.float32), y[n:]


def noise_baseline(xtr, ytr, xte, yte, eps: float, seed: int, draws: int = 5) -> dict:
    """Per family: median over ``draws`` of the share of correctly classified test points that
    uniform random ±eps sign noise (the same L∞ norm as the attacks) makes it misclassify."""
    from advkit.evaluation.metrics import proportion
    from advkit.evaluation.transferability import FAMILIES, fit_family
    from advkit.targets.base import InputContract

    c = InputContract(shape=(xtr.shape[1],), n_classes=int(max(ytr.max(), yte.max())) + 1)
    xt, yt = torch.from_numpy(xte), torch.from_numpy(yte).long()
    out = {}
    for fam in FAMILIES:
        m = fit_family(fam, xtr, ytr, c, seed=seed)  # the same model as in the matrix
        with torch.no_grad():
            ok = m.labels(xt) == yt
            rates = []
            for s in range(draws):
                g = torch.Generator().manual_seed(1000 + s)
                sign = torch.randint(0, 2, xt.shape, generator=g) * 2 - 1
                noisy = (xt + eps * sign).clamp(*c.bounds)
                rates.append(proportion(m.labels(noisy) != yt, within=ok).value)
        out[fam] = float(np.median(rates))
    return out


def main() -> None:
    from advkit.evaluation.transferability import transferability_matrix

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps-cancer", type=float, default=0.1)
    ap.add_argument("--eps-digits", type=float, default=0.2)
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the matrices to this file")
    a = ap.parse_args()
    warnings.simplefilter("ignore")  # sklearn convergence chatter
    print(f"torch threads: {torch.get_num_threads()}")
    out = {}
    for name, eps in (("breast_cancer", a.eps_cancer), ("digits", a.eps_digits)):
        xtr, ytr, xte, yte = data(name, a.seed)
        t0 = time.perf_counter()
        m = transferability_matrix(xtr, ytr, xte[:a.n_test], yte[:a.n_test], eps=eps,
                                   seed=a.seed)
        secs = time.perf_counter() - t0
        print(f"\n{name}: L∞ eps {eps}, PGD-20, {len(xte[:a.n_test])} test points, "
              f"{secs:.1f} s")
        print("clean accuracy: " + ", ".join(f"{k} {v:.3f}" for k, v in m.clean_accuracy.items()))
        print(f"substitute queries: {m.substitute_queries}")
        print(m.to_text())
        print("Wilson 95 % intervals (rows: sources):")
        for s, row in zip(m.source_labels, m.rates, strict=True):
            print(f"  {s}: " + "; ".join(str(c) for c in row))
        base = noise_baseline(xtr, ytr, xte[:a.n_test], yte[:a.n_test], eps, a.seed)
        print("random sign noise of the same L∞ norm (median of 5 draws), per victim: "
              + ", ".join(f"{k} {v:.3f}" for k, v in base.items()))
        out[name] = {**m.as_dict(), "noise_baseline": base}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
