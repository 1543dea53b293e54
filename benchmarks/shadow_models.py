"""Shadow models for membership inference: 16 MLPs trained together (one vmap pass over stacked
parameters) against one by one (a torch.optim.Adam loop per model), on digits.

Both paths draw the same initial weights, membership halves and batch order from one seed
(``advkit.attacks.privacy.shadow``), so they train the same models; the script checks that (the
largest logit difference and the LiRA online AUC of model 0 against the others, both ways) and
reports the median wall time of each path over interleaved repeats, and their ratio.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/shadow_models.py [--repeats 3]

``--attacks T`` then compares the attacks on these overfit MLPs (100 % train accuracy): models
0..T-1 are each the target in turn, the other ``--models - 1`` its shadow/reference models
(leave-one-out, Carlini et al. 2022), population points for RMIA are digits test points; members
and non-members of the T targets are pooled, and AUC, TPR at 0.1 % and 1 % FPR (Clopper-Pearson
95 %) and the ε lower bound are printed per attack (with Shokri et al. 2017's per-class attack
models trained on the other models, and the label-only translation and noise attacks of
Choquette-Choo et al. 2021; ``--label-queries Q`` adds its boundary-distance attack at Q label
queries a point).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from advkit.attacks.privacy.entropy import ModifiedEntropy
from advkit.attacks.privacy.label_only import LabelOnly
from advkit.attacks.privacy.lira import LiRA
from advkit.attacks.privacy.loss_threshold import LossThreshold
from advkit.attacks.privacy.rmia import RMIA
from advkit.attacks.privacy.shadow import ShadowTrainer
from advkit.attacks.privacy.shokri import Shokri
from advkit.data import load
from advkit.evaluation.privacy import membership_metrics
from advkit.models.zoo import build
from advkit.targets import InputContract, TorchTarget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=16)
    ap.add_argument("--pool", type=int, default=1000, help="digits training points in the pool")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attacks", type=int, default=0, metavar="T",
                    help="also compare the attacks, each of models 0..T-1 the target in turn")
    ap.add_argument("--label-queries", type=int, default=0, metavar="Q",
                    help="with --attacks: also the label-only boundary attack at Q queries a point")
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
    if a.attacks:
        out["attacks"] = compare_attacks(last["together"], x, y, d.x_test, d.y_test, a.attacks,
                                         a.label_queries)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


def compare_attacks(s, x, y, z, yz, n_targets: int, label_queries: int = 0) -> dict:
    probs = torch.softmax(s.logits(x).double(), -1)  # every model's, for Shokri's attack models
    contract = InputContract(shape=tuple(x.shape[1:]), n_classes=10)
    pooled: dict[str, tuple[list, list]] = {}
    accs = []
    for t in range(n_targets):
        net, mem = s.model(t), s.masks[t]
        with torch.no_grad():
            pred = net(x).argmax(1)
        accs.append(((pred == y)[mem].float().mean().item(), (pred == y)[~mem].float().mean().item()))

        def f(v, net=net):
            return torch.softmax(net(v), 1)

        sc = {"loss": LossThreshold().scores(f, x, y), "modified-entropy":
              ModifiedEntropy().scores(f, x, y)}
        sc.update({f"lira-{k}": v for k, v in LiRA().scores(f, x, y, s, exclude=t).scores.items()})
        sc.update({f"rmia-{k}": v for k, v in RMIA().scores(f, x, y, s, z, yz, exclude=t).items()})
        g = torch.Generator().manual_seed(t)
        sc["shokri-logistic"] = Shokri().fit(probs, y, s.masks, generator=g, exclude=t).scores(f, x, y)
        target = TorchTarget(contract, model=net)  # LabelOnly asks its labels only
        sc["label-only-translate"] = LabelOnly().scores(target, x, y, generator=g).scores
        sc["label-only-noise"] = LabelOnly(augmentation="noise").scores(target, x, y,
                                                                        generator=g).scores
        if label_queries:
            sc["label-only-boundary"] = LabelOnly(variant="boundary", max_queries=label_queries
                                                  ).scores(target, x, y, generator=g).scores
        for k, v in sc.items():
            pooled.setdefault(k, ([], []))[0].append(v[mem])
            pooled[k][1].append(v[~mem])
    print(f"targets 0..{n_targets - 1}: train accuracy "
          f"{min(a for a, _ in accs):.3f}-{max(a for a, _ in accs):.3f}, "
          f"held-out accuracy {min(b for _, b in accs):.3f}-{max(b for _, b in accs):.3f}")
    res = {}
    for k, (m, n) in pooled.items():
        r = membership_metrics(torch.cat(m), torch.cat(n), label=k)
        res[k] = r.to_dict()
        t1, t01 = r.tpr_at[0.01], r.tpr_at[0.001]
        print(f"{k:32s} AUC {r.auc:.3f}  TPR@1% {t1.tpr:.3f} [{t1.ci_low:.3f}, {t1.ci_high:.3f}]"
              f"  TPR@0.1% {t01.tpr:.3f} [{t01.ci_low:.3f}, {t01.ci_high:.3f}]"
              f"  adv {r.advantage:.3f}  eps_LB {r.epsilon.epsilon:.2f}"
              f"  (n {r.n_members}/{r.n_nonmembers})")
    return {"accuracy_train_heldout": accs, "metrics": res}


if __name__ == "__main__":
    main()
