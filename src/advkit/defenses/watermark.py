"""Trigger-set watermarking: a benign backdoor proves who trained a model.

Adi, Baum, Cisse, Pinkas & Keshet (2018), "Turning Your Weakness Into a Strength: Watermarking
Deep Neural Networks by Backdooring", USENIX Security. The owner draws a secret trigger set of
``k`` abstract inputs with random labels and trains the model on the union of its training data
and the trigger set, so the model learns the (otherwise meaningless) trigger labels. To claim a
suspect model, the owner queries it on the trigger set and counts the agreements with the trigger
labels.

False-claim probability. The trigger labels are drawn uniformly from the ``C`` classes and
independently of everything else, so for any model that was *not* derived from the marked one
(its predictions independent of the secret labels), each trigger input agrees with probability
exactly ``1/C`` whatever the model predicts, and the agreements are independent: the count is
``Binomial(k, 1/C)``. The false-claim probability of ``a`` agreements is the exact upper tail
``P[Binomial(k, 1/C) >= a]``, summed in log space (``binomial_tail``). Ownership is claimed when
it is below ``threshold`` (default 1e-6). The assumption fails for a model trained on the secret
trigger set or on a marked model's answers to it: that is exactly what the test detects.

Robustness (the paper tests fine-tuning; pruning and extraction are the removal attacks of
later work): ``fine_tune``
(a few epochs on clean data at a small learning rate), ``prune`` (per-layer magnitude pruning:
the share ``rate`` of the smallest |w| of every Linear/Conv weight zeroed, Han et al. 2015) and
extraction with Copycat (``advkit.attacks.privacy.copycat``); ``robustness`` verifies the mark
after each. The user's model is never changed: each returns a modified copy.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from advkit.attacks.poisoning.train import predict
from advkit.errors import InputContractError, InvalidParameterError
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_EXTRACTION

DEFAULT_THRESHOLD = 1e-6


def binomial_tail(agreements: int, k: int, p: float) -> float:
    """``P[Binomial(k, p) >= agreements]``, summed exactly term by term in log space."""
    for name, v in (("agreements", agreements), ("k", k)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise InvalidParameterError(name, v, "an int >= 0")
    if agreements > k:
        raise InvalidParameterError("agreements", agreements, f"at most k={k}")
    if not isinstance(p, int | float) or not 0.0 < float(p) < 1.0:
        raise InvalidParameterError("p", p, "a probability strictly between 0 and 1")
    if agreements == 0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(k + 1) - math.lgamma(i + 1) - math.lgamma(k - i + 1) + i * lp
             + (k - i) * lq for i in range(agreements, k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def false_claim_probability(agreements: int, k: int, n_classes: int) -> float:
    """Chance that a model independent of the secret labels agrees on ``agreements`` or more of
    ``k`` uniformly labelled triggers: ``P[Binomial(k, 1/n_classes) >= agreements]``."""
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
        raise InvalidParameterError("n_classes", n_classes, "an int >= 2")
    return binomial_tail(agreements, k, 1.0 / n_classes)


@dataclass(frozen=True)
class TriggerSet:
    """The owner's secret: ``x`` (k, *shape) abstract inputs and their random labels ``y``."""

    x: torch.Tensor
    y: torch.Tensor
    n_classes: int

    @property
    def k(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class Verification:
    """``agreements`` of the suspect with the ``k`` trigger labels, the false-claim probability
    ``p_value`` (Binomial(k, 1/C) tail) and whether it is below ``threshold`` (``claimed``)."""

    agreements: int
    k: int
    n_classes: int
    p_value: float
    threshold: float

    @property
    def claimed(self) -> bool:
        return self.p_value < self.threshold

    @property
    def agreement(self) -> float:
        return self.agreements / self.k

    def to_dict(self) -> dict:
        from advkit.evaluation.metrics import wilson_interval

        return {"agreements": self.agreements, "k": self.k, "n_classes": self.n_classes,
                "agreement": self.agreement,
                "agreement_interval": list(wilson_interval(self.agreements, self.k)),
                "p_value": self.p_value,
                "threshold": self.threshold, "claimed": self.claimed}


@register("watermark-adi", family="defense", threat=MITIGATES_EXTRACTION)
@dataclass(frozen=True, kw_only=True)
class TriggerSetWatermark:
    """Adi et al. (2018) trigger-set watermark; see the module docstring.

    ``k``: trigger inputs, each uniform noise in the data bounds with a uniformly random label.
    ``repeat``: copies of the trigger set added to the training data (so a small set is seen
    often enough to be learned). ``threshold``: claim when the false-claim probability is below."""

    k: int = param(50, int, lo=1)
    repeat: int = param(20, int, lo=1)
    threshold: float = param(DEFAULT_THRESHOLD, float, lo=0, hi=1, lo_open=True)

    def __post_init__(self):
        check_params(self)

    def trigger_set(self, input_shape, n_classes: int, *, bounds=(0.0, 1.0),
                    generator: torch.Generator | None = None) -> TriggerSet:
        """Draw the secret trigger set; the same generator state gives the same set."""
        try:
            shape = tuple(int(s) for s in input_shape)
        except (TypeError, ValueError):
            shape = ()
        if not shape or any(s < 1 for s in shape):
            raise InvalidParameterError("input_shape", input_shape, "a tuple of ints >= 1")
        if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
            raise InvalidParameterError("n_classes", n_classes, "an int >= 2")
        try:
            lo, hi = (float(b) for b in bounds)
        except (TypeError, ValueError):
            lo = hi = float("nan")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise InvalidParameterError("bounds", bounds, "finite (lo, hi) with lo < hi")
        x = lo + (hi - lo) * torch.rand((self.k, *shape), generator=generator)
        y = torch.randint(0, n_classes, (self.k,), generator=generator)
        return TriggerSet(x, y, n_classes)

    def training_set(self, x, y, trigger: TriggerSet) -> tuple[torch.Tensor, torch.Tensor]:
        """The union of the training data and ``repeat`` copies of the trigger set."""
        x, y = torch.as_tensor(x), torch.as_tensor(y).long()
        if tuple(x.shape[1:]) != tuple(trigger.x.shape[1:]) or y.shape != (x.shape[0],):
            raise InputContractError(
                f"training data {tuple(x.shape)} / labels {tuple(y.shape)} do not match the "
                f"trigger inputs (k, {', '.join(map(str, trigger.x.shape[1:]))}); fix: draw the "
                "trigger set with the data's input shape")
        xt = trigger.x.to(x.dtype).repeat(self.repeat, *([1] * (x.dim() - 1)))
        return torch.cat([x, xt]), torch.cat([y, trigger.y.repeat(self.repeat)])

    def embed(self, model: nn.Module, x, y, trigger: TriggerSet, *, epochs: int = 10,
              batch_size: int = 64, lr: float = 1e-3,
              generator: torch.Generator | None = None) -> nn.Module:
        """Train ``model`` in place on data + trigger set (a fresh model: the paper's "from
        scratch"; a trained one: its fine-tune variant) and return it."""
        from advkit.models.train import train

        xu, yu = self.training_set(x, y, trigger)
        train(model, xu, yu, epochs=epochs, batch_size=batch_size, lr=lr, generator=generator,
              progress=False)
        return model

    def verify(self, suspect, trigger: TriggerSet) -> Verification:
        """Query ``suspect`` (an ``nn.Module``, a fitted estimator or a Target) on the trigger
        set and compute the false-claim probability of its agreements."""
        pred = _labels(suspect, trigger.x)
        if pred.shape != trigger.y.shape:
            raise InputContractError(f"the suspect answered {tuple(pred.shape)} labels for "
                                     f"{trigger.k} trigger inputs")
        a = int((pred.cpu() == trigger.y.cpu()).sum())
        return Verification(a, trigger.k, trigger.n_classes,
                            false_claim_probability(a, trigger.k, trigger.n_classes),
                            self.threshold)


def _labels(suspect, x: torch.Tensor) -> torch.Tensor:
    from advkit.targets.base import Target

    if isinstance(suspect, Target):
        return suspect.labels(x).long().reshape(-1)
    if isinstance(suspect, nn.Module) or hasattr(suspect, "predict"):
        return predict(suspect, x)
    raise InvalidParameterError("suspect", type(suspect).__name__,
                                "a torch nn.Module, a fitted estimator or a Target")


# -- removal attacks -----------------------------------------------------------------------------
def fine_tune(model: nn.Module, x, y, *, epochs: int = 3, lr: float = 1e-4,
              batch_size: int = 64, generator: torch.Generator | None = None) -> nn.Module:
    """A copy of ``model`` trained ``epochs`` more on clean ``(x, y)`` at a small rate."""
    from advkit.models.train import train

    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", type(model).__name__, "a torch nn.Module")
    out = copy.deepcopy(model)
    train(out, x, y, epochs=epochs, batch_size=batch_size, lr=lr, generator=generator,
          progress=False)
    return out.eval()


def prune(model: nn.Module, rate: float) -> nn.Module:
    """A copy of ``model`` with the share ``rate`` of the smallest-magnitude weights of every
    Linear and Conv layer zeroed (per layer; biases kept)."""
    if not isinstance(model, nn.Module):
        raise InvalidParameterError("model", type(model).__name__, "a torch nn.Module")
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
        raise InvalidParameterError("rate", rate, "a share of weights in [0, 1]")
    out = copy.deepcopy(model)
    with torch.no_grad():
        for m in out.modules():
            if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d):
                w = m.weight
                n = int(round(rate * w.numel()))
                if n:
                    idx = torch.argsort(w.abs().reshape(-1), stable=True)[:n]
                    w.view(-1)[idx] = 0.0
    return out.eval()


def robustness(wm: TriggerSetWatermark, model: nn.Module, trigger: TriggerSet, *, x_clean,
               y_clean, x_test=None, y_test=None, finetune_epochs=(1, 3), finetune_lr=1e-4,
               prune_rates=(0.3, 0.6, 0.9), copycat=None, copycat_queries=(), pool=None,
               bounds=(0.0, 1.0), generator: torch.Generator | None = None) -> list[dict]:
    """Verify the mark on the model and after each removal attack; one row per setting with the
    attack, its setting, the verification and (given a test split) the test accuracy.

    ``copycat``: a ``Copycat`` whose ``queries`` is replaced by each of ``copycat_queries``; it
    steals from the model (``pool`` for its natural/adaptive strategies)."""
    from advkit.targets.base import InputContract
    from advkit.targets.torch import TorchTarget

    def row(attack, setting, m, extra=None):
        r = {"attack": attack, "setting": setting, **wm.verify(m, trigger).to_dict()}
        if x_test is not None:
            r["test_accuracy"] = float((predict(m, x_test) == torch.as_tensor(y_test)).float()
                                       .mean())
        return {**r, **(extra or {})}

    if copycat_queries and copycat is None:
        raise InvalidParameterError("copycat", None, "a Copycat to run copycat_queries")
    rows = [row("none", None, model)]
    for e in finetune_epochs:
        rows.append(row("fine_tune", e, fine_tune(model, x_clean, y_clean, epochs=e,
                                                  lr=finetune_lr, generator=generator)))
    for r in prune_rates:
        rows.append(row("prune", r, prune(model, r)))
    if copycat_queries:
        contract = InputContract(shape=tuple(trigger.x.shape[1:]), n_classes=trigger.n_classes,
                                 bounds=tuple(float(b) for b in bounds))
        victim = TorchTarget(contract, model=copy.deepcopy(model).eval())
        for q in copycat_queries:
            stolen = replace(copycat, queries=int(q)).steal(victim, pool=pool, generator=generator)
            rows.append(row("copycat", int(q), stolen.model.eval(), {"queries": stolen.queries}))
    return rows
