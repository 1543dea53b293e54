"""Shadow (reference) models trained on random halves of a population pool, together or one by one.

The shadow-model idea is Shokri, Stronati, Song & Shmatikov (2017), "Membership Inference Attacks
Against Machine Learning Models", IEEE S&P; the data split is the one of Carlini et al. (2022),
"Membership Inference Attacks From First Principles", IEEE S&P: every pool example is IN exactly
``n_models // 2`` models (a random half of the models, drawn per example), so that each example
has as many IN as OUT models to fit its two Gaussians.

Training, identical in both paths at the same generator (same math, float round-off aside):

1. the models are built in order from one ``torch.Generator`` (``make_model(generator)``);
2. the membership mask (M, N) is drawn from the same generator;
3. each epoch draws one permutation of the whole pool; it is cut into batches of ``batch_size``
   pool examples, and each model takes a step on **its own members** of the batch (mean
   cross-entropy over them; a model with no member in a batch does not step);
4. Adam (Kingma & Ba 2015) with PyTorch's update rule and L2 ``weight_decay`` added to the gradient.

``vectorized=True`` stacks the M models' parameters (``torch.func.stack_module_state``) and runs
them in one ``vmap`` of ``functional_call`` over the stacked parameters: one forward and one
backward for all models on the whole batch, each model's loss weighted by its membership mask. The
one-by-one path trains each model alone with ``torch.optim.Adam`` on its members only. The
architecture must be a pure function of its parameters (no batch norm statistics, no dropout):
the zoo's ``mlp`` and CNNs are. ``train_separately`` takes any per-model training function
instead (DP-SGD's per-example clipping and Poisson batches do not fit the shared batches).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from advkit.errors import InvalidParameterError, check_range
from advkit.params import check_params, param

_STATEFUL = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.GroupNorm)


@dataclass
class ShadowModels:
    """M trained models as stacked parameters, with the pool membership mask ``masks`` (M, N)."""

    base: nn.Module  # a template (parameters on the meta device): the architecture only
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    masks: torch.Tensor  # bool (M, N): masks[m, i] = pool example i trained model m

    @property
    def n_models(self) -> int:
        return int(self.masks.shape[0])

    def logits(self, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Logits of every model on ``x``: (M, N, K)."""
        f = vmap(_forward_fn(self.base), in_dims=(0, 0, None))
        with torch.no_grad():
            return torch.cat([f(self.params, self.buffers, x[i:i + batch_size])
                              for i in range(0, x.shape[0], batch_size)], dim=1)

    def model(self, m: int) -> nn.Module:
        """Model ``m`` as an ordinary module (eval mode)."""
        net = copy.deepcopy(self.base).to_empty(device=self.masks.device)
        state = {k: v[m] for k, v in {**self.params, **self.buffers}.items()}
        net.load_state_dict(state)
        return net.eval()


def _forward_fn(base: nn.Module):
    def f(params, buffers, x):
        return functional_call(base, (params, buffers), (x,))
    return f


def balanced_masks(n_models: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(M, N) bool: each example IN exactly ``M // 2`` models, a random subset per example."""
    keys = torch.rand(n_models, n, generator=generator)
    ranks = keys.argsort(0).argsort(0)
    return ranks < n_models // 2


@dataclass(frozen=True, kw_only=True)
class ShadowTrainer:
    """Train ``n_models`` shadow models on random halves of a pool (see the module docstring)."""

    n_models: int = param(16, int, lo=2, hi=4096)
    epochs: int = param(50, int, lo=1)
    batch_size: int = param(128, int, lo=1, doc="pool examples per step (each model: its members)")
    lr: float = param(1e-2, float, lo=0, lo_open=True)
    weight_decay: float = param(0.0, float, lo=0)
    vectorized: bool = param(True, bool, doc="train all models in one vmap pass")

    def __post_init__(self):
        check_params(self)

    def train(self, make_model: Callable[[torch.Generator], nn.Module], x: torch.Tensor,
              y: torch.Tensor, *, generator: torch.Generator) -> ShadowModels:
        x, y, models = _checked(make_model, x, y, self.n_models, generator)
        n = x.shape[0]
        masks = balanced_masks(self.n_models, n, generator).to(x.device)
        perms = [torch.randperm(n, generator=generator).to(x.device)
                 for _ in range(self.epochs)]
        train = self._train_vectorized if self.vectorized else self._train_sequential
        params, buffers = train(models, x, y, masks, perms)
        base = copy.deepcopy(models[0]).to("meta")
        return ShadowModels(base, params, buffers, masks)

    def _batches(self, perms):
        for perm in perms:
            for i in range(0, perm.numel(), self.batch_size):
                yield perm[i:i + self.batch_size]

    def _train_sequential(self, models, x, y, masks, perms):
        for m, net in enumerate(models):
            net.train()
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            for idx in self._batches(perms):
                own = idx[masks[m, idx]]
                if own.numel() == 0:
                    continue
                loss = nn.functional.cross_entropy(net(x[own]), y[own])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            net.eval()
        params, buffers = stack_module_state(models)
        return ({k: v.detach() for k, v in params.items()},
                {k: v.detach() for k, v in buffers.items()})

    def _train_vectorized(self, models, x, y, masks, perms):
        params, buffers = stack_module_state(models)
        params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        buffers = {k: v.detach() for k, v in buffers.items()}
        base = copy.deepcopy(models[0]).to("meta")
        f = vmap(_forward_fn(base), in_dims=(0, 0, None))
        state = {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in params.items()}
        steps = torch.zeros(self.n_models, dtype=torch.float64, device=x.device)
        b1, b2 = 0.9, 0.999  # torch.optim.Adam's defaults
        for idx in self._batches(perms):
            w = masks[:, idx].to(x.dtype)  # (M, B)
            count = w.sum(1)
            active = count > 0
            logits = f(params, buffers, x[idx])  # (M, B, K)
            k = logits.shape[-1]
            ce = nn.functional.cross_entropy(logits.reshape(-1, k), y[idx].repeat(
                self.n_models), reduction="none").view(self.n_models, -1)
            loss = ((ce * w).sum(1) / count.clamp_min(1)).sum()
            grads = torch.autograd.grad(loss, list(params.values()))
            steps += active.to(steps.dtype)
            every = bool(active.all())
            same = every and bool((steps == steps[0]).all())
            with torch.no_grad():
                if same:  # the usual case: every model steps, one step count (scalar Adam)
                    t = float(steps[0])
                    self._adam(params, grads, state, (1 - b1 ** t), (1 - b2 ** t) ** 0.5, None)
                    continue
                shape_t = steps.clamp_min(1)
                self._adam(params, grads, state, 1 - b1 ** shape_t, (1 - b2 ** shape_t).sqrt(),
                           active)
        return ({k: v.detach() for k, v in params.items()}, buffers)

    def _adam(self, params, grads, state, bc1, bc2_sqrt, active):
        """One Adam step (torch.optim.Adam's rule) on stacked parameters; ``bc1``/``bc2_sqrt``
        are scalars, or per-model (M,) tensors with ``active`` (M,) masking the models that step."""
        b1, b2, eps = 0.9, 0.999, 1e-8
        for (name, p), g in zip(params.items(), grads, strict=True):
            if self.weight_decay:
                g = g + self.weight_decay * p
            m1, v2 = state[name]
            if active is None:
                m1.mul_(b1).add_(g, alpha=1 - b1)
                v2.mul_(b2).addcmul_(g, g, value=1 - b2)
                p.addcdiv_(m1, v2.sqrt().div_(bc2_sqrt).add_(eps), value=-self.lr / bc1)
                continue
            shape = (-1,) + (1,) * (p.ndim - 1)
            act = active.view(shape)
            m1.copy_(torch.where(act, b1 * m1 + (1 - b1) * g, m1))
            v2.copy_(torch.where(act, b2 * v2 + (1 - b2) * g * g, v2))
            c1 = bc1.to(p.dtype).view(shape)
            c2 = bc2_sqrt.to(p.dtype).view(shape)
            upd = (self.lr / c1) * m1 / (v2.sqrt() / c2 + eps)
            p.sub_(torch.where(act, upd, torch.zeros_like(upd)))


def _checked(make_model, x, y, n_models: int, generator):
    """(x, y, the ``n_models`` models built in order from ``generator``), the pool checked."""
    if not isinstance(generator, torch.Generator):
        raise InvalidParameterError("generator", type(generator).__name__,
                                    "a torch.Generator (randomness is explicit)")
    x, y = torch.as_tensor(x), torch.as_tensor(y).long()
    if y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise InvalidParameterError(
            "x, y", f"shapes {tuple(x.shape)}, {tuple(y.shape)}",
            "a pool of at least 2 examples and one label per example")
    if not torch.all(torch.isfinite(x)):
        raise InvalidParameterError("x", "NaN or infinite inputs", "finite inputs")
    models = [make_model(generator) for _ in range(n_models)]
    stateful = sorted({type(m).__name__ for m in models[0].modules()
                       if isinstance(m, _STATEFUL)})
    if stateful:
        raise InvalidParameterError(
            "make_model", f"a model with {', '.join(stateful)}",
            "a model without batch norm or dropout (its output a function of its parameters)")
    with torch.no_grad():
        k = models[0](x[:1]).shape[-1]
    if int(y.min()) < 0 or int(y.max()) >= k:
        raise InvalidParameterError(
            "y", f"labels in [{int(y.min())}, {int(y.max())}]",
            f"class indices in [0, {k - 1}] (the model has {k} outputs)")
    return x, y, models


def train_separately(make_model: Callable[[torch.Generator], nn.Module],
                     fit: Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Generator], None],
                     x: torch.Tensor, y: torch.Tensor, *, n_models: int,
                     generator: torch.Generator) -> ShadowModels:
    """``n_models`` shadow models trained one by one by any algorithm: ``fit(model, x_m, y_m,
    generator)`` trains ``model`` in place on its members of the pool. For training that cannot
    share the vmap pass, such as DP-SGD (per-example clipping, Poisson batches). Steps 1 and 2 of
    the module docstring are the same (models built, then the balanced mask drawn, from
    ``generator``); each ``fit`` then draws from ``generator`` in model order."""
    check_range("n_models", n_models, lo=2, kind=int)
    x, y, models = _checked(make_model, x, y, n_models, generator)
    masks = balanced_masks(n_models, x.shape[0], generator).to(x.device)
    for m, net in enumerate(models):
        fit(net, x[masks[m]], y[masks[m]], generator)
        net.eval()
    params, buffers = stack_module_state(models)
    return ShadowModels(copy.deepcopy(models[0]).to("meta"),
                        {k: v.detach() for k, v in params.items()},
                        {k: v.detach() for k, v in buffers.items()}, masks)
