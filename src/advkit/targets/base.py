"""The one boundary to a model: ``Target``, its ``Capabilities`` and its ``InputContract``.

Attacks never see a framework; they call ``logits`` / ``probabilities`` / ``labels`` on batches of
tensors. A target validates inputs against its contract, batches, counts queries (one per input
sample) and enforces an optional query budget.
"""

from __future__ import annotations

import contextlib
import math
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from advkit.errors import (
    BudgetExhausted,
    IncompatibleTargetError,
    InputContractError,
    InvalidParameterError,
    ModelBehaviorError,
    NonFiniteScoresError,
    check_range,
    short,
)

CAPABILITIES = ("gradients", "logits", "probabilities", "labels")


@dataclass(frozen=True)
class Capabilities:
    """What a target can answer. ``gradients`` means exact input gradients of ``logits``."""

    gradients: bool = False
    logits: bool = False
    probabilities: bool = False
    labels: bool = True

    def names(self) -> frozenset[str]:
        return frozenset(c for c in CAPABILITIES if getattr(self, c))

    def missing(self, required) -> list[str]:
        return sorted(set(required) - self.names())


@dataclass(frozen=True)
class InputContract:
    """The inputs a target accepts: per-sample ``shape``, ``dtype``, value ``bounds`` and classes.

    ``normalization`` says where input normalization happens (advkit always feeds raw inputs within
    ``bounds``; a model that expects normalized inputs must normalize inside its forward).
    """

    shape: tuple[int, ...]
    n_classes: int
    bounds: tuple[float, float] = (0.0, 1.0)
    dtype: torch.dtype = torch.float32
    normalization: str = "inside the model"
    class_names: tuple[str, ...] | None = None
    # tabular data: per-feature bounds and constraints (advkit.data.features.FeatureSpace)
    features: object | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if any(s < 1 for s in self.shape):
            raise InputContractError(f"contract shape dims must be >= 1, got {self.shape}")
        try:
            object.__setattr__(self, "n_classes", operator.index(self.n_classes))
        except TypeError:
            raise InputContractError(
                f"n_classes must be an integer, got {short(self.n_classes)}") from None
        lo, hi = self.bounds
        object.__setattr__(self, "bounds", (float(lo), float(hi)))
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InputContractError(
                f"contract bounds must be finite with lo < hi, got {self.bounds}")
        if self.n_classes < 2:
            raise InputContractError(f"a classifier needs n_classes >= 2, got {self.n_classes}")
        fs = self.features
        if fs is not None and (len(self.shape) != 1 or fs.d != self.shape[0]):
            raise InputContractError(f"per-feature bounds for {fs.d} features do not fit inputs "
                                     f"of shape {self.shape}")


def _where(mask: torch.Tensor) -> tuple[int, tuple[int, ...]]:
    """First (sample index, position within the sample) where ``mask`` is true."""
    pos = torch.nonzero(mask, as_tuple=False)[0].tolist()
    return pos[0], tuple(pos[1:])


@dataclass(eq=False)
class Target(ABC):
    """Base class of every target. Subclasses implement ``_forward`` on one batch."""

    contract: InputContract
    batch_size: int = 256
    budget: int | None = None
    queries: int = field(default=0, init=False)
    # transforms applied in front of the model (defenses); reported, and BPDA where needed
    transforms: tuple = field(default=(), init=False)

    def __post_init__(self):
        check_range("batch_size", self.batch_size, lo=1, kind=int)
        if self.budget is not None:
            check_range("budget", self.budget, lo=0, kind=int)
        if not isinstance(self.contract, InputContract):
            raise InvalidParameterError("contract", type(self.contract).__name__,
                                        "an advkit InputContract")

    @property
    def model_name(self) -> str:
        """What error messages call the model behind this target (its class name)."""
        inner = getattr(self, "inner", None)
        return inner.model_name if isinstance(inner, Target) else type(self).__name__

    # -- what subclasses provide -------------------------------------------------------------
    @property
    @abstractmethod
    def capabilities(self) -> Capabilities: ...

    @abstractmethod
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model scores for one batch: logits if ``capabilities.logits``, else probabilities,
        else one-hot labels (float). Differentiable when ``capabilities.gradients``."""

    # -- validation --------------------------------------------------------------------------
    def check_inputs(self, x) -> torch.Tensor:
        """Return ``x`` as a float tensor or raise InputContractError naming the bad sample."""
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
        if not isinstance(x, torch.Tensor):
            raise InputContractError(f"inputs must be a torch.Tensor or numpy array, got {type(x)}")
        c = self.contract
        if x.dim() != len(c.shape) + 1 or tuple(x.shape[1:]) != c.shape:
            dims = ", ".join(map(str, c.shape))
            raise InputContractError(
                f"inputs have shape {tuple(x.shape)} but the target expects (N, {dims}); "
                f"fix: reshape to (N, {dims}) (a single sample needs a batch axis)"
            )
        if not x.is_floating_point():
            x = x.to(c.dtype)
        lo, hi = c.bounds
        tol = 1e-5 * max(1.0, hi - lo)
        if c.features is not None:
            self._check_features(x)
        if x.numel():  # fast path, one pass: NaN propagates through min/max, so finite extremes
            mn, mx = (float(v) for v in torch.aminmax(x.detach()))  # within bounds: a valid batch
            if math.isfinite(mn) and math.isfinite(mx) and mn >= lo - tol and mx <= hi + tol:
                return x
        bad = ~torch.isfinite(x)
        if bad.any():
            i, pos = _where(bad)
            raise InputContractError(
                f"input {i} holds a non-finite value ({x[i][pos].item()}) at position {pos}; "
                "fix: remove or impute NaN/inf values before attacking"
            )
        for mask, side, bound in (
            (x < lo - tol, "below the lower", lo),
            (x > hi + tol, "above the upper", hi),
        ):
            if mask.any():
                i, pos = _where(mask)
                raise InputContractError(
                    f"input {i} has value {x[i][pos].item():.6g} at position {pos}, {side} bound "
                    f"{bound} of the contract bounds {c.bounds}; fix: scale inputs into {c.bounds} "
                    "or declare the bounds the model really uses"
                )
        return x

    def _check_features(self, x: torch.Tensor) -> None:
        """Each feature within its own bounds (tabular contracts)."""
        fs = self.contract.features
        lo = torch.tensor(fs.lo, dtype=torch.float64, device=x.device)
        hi = torch.tensor(fs.hi, dtype=torch.float64, device=x.device)
        tol = 1e-5 * torch.clamp(hi - lo, min=1.0)
        xd = x.detach().to(torch.float64)
        bad = (xd < lo - tol) | (xd > hi + tol)
        if bool(bad.any()):
            i, (j,) = _where(bad)
            raise InputContractError(
                f"input {i}: feature {fs.names[j]!r} is {float(xd[i, j]):.6g}, outside its bounds "
                f"[{fs.lo[j]:g}, {fs.hi[j]:g}]; fix: pass data in the units the contract declares "
                "(or widen dataset.features.bounds)")

    @property
    def feature_space(self):
        """The FeatureSpace when this target takes tabular inputs in per-feature unit space
        (``advkit.targets.features.FeatureSpaceTarget``), else None."""
        inner = getattr(self, "inner", None)
        return inner.feature_space if isinstance(inner, Target) else None

    def check_labels(self, y, n: int | None = None) -> torch.Tensor:
        if isinstance(y, np.ndarray):
            y = torch.from_numpy(np.ascontiguousarray(y))
        if not isinstance(y, torch.Tensor):
            y = torch.as_tensor(y)
        if y.is_floating_point():
            if not torch.all(y == y.round()):
                raise InputContractError(
                    "labels must be integer class indices, got fractional values"
                )
            y = y.long()
        y = y.long()
        if y.dim() != 1:
            raise InputContractError(
                f"labels must be 1-D class indices, got shape {tuple(y.shape)}"
            )
        if n is not None and y.shape[0] != n:
            raise InputContractError(f"got {y.shape[0]} labels for {n} inputs; they must match")
        k = self.contract.n_classes
        bad = (y < 0) | (y >= k)
        if bad.any():
            i = int(torch.nonzero(bad)[0])
            raise InputContractError(
                f"label {i} is {int(y[i])}, outside the {k} classes [0, {k - 1}]; "
                "fix: map labels to 0..n_classes-1"
            )
        return y

    def require(self, required, who: str = "this attack", suggest: str | None = None, *,
                hint: str | Callable[[Capabilities], str] | None = None) -> None:
        """IncompatibleTargetError when the target lacks a capability in ``required``; the
        message ends with ``hint`` (a whole clause, or a function of the target's capabilities
        returning one, e.g. ``EvasionAttack.suggestion``) or "try ``suggest``" (something that
        needs only what the target has)."""
        missing = self.capabilities.missing(required)
        if missing:
            has = ", ".join(sorted(self.capabilities.names())) or "nothing"
            hint = hint(self.capabilities) if callable(hint) else hint
            tip = (f"; {hint}" if hint else
                   f"; try {suggest}, which needs only what the target has" if suggest else "")
            raise IncompatibleTargetError(
                f"{who} needs {', '.join(missing)} but {type(self).__name__} offers only {has}{tip}"
            )

    # -- queries -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def scoring(self):
        """Queries that score an attack's result (not the attacker's own): counted, but not
        refused by the budget, so an attack that ran out of budget still gets its best result
        scored. The wrapped targets of a defended target are scored the same way."""
        chain, t = [], self
        while isinstance(t, Target):
            chain.append(t)
            t = getattr(t, "inner", None)
        saved = [c.__dict__.get("_scoring", False) for c in chain]
        for c in chain:
            c._scoring = True
        try:
            yield self
        finally:
            for c, v in zip(chain, saved, strict=True):
                c._scoring = v

    def _count(self, n: int) -> None:
        if (self.budget is not None and self.queries + n > self.budget
                and not self.__dict__.get("_scoring", False)):
            raise BudgetExhausted(
                f"query budget of {self.budget} exhausted ({self.queries} used, {n} more asked); "
                "raise the target's budget or lower the attack's queries"
            )
        self.queries += n

    def _batched(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= self.batch_size:
            return fn(x)
        return torch.cat(
            [fn(x[i : i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
        )

    def _scores(self, x, check: bool) -> torch.Tensor:
        if check:
            x = self.check_inputs(x)
        self._count(x.shape[0])
        return self._batched(self._forward, x)

    # -- the public interface ----------------------------------------------------------------
    def logits(self, x, *, check: bool = True) -> torch.Tensor:
        """Logits for a batch (differentiable when the target has gradients)."""
        self.require({"logits"}, "logits()", "probabilities() or labels()")
        return self._scores(x, check)

    def probabilities(self, x, *, check: bool = True) -> torch.Tensor:
        self.require({"probabilities"}, "probabilities()", "labels()")
        s = self._scores(x, check)
        return torch.softmax(s, dim=1) if self.capabilities.logits else s

    def labels(self, x, *, check: bool = True) -> torch.Tensor:
        with torch.no_grad():
            return self._scores(x, check).argmax(1)

    def predict_scores(self, x, *, check: bool = True) -> torch.Tensor:
        """The richest scores the target answers: logits, else probabilities, else one-hot."""
        return self._scores(x, check)

    def reset_queries(self) -> None:
        self.queries = 0

    def with_transforms(self, *transforms) -> Target:
        """This target behind input transformations (a defended target)."""
        from advkit.targets.wrapped import TransformedTarget

        return TransformedTarget(self, transforms)

    def with_output(self, hardening) -> Target:
        """This target with hardened outputs (rounding, top-k, labels only)."""
        from advkit.targets.wrapped import HardenedOutputTarget

        return HardenedOutputTarget(self, hardening)


def looks_like_probabilities(scores: torch.Tensor, atol: float = 1e-3) -> bool:
    """True when every row is non-negative and sums to one (a softmax output)."""
    s = scores.detach()
    if s.numel() == 0 or s.dim() != 2:
        return False
    return bool((s >= 0).all() and torch.allclose(s.sum(1), torch.ones_like(s[:, 0]), atol=atol))


def check_output_shape(scores: torch.Tensor, n: int, n_classes: int, who: str = "model") -> None:
    if scores.dim() != 2 or scores.shape[0] != n or scores.shape[1] != n_classes:
        raise ModelBehaviorError(
            f"the {who} returned shape {tuple(scores.shape)} for {n} inputs but the contract "
            f"declares {n_classes} classes; expected ({n}, {n_classes})"
        )


def check_scores(scores, n: int, n_classes: int, who: str = "model",
                 x: torch.Tensor | None = None) -> torch.Tensor:
    """Check what a model returned for ``n`` inputs: a floating tensor of shape (n, n_classes)
    with finite values; raise ModelBehaviorError naming ``who`` otherwise (InputContractError
    when the inputs ``x``, if given, were not finite in the first place)."""
    if not isinstance(scores, torch.Tensor):
        raise ModelBehaviorError(
            f"the {who} returned a {type(scores).__name__}; expected a tensor of scores of shape "
            f"({n}, {n_classes}) (a model returning a tuple or dict needs a wrapper module that "
            "returns only the logits)")
    if not scores.is_floating_point():
        raise ModelBehaviorError(
            f"the {who} returned {scores.dtype} scores; expected floating-point logits or "
            "probabilities (labels are not scores: return the logits)")
    check_output_shape(scores, n, n_classes, who)
    finite = torch.isfinite(scores.detach())
    if not bool(finite.all()):
        i = int((~finite).any(1).nonzero()[0])
        if x is not None and not bool(torch.isfinite(x[i].detach()).all()):
            raise InputContractError(
                f"input {i} passed to the {who} holds NaN or inf, so its scores do too; check "
                "the inputs (or the attack that produced them)")
        raise NonFiniteScoresError(
            f"the {who} returned non-finite scores (NaN or inf) for input {i} of a valid batch; "
            "the model is numerically broken (check its weights and any log/division inside)")
    return scores


def no_gradient_path(model_name: str) -> ModelBehaviorError:
    """The error for a model whose scores have no gradient path to its input (one message for
    the target's own check and for every attack that differentiates)."""
    return ModelBehaviorError(
        f"the model {model_name} has no gradient path from its input to its scores (its forward "
        "detaches, rounds or leaves the input out); gradient attacks cannot run: use a black-box "
        "attack (square) or make the forward differentiable")


def check_input_dependence(target: Target, x: torch.Tensor, *,
                           generator: torch.Generator | None = None, rtol: float = 1e-6) -> None:
    """Raise ModelBehaviorError when ``target`` answers the same scores for the inputs ``x`` and
    for as many uniform random inputs within the bounds: a model that ignores its input, whose
    robustness numbers would be meaningless."""
    if x.shape[0] == 0:
        raise InputContractError("no inputs to check the model on; pass at least one input")
    lo, hi = target.contract.bounds
    noise = torch.rand(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
    with torch.no_grad():
        s = target.predict_scores(torch.cat([x, lo + (hi - lo) * noise]), check=False)
    if float((s - s[:1]).abs().max()) <= rtol * (1.0 + float(s.abs().max())):
        raise ModelBehaviorError(
            f"the model {target.model_name} returns the same scores {short(s[0].tolist(), 80)} "
            f"for all {x.shape[0]} test inputs and {x.shape[0]} random inputs: it ignores its "
            "input, so no attack can change its answers; check that the right model and weights "
            "were loaded (and that its forward uses its input)")


INF = math.inf
