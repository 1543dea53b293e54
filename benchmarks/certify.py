"""CERTIFY throughput (randomized smoothing) against the forward-only floor.

The floor of certification is its count of forward passes (DESIGN §6): CERTIFY on m points draws
m * (n0 + n) noisy copies, ``--batch-size`` per forward pass. The floor is the time of the model's
forward passes alone over the same number of batches of the same sizes (inputs made beforehand);
CERTIFY's time adds drawing the noise, counting the votes and the Clopper-Pearson bounds. Each
figure is the median of ``--repeats`` runs, floors and certifications interleaved; the ratio
floor / certify is the throughput as a share of the floor (the bar is >= 0.9). The median of the
per-pair ratios is printed too (steadier when other work shares the CPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/certify.py [--model cnn-madry] [--device cuda]
        [--weights FOLDER]   # a model saved with advkit.models.io.save_model (else untrained)

With ``--weights`` and ``--data mnist`` it also prints the certified accuracy curve of the points.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from advkit.defenses.certify.smoothing import (
    RandomizedSmoothing,
    certified_accuracy_curve,
    radii_grid,
)
from advkit.evaluation.metrics import is_nonincreasing
from advkit.models.zoo import build
from advkit.targets.base import InputContract
from advkit.targets.torch import TorchTarget


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def batch_sizes(m: int, num: int, batch: int) -> list[int]:
    total = m * num
    return [min(batch, total - s) for s in range(0, total, batch)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="cnn-madry")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--data", default=None, help="mnist: certify real test points")
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)

    if args.weights:
        from advkit.models.io import load_model

        model = load_model(args.weights).model
    else:
        model = build(args.model, input_shape=(1, 28, 28), n_classes=10,
                      generator=torch.Generator().manual_seed(args.seed))
    model = model.to(dev).eval()
    contract = InputContract(shape=(1, 28, 28), n_classes=10)
    target = TorchTarget(contract, model=model, batch_size=args.batch_size)
    if args.data:
        from advkit.data import load

        ds = load(args.data)
        x, y = ds.x_test[:args.points].to(dev), ds.y_test[:args.points]
    else:
        x = torch.rand((args.points, 1, 28, 28), generator=torch.Generator().manual_seed(1))
        x, y = x.to(dev), None
    rs = RandomizedSmoothing(sigma=args.sigma, n0=args.n0, n=args.n, batch_size=args.batch_size)
    sizes = batch_sizes(args.points, args.n0, args.batch_size) + \
        batch_sizes(args.points, args.n, args.batch_size)
    noisy = {b: (x[:1].expand(b, -1, -1, -1) + args.sigma * torch.randn(
        (b, 1, 28, 28), generator=torch.Generator().manual_seed(2)).to(dev)).contiguous()
        for b in set(sizes)}

    def floor():
        with torch.no_grad():
            for b in sizes:
                model(noisy[b]).argmax(1)

    def certify():
        return rs.certify(target, x, generator=torch.Generator(device=dev).manual_seed(args.seed))

    floor()
    certify()
    t_floor, t_cert, res = [], [], None
    for _ in range(args.repeats):
        _sync(dev)
        t0 = time.perf_counter()
        floor()
        _sync(dev)
        t_floor.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = certify()
        _sync(dev)
        t_cert.append(time.perf_counter() - t0)
    f, c = statistics.median(t_floor), statistics.median(t_cert)
    samples = args.points * (args.n0 + args.n)
    print(f"model {args.model}{' (' + args.weights + ')' if args.weights else ' (untrained)'} on "
          f"{dev}, torch threads {torch.get_num_threads()}: {args.points} points x (n0 {args.n0} "
          f"+ n {args.n}) = {samples} samples, batch {args.batch_size}, {len(sizes)} forwards")
    print(f"floor (forward only) median {f:.3f}s  certify median {c:.3f}s  "
          f"throughput ratio floor/certify {f / c:.3f}  ({samples / c:.0f} samples/s)")
    paired = statistics.median(a / b for a, b in zip(t_floor, t_cert, strict=True))
    print(f"median of the paired ratios (each floor run / the certify run right after it, robust "
          f"to load drifting on a shared machine) {paired:.3f}")
    print(f"floor runs {[round(t, 3) for t in t_floor]}  "
          f"certify runs {[round(t, 3) for t in t_cert]}")
    print(f"queries counted {res.queries} (expected {samples})")
    out = {"floor_s": f, "certify_s": c, "ratio": f / c, "paired_ratio": paired,
           "samples": samples}
    if y is not None:
        radii = radii_grid(rs.max_radius(), 10)
        curve = certified_accuracy_curve(res, y, radii)
        print("certified accuracy: " + ", ".join(f"r={r:.2f}: {p.value:.3f}"
                                                   for r, p in zip(radii, curve, strict=True)))
        print(f"non-increasing: {is_nonincreasing([p.value for p in curve])}; abstained "
              f"{int(res.abstained.sum())}/{args.points}")
        out["curve"] = [p.value for p in curve]
    return out


if __name__ == "__main__":
    main()
