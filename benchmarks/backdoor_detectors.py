"""Backdoor detectors against ground truth: BadNets on MNIST LeNet at several poisoning rates.

For each seed and rate (share of the 20,000-image training set poisoned; BadNets 3x3 white patch,
bottom-right, target 0, or with ``--attack blended`` Chen et al.'s blended noise key at alpha 0.1;
models from ``bd_models.py``, cached under /tmp):

- training-set sanitisers (label consistency against a model trained on the defender's clean
  data, activation clustering with exclusionary reclassification and with the paper's size rule,
  spectral signatures, SPECTRE): precision and recall of the flagged samples
  against the poisoned ones, the detector's time, then a LeNet retrained from scratch on the
  samples it kept (same recipe, cached): backdoor success and the clean-accuracy cost (poisoned
  model's clean accuracy minus the retrained one's, in points);
- fine-pruning (Liu 2018, max drop 4 points): backdoor success and clean accuracy after pruning and
  fine-tuning;
- STRIP (Gao 2019): threshold at 1 % FRR on 2,000 of the defender's clean images, FRR on 1,000
  clean test images and FAR on 1,000 triggered test images of classes other than the target.

``forward`` is the time of one forward pass of the model over the 20,000 training images (what the
activation-based sanitisers read once): the floor of their time.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/backdoor_detectors.py [--seeds 0 1 2]
        [--rates 0.01 0.05 0.1] [--attack badnets|blended] [--json out.jsonl] [--no-retrain]
    PYTHONPATH=src python benchmarks/backdoor_detectors.py --from-json out.jsonl  # tables only
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

os.environ.setdefault("ADVKIT_CACHE_DIR", "/tmp/advkit-bd-cache")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bd_models import poisoned_set, split, train_cached  # noqa: E402


def sanitisers():
    from advkit.defenses.detectors.activation_clustering import ActivationClustering
    from advkit.defenses.detectors.label_consistency import LabelConsistency
    from advkit.defenses.detectors.spectral import SpectralSignatures
    from advkit.defenses.detectors.spectre import Spectre

    return {
        "label consistency (trusted model)":
            lambda m, p, rng, xc, yc: LabelConsistency().fit(
                m, p.x, p.y, x_trusted=xc, y_trusted=yc,
                generator=torch.Generator().manual_seed(int(rng.integers(2**31 - 1)))),
        "activation clustering (reclassification)":
            lambda m, p, rng, xc, yc: ActivationClustering().fit(m, p.x, p.y, rng=rng),
        "activation clustering (size rule, ICA)":
            lambda m, p, rng, xc, yc: ActivationClustering(criterion="size", reduction="ica").fit(
                m, p.x, p.y, rng=rng),
        "spectral signatures": lambda m, p, rng, xc, yc: SpectralSignatures().fit(m, p.x, p.y),
        "SPECTRE": lambda m, p, rng, xc, yc: Spectre().fit(m, p.x, p.y),
    }


def run_one(ds, seed: int, rate: float, retrain: bool, emit, only: str | None = None,
            attack: str = "badnets") -> None:
    from advkit.attacks.poisoning.train import evaluate_poison
    from advkit.defenses.detectors.activation_clustering import layer_activations
    from advkit.defenses.detectors.fine_pruning import FinePruning
    from advkit.defenses.detectors.strip import Strip

    x, y, xc, yc = split(ds, seed)
    p = poisoned_set(x, y, rate, seed, attack)
    arch = "mlp" if attack == "tabular" else "lenet"
    model, _, _ = train_cached(ds.info, p.x, p.y, seed, f"{attack}-{rate}", arch)
    acc, succ = evaluate_poison(model, p, ds.x_test, ds.y_test)
    t0 = time.perf_counter()
    layer_activations(model, p.x)
    fwd = time.perf_counter() - t0
    base = dict(attack=attack, seed=seed, rate=rate, n_poisoned=p.n_poisoned,
                clean_accuracy=acc.value,
                backdoor_success=succ.value, forward_s=fwd)
    emit(dict(base, detector="none (poisoned model)"))
    for name, make in sanitisers().items():
        if only is not None and only not in name:
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det = make(model, p, np.random.default_rng(seed), xc, yc)
        secs = time.perf_counter() - t0
        prec, rec = det.score(p)
        row = dict(base, detector=name, precision=prec.value, recall=rec.value,
                   n_flagged=prec.n, seconds=secs)
        if retrain:
            keep = ~det.poisoned_mask_.bool()
            m2, _, _ = train_cached(ds.info, p.x[keep], p.y[keep], seed, f"retrain-{rate}",
                                    arch)
            a2, s2 = evaluate_poison(m2, p, ds.x_test, ds.y_test)
            row.update(retrained_success=s2.value, retrained_accuracy=a2.value,
                       accuracy_cost_points=100 * (acc.value - a2.value))
        emit(row)
    if only is not None:
        return
    from advkit.audit.poisoning_stages import default_layer

    fp = FinePruning(layer=default_layer(model)).fit(model, xc, yc, trigger=p.apply_trigger,
                                                     target=int(p.target),
                           generator=torch.Generator().manual_seed(seed))
    a3, s3 = evaluate_poison(fp.model_, p, ds.x_test, ds.y_test)
    emit(dict(base, detector="fine-pruning", seconds=fp.seconds_, retrained_success=s3.value,
              retrained_accuracy=a3.value, accuracy_cost_points=100 * (acc.value - a3.value),
              pruned=len(fp.pruned_channels_),
              curve=[(c["fraction_pruned"], c["clean_accuracy"], c["backdoor_success"])
                     for c in fp.curve_]))
    if attack == "tabular":  # STRIP superimposes images
        return
    st = Strip(frr=0.01).fit(model, xc[:2000], generator=torch.Generator().manual_seed(seed))
    xt = ds.x_test[:1000]
    xtr = p.apply_trigger(ds.x_test[1000:][ds.y_test[1000:] != 0][:1000])
    ev = st.evaluate(xt, xtr, generator=torch.Generator().manual_seed(seed + 1))
    emit(dict(base, detector="STRIP", seconds=st.seconds_, frr=ev["frr"].value,
              far=ev["far"].value, n_far=ev["far"].n))


def table(rows: list[dict]) -> str:
    head = ("| rate | seed | detector | precision | recall | success after | acc. cost (pts) "
            "| time (s) |\n|---|---|---|---|---|---|---|---|")
    out = [head]
    for r in rows:
        if r["detector"] == "STRIP":
            out.append(f"| {r['rate']:.0%} | {r['seed']} | STRIP (1 % FRR set) | FRR "
                       f"{r['frr']:.3f} | FAR {r['far']:.3f} | – | – | {r['seconds']:.0f} |")
            continue
        def f(k, fmt, r=r):
            return format(r[k], fmt) if k in r else "–"

        succ = f("retrained_success", ".3f") if "retrained_success" in r else (
            f"{r['backdoor_success']:.3f} (before)")
        out.append(f"| {r['rate']:.0%} | {r['seed']} | {r['detector']} | {f('precision', '.3f')} "
                   f"| {f('recall', '.3f')} | {succ} | {f('accuracy_cost_points', '.2f')} "
                   f"| {f('seconds', '.1f')} |")
    return "\n".join(out)


def summary(rows: list[dict]) -> str:
    """Per rate and detector over the seeds: each figure as its range (min-max)."""
    keys = ("precision", "recall", "retrained_success", "accuracy_cost_points", "seconds", "frr",
            "far")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["rate"], r["detector"]), []).append(r)
    out = ["| rate | detector | seeds | precision | recall | success after | acc. cost (pts) | "
           "time (s) | time / floor | STRIP FRR / FAR |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:  # the floor: one forward pass of the model over the 20,000 training images
        if "seconds" in r and r.get("forward_s"):
            r["floor_ratio"] = r["seconds"] / r["forward_s"]
    for (rate, det), rs in groups.items():
        cell = {}
        for k in (*keys, "floor_ratio"):
            v = [r[k] for r in rs if k in r and r[k] == r[k]]  # NaN: nothing flagged
            fmt = ".0f" if k in ("seconds", "floor_ratio") else \
                ".2f" if k == "accuracy_cost_points" else ".3f"
            cell[k] = ("–" if not v else format(min(v), fmt) if min(v) == max(v)
                       else f"{format(min(v), fmt)}–{format(max(v), fmt)}")
        if det.startswith("none"):
            v = [r["backdoor_success"] for r in rs]
            cell["retrained_success"] = f"{min(v):.3f}–{max(v):.3f} (before)"
        strip = f"{cell['frr']} / {cell['far']}" if det == "STRIP" else "–"
        out.append(f"| {rate:.0%} | {det} | {len(rs)} | {cell['precision']} | {cell['recall']} | "
                   f"{cell['retrained_success']} | {cell['accuracy_cost_points']} | "
                   f"{cell['seconds']} | {cell['floor_ratio']} | {strip} |")
    return "\n".join(out)


def main() -> None:
    from advkit.data import load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    ap.add_argument("--json", default=None, help="append one JSON line per result here")
    ap.add_argument("--no-retrain", action="store_true")
    ap.add_argument("--attack", choices=("badnets", "blended", "tabular"), default="badnets",
                    help="tabular: the tabular backdoor on UCI Adult with an MLP")
    ap.add_argument("--only", default=None,
                    help="run only the sanitisers whose name contains this (no fine-pruning, "
                         "no STRIP)")
    ap.add_argument("--from-json", nargs="+", default=None,
                    help="only print the tables of results written earlier with --json")
    args = ap.parse_args()
    rows: list[dict] = []
    if args.from_json:
        for name in args.from_json:
            with open(name) as fh:
                rows += [json.loads(line) for line in fh if line.strip()]
        rows.sort(key=lambda r: (r["rate"], r["seed"]))
        print(summary(rows))
        return
    ds = load("adult" if args.attack == "tabular" else "mnist")

    def emit(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    print(f"threads {torch.get_num_threads()}", flush=True)
    for seed in args.seeds:
        for rate in args.rates:
            run_one(ds, seed, rate, not args.no_retrain, emit, args.only, args.attack)
    print(table(rows))
    print(summary(rows))


if __name__ == "__main__":
    main()
