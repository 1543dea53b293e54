"""Worst case on LeNet/MNIST at L∞ eps 0.3: clean accuracy, PGD-40, APGD-CE, APGD-T and the ensemble.

The ensemble runs every attack on every point (``run_all``) so that its worst case can be compared
with each single attack's robust accuracy on the same points.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/worst_case.py [--n 1000] [--eps 0.3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import lenet_mnist  # noqa: E402

from advkit import registry  # noqa: E402
from advkit.evaluation.ensemble import run_ensemble  # noqa: E402
from advkit.models.io import target_for  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    model, ds = lenet_mnist(args.device)
    x, y = ds.x_test[: args.n].to(args.device), ds.y_test[: args.n].to(args.device)
    target = target_for(model, ds, batch_size=500)

    def gen():
        return torch.Generator(device=args.device).manual_seed(0)

    out = {"n": args.n, "eps": args.eps, "single": {}}
    for name, params in (("pgd", {"steps": 40}), ("apgd", {}), ("apgd-t", {})):
        res = registry.create(name, eps=args.eps, **params).attack(target, x, y, generator=gen())
        out["clean_accuracy"] = res.clean_accuracy().as_dict()
        out["single"][name] = res.robust_accuracy().as_dict()
    ens = run_ensemble(target, x, y, eps=args.eps, attacks=["pgd"], run_all=True, generator=gen())
    out["worst_case"] = ens.robust_accuracy().as_dict()
    out["stages"] = [{"label": s.label, "broken": s.broken, "single_robust": s.single_robust.value,
                      "seconds": s.seconds} for s in ens.stages]
    print(f"LeNet/MNIST, first {args.n} test points, L∞ eps {args.eps}")
    print(f"clean accuracy      {ens.clean_accuracy()}")
    for name, p in out["single"].items():
        print(f"{name:<20}{p['value']:.4f} (k={p['k']}, n={p['n']})")
    print(f"worst case          {ens.robust_accuracy()}")
    for s in out["stages"]:
        print(f"  stage {s['label']:<12} broke {s['broken']:>4}, alone {s['single_robust']:.4f}, "
              f"{s['seconds']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
