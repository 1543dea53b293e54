"""Shared benchmark helpers: the floor (passes × forward+backward) and median timings."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_time(
    fn: Callable[[], object], *, repeats: int = 5, warmup: int = 1, device="cpu"
) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fwd_bwd_time(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, repeats: int = 20
) -> float:
    """Median time of one forward + backward (gradient w.r.t. the input only) on this batch."""

    def step():
        xg = x.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xg), y)
        torch.autograd.grad(loss, xg)

    return median_time(step, repeats=repeats, warmup=3, device=x.device)


def fwd_time(model: torch.nn.Module, x: torch.Tensor, *, repeats: int = 20) -> float:
    def step():
        with torch.no_grad():
            model(x)

    return median_time(step, repeats=repeats, warmup=3, device=x.device)


def lenet_mnist(device="cpu", *, epochs: int = 3, seed: int = 0, progress: bool = False):
    """(model in eval mode, dataset) — LeNet trained on MNIST, cached in the advkit cache."""
    from advkit.audit.spec import ModelSpec
    from advkit.data import load
    from advkit.models.cache import trained_zoo_model

    ds = load("mnist")
    model, _ = trained_zoo_model(
        ds, ModelSpec(zoo="lenet", epochs=epochs), seed=seed, progress=progress
    )
    return model.to(device).eval(), ds
