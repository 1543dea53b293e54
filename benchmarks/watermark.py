"""Trigger-set watermark (Adi et al. 2018) on digits: claims and their survival (issue 13, item 5).

For each architecture and seed: a marked model (trained from scratch on the digits training split
plus ``--repeat`` copies of a k-image trigger set of uniform noise with random labels), the
fine-tune variant (a clean model trained ``--epochs``, then ``--embed-epochs`` more on data +
triggers) and an independent clean model (another seed, same recipe, no triggers). Each is
verified on the marked model's trigger set: agreements out of k and the exact false-claim
probability P[Binomial(k, 1/10) >= agreements]. The marked model is then attacked:

- fine-tuning on the clean training split (``--ft-epochs`` at learning rates ``--ft-lrs``);
- per-layer magnitude pruning at ``--prune-rates``;
- Copycat extraction (an MLP substitute trained on the marked model's labels) with ``natural``
  queries (the digits training images, unlabelled: an attacker holding in-distribution data) and
  ``random`` queries (uniform noise, the same distribution as the triggers) at ``--budgets``.

Reported per row: median agreements, median and max false-claim probability, claims out of seeds,
median test accuracy.

    OMP_NUM_THREADS=2 PYTHONPATH=src nice -n 19 .venv/bin/python benchmarks/watermark.py [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from advkit.attacks.poisoning.train import predict
from advkit.attacks.privacy.copycat import Copycat
from advkit.data import load
from advkit.defenses.watermark import TriggerSetWatermark, fine_tune, prune
from advkit.models.train import train
from advkit.models.zoo import build
from advkit.targets.torch import TorchTarget

LR = 3e-3


def _ints(s):
    return [int(v) for v in s.split(",") if v]


def _floats(s):
    return [float(v) for v in s.split(",") if v]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="mlp,cnn-small")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--embed-epochs", type=int, default=3)
    ap.add_argument("--ft-epochs", default="1,5")
    ap.add_argument("--ft-lrs", default="1e-4,1e-3")
    ap.add_argument("--prune-rates", default="0.3,0.5,0.7,0.9")
    ap.add_argument("--budgets", default="300,1000,3000")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ds = load("digits")
    shape, c = tuple(ds.info.shape), ds.info.n_classes
    x, y, xt, yt = ds.x_train, ds.y_train, ds.x_test, ds.y_test
    wm = TriggerSetWatermark(k=args.k, repeat=args.repeat)
    results: dict[tuple, list[dict]] = {}

    def add(arch, what, setting, model, trig):
        v = wm.verify(model, trig)
        acc = float((predict(model, xt) == yt).float().mean())
        results.setdefault((arch, what, setting), []).append(
            {"agreements": v.agreements, "p": v.p_value, "claimed": v.claimed, "acc": acc})

    t0 = time.perf_counter()
    for arch in args.archs.split(","):
        kw = {"hidden": (64,)} if arch == "mlp" else {}
        for seed in range(args.seeds):
            g = torch.Generator().manual_seed(seed)
            trig = wm.trigger_set(shape, c, generator=g)
            marked = build(arch, input_shape=shape, n_classes=c, generator=g, **kw)
            wm.embed(marked, x, y, trig, epochs=args.epochs, lr=LR, generator=g)
            marked.eval()
            add(arch, "marked (from scratch)", None, marked, trig)
            gi = torch.Generator().manual_seed(1000 + seed)
            ind = build(arch, input_shape=shape, n_classes=c, generator=gi, **kw)
            train(ind, x, y, epochs=args.epochs, lr=LR, generator=gi, progress=False)
            add(arch, "independent", None, ind.eval(), trig)
            wm.embed(ind, x, y, trig, epochs=args.embed_epochs, lr=LR, generator=gi)
            add(arch, f"marked (fine-tune variant, {args.embed_epochs} ep)", None, ind.eval(),
                trig)
            for lr in _floats(args.ft_lrs):
                for e in _ints(args.ft_epochs):
                    add(arch, "fine-tune", f"{e} ep, lr {lr:g}",
                        fine_tune(marked, x, y, epochs=e, lr=lr, generator=g), trig)
            for r in _floats(args.prune_rates):
                add(arch, "prune", f"{r:g}", prune(marked, r), trig)
            victim = TorchTarget(ds.contract(), model=marked)
            for strategy in ("natural", "random"):
                for q in _ints(args.budgets):
                    if strategy == "natural" and q > x.shape[0]:
                        continue
                    cc = Copycat(queries=q, strategy=strategy, architecture="mlp", hidden=(64,),
                                 epochs=10, min_steps=300, batch_size=32, lr=3e-3)
                    stolen = cc.steal(victim, pool=x if strategy == "natural" else None,
                                      generator=g).model.eval()
                    add(arch, f"copycat {strategy}", f"{q} queries", stolen, trig)
            print(f"{arch} seed {seed} done at {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    print(f"\n| model | variant | setting | agreements (median of {args.k}) | false-claim p "
          "median | p max | claimed | test acc |")
    print("|---|---|---|---|---|---|---|---|")
    for (arch, what, setting), rs in results.items():
        med = statistics.median(r["agreements"] for r in rs)
        pm = statistics.median(r["p"] for r in rs)
        px = max(r["p"] for r in rs)
        cl = sum(r["claimed"] for r in rs)
        acc = statistics.median(r["acc"] for r in rs)
        rows.append({"arch": arch, "variant": what, "setting": setting, "runs": rs})
        print(f"| {arch} | {what} | {setting or ''} | {med:g} | {pm:.2g} | {px:.2g} | "
              f"{cl}/{len(rs)} | {acc:.3f} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s, threads {torch.get_num_threads()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"k": args.k, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
