"""FGSM and PGD on LeNet/MNIST at batch 256: time and ratio to the floor.

The floor of a gradient attack is its number of forward+backward passes times the time of one
forward+backward of the same model on the same batch, measured in the same run (DESIGN §6).
Usage: python benchmarks/attacks.py [--device cuda] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import fwd_bwd_time, fwd_time, lenet_mnist, median_time  # noqa: E402

from advkit import registry  # noqa: E402
from advkit.models.io import target_for  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)

    model, ds = lenet_mnist(args.device)
    x = ds.x_test[: args.batch].to(args.device)
    y = ds.y_test[: args.batch].to(args.device)
    target = target_for(model, ds, batch_size=args.batch)
    fb = fwd_bwd_time(model, x, y)
    fw = fwd_time(model, x)
    rows = {}
    for name, params, passes in [
        ("fgsm", {"eps": 0.3}, 1),
        ("pgd", {"eps": 0.3, "steps": 40, "step_size": 0.01}, 40),
        ("pgd", {"eps": 0.3, "steps": 100, "step_size": 0.01}, 100),
    ]:
        attack = registry.create(name, **params)
        gen = torch.Generator(device=args.device).manual_seed(0)
        t = median_time(
            lambda a=attack, g=gen: a.attack(target, x, y, generator=g),
            repeats=args.repeats,
            device=args.device,
        )
        res = attack.attack(target, x, y, generator=gen)
        floor = passes * fb
        key = f"{name}-{params.get('steps', 1)}"
        rows[key] = {
            "seconds": t,
            "floor_seconds": floor,
            "ratio": t / floor,
            "passes": passes,
            "robust_accuracy": res.robust_accuracy().value,
        }
    out = {
        "device": str(args.device),
        "batch": args.batch,
        "fwd_bwd_seconds": fb,
        "fwd_seconds": fw,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "attacks": rows,
    }
    print(
        f"LeNet/MNIST, batch {args.batch}, device {args.device}, torch threads {torch.get_num_threads()}"
    )
    print(f"forward+backward {fb * 1e3:.2f} ms, forward {fw * 1e3:.2f} ms (medians)")
    print(
        f"{'attack':<10} {'passes':>6} {'time s':>9} {'floor s':>9} {'ratio':>6} {'robust acc':>10}"
    )
    for k, r in rows.items():
        print(
            f"{k:<10} {r['passes']:>6} {r['seconds']:>9.4f} {r['floor_seconds']:>9.4f} {r['ratio']:>6.2f} "
            f"{r['robust_accuracy']:>10.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
