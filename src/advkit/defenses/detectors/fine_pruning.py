"""Fine-pruning: prune the channels a backdoor hides in, then fine-tune.

Liu, Dolan-Gavitt & Garg (2018), "Fine-Pruning: Defending Against Backdooring Attacks on Deep
Neural Networks", RAID. A backdoor tends to live in neurons that clean inputs leave dormant. The
defense ranks the channels of the last convolutional layer by their mean activation on clean data,
prunes them in increasing order while the accuracy on a held-out clean split stays within
``max_drop`` of the original (or until ``max_ratio`` of the channels are gone), and fine-tunes the
pruned network on clean data (pruned channels stay at zero). The user's model is never changed.

The helpers here (finding the layer, channel activity, zeroing channels, fine-tuning) are shared
with Neural Cleanse's mitigations.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from advkit.errors import (
    IncompatibleTargetError,
    InputContractError,
    InvalidParameterError,
)
from advkit.params import check_params, param
from advkit.registry import register
from advkit.targets.base import Target
from advkit.threat_tags import MITIGATES_BACKDOOR


def resolve_model(obj) -> nn.Module:
    """The ``nn.Module`` behind a TorchTarget, or the module itself."""
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Target) and isinstance(getattr(obj, "model", None), nn.Module):
        return obj.model
    raise IncompatibleTargetError(
        f"this defense changes a PyTorch model's weights; got {type(obj).__name__}. "
        "Pass a torch.nn.Module or a TorchTarget"
    )


def check_data(x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """Float inputs (N, ...) without NaN and int64 labels (N,)."""
    x = torch.as_tensor(x)
    y = torch.as_tensor(y)
    if not x.is_floating_point() or x.dim() < 2 or not torch.isfinite(x).all():
        raise InputContractError(
            f"x_clean must be a finite float batch (N, ...), got dtype {x.dtype} "
            f"and shape {tuple(x.shape)}"
        )
    if y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
        raise InputContractError(
            f"y_clean must hold one integer label per input: {x.shape[0]} inputs, labels of shape "
            f"{tuple(y.shape)} and dtype {y.dtype}"
        )
    return x, y.long()


def find_layer(model: nn.Module, layer: str | None = None) -> tuple[str, nn.Module]:
    """The module named ``layer``, or the model's last ``nn.Conv2d``."""
    named = dict(model.named_modules())
    if layer is not None:
        if layer not in named or not isinstance(named[layer], nn.Conv2d | nn.Linear):
            convs = [n for n, m in named.items() if isinstance(m, nn.Conv2d | nn.Linear)]
            raise InvalidParameterError("layer", layer, f"a Conv2d or Linear module among {convs}")
        return layer, named[layer]
    convs = [(n, m) for n, m in named.items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise IncompatibleTargetError(
            "the model has no Conv2d layer to prune; pass layer='name' of a Linear layer instead"
        )
    return convs[-1]


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def predict_scores(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The model's outputs in eval mode without gradients (mode restored), on ``x``'s device."""
    was, dev = model.training, _device(model)
    model.eval()
    try:
        with torch.no_grad():
            out = [model(x[i : i + batch_size].to(dev)) for i in range(0, len(x), batch_size)]
    finally:
        model.train(was)
    return torch.cat(out).to(x.device)


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels in eval mode, on ``x``'s device."""
    if len(x) == 0:
        return torch.empty(0, dtype=torch.long, device=x.device)
    return predict_scores(model, x, batch_size).argmax(1)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    return float((predict(model, x, batch_size) == y).float().mean()) if len(y) else float("nan")


def channel_activity(model: nn.Module, module: nn.Module, x: torch.Tensor,
                     batch_size: int = 512) -> torch.Tensor:
    """Mean activation (after a ReLU) of each output channel of ``module`` over ``x``: (C,)."""
    total: list[torch.Tensor] = []

    def hook(_m, _inp, out):
        a = torch.relu(out.detach())
        total.append(a.transpose(0, 1).flatten(1).mean(1) * a.shape[0])

    handle = module.register_forward_hook(hook)
    try:
        predict(model, x, batch_size)
    finally:
        handle.remove()
    return torch.stack(total).sum(0).to(x.device) / max(len(x), 1)


def _following_batchnorm(model: nn.Module, module: nn.Module) -> nn.Module | None:
    mods = list(model.modules())
    i = next(k for k, m in enumerate(mods) if m is module)
    nxt = mods[i + 1] if i + 1 < len(mods) else None
    n_out = module.weight.shape[0]
    if isinstance(nxt, nn.modules.batchnorm._BatchNorm) and nxt.num_features == n_out:
        return nxt
    return None


def zero_channels(model: nn.Module, module: nn.Module, channels) -> None:
    """Silence output channels of ``module`` (and of a BatchNorm right after it) in place."""
    idx = torch.as_tensor(list(channels), dtype=torch.long, device=module.weight.device)
    if idx.numel() == 0:
        return
    with torch.no_grad():
        for m in (module, _following_batchnorm(model, module)):
            if m is None:
                continue
            m.weight[idx] = 0
            if m.bias is not None:
                m.bias[idx] = 0


def finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
             batch_size: int, generator: torch.Generator | None = None,
             after_step: Callable[[], None] | None = None) -> None:
    """Fine-tune ``model`` in place with Adam on (x, y); ``after_step`` runs after each update."""
    dev = _device(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size].to(x.device)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x[idx].to(dev)), y[idx].to(dev))
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
    model.eval()


def split(x, y, share: float, generator: torch.Generator | None):
    """(x_a, y_a, x_b, y_b): a random ``share`` of the data goes to b."""
    perm = torch.randperm(len(x), generator=generator).to(x.device)
    n_b = max(1, int(round(share * len(x))))
    b, a = perm[:n_b], perm[n_b:]
    return x[a], y[a], x[b], y[b]


@register("fine_pruning", family="defense", threat=MITIGATES_BACKDOOR)
@dataclass(frozen=True, kw_only=True)
class FinePruning:
    """Fine-pruning (Liu 2018): prune dormant channels of the last conv layer, then fine-tune.

    ``max_drop``: largest allowed drop of held-out clean accuracy while pruning (the paper's 4 %);
    ``max_ratio``: at most this share of the layer's channels is pruned; ``val_share``: share of the
    clean data held out to measure the drop when no ``x_val`` is given; ``layer``: the module to
    prune (default the last Conv2d). Learned: ``model_`` (a new model), ``pruned_channels_``,
    ``layer_``, ``activity_``, ``val_acc_before_`` / ``val_acc_pruned_`` / ``val_acc_after_``,
    ``curve_`` (the pruning curve: one dict per number of channels pruned, 0 to ``max_ratio`` of
    them in pruning order, past the stopping point too: ``n_pruned``, ``fraction_pruned``,
    ``clean_accuracy`` on the validation data and, when ``fit`` got a trigger,
    ``backdoor_success``), with a trigger ``backdoor_success_before_`` / ``_pruned_`` /
    ``_after_``, and ``seconds_``.
    """

    layer: str | None = param(None, str, doc="module to prune; None: the last Conv2d")
    max_drop: float = param(0.04, float, lo=0, hi=1,
                            doc="largest drop of held-out clean accuracy while pruning")
    max_ratio: float = param(1.0, float, lo=0, hi=1, lo_open=True,
                             doc="largest share of the layer's channels pruned (1: only the "
                                 "accuracy drop stops it, as in the paper)")
    finetune_epochs: int = param(1, int, lo=0)
    lr: float = param(1e-3, float, lo=0, lo_open=True)
    batch_size: int = param(64, int, lo=1)
    val_share: float = param(0.2, float, lo=0, hi=1, lo_open=True, hi_open=True,
                             doc="share of the clean data held out when no x_val is given")

    def __post_init__(self):
        check_params(self)

    def fit(self, model, x_clean, y_clean, *, x_val=None, y_val=None, trigger=None,
            target: int | None = None, generator: torch.Generator | None = None) -> FinePruning:
        """Prune and fine-tune a copy of ``model``; returns self.

        ``trigger`` (optional): a function stamping the backdoor's trigger on a batch, with the
        attack's ``target`` class; when given, the pruning curve and ``backdoor_success_*``
        report the backdoor success (DESIGN §4) on the validation points of other classes."""
        t0 = time.perf_counter()
        x, y = check_data(x_clean, y_clean)
        if x_val is None:
            x, y, x_val, y_val = split(x, y, self.val_share, generator)
        else:
            x_val, y_val = check_data(x_val, y_val)
        if trigger is not None and target is None:
            raise InvalidParameterError("target", None, "the backdoor's target class (an int) "
                                        "when a trigger is given")
        new = copy.deepcopy(resolve_model(model)).eval()
        name, layer = find_layer(new, self.layer)
        activity = channel_activity(new, layer, x_val)
        x_trig = None
        if trigger is not None:
            x_trig = trigger(x_val[y_val != target])

        def point(m: nn.Module, n_pruned: int) -> dict:
            out = {"n_pruned": n_pruned, "fraction_pruned": n_pruned / len(activity),
                   "clean_accuracy": accuracy(m, x_val, y_val)}
            if x_trig is not None:
                out["backdoor_success"] = (float((predict(m, x_trig) == target).float().mean())
                                           if len(x_trig) else float("nan"))
            return out

        # the curve runs over every channel up to max_ratio on a scratch copy; the pruned set is
        # its longest prefix whose clean accuracy stays within max_drop of the original (Liu 2018)
        scratch = copy.deepcopy(new)
        _, s_layer = find_layer(scratch, name)
        curve = [point(scratch, 0)]
        base = curve[0]["clean_accuracy"]
        order = torch.argsort(activity)[: int(self.max_ratio * len(activity))].tolist()
        stop = None
        for i, ch in enumerate(order):
            zero_channels(scratch, s_layer, [ch])
            curve.append(point(scratch, i + 1))
            if stop is None and base - curve[-1]["clean_accuracy"] > self.max_drop:
                stop = i
        pruned = order if stop is None else order[:stop]
        zero_channels(new, layer, pruned)
        if self.finetune_epochs:
            finetune(new, x, y, epochs=self.finetune_epochs, lr=self.lr, batch_size=self.batch_size,
                     generator=generator, after_step=lambda: zero_channels(new, layer, pruned))
        after = point(new, len(pruned))
        learned = dict(model_=new, layer_=name, pruned_channels_=pruned, activity_=activity,
                       curve_=curve, val_acc_before_=base,
                       val_acc_pruned_=curve[len(pruned)]["clean_accuracy"],
                       val_acc_after_=after["clean_accuracy"])
        if x_trig is not None:
            learned.update(backdoor_success_before_=curve[0]["backdoor_success"],
                           backdoor_success_pruned_=curve[len(pruned)]["backdoor_success"],
                           backdoor_success_after_=after["backdoor_success"])
        for k, v in (learned | {"seconds_": time.perf_counter() - t0}).items():
            object.__setattr__(self, k, v)
        return self

    def defend(self, model, x_clean, y_clean, **kw) -> tuple[nn.Module, list[int]]:
        """Fit and return (the new fine-pruned model, the pruned channel indices)."""
        self.fit(model, x_clean, y_clean, **kw)
        return self.model_, list(self.pruned_channels_)
