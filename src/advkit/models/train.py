"""Train and evaluate a classifier: Adam on cross-entropy, deterministic given a generator.

The learning rate is constant or follows a one-cycle ("cyclic") schedule: it rises linearly from 0
to ``lr`` over the first 40 % of training and falls linearly back to 0 over the rest, updated every
batch (Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017; the schedule
of fast adversarial training in Wong, Rice & Kolter, "Fast is better than free", ICLR 2020).

``train`` is the one training loop of advkit. Defenses and poisoning hook into it through
``batch_hook(xb, yb, model)``, which may return a replacement batch (adversarial examples for
adversarial training, poisoned points for a poisoning experiment).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from advkit.errors import (
    AdvkitError,
    InputContractError,
    InvalidParameterError,
    check_choice,
    check_range,
)
from advkit.targets.torch import module_device

LR_SCHEDULES = ("constant", "cyclic", "step")
LR_STEP_FACTOR = 0.1  # "step": the rate is multiplied by this after each milestone epoch
# Adam (Kingma & Ba, ICLR 2015) or SGD with momentum 0.9 (Sutskever et al., ICML 2013)
OPTIMIZERS = ("adam", "sgd")
SGD_MOMENTUM = 0.9
CYCLIC_PEAK = 0.4  # where the cyclic schedule peaks, as a share of training (Wong et al.'s MNIST)

BatchHook = Callable[[torch.Tensor, torch.Tensor, nn.Module],
                     "tuple[torch.Tensor, torch.Tensor] | None"]


@dataclass
class TrainHistory:
    """Per-epoch mean training loss, training accuracy (on the batches actually trained on,
    after any ``batch_hook``) and wall-clock seconds."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.loss)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))


def _as_tensors(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if isinstance(y, np.ndarray):
            y = torch.from_numpy(np.array(y))  # a float array is refused below, not truncated
    except (TypeError, ValueError) as exc:
        raise InputContractError(f"x and y must be numeric arrays: {exc}") from exc
    if not isinstance(x, torch.Tensor):
        raise InvalidParameterError("x", type(x).__name__, "a tensor or numpy array of inputs")
    if not isinstance(y, torch.Tensor):
        raise InvalidParameterError("y", type(y).__name__, "a tensor or numpy array of labels")
    if not x.is_floating_point():
        x = x.float()
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise InputContractError(
            f"labels must be a 1-D integer tensor of class indices, got shape {tuple(y.shape)} "
            f"dtype {y.dtype}; fix: pass y as int64 class indices (not one-hot)"
        )
    if x.dim() < 2 or x.shape[0] != y.shape[0]:
        raise InputContractError(
            f"x has shape {tuple(x.shape)} but y has {y.shape[0]} labels; x must be (N, ...) "
            "with N = len(y)"
        )
    if x.shape[0] == 0:
        raise InputContractError("no training data: x and y are empty")
    if not torch.isfinite(x).all():
        raise InputContractError("x contains NaN or inf; clean or impute the inputs first")
    if (y < 0).any():
        raise InputContractError(f"labels must be class indices >= 0, found {int(y.min())}")
    return x, y.long()


def _check_labels(logits: torch.Tensor, y: torch.Tensor) -> None:
    k = logits.shape[-1]
    top = int(y.max())
    if top >= k:
        raise InputContractError(
            f"label {top} is out of range for a model with {k} outputs; fix: encode labels as "
            f"0..{k - 1} or build the model with more classes"
        )


def schedule_lr(schedule: str, lr: float, progress: float) -> float:
    """The learning rate at ``progress`` (0 to 1, the share of training done) under ``schedule``
    (``constant`` or ``cyclic``; ``step`` changes per epoch: :func:`step_lr`)."""
    if schedule in ("constant", "step"):
        return lr
    peak = CYCLIC_PEAK
    return lr * (progress / peak if progress <= peak else (1 - progress) / (1 - peak))


def step_lr(lr: float, milestones, epoch: int) -> float:
    """The ``step`` schedule's rate in ``epoch`` (from 1): ``lr`` times ``LR_STEP_FACTOR`` once
    per milestone already passed (a milestone m: epochs after the m-th train at the lower rate)."""
    return lr * LR_STEP_FACTOR ** sum(1 for m in milestones if epoch > m)


def check_milestones(schedule: str, milestones, epochs: int) -> tuple[int, ...]:
    """``milestones`` as a tuple: strictly increasing epochs in [1, epochs - 1], given exactly
    when ``schedule`` is ``step``; InvalidParameterError otherwise."""
    ms = tuple(milestones or ())
    if schedule != "step":
        if ms:
            raise InvalidParameterError("lr_milestones", list(ms),
                                        "empty unless lr_schedule is 'step'")
        return ms
    ok = (ms and all(isinstance(m, int) and not isinstance(m, bool) for m in ms)
          and all(1 <= m < epochs for m in ms) and list(ms) == sorted(set(ms)))
    if not ok:
        raise InvalidParameterError(
            "lr_milestones", list(ms), f"strictly increasing epochs in [1, {epochs - 1}] after "
            f"which the rate is multiplied by {LR_STEP_FACTOR:g} (lr_schedule 'step'), e.g. [2]")
    return ms


def _use_progress(progress: bool | None) -> bool:
    if progress is None:
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


def _make_bar():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)


def train(model: nn.Module, x, y, *, epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
          weight_decay: float = 0.0, generator: torch.Generator | None = None,
          progress: bool | None = None,
          on_epoch: Callable[[int, TrainHistory], bool | None] | None = None,
          batch_hook: BatchHook | None = None,
          loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
          lr_schedule: str = "constant", optimizer: str = "adam",
          lr_milestones=()) -> TrainHistory:
    """Train ``model`` in place with Adam on cross-entropy; return its :class:`TrainHistory`.

    Batches are drawn by ``torch.randperm(generator=generator)`` each epoch, so the same
    generator state, model weights and data give the same result. Training happens on the
    model's device (batches are moved there); the model is in train mode during training and in
    eval mode afterwards. ``batch_hook(xb, yb, model)`` runs on every batch before the update and
    may return a replacement ``(xb, yb)`` (or None to keep the batch). ``on_epoch(epoch, history)``
    runs after each epoch (``epoch`` counts from 1); returning True stops training early.
    ``loss_fn(model, xb, yb)`` replaces the cross-entropy (e.g. TRADES) and returns a scalar loss;
    the reported training accuracy then comes from one extra forward on the batch.
    ``lr_schedule``: ``"constant"`` (``lr`` throughout) or ``"cyclic"`` (0 → ``lr`` at 40 % → 0 over
    the ``epochs``, per batch; see the module docstring; stopping early cuts the cycle short) or
    ``"step"`` (``lr`` times ``LR_STEP_FACTOR`` after each epoch of ``lr_milestones``).
    ``progress``: a rich progress bar on stderr if True, or if None and stderr is a terminal.
    ``optimizer``: ``"adam"`` (the default) or ``"sgd"`` (momentum ``SGD_MOMENTUM``).
    """
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", type(model).__name__, "a torch.nn.Module")
    check_range("epochs", epochs, lo=1, kind=int)
    check_range("batch_size", batch_size, lo=1, kind=int)
    for pname, value, lo_open in (("lr", lr, True), ("weight_decay", weight_decay, False)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidParameterError(pname, value, "a number")
        check_range(pname, value, lo=0.0, lo_open=lo_open)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidParameterError("generator", type(generator).__name__,
                                    "a torch.Generator or None")
    check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    milestones = check_milestones(lr_schedule, lr_milestones, epochs)
    x, y = _as_tensors(x, y)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InvalidParameterError("model", type(model).__name__,
                                    "a model with trainable parameters")
    dev = module_device(model)
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=float(lr), momentum=SGD_MOMENTUM,
                              weight_decay=float(weight_decay))
    else:
        opt = torch.optim.Adam(params, lr=float(lr), weight_decay=float(weight_decay))
    n = x.shape[0]
    n_batches = (n + batch_size - 1) // batch_size
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    history = TrainHistory()
    bar = _make_bar() if _use_progress(progress) else None
    task = bar.add_task("training", total=epochs * n_batches) if bar is not None else None
    checked = False
    try:
        if bar is not None:
            bar.start()
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            if lr_schedule == "step":
                for group in opt.param_groups:
                    group["lr"] = step_lr(float(lr), milestones, epoch)
            perm = torch.randperm(n, generator=generator, device=gen_dev).to(x.device)
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev, dtype=torch.long)
            seen = 0
            for b in range(n_batches):
                idx = perm[b * batch_size:(b + 1) * batch_size]
                xb, yb = x[idx].to(dev, non_blocking=True), y[idx].to(dev, non_blocking=True)
                if batch_hook is not None:
                    out = batch_hook(xb, yb, model)
                    if out is not None:
                        xb, yb = out
                        if xb.shape[0] != yb.shape[0]:
                            raise InputContractError(
                                f"batch_hook returned {xb.shape[0]} inputs but {yb.shape[0]} labels"
                            )
                    model.train()
                if lr_schedule == "cyclic":
                    done = ((epoch - 1) * n_batches + b + 0.5) / (epochs * n_batches)
                    for group in opt.param_groups:
                        group["lr"] = schedule_lr(lr_schedule, float(lr), done)
                opt.zero_grad(set_to_none=True)
                if not checked:  # labels against the model's outputs, once, before any loss
                    with torch.no_grad():
                        _check_labels(model(xb), y)
                    checked = True
                if loss_fn is None:
                    logits = model(xb)
                    loss = nn.functional.cross_entropy(logits, yb)
                else:
                    loss = loss_fn(model, xb, yb)
                    model.train()
                    with torch.no_grad():
                        logits = model(xb)
                loss.backward()
                opt.step()
                loss_sum += loss.detach() * yb.shape[0]
                correct += (logits.detach().argmax(1) == yb).sum()
                seen += yb.shape[0]
                if bar is not None:
                    bar.update(task, advance=1, description=f"epoch {epoch}/{epochs}")
            mean_loss = float(loss_sum) / max(seen, 1)
            if not np.isfinite(mean_loss):
                raise AdvkitError(
                    f"training diverged: the loss is {mean_loss} in epoch {epoch}; lower lr "
                    f"(now {lr}) or check the inputs' scale"
                )
            history.loss.append(mean_loss)
            history.accuracy.append(float(correct) / max(seen, 1))
            history.seconds.append(time.perf_counter() - t0)
            if on_epoch is not None and on_epoch(epoch, history) is True:
                break
    finally:
        if bar is not None:
            bar.stop()
        model.eval()
    return history


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x, y, batch_size: int = 512) -> float:
    """Fraction of ``x`` that ``model`` classifies as ``y`` (in eval mode; the mode is restored)."""
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", type(model).__name__, "a torch.nn.Module")
    check_range("batch_size", batch_size, lo=1, kind=int)
    x, y = _as_tensors(x, y)
    dev = module_device(model)
    was_training = model.training
    model.eval()
    try:
        correct = torch.zeros((), device=dev, dtype=torch.long)
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(dev, non_blocking=True)
            yb = y[i:i + batch_size].to(dev, non_blocking=True)
            correct += (model(xb).argmax(1) == yb).sum()
    finally:
        model.train(was_training)
    return float(correct) / x.shape[0]
