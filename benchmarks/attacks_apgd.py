"""PGD / APGD on LeNet-MNIST: robust accuracy at L∞ eps 0.3, and time as a ratio to the floor.

Quality (first ``--n`` test points): clean accuracy, PGD-40, APGD-CE, APGD-T, and the worst case of
the ensemble (APGD-CE, APGD-T, PGD-40, run on every point so that worst case <= each single attack).

Speed (batch 256): the floor of a gradient attack is ``steps x (forward + autograd.grad w.r.t. the
input)`` of the same model and batch, measured in the same run; each figure is the median of
``--repeats`` runs, floors and attacks interleaved. APGD is timed twice: at eps 0.3 (points leave
the batch once fooled, so it beats the floor) and at eps 1e-3, where nothing is fooled and all
100 steps run on the full batch (the honest per-step overhead). Ratios are given on wall time and on
this process's CPU time (steadier on a shared CPU host; use wall time on a GPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attacks_apgd.py [--device cuda] [--n 1000]

LeNet is trained for 3 epochs (seed 0) and its weights cached under /tmp (safetensors). For a
machine without the MNIST package, ``--export DIR`` writes the weights and the first ``--n`` test
points (safetensors) to DIR; ``--from DIR`` runs from them there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from advkit.attacks.evasion.apgd import APGD, APGDT
from advkit.attacks.evasion.pgd import PGD
from advkit.evaluation.ensemble import run_ensemble
from advkit.models.zoo import build
from advkit.targets.base import InputContract
from advkit.targets.torch import TorchTarget

CACHE = Path("/tmp/advkit_bench/lenet_mnist_e3_seed0.safetensors")


SHAPE, N_CLASSES = (1, 28, 28), 10


def lenet(ds, device, weights: Path = CACHE):
    model = build("lenet", input_shape=SHAPE, n_classes=N_CLASSES,
                  generator=torch.Generator().manual_seed(0))
    if weights.is_file():
        model.load_state_dict(load_file(str(weights)))
    else:
        from advkit.models.train import train

        train(model, ds.x_train, ds.y_train, epochs=3, batch_size=128, lr=1e-3,
              generator=torch.Generator().manual_seed(0), progress=False)
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(CACHE))
    return model.eval().to(device)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def clocks():
    return time.perf_counter(), time.process_time()


def since(t0):
    wall, cpu = clocks()
    return wall - t0[0], cpu - t0[1]


def floor_seconds(model, x, y, passes, device):
    sync(device)
    t0 = clocks()
    for _ in range(passes):
        xg = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xg), y, reduction="sum")
        torch.autograd.grad(loss, xg)
    sync(device)
    return since(t0)


def attack_seconds(attack, target, x, y, device, seed):
    sync(device)
    t0 = clocks()
    res = attack.attack(target, x, y, generator=torch.Generator(device=x.device).manual_seed(seed))
    sync(device)
    return since(t0), res


def timing(model, target, x, y, device, repeats):
    cases = [("pgd-40 eps0.3", PGD(eps=0.3, steps=40)),
             ("apgd-100 eps0.3", APGD(eps=0.3, steps=100)),
             ("apgd-100 eps0.001 (no early exit)", APGD(eps=0.001, steps=100))]
    out = {}
    floor_seconds(model, x, y, 3, device)  # warm-up
    for name, attack in cases:
        fl, at, nominal = [], [], attack.steps * attack.restarts  # the floor: steps x (fwd + bwd)
        for r in range(repeats):
            sec, res = attack_seconds(attack, target, x, y, device, r)
            fl.append(floor_seconds(model, x, y, nominal, device))
            at.append(sec)
        row = {"floor_passes": nominal, "passes_run": res.passes,
               "sample_passes": res.extra.get("sample_passes")}
        for i, clock in enumerate(("wall", "cpu")):  # cpu: this process's CPU time (shared hosts)
            a_s, f_s = statistics.median(t[i] for t in at), statistics.median(t[i] for t in fl)
            row.update({f"attack_{clock}_s": a_s, f"floor_{clock}_s": f_s,
                        f"ratio_{clock}": a_s / f_s})
        out[name] = row
    return out


def quality(target, x, y, eps, seed):
    g = lambda: torch.Generator(device=x.device).manual_seed(seed)  # noqa: E731
    out = {}
    for name, attack in (("pgd-40", PGD(eps=eps, steps=40)), ("apgd-ce", APGD(eps=eps)),
                         ("apgd-t", APGDT(eps=eps))):
        res = attack.attack(target, x, y, generator=g())
        out["clean"] = res.clean_accuracy().as_dict()
        out[name] = {**res.robust_accuracy().as_dict(), "seconds": res.seconds}
    ens = run_ensemble(target, x, y, eps=eps, attacks=[PGD(eps=eps, steps=40)], run_all=True,
                       generator=g())
    out["ensemble"] = {
        "worst_case": ens.robust_accuracy().as_dict(),
        "stages": [{"label": s.label, "broken": s.broken, "robust_after": s.robust_after.value,
                    "single_robust": s.single_robust.value, "queries": s.queries,
                    "seconds": s.seconds} for s in ens.stages],
    }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--export", type=Path, default=None)
    ap.add_argument("--from", dest="source", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.source is not None:
        model = lenet(None, device, args.source / "lenet.safetensors")
        data = load_file(str(args.source / "test.safetensors"))
        x, y = data["x"][: args.n].to(device), data["y"][: args.n].long().to(device)
    else:
        from advkit.data.datasets import load

        ds = load("mnist")
        model = lenet(ds, device)
        x = torch.as_tensor(ds.x_test[: args.n]).to(device)
        y = torch.as_tensor(ds.y_test[: args.n]).long().to(device)
    if args.export is not None:
        args.export.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()},
                  str(args.export / "lenet.safetensors"))
        save_file({"x": x.cpu().contiguous(), "y": y.cpu()}, str(args.export / "test.safetensors"))
        return
    contract = InputContract(shape=SHAPE, n_classes=N_CLASSES, bounds=(0.0, 1.0))
    target = TorchTarget(contract, model=model, batch_size=max(args.batch, args.n))
    report = {"device": str(device), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "n": args.n, "eps": args.eps}
    if not args.skip_quality:
        report["quality"] = quality(target, x, y, args.eps, seed=0)
    if not args.skip_timing:
        xb, yb = x[: args.batch], y[: args.batch]
        report["timing_batch"] = int(xb.shape[0])
        report["timing"] = timing(model, target, xb, yb, device, args.repeats)
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
