"""Shared benchmark helpers: LeNet/MNIST from the advkit cache, clocks, and the floor.

The floor of a gradient attack is its number of forward+backward passes times the time of one
forward (+ ``autograd.grad`` w.r.t. the input) of the same model on the same batch, measured in the
same run (DESIGN §6). Times are medians; on a shared CPU host this process's CPU time is steadier
than wall time, so both are reported.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def clocked(fn: Callable[[], object], device) -> tuple[tuple[float, float], object]:
    """((wall seconds, CPU seconds of this process), fn's result)."""
    sync(device)
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return (time.perf_counter() - w, time.process_time() - c), out


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def fwd_bwd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, passes: int = 1) -> None:
    """``passes`` forward+backward passes (gradient w.r.t. the input only): the floor's unit."""
    for _ in range(passes):
        xg = x.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xg), y, reduction="sum")
        torch.autograd.grad(loss, xg)


def fwd(model: torch.nn.Module, x: torch.Tensor, passes: int = 1) -> None:
    with torch.no_grad():
        for _ in range(passes):
            model(x)


def lenet_mnist(device="cpu", *, epochs: int = 3, seed: int = 0, progress: bool = False):
    """(model in eval mode on ``device``, dataset): LeNet trained on MNIST, cached by advkit."""
    from advkit.audit.spec import ModelSpec
    from advkit.data import load
    from advkit.models.cache import trained_zoo_model

    ds = load("mnist")
    model, _ = trained_zoo_model(ds, ModelSpec(zoo="lenet", epochs=epochs), seed=seed, progress=progress)
    return model.to(device).eval(), ds
