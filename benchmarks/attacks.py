"""Gradient attacks on LeNet/MNIST at batch 256: time and ratio to the floor.

For each attack: the median time of ``--repeats`` runs and the median time of its floor (its
nominal passes × one forward+backward of the same model on the same batch), interleaved in the
same run, on wall-clock and on this process's CPU time. APGD runs twice: at eps 0.3 points leave
the batch once fooled (it beats the floor), at eps 0.001 nothing is fooled and every step runs on
the full batch (the honest per-step overhead). FGSM's one pass is followed by the forward that
scores the adversarial points, so its floor ratio cannot be below about 1 + forward/(fwd+bwd).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/attacks.py [--device cuda] [--repeats 5] [--json F]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import clocked, fwd, fwd_bwd, lenet_mnist, medians  # noqa: E402

from advkit import registry  # noqa: E402
from advkit.models.io import target_for  # noqa: E402

CASES = [  # (label, registry name, params, nominal forward+backward passes)
    ("fgsm", "fgsm", {"eps": 0.3}, 1),
    ("pgd-40", "pgd", {"eps": 0.3, "steps": 40, "step_size": 0.01}, 40),
    ("pgd-100", "pgd", {"eps": 0.3, "steps": 100, "step_size": 0.01}, 100),
    ("apgd-100 eps0.3", "apgd", {"eps": 0.3, "steps": 100}, 100),
    ("apgd-100 eps0.001", "apgd", {"eps": 0.001, "steps": 100}, 100),
]


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
    fwd_bwd(model, x, y, 5)  # warm-up
    unit = medians([clocked(lambda: fwd_bwd(model, x, y), args.device)[0] for _ in range(20)])
    fwd_only = medians([clocked(lambda: fwd(model, x), args.device)[0] for _ in range(20)])
    rows = {}
    for label, name, params, passes in CASES:
        attack = registry.create(name, **params)
        att, flo, res = [], [], None
        for r in range(args.repeats):
            gen = torch.Generator(device=args.device).manual_seed(r)
            t, res = clocked(lambda a=attack, g=gen: a.attack(target, x, y, generator=g), args.device)
            att.append(t)
            flo.append(clocked(lambda p=passes: fwd_bwd(model, x, y, p), args.device)[0])
        (aw, ac), (fw, fc) = medians(att), medians(flo)
        rows[label] = {"passes": passes, "passes_run": res.passes, "attack_wall_s": aw, "floor_wall_s": fw,
                       "ratio_wall": aw / fw, "attack_cpu_s": ac, "floor_cpu_s": fc, "ratio_cpu": ac / fc,
                       "robust_accuracy": res.robust_accuracy().value}
    out = {"device": str(args.device), "batch": args.batch, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "fwd_bwd_wall_s": unit[0], "fwd_wall_s": fwd_only[0],
           "attacks": rows}
    print(f"LeNet/MNIST, batch {args.batch}, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"one forward+backward {unit[0] * 1e3:.2f} ms, one forward {fwd_only[0] * 1e3:.2f} ms (medians)")
    print(f"{'attack':<19}{'passes':>7}{'ran':>5}{'time s':>9}{'floor s':>9}{'ratio':>7}{'ratio cpu':>10}"
          f"{'robust':>8}")
    for k, r in rows.items():
        print(f"{k:<19}{r['passes']:>7}{r['passes_run']:>5}{r['attack_wall_s']:>9.3f}{r['floor_wall_s']:>9.3f}"
              f"{r['ratio_wall']:>7.2f}{r['ratio_cpu']:>10.2f}{r['robust_accuracy']:>8.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
