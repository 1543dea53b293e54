"""advkit vs torchattacks vs ART (PyTorch estimator) on LeNet/MNIST: time and attack quality.

The same attack with the same parameters in each library, on the first N MNIST test points, in one
batch (256 by default), on the same model in the same process and thread count. Time is the median
of several runs after a warm-up; quality is computed here, identically for every library, from the
adversarial inputs each one returns (robust accuracy for bounded attacks; success rate and the median
L2 of the points fooled for minimum-norm ones).

Needs the optional benchmark venv (never a test dependency), see benchmarks/README.md:
    .venv-bench/bin/python benchmarks/compare_libraries.py [--n 256] [--n-cw 64] [--json out.json]
A library that is not installed is skipped and said so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import lenet_mnist, sync  # noqa: E402

from advkit import registry  # noqa: E402
from advkit.models.io import target_for  # noqa: E402

LIBS = ("advkit", "advkit-early", "torchattacks", "art")  # advkit-early: PGD with early_stop

# Where the libraries' semantics differ for the "same" attack (printed and written to the JSON).
NOTES = {
    "pgd": "advkit keeps each point's best iterate over the steps (a point fooled at any step "
           "counts); torchattacks and ART return the last iterate. All: CE loss, sign step, no random "
           "start. advkit-early is advkit's PGD with early_stop=True: a point stops being stepped once "
           "fooled (its first fooling iterate is returned), which leaves robust accuracy unchanged "
           "on a deterministic model.",
    "cw-l2": "Not the same optimiser in the three libraries, so the learning rate is not the same "
             "parameter: advkit (lr {advkit_lr}): Adam, a fixed step in tanh space, c x10 until a "
             "success then bisection, abort_early. ART CarliniL2Method (lr {art_lr}): gradient "
             "descent with a line search on the learning rate, which starts at lr and may double "
             "it 5 times (max_doubling=5), c doubled on failure and bisected on success, no early "
             "abort, numpy. torchattacks CW (lr {art_lr}): one fixed c (no binary search; "
             "c={ta_c}), Adam, stops when the total loss rises at a check; given steps = max_iter x "
             "binary_search_steps so that its iteration budget equals the others'.",
    "deepfool": "ART (L2 only) computes all class gradients for every point of the batch at every "
                "iteration and uses the predicted class as the label; torchattacks works one image at "
                "a time (a Jacobian per image); advkit batches the points still running and makes the "
                "linearisation box-aware. Overshoot 0.02 in all three.",
    "square": "Same n_queries, p_init and margin loss; ART's p schedule and advkit's are the paper's "
              "rescaled to n_queries, torchattacks' too (resc_schedule=True). Seeds: advkit "
              "torch.Generator(0), torchattacks seed=0, ART numpy global seed 0 (random streams differ).",
    "fgsm": "Reference only: one signed-gradient step in all three.",
}


# ---------------------------------------------------------------------------------------------
# One runner per (attack, library): a function (x, y) -> x_adv tensor on the model's device.


def advkit_runners(target, cfg) -> dict[str, Callable]:
    def make(name, **params):
        attack = registry.create(name, **params)

        def run(x, y):
            gen = torch.Generator(device=x.device).manual_seed(cfg.seed)
            return attack.attack(target, x, y, generator=gen).x_adv

        return run

    return {
        "fgsm": make("fgsm", eps=cfg.eps),
        "pgd": make("pgd", eps=cfg.eps, step_size=cfg.pgd_step, steps=cfg.pgd_steps,
                    random_start=False),
        "pgd-early": make("pgd", eps=cfg.eps, step_size=cfg.pgd_step, steps=cfg.pgd_steps,
                          random_start=False, early_stop=True),
        "cw-l2": make("cw-l2", kappa=0.0, learning_rate=cfg.advkit_cw_lr, max_iter=cfg.cw_iter,
                      binary_search_steps=cfg.cw_bss, initial_const=cfg.cw_c),
        "deepfool": make("deepfool", norm=2, overshoot=cfg.df_overshoot, max_iter=cfg.df_iter),
        "square": make("square", eps=cfg.eps, n_queries=cfg.sq_queries, p_init=cfg.sq_p_init),
    }


def torchattacks_runners(model, cfg) -> dict[str, Callable]:
    import torchattacks as ta

    def wrap(atk):
        return lambda x, y: atk(x, y)

    return {
        "fgsm": wrap(ta.FGSM(model, eps=cfg.eps)),
        "pgd": wrap(ta.PGD(model, eps=cfg.eps, alpha=cfg.pgd_step, steps=cfg.pgd_steps,
                           random_start=False)),
        "cw-l2": wrap(ta.CW(model, c=cfg.ta_cw_c, kappa=0, steps=cfg.cw_iter * cfg.cw_bss,
                            lr=cfg.cw_lr)),
        "deepfool": wrap(ta.DeepFool(model, steps=cfg.df_iter, overshoot=cfg.df_overshoot)),
        "square": wrap(ta.Square(model, norm="Linf", eps=cfg.eps, n_queries=cfg.sq_queries,
                                 n_restarts=1, p_init=cfg.sq_p_init, loss="margin",
                                 resc_schedule=True, seed=cfg.seed, verbose=False)),
    }


def art_runners(model, cfg, device) -> dict[str, Callable]:
    from art.attacks.evasion import (
        CarliniL2Method,
        DeepFool,
        FastGradientMethod,
        ProjectedGradientDescent,
        SquareAttack,
    )
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
                            nb_classes=10, clip_values=(0.0, 1.0),
                            device_type="gpu" if torch.device(device).type == "cuda" else "cpu")

    def wrap(make_attack, use_y=True):
        def run(x, y):
            np.random.seed(cfg.seed)  # ART draws from numpy's global generator
            atk = make_attack(x.shape[0])
            xn = x.detach().cpu().numpy()
            adv = atk.generate(xn, y=y.cpu().numpy() if use_y else None)
            return torch.from_numpy(adv).to(x.device)

        return run

    return {
        "fgsm": wrap(lambda b: FastGradientMethod(clf, norm=np.inf, eps=cfg.eps, batch_size=b)),
        "pgd": wrap(lambda b: ProjectedGradientDescent(
            clf, norm=np.inf, eps=cfg.eps, eps_step=cfg.pgd_step, max_iter=cfg.pgd_steps,
            num_random_init=0, batch_size=b, verbose=False)),
        "cw-l2": wrap(lambda b: CarliniL2Method(
            clf, confidence=0.0, learning_rate=cfg.cw_lr, binary_search_steps=cfg.cw_bss,
            max_iter=cfg.cw_iter, initial_const=cfg.cw_c, batch_size=b, verbose=False)),
        "deepfool": wrap(lambda b: DeepFool(clf, max_iter=cfg.df_iter, epsilon=cfg.df_overshoot,
                                            nb_grads=10, batch_size=b, verbose=False), use_y=False),
        "square": wrap(lambda b: SquareAttack(clf, norm=np.inf, eps=cfg.eps, max_iter=cfg.sq_queries,
                                              p_init=cfg.sq_p_init, nb_restarts=1, batch_size=b,
                                              verbose=False)),
    }


# ---------------------------------------------------------------------------------------------


def run_timed(entries, x, y, *, repeats: int, budget_s: float, device):
    """Time each entry {key: (run, n, slow)} on the first n points. Warm-up (2 points) first, except
    for slow entries, which run once; then rounds in which every entry runs once, in a rotated order
    so that load drift on a shared machine hits every library alike; an entry stops repeating once
    its runs exceed ``budget_s``. Returns {key: (wall times, CPU times of this process, last
    output)}: on a shared host the process's CPU time is steadier than wall time."""
    for run, _n, slow in entries.values():
        if not slow:
            run(x[:2], y[:2])
    sync(device)
    times = {k: [] for k in entries}
    cpu = {k: [] for k in entries}
    outs = {}
    keys = list(entries)
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            run, n, slow = entries[k]
            if times[k] and (slow or sum(times[k]) > budget_s):
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            outs[k] = run(x[:n], y[:n])
            sync(device)
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
            print(f"  {k}: {times[k][-1]:.3f} s", file=sys.stderr, flush=True)
    return {k: (times[k], cpu[k], outs[k]) for k in keys}


@torch.no_grad()
def score(model, x, y, x_adv, eps: float | None) -> dict:
    """Quality figures from the adversarial inputs, the same computation for every library."""
    x_adv = x_adv.to(x.device, x.dtype).reshape(x.shape)
    clean = model(x).argmax(1)
    adv = model(x_adv).argmax(1)
    correct = clean == y
    fooled = correct & (adv != y)
    delta = (x_adv - x).flatten(1)
    l2, linf = delta.norm(dim=1), delta.abs().amax(1)
    out = {
        "n": int(x.shape[0]),
        "clean_accuracy": correct.float().mean().item(),
        "robust_accuracy": (correct & (adv == y)).float().mean().item(),
        "success_rate": (fooled.sum() / correct.sum().clamp_min(1)).item(),
        "median_l2_fooled": l2[fooled].median().item() if fooled.any() else math.nan,
        "median_linf_fooled": linf[fooled].median().item() if fooled.any() else math.nan,
        "max_linf": linf.max().item(),
        "in_bounds": bool((x_adv >= 0).all() and (x_adv <= 1).all()),
    }
    if eps is not None:
        out["within_eps"] = bool(out["max_linf"] <= eps + 1e-5)
    return out, fooled.cpu(), l2.cpu()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=256, help="test points for FGSM/PGD/DeepFool/Square")
    ap.add_argument("--n-cw", type=int, default=64, help="test points for C&W L2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=60.0,
                    help="stop repeating a (library, attack) once its runs exceed this many seconds")
    ap.add_argument("--attacks", default="fgsm,pgd,square,deepfool,cw-l2")
    ap.add_argument("--libs", default=",".join(LIBS))
    ap.add_argument("--slow", default="deepfool/torchattacks,cw-l2/art",
                    help="attack/library pairs run once, without warm-up, on --slow-n points "
                         "(advkit is then also timed on those points for the ratio)")
    ap.add_argument("--slow-n", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--pgd-steps", type=int, default=40)
    ap.add_argument("--pgd-step", type=float, default=0.01)
    ap.add_argument("--cw-iter", type=int, default=100)
    ap.add_argument("--cw-bss", type=int, default=5)
    ap.add_argument("--cw-lr", type=float, default=0.01,
                    help="C&W learning rate of ART (the start of its line search) and torchattacks")
    ap.add_argument("--advkit-cw-lr", type=float, default=0.1,
                    help="advkit's C&W Adam step: 100 Adam steps of 0.01 in tanh space cannot move a "
                         "pixel at the box edge, while ART's line search grows its step up to 32x")
    ap.add_argument("--cw-c", type=float, default=1.0,
                    help="initial c (advkit and ART); the paper's 1e-3 leaves ART's doubling "
                         "schedule far below a useful c within a few binary-search steps")
    ap.add_argument("--ta-cw-c", type=float, default=1.0, help="torchattacks' fixed c")
    ap.add_argument("--df-iter", type=int, default=50)
    ap.add_argument("--df-overshoot", type=float, default=0.02)
    ap.add_argument("--sq-queries", type=int, default=1000)
    ap.add_argument("--sq-p-init", type=float, default=0.8)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    cfg = ap.parse_args(argv)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    model, ds = lenet_mnist(cfg.device)
    target = target_for(model, ds, batch_size=256)
    runners, versions, skipped = {}, {"torch": torch.__version__}, {}
    import advkit

    versions["advkit"] = getattr(advkit, "__version__", "dev")
    for lib in cfg.libs.split(","):
        try:
            if lib == "advkit":
                runners[lib] = advkit_runners(target, cfg)
            elif lib == "torchattacks":
                import torchattacks

                versions[lib] = torchattacks.__version__
                runners[lib] = torchattacks_runners(model, cfg)
            elif lib == "art":
                import art

                versions[lib] = art.__version__
                runners[lib] = art_runners(model, cfg, cfg.device)
        except ImportError as e:
            skipped[lib] = f"not installed ({e.name}); see benchmarks/README.md"

    slow = {tuple(p.split("/")) for p in cfg.slow.split(",") if p}
    rows = []
    for name in cfg.attacks.split(","):
        n = cfg.n_cw if name == "cw-l2" else cfg.n
        x = ds.x_test[:n].to(cfg.device)
        y = ds.y_test[:n].to(cfg.device).long()
        eps = cfg.eps if name in ("fgsm", "pgd", "square") else None
        entries = {}
        for lib, rs in runners.items():
            is_slow = (name, lib) in slow
            entries[(lib, min(n, cfg.slow_n) if is_slow else n)] = (rs[name], None, is_slow)
        if name == "pgd" and "advkit" in runners:
            entries[("advkit-early", n)] = (runners["advkit"]["pgd-early"], None, False)
        if "advkit" in runners:  # advkit on the same points as every library run on fewer
            for _lib, m in list(entries):
                entries.setdefault(("advkit", m), (runners["advkit"][name], None, False))
        entries = {k: (r, k[1], s_) for k, (r, _, s_) in entries.items()}
        timed = run_timed(entries, x, y, repeats=cfg.repeats, budget_s=cfg.budget, device=cfg.device)
        new, masks = [], {}
        for (lib, m), (times, cpu, x_adv) in timed.items():
            q, fooled, l2 = score(model, x[:m], y[:m], x_adv, eps)
            masks[(lib, m)] = (fooled, l2)
            new.append({"attack": name, "library": lib, "n": m, "seconds": statistics.median(times),
                        "times": times, "cpu_seconds": statistics.median(cpu),
                        "cpu_times": cpu, "single_run_no_warmup": entries[(lib, m)][2], **q})
        if eps is None and len(masks) > 1:  # minimum-norm: median L2 on the points all fooled
            m0 = min(m for _, m in masks)
            common = torch.stack([f[:m0] for f, _ in masks.values()]).all(0)
            for r in new:
                l2 = masks[(r["library"], r["n"])][1][:m0]
                r["n_common"] = int(common.sum())
                r["median_l2_common"] = l2[common].median().item() if common.any() else math.nan
        for r in new:
            base = next((b for b in new if b["library"] == "advkit" and b["n"] == r["n"]), None)
            r["ratio_to_advkit"] = r["seconds"] / base["seconds"] if base else math.nan
            r["cpu_ratio_to_advkit"] = r["cpu_seconds"] / base["cpu_seconds"] if base else math.nan
        rows += sorted(new, key=lambda r: (-r["n"], LIBS.index(r["library"])))
        if cfg.json:  # partial results survive an interrupted run
            cfg.json.write_text(json.dumps({"rows": rows}, indent=2))
    out = {"device": str(cfg.device), "threads": torch.get_num_threads(),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "versions": versions,
           "skipped": skipped, "params": {k: v for k, v in vars(cfg).items() if k != "json"},
           "notes": {k: v.format(ta_c=cfg.ta_cw_c, advkit_lr=cfg.advkit_cw_lr, art_lr=cfg.cw_lr)
                     for k, v in NOTES.items()}, "rows": rows,
           "bars": bars(rows)}
    out["params"]["json"] = str(cfg.json) if cfg.json else None
    print_table(out)
    if cfg.json:
        cfg.json.write_text(json.dumps(out, indent=2))
    return out


def bars(rows) -> dict:
    """The issue's acceptance bars, judged on the medians of this run; times are compared between
    runs on the same points (same n). A bar whose libraries did not run is left out."""
    get = {(r["attack"], r["library"], r["n"]): r for r in rows}

    def pair(a, lib):
        """(advkit row, lib row) on the same points, or None."""
        r = next((r for r in rows if r["attack"] == a and r["library"] == lib), None)
        b = get.get((a, "advkit", r["n"])) if r else None
        return (b, r) if b else None

    res = {}
    ta, art = pair("pgd", "torchattacks"), pair("pgd", "art")
    if ta and art:
        a = ta[0]
        res["pgd: advkit <= torchattacks and < ART time, robust acc within 0.01 of both"] = bool(
            a["seconds"] <= ta[1]["seconds"] and a["seconds"] < art[1]["seconds"]
            and abs(a["robust_accuracy"] - ta[1]["robust_accuracy"]) <= 0.01
            and abs(a["robust_accuracy"] - art[1]["robust_accuracy"]) <= 0.01)
        e = get.get(("pgd", "advkit-early", a["n"]))
        if e:
            res["pgd, advkit early_stop: faster than torchattacks and ART, robust acc within 0.01 of "
                "both"] = bool(
                e["seconds"] < ta[1]["seconds"] and e["seconds"] < art[1]["seconds"]
                and abs(e["robust_accuracy"] - ta[1]["robust_accuracy"]) <= 0.01
                and abs(e["robust_accuracy"] - art[1]["robust_accuracy"]) <= 0.01)
    art = pair("cw-l2", "art")
    if art:
        a, b = art
        res["cw-l2: ART time >= 10x advkit (same points), advkit median L2 <= ART's (each on the "
            "points it fooled)"] = bool(b["seconds"] >= 10 * a["seconds"]
                                        and a["median_l2_fooled"] <= b["median_l2_fooled"])
        res["cw-l2: same, median L2 on the points every library fooled"] = bool(
            b["seconds"] >= 10 * a["seconds"]
            and a.get("median_l2_common", math.nan) <= b.get("median_l2_common", math.nan))
    for name in ("deepfool", "square"):
        ta, art = pair(name, "torchattacks"), pair(name, "art")
        if ta and art:
            res[f"{name}: advkit no slower than the faster of the two (each on the same points)"] = \
                bool(ta[0]["seconds"] <= ta[1]["seconds"] and art[0]["seconds"] <= art[1]["seconds"])
    return res


def print_table(out) -> None:
    print(f"LeNet/MNIST, device {out['device']}, torch threads {out['threads']} "
          f"(OMP_NUM_THREADS={out['omp_num_threads']}), versions {out['versions']}")
    for lib, why in out["skipped"].items():
        print(f"skipped {lib}: {why}")
    print(f"{'attack':<9} {'library':<13} {'n':>4} {'seconds':>9} {'ratio':>7} {'cpu ratio':>9} "
          f"{'rob.acc':>8} "
          f"{'success':>8} {'med L2':>7} {'med L2 common':>14}  runs")
    for r in out["rows"]:
        common = (f"{r['median_l2_common']:.3f} (n={r['n_common']})" if "median_l2_common" in r
                  else "")
        print(f"{r['attack']:<9} {r['library']:<13} {r['n']:>4} {r['seconds']:>9.3f} "
              f"{r['ratio_to_advkit']:>7.2f} {r['cpu_ratio_to_advkit']:>9.2f} "
              f"{r['robust_accuracy']:>8.3f} {r['success_rate']:>8.3f} "
              f"{r['median_l2_fooled']:>7.3f} {common:>14}  {len(r['times'])}"
              + (" (no warm-up)" if r["single_run_no_warmup"] else "")
              + ("" if r.get("within_eps", True) and r["in_bounds"] else "  OUT OF BALL/BOUNDS"))
    print("ratio = library seconds / advkit seconds on the same points (median wall time of the runs); "
          "cpu ratio: the same with this process's CPU time;\n"
          "rob.acc = still correct / n;\nsuccess = fooled / clean-correct; "
          "med L2 = median L2 over the points that library fooled.")
    for k, v in out["notes"].items():
        print(f"note {k}: {v}")
    for k, v in out["bars"].items():
        print(f"bar  {'PASS' if v else 'FAIL'}  {k}")


if __name__ == "__main__":
    main()
