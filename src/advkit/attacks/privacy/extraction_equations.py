"""Model extraction by equation solving, and the query oracle every extraction attack uses.

Tramèr, Zhang, Juels, Reiter & Ristenpart (2016), "Stealing Machine Learning Models via
Prediction APIs", USENIX Security, §4.1. A prediction API that returns confidence scores leaks
equations in the model's parameters:

- *binary logistic regression*: ``logit(p(x)) = log(p1 / p0) = w·x + b`` is linear in the d+1
  unknowns, so d+1 queries at affinely independent points determine (w, b) exactly. The queries
  are the centre of the input box and one step along each axis; the system is solved in float64.
- *multinomial logistic regression* and *small MLPs*: the equations are not linear in the
  parameters; as in the paper, a model of the known architecture is fitted to the returned
  probabilities on uniform random queries by minimising the cross-entropy to them (L-BFGS, float64
  for logistic regression). Softmax parameters are identifiable only up to a per-class shift, so
  the result is compared by its predictions (fidelity), not by its parameters.

The victim is reached only through queries (:func:`as_oracle`): an advkit ``Target`` or a callable
answering a batch with probabilities ``(N, k)``, ``(labels, confidence)`` or labels ``(N,)``.
Equation solving needs the probabilities; a labels-only victim gets an
``IncompatibleTargetError`` that says so and names Copycat, which needs labels only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from advkit.errors import (
    IncompatibleTargetError,
    InputContractError,
    InvalidParameterError,
    ModelBehaviorError,
)
from advkit.params import check_params, param
from advkit.targets.base import Target

OUTPUTS = ("auto", "probabilities", "label_confidence", "labels")


@dataclass(frozen=True)
class Answer:
    """What the victim answered for one batch: labels always; probabilities ``(N, k)`` or a
    per-row confidence (``(N,)`` or ``(N, m)``: a score or leaf identifier) when it gives them."""

    labels: torch.Tensor
    probabilities: torch.Tensor | None = None
    confidence: torch.Tensor | None = None


@dataclass(eq=False)
class QueryOracle:
    """The victim behind a query interface that counts every input sample it is asked about.

    Build it with :func:`as_oracle`. ``lo``/``hi`` are the flat per-feature input bounds;
    ``output`` is what the victim answers (``probabilities``, ``label_confidence`` or
    ``labels``; ``auto`` until a callable's first answer shows it)."""

    victim: object
    input_shape: tuple[int, ...]
    n_classes: int
    lo: torch.Tensor
    hi: torch.Tensor
    output: str = "auto"
    dtype: torch.dtype = torch.float64
    queries: int = field(default=0, init=False)

    @property
    def d(self) -> int:
        return math.prod(self.input_shape)

    def uniform(self, n: int, generator: torch.Generator | None = None,
                dtype: torch.dtype | None = None) -> torch.Tensor:
        """``n`` points uniform in the input box, shaped ``(n, *input_shape)``."""
        u = torch.rand((n, self.d), generator=generator, dtype=torch.float64)
        x = self.lo + (self.hi - self.lo) * u
        return x.to(dtype or self.dtype).reshape(n, *self.input_shape)

    def require(self, what: str, who: str, instead: str) -> None:
        """IncompatibleTargetError when the victim does not answer ``what``."""
        if what == "probabilities" and self.output in ("label_confidence", "labels"):
            raise IncompatibleTargetError(
                f"{who} needs the victim's probabilities for every class, but it answers "
                f"{self.output.replace('_', ' and ')} only; {instead}")
        if what == "confidence" and self.output == "labels":
            raise IncompatibleTargetError(
                f"{who} needs a confidence value (or leaf identifier) with each label, but the "
                f"victim answers labels only; {instead}")

    def ask(self, x: torch.Tensor) -> Answer:
        """Query the victim on the batch ``x`` (counted)."""
        x = torch.as_tensor(x)
        if x.dim() != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise InputContractError(
                f"queries have shape {tuple(x.shape)} but the victim takes (N, "
                f"{', '.join(map(str, self.input_shape))}); fix: reshape the queries")
        n = x.shape[0]
        if isinstance(self.victim, Target):
            t = self.victim
            if t.capabilities.probabilities:
                p = t.probabilities(x.to(self.dtype)).detach().to(torch.float64)
                self.queries += n
                return Answer(p.argmax(1), p)
            lab = t.labels(x.to(self.dtype)).detach().long()
            self.queries += n
            return Answer(lab)
        out = self.victim(x.to(self.dtype))
        self.queries += n
        return self._parse(out, n)

    def _parse(self, out, n: int) -> Answer:
        k = self.n_classes
        if isinstance(out, tuple | list) and len(out) == 2:
            lab, conf = (torch.as_tensor(np.asarray(v)) for v in out)
            if lab.shape != (n,) or conf.dim() not in (1, 2) or conf.shape[0] != n:
                raise ModelBehaviorError(
                    f"the victim answered (labels, confidence) of shapes {tuple(lab.shape)} and "
                    f"{tuple(conf.shape)} for {n} queries; expected ({n},) and ({n},) or ({n}, m)")
            self._seen("label_confidence")
            return Answer(self._labels(lab, n), confidence=conf.to(torch.float64))
        s = torch.as_tensor(np.asarray(out))
        if s.dim() == 1 and s.shape[0] == n:
            self._seen("labels")
            return Answer(self._labels(s, n))
        if s.dim() != 2 or s.shape != (n, k):
            raise ModelBehaviorError(
                f"the victim answered shape {tuple(s.shape)} for {n} queries; expected "
                f"probabilities ({n}, {k}), labels ({n},) or a (labels, confidence) pair")
        s = s.to(torch.float64)
        if not (bool(torch.isfinite(s).all()) and bool((s >= 0).all())
                and bool(torch.allclose(s.sum(1), torch.ones(n, dtype=s.dtype), atol=1e-4))):
            raise ModelBehaviorError(
                "the victim answered an (N, k) array that is not probabilities (rows must be "
                "non-negative and sum to 1); fix: return softmax probabilities, not logits")
        self._seen("probabilities")
        return Answer(s.argmax(1), s)

    def _labels(self, lab: torch.Tensor, n: int) -> torch.Tensor:
        if lab.is_floating_point() and not bool((lab == lab.round()).all()):
            raise ModelBehaviorError("the victim answered fractional labels; expected class "
                                     "indices 0..n_classes-1")
        lab = lab.long()
        if n and (int(lab.min()) < 0 or int(lab.max()) >= self.n_classes):
            raise ModelBehaviorError(
                f"the victim answered a label outside 0..{self.n_classes - 1}; fix: map its "
                "classes to indices (or pass the right n_classes)")
        return lab

    def _seen(self, kind: str) -> None:
        if self.output == "auto":
            self.output = kind


def as_oracle(victim, *, n_classes: int | None = None, input_shape=None, bounds=None,
              output: str = "auto", dtype: torch.dtype = torch.float64) -> QueryOracle:
    """Wrap ``victim`` (a Target, a callable or an existing QueryOracle) for querying.

    A Target brings its shape, classes and bounds (per feature when its contract has a feature
    space). A callable needs ``n_classes``, ``input_shape`` and ``bounds`` (``(lo, hi)``: two
    numbers, or two per-feature sequences); it receives a ``dtype`` tensor of shape
    ``(N, *input_shape)`` and answers probabilities ``(N, k)``, a ``(labels, confidence)`` pair,
    or labels ``(N,)``."""
    if isinstance(victim, QueryOracle):
        return victim
    if output not in OUTPUTS:
        raise InvalidParameterError("output", output, f"one of {', '.join(OUTPUTS)}")
    if isinstance(victim, Target):
        c = victim.contract
        n_classes, input_shape = c.n_classes, c.shape
        fs = c.features
        bounds = (fs.lo, fs.hi) if fs is not None else c.bounds
        output = "probabilities" if victim.capabilities.probabilities else "labels"
    elif not callable(victim):
        raise InvalidParameterError("victim", type(victim).__name__,
                                    "an advkit Target or a callable answering a batch")
    else:
        missing = [n for n, v in (("n_classes", n_classes), ("input_shape", input_shape),
                                  ("bounds", bounds)) if v is None]
        if missing:
            raise InvalidParameterError(
                missing[0], None, f"given for a callable victim (it needs {', '.join(missing)}; "
                "a Target brings them from its contract)")
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise InvalidParameterError("input_shape", input_shape, "positive dimensions")
    if isinstance(n_classes, bool) or not isinstance(n_classes, int | np.integer) or n_classes < 2:
        raise InvalidParameterError("n_classes", n_classes, "an integer >= 2")
    d = math.prod(shape)
    try:
        lo, hi = (torch.as_tensor(np.asarray(b, dtype=np.float64)).reshape(-1) for b in bounds)
    except (TypeError, ValueError):
        raise InvalidParameterError("bounds", bounds, "(lo, hi): numbers or per-feature "
                                    "sequences") from None
    lo, hi = (b.expand(d).clone() if b.numel() == 1 else b for b in (lo, hi))
    if lo.numel() != d or hi.numel() != d or not bool((lo <= hi).all()) \
            or not bool(torch.isfinite(lo).all() & torch.isfinite(hi).all()):
        raise InvalidParameterError("bounds", f"{lo.numel()} and {hi.numel()} values",
                                    f"finite (lo, hi) with lo <= hi, one number or {d} each")
    return QueryOracle(victim, shape, int(n_classes), lo, hi, output, dtype)


@dataclass
class EquationResult:
    """A model stolen by equation solving. ``model`` maps inputs to logits (an ``nn.Module``);
    ``weight``/``bias`` are the recovered parameters in float64 (binary LR: ``(1, d)`` and
    ``(1,)`` with logit = w·x + b; otherwise the fitted model's last layer); ``queries`` the
    victim queries spent; ``method`` ``exact`` or ``loss``; ``loss`` the final fit loss."""

    model: nn.Module
    weight: torch.Tensor
    bias: torch.Tensor
    queries: int
    method: str
    loss: float = 0.0

    def to_dict(self) -> dict:
        return {"weight": self.weight.tolist(), "bias": self.bias.tolist(),
                "queries": self.queries, "method": self.method, "loss": self.loss}


class _Softmax(nn.Module):
    """Logits (0, z) for a binary LR (z = w·x + b), like advkit's SklearnTarget."""

    def __init__(self, linear: nn.Linear, binary: bool):
        super().__init__()
        self.linear, self.binary = linear, binary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x.reshape(x.shape[0], -1).to(self.linear.weight.dtype))
        return torch.cat([torch.zeros_like(z), z], 1) if self.binary else z


@dataclass(frozen=True, kw_only=True)
class EquationSolving:
    """Equation-solving extraction (Tramèr et al. 2016, §4.1) of logistic regression and MLPs.

    ``architecture``: ``logistic`` (binary: exact, d+1 queries; multinomial: loss minimisation)
    or ``mlp`` (loss minimisation for a ReLU MLP with ``hidden`` widths: the victim's known
    architecture). ``method``: ``auto`` (exact when it applies), ``exact`` or ``loss``.
    ``queries``: random queries of the loss method (None: one per unknown parameter, at least
    d+1, the paper's budget of α = 1). ``steps``: L-BFGS iterations of the fit."""

    architecture: str = param("logistic", str, choices=("logistic", "mlp"))
    method: str = param("auto", str, choices=("auto", "exact", "loss"))
    hidden: tuple = param((20,), "ints", lo=1, doc="MLP hidden widths (architecture='mlp')")
    queries: int | None = param(None, int, lo=1, optional=True)
    steps: int = param(200, int, lo=1)

    def __post_init__(self):
        check_params(self)
        if self.architecture == "mlp" and self.method == "exact":
            raise InvalidParameterError(
                "method", "exact", "'auto' or 'loss' for an MLP (only a binary logistic "
                "regression is solved exactly; fix: method='loss')", owner="EquationSolving")

    def extract(self, victim, *, generator: torch.Generator | None = None,
                **oracle_kwargs) -> EquationResult:
        """Steal the victim (a Target or callable, see :func:`as_oracle`)."""
        o = as_oracle(victim, **oracle_kwargs)
        o.require("probabilities", "equation solving",
                  "use Copycat (advkit.attacks.privacy.copycat), which needs labels only")
        binary_lr = self.architecture == "logistic" and o.n_classes == 2
        if self.method == "exact" and not binary_lr:
            raise InvalidParameterError(
                "method", "exact", f"'loss' for this victim: exact solving applies to a binary "
                f"logistic regression, and it has {o.n_classes} classes", owner="EquationSolving")
        if binary_lr and self.method != "loss":
            return self._exact(o)
        return self._fit(o, generator)

    # -- binary LR: d+1 linear equations -------------------------------------------------------
    def _exact(self, o: QueryOracle) -> EquationResult:
        d, start = o.d, o.queries
        mid, half = (o.lo + o.hi) / 2, (o.hi - o.lo) / 2
        if not bool((half > 0).all()):
            j = int(torch.nonzero(half <= 0)[0])
            raise InputContractError(
                f"feature {j} has zero width in the bounds, so its weight is not identifiable "
                "from queries; fix: declare bounds with lo < hi for every feature")
        pts = mid.repeat(d + 1, 1)
        pts[1:] += torch.diag(half / 2)
        ans = o.ask(pts.reshape(d + 1, *o.input_shape))
        if ans.probabilities is None:
            o.require("probabilities", "equation solving", "use Copycat")
        p = ans.probabilities
        if bool((p <= 0).any()):
            raise ModelBehaviorError(
                "the victim answered a probability of exactly 0 or 1 at a query, so its logit is "
                "infinite and the equations cannot be solved; the API rounds or saturates its "
                "scores: use method='loss' or Copycat")
        z = torch.log(p[:, 1]) - torch.log(p[:, 0])
        a = torch.cat([pts, torch.ones(d + 1, 1, dtype=torch.float64)], 1)
        sol = torch.linalg.solve(a, z)
        w, b = sol[:d].reshape(1, d), sol[d:].clone()
        lin = nn.Linear(d, 1).to(torch.float64)
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        return EquationResult(_Softmax(lin, True).eval(), w, b, o.queries - start, "exact")

    # -- loss minimisation -----------------------------------------------------------------------
    def _model(self, o: QueryOracle, generator) -> nn.Module:
        d, k = o.d, o.n_classes
        if self.architecture == "logistic":
            lin = nn.Linear(d, k).to(torch.float64)
            with torch.no_grad():
                lin.weight.zero_()
                lin.bias.zero_()
            return _Softmax(lin, False)
        from advkit.models.zoo import build

        # per-feature rescaling applies to flat (tabular) inputs; image pixels come as they are
        rescale = ({"input_range": [o.lo.tolist(), o.hi.tolist()]}
                   if len(o.input_shape) == 1 else {})
        m = build("mlp", input_shape=o.input_shape, n_classes=k, generator=generator,
                  hidden=tuple(self.hidden), **rescale)
        return m.to(torch.float64)

    def _fit(self, o: QueryOracle, generator) -> EquationResult:
        start = o.queries
        model = self._model(o, generator)
        n_par = sum(p.numel() for p in model.parameters())
        n = self.queries if self.queries is not None else max(n_par, o.d + 1)
        x = o.uniform(n, generator)
        ans = o.ask(x)
        if ans.probabilities is None:
            o.require("probabilities", "equation solving", "use Copycat")
        target = ans.probabilities
        xin = x.to(torch.float64)
        opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=self.steps,
                                tolerance_grad=1e-12, tolerance_change=1e-15,
                                history_size=50, line_search_fn="strong_wolfe")
        model.train()

        def closure():
            opt.zero_grad()
            loss = -(target * torch.log_softmax(model(xin), 1)).sum(1).mean()
            loss.backward()
            return loss

        opt.step(closure)
        model.eval()
        with torch.no_grad():
            logp = torch.log_softmax(model(xin), 1)
            ent = -(target * torch.log(target.clamp_min(1e-300))).sum(1).mean()
            kl = float(-(target * logp).sum(1).mean() - ent)
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        return EquationResult(model, last.weight.detach().clone(), last.bias.detach().clone(),
                              o.queries - start, "loss", kl)
