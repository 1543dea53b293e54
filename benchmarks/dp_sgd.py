"""DP-SGD (Opacus) on digits: the accountant's epsilon against the LOSS attack's empirical
epsilon lower bound, leakage and utility against the same recipe without DP (issue 13, item 4).

For each noise multiplier of ``--sigmas`` (0: no DP): the recipe (an MLP on ``--n-train``
digits training images, Adam, ``--epochs`` epochs, batch ``--batch``, clipping norm 1, delta
1e-5, RDP accountant) trained through ``advkit.models.cache.train_recipe`` at one seed, then the
LOSS attack (Yeom et al. 2018) on the training images (members) and as many test images (non-
members): ROC AUC, TPR at 1 % FPR, the Jagielski et al. (2020) empirical epsilon lower bound.
Reported: accountant epsilon, empirical epsilon, AUC, TPR, train and test accuracy, training
seconds and their ratio to the run without DP (the per-example-gradient cost).

    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 19 .venv/bin/python benchmarks/dp_sgd.py
"""

from __future__ import annotations

import argparse
import json

import torch

from advkit.attacks.privacy.loss_threshold import LossThreshold
from advkit.data import load, subset_train
from advkit.evaluation.privacy import membership_metrics
from advkit.models.cache import Recipe, train_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=75)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 1.0, 4.0, 16.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=str, default=None)
    a = ap.parse_args()
    ds = subset_train(load("digits"), a.n_train, seed=a.seed)
    n = ds.x_train.shape[0]
    xo, yo = ds.x_test[:n], ds.y_test[:n]
    rows, plain_s = [], None
    for sigma in a.sigmas:
        dp = {"noise_multiplier": sigma, "max_grad_norm": 1.0, "delta": 1e-5} if sigma else None
        r = Recipe(zoo="mlp", epochs=a.epochs, batch_size=a.batch, lr=a.lr,
                   kwargs={"hidden": [a.hidden]}, dp=dp)
        model, facts = train_recipe(ds.x_train, ds.y_train, r, info=ds.info, seed=a.seed,
                                    cache=False)
        with torch.no_grad():
            p_in, p_out = model(ds.x_train).softmax(-1), model(xo).softmax(-1)
        att = LossThreshold()
        m = membership_metrics(att.scores_from_probabilities(p_in, ds.y_train).double(),
                               att.scores_from_probabilities(p_out, yo).double(), fprs=(0.01,))
        secs = facts["train_seconds"]
        plain_s = secs if sigma == 0 else plain_s
        row = {"sigma": sigma, "accountant_epsilon": facts.get("dp", {}).get("epsilon"),
               "empirical_epsilon": m.epsilon.epsilon, "auc": m.auc,
               "tpr_at_1%_fpr": m.tpr_at[0.01].tpr,
               "train_acc": float((p_in.argmax(1) == ds.y_train).double().mean()),
               "test_acc": float((p_out.argmax(1) == yo).double().mean()),
               "train_s": secs, "ratio_to_plain": secs / plain_s if plain_s else None}
        rows.append(row)
        print(json.dumps(row))
    print("| noise multiplier | accountant eps | empirical eps (LB) | LOSS AUC | TPR @1% FPR | "
          "train acc | test acc | train s | x plain |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        eps = "-" if r["accountant_epsilon"] is None else f"{r['accountant_epsilon']:.2f}"
        ratio = "-" if r["ratio_to_plain"] is None else f"{r['ratio_to_plain']:.1f}"
        print(f"| {r['sigma']:g} | {eps} | {r['empirical_epsilon']:.2f} | {r['auc']:.3f} | "
              f"{r['tpr_at_1%_fpr']:.3f} | {r['train_acc']:.3f} | {r['test_acc']:.3f} | "
              f"{r['train_s']:.1f} | {ratio} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
