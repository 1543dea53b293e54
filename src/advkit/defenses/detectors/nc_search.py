"""Neural Cleanse's per-class trigger search (Wang et al. 2019, "Neural Cleanse: Identifying and
Mitigating Backdoor Attacks in Neural Networks", IEEE S&P, Section IV-C): for each class ``t``
a mask ``m`` and a pattern ``p`` minimising ``CE(f((1 - m) * x + m * p), t) + lambda_t * |m|_1``,
with the paper's lambda schedule and early stop (``schedule``).

The classes searched together share each step: ONE forward+backward over (active classes x
batch) stamped inputs, Adam (betas 0.5, 0.9) with per-class state and learning rate.

**Each class draws its own random numbers.** Its initial mask and pattern, the clean batch of
each of its steps and its resets come from a generator derived from a base seed and the class
index alone (``class_generator``); the fixed draw of clean images on which every final trigger is
re-measured comes from the base seed alone (``eval_generator``). So a class's search does not
depend on which other classes are searched with it: the audit runs one search per class (one
stage each, in parallel on Ray) and merges them (``NeuralCleanse.from_classes``). One exception:
when the target refuses a batch whose scores are not finite (``NonFiniteScoresError``, a diverging
trigger), every class of that batch is reset, as it cannot tell which one diverged; a search of one
class resets only that class.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from advkit.attacks.poisoning.base import ImageTrigger
from advkit.errors import NonFiniteScoresError

log = logging.getLogger("advkit.defenses")
_RAW_CLIP = 6.0  # |tanh parameter| bound: mask/pattern stay within (2.5e-6, 1 - 2.5e-6)
_P = 1_000_003


def base_seed(generator: torch.Generator | None) -> int:
    """One draw from ``generator`` (None: a generator seeded 0): the seed every class's generator
    and the evaluation draw derive from."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    return int(torch.randint(2**62, (1,), generator=gen))


def class_generator(base: int, cls: int) -> torch.Generator:
    return torch.Generator().manual_seed((base * _P + int(cls) + 1) % 2**63)


def eval_generator(base: int) -> torch.Generator:
    return torch.Generator().manual_seed((base * _P) % 2**63)


def squash(raw: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(raw) + 1) / 2


@dataclass
class Triggers:
    """Reversed triggers of ``classes`` (in that order): ``masks`` (A, H, W), ``patterns``
    (A, C, H, W), their L1 ``norms`` (NaN for a class given up), ``reached`` (success threshold
    met), ``success`` (last epoch), ``epochs``, ``resets``, ``failed``, ``final_success`` (on the
    fixed evaluation draw; NaN when not measurable), ``steps`` and ``rows`` (forward+backward
    passes and stamped inputs of the search), ``seconds``."""

    classes: list[int]
    masks: torch.Tensor
    patterns: torch.Tensor
    norms: np.ndarray
    reached: np.ndarray
    success: np.ndarray
    epochs: np.ndarray
    resets: np.ndarray
    failed: np.ndarray
    final_success: np.ndarray
    steps: int
    rows: int
    seconds: float

    @staticmethod
    def concat(parts: list[Triggers]) -> Triggers:
        """Searches of disjoint classes as one, ordered by class; steps, rows and seconds add."""
        parts = sorted(parts, key=lambda t: t.classes[0])
        cat = {f: np.concatenate([getattr(t, f) for t in parts])
               for f in ("norms", "reached", "success", "epochs", "resets", "failed",
                         "final_success")}
        return Triggers(classes=[c for t in parts for c in t.classes],
                        masks=torch.cat([t.masks for t in parts]),
                        patterns=torch.cat([t.patterns for t in parts]), **cat,
                        steps=sum(t.steps for t in parts), rows=sum(t.rows for t in parts),
                        seconds=sum(t.seconds for t in parts))


def schedule(nc, i, rate, norm, cost, st, flags, best_norm, es_best) -> None:
    """The paper's per-epoch lambda schedule and early stop for the class at position ``i``."""
    st["epochs"][i] += 1
    if best_norm[i] < math.inf:
        st["es"][i] = st["es"][i] + 1 if norm >= nc.early_stop_threshold * es_best[i] else 0
        es_best[i] = min(es_best[i], norm)
    both = flags["up_flag"][i] and flags["down_flag"][i]
    if both and st["es"][i] >= nc.early_stop_patience:
        flags["done"][i] = True
        return
    if rate >= nc.success_threshold:
        st["up"][i], st["down"][i] = st["up"][i] + 1, 0
    else:
        st["up"][i], st["down"][i] = 0, st["down"][i] + 1
    if st["up"][i] >= nc.patience:
        st["up"][i], cost[i], flags["up_flag"][i] = 0, cost[i] * nc.cost_multiplier, True
    elif st["down"][i] >= nc.patience:
        st["down"][i], flags["down_flag"][i] = 0, True
        cost[i] = cost[i] / nc.cost_multiplier ** 1.5


def search(nc, target, x: torch.Tensor, y: torch.Tensor, classes: list[int], base: int) -> Triggers:
    """Search the triggers of ``classes`` together with ``nc``'s settings (a NeuralCleanse) on the
    checked clean data ``(x, y)`` through ``target`` (gradients and logits)."""
    t0 = time.perf_counter()
    lo, hi = target.contract.bounds
    (c, h, w), dev = x.shape[1:], x.device
    k, labels = len(classes), torch.tensor(classes, dtype=torch.long, device=dev)
    gens = [class_generator(base, j) for j in classes]

    def init(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        u = [torch.rand(s, generator=gens[i]).to(dev) * 0.98 + 0.01 for s in ((1, h, w), (c, h, w))]
        return torch.atanh(2 * u[0] - 1), torch.atanh(2 * u[1] - 1)

    first = [init(i) for i in range(k)]
    raw_m, raw_p = torch.stack([m for m, _ in first]), torch.stack([p for _, p in first])
    adam = [torch.zeros_like(raw_m), torch.zeros_like(raw_m), torch.zeros_like(raw_p),
            torch.zeros_like(raw_p)]
    t_adam = torch.zeros(k, device=dev)
    lr = torch.full((k,), nc.lr, device=dev)
    cost = [nc.init_cost] * k
    st = {n: [0] * k for n in ("up", "down", "es", "epochs", "resets")}
    flags = {n: [False] * k for n in ("up_flag", "down_flag", "done", "failed")}
    best_norm, es_best = [math.inf] * k, [math.inf] * k
    best_m, best_p = raw_m.clone(), raw_p.clone()
    success = [0.0] * k
    steps = rows = 0
    b1, b2, eps, bsz = 0.5, 0.9, 1e-8, nc.batch_size

    def reset(i: int) -> None:
        st["resets"][i] += 1
        if st["resets"][i] > nc.max_resets:
            flags["failed"][i] = flags["done"][i] = True
            return
        raw_m[i], raw_p[i] = init(i)
        for s in adam:
            s[i] = 0
        t_adam[i], lr[i], cost[i] = 0, lr[i] / 2, nc.init_cost
        log.warning("Neural Cleanse: class %d diverged; reset with lr %.3g", classes[i],
                    float(lr[i]))

    for _epoch in range(nc.epochs):
        act = [i for i in range(k) if not flags["done"][i]]
        if not act:
            break
        a = torch.tensor(act, dtype=torch.long, device=dev)
        lab = labels[a]
        hits, seen = torch.zeros(len(a), device=dev), torch.zeros(len(a), device=dev)
        bad = torch.zeros(len(a), dtype=torch.bool, device=dev)
        cost_t = torch.tensor([cost[i] for i in act], device=dev)
        for _ in range(nc.steps_per_epoch):
            idx = torch.stack([torch.randint(len(x), (bsz,), generator=gens[i])
                               for i in act]).to(dev)  # each class its own batch: (A, B)
            xb, yb = x[idx], y[idx]
            pm = raw_m[a].detach().requires_grad_(True)
            pp = raw_p[a].detach().requires_grad_(True)
            steps, rows = steps + 1, rows + len(act) * bsz
            with torch.enable_grad():
                m, p = squash(pm), lo + (hi - lo) * squash(pp)
                xs = (1 - m).unsqueeze(1) * xb + (m * p).unsqueeze(1)
                try:
                    logits = target.logits(xs.reshape(-1, c, h, w), check=False)
                except NonFiniteScoresError:  # diverged: every class of the batch is reset
                    bad[:] = True
                    continue
                ce = nn.functional.cross_entropy(logits, lab.repeat_interleave(bsz),
                                                 reduction="none").view(len(a), -1)
                loss = ce.mean(1) + cost_t * m.flatten(1).sum(1)
                fin = torch.isfinite(loss)
                gm, gp = torch.autograd.grad(loss[fin].sum(), (pm, pp)) if fin.any() else (
                    torch.zeros_like(pm), torch.zeros_like(pp))
            fin &= torch.isfinite(gm).flatten(1).all(1) & torch.isfinite(gp).flatten(1).all(1)
            bad |= ~fin
            pred = logits.detach().argmax(1).view(len(a), -1)
            other = yb != lab.unsqueeze(1)
            hits += ((pred == lab.unsqueeze(1)) & other).sum(1)
            seen += other.sum(1)
            u = a[fin]
            t_adam[u] += 1
            for raw, g, s1, s2 in ((raw_m, gm, *adam[:2]), (raw_p, gp, *adam[2:])):
                g = g[fin]
                s1[u] = b1 * s1[u] + (1 - b1) * g
                s2[u] = b2 * s2[u] + (1 - b2) * g * g
                shape = (-1,) + (1,) * (g.dim() - 1)
                bc1 = (1 - b1 ** t_adam[u]).view(shape)
                bc2 = (1 - b2 ** t_adam[u]).view(shape)
                step = lr[u].view(shape) * (s1[u] / bc1) / ((s2[u] / bc2).sqrt() + eps)
                raw[u] = (raw[u] - step).clamp(-_RAW_CLIP, _RAW_CLIP)
        rate = (hits / seen.clamp_min(1)).tolist()
        for n, i in enumerate(act):
            if bad[n]:
                reset(i)
                continue
            norm = float(squash(raw_m[i]).sum())
            success[i] = rate[n]
            if rate[n] >= nc.success_threshold and norm < best_norm[i]:
                best_norm[i] = norm
                best_m[i], best_p[i] = raw_m[i], raw_p[i]
            schedule(nc, i, rate[n], norm, cost, st, flags, best_norm, es_best)
    reached = np.array([v < math.inf for v in best_norm], dtype=bool)
    pick = torch.tensor(reached, device=dev).view(-1, 1, 1, 1)
    masks = squash(torch.where(pick, best_m, raw_m))[:, 0].detach()
    patterns = (lo + (hi - lo) * squash(torch.where(pick, best_p, raw_p))).detach()
    failed = np.array(flags["failed"], dtype=bool)
    norms = np.array([np.nan if failed[i] else float(masks[i].sum(dtype=torch.float64))
                      for i in range(k)])
    out = Triggers(classes=list(classes), masks=masks, patterns=patterns, norms=norms,
                   reached=reached, success=np.array(success, dtype=np.float64),
                   epochs=np.array(st["epochs"]), resets=np.array(st["resets"]), failed=failed,
                   final_success=np.full(k, np.nan), steps=steps, rows=rows, seconds=0.0)
    final_success(nc, target, x, y, out, base)
    out.seconds = time.perf_counter() - t0
    return out


def final_success(nc, target, x, y, trig: Triggers, base: int) -> None:
    """Every class's final trigger measured on the same fixed draw of ``eval_images`` clean
    images (those of other classes), so all classes are judged on equal terms."""
    pick = torch.randperm(len(x), generator=eval_generator(base))[: nc.eval_images].to(x.device)
    xe, ye = x[pick], y[pick]
    with torch.no_grad():
        for i, cls in enumerate(trig.classes):
            other = ye != cls
            if bool(other.any()) and not trig.failed[i]:
                stamped = ImageTrigger(mask=trig.masks[i], pattern=trig.patterns[i]).apply(
                    xe[other])
                try:
                    logits = target.logits(stamped, check=False)
                except NonFiniteScoresError:
                    continue
                trig.final_success[i] = float((logits.argmax(1) == cls).float().mean())
