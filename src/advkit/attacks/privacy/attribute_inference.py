"""Attribute inference: recover a sensitive feature of a record from the model and the rest.

The adversary knows a record's other features and its label ``y`` and wants its sensitive
feature ``s``, which takes one of the values ``v_1..v_V`` (a one-hot group of a categorical
column, or a feature with few distinct values). It queries the model on the record completed with
each candidate value, ``x_v``, and picks the value under which the model best explains ``y``:

- ``method="fredrikson"`` — Fredrikson, Lantz, Jha, Lin, Page & Ristenpart (2014), "Privacy in
  Pharmacogenetics: An End-to-End Case Study of Personalized Warfarin Dosing", USENIX Security,
  §4: the maximum a posteriori value ``argmax_v p(v) · π(y | x_v)`` with the marginal ``p`` of the
  sensitive feature. ``π`` is the model's probability of ``y`` when the target gives scores;
  on a labels-only target it is the model's confusion-matrix entry ``C[y, f(x_v)] = Pr[f(x) =
  f(x_v) | true label y]``, as in the paper (the adversary is given ``C``);
- ``method="yeom"`` — Yeom, Giacomelli, Fredrikson & Jha (2018), "Privacy Risk in Machine
  Learning: Analyzing the Connection to Overfitting", IEEE CSF, §5: the attribute adversary built
  from the loss-threshold membership adversary, taken threshold-free: the value with the lowest
  loss on ``(x_v, y)`` (highest ``π``), ties broken by the marginal. Its advantage grows with the
  model's overfitting, so it is larger on training members than on other records.

The baseline knows the marginal only and always guesses its most common value; what the model
leaks is the attack's accuracy above that baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advkit.errors import InvalidParameterError
from advkit.params import check_params, param

_TINY = 1e-30


@dataclass(frozen=True)
class AttributeGuesses:
    """Per record: the attack's guess and the baseline's (indices into the candidate values),
    and the queries spent."""

    guess: torch.Tensor
    baseline: torch.Tensor
    likelihood: torch.Tensor  # (N, V) π(y | x_v)
    queries: int
    used: str  # "probabilities" or "confusion matrix"


def confusion_matrix(pred: torch.Tensor, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``C[y, y'] = Pr[f(x) = y' | true label y]`` (rows of absent labels uniform)."""
    c = torch.zeros(n_classes, n_classes, dtype=torch.float64)
    c.index_put_((y.long(), pred.long()), torch.ones(len(y), dtype=torch.float64), accumulate=True)
    rows = c.sum(1, keepdim=True)
    return torch.where(rows > 0, c / rows.clamp_min(1.0), 1.0 / n_classes)


@dataclass(frozen=True, kw_only=True)
class AttributeInference:
    """Fredrikson et al. (2014) / Yeom et al. (2018) attribute inference (see the module)."""

    method: str = param("fredrikson", str, choices=("fredrikson", "yeom"),
                        doc="'fredrikson': prior x model likelihood (MAP); 'yeom': lowest loss")

    requires = frozenset({"labels"})

    def __post_init__(self):
        check_params(self)

    def infer(self, target, x: torch.Tensor, y: torch.Tensor, *, columns, candidates,
              prior, confusion: torch.Tensor | None = None) -> AttributeGuesses:
        """Guesses for the records ``x`` (in the target's input space) with labels ``y``.

        ``columns``: the feature indices of the sensitive feature; ``candidates``: (V, len(columns))
        their values in the target's input space, one row per candidate; ``prior``: (V,) the
        marginal of the candidates. ``confusion`` (K, K) is needed only when the target answers
        labels only (:func:`confusion_matrix` on data the adversary has)."""
        cols = [int(c) for c in columns]
        cand = torch.as_tensor(candidates, dtype=x.dtype)
        prior = torch.as_tensor(prior, dtype=torch.float64)
        v = cand.shape[0]
        if cand.ndim != 2 or cand.shape[1] != len(cols) or v < 2:
            raise InvalidParameterError("candidates", f"shape {tuple(cand.shape)}",
                                        f"(V >= 2, {len(cols)}): one row of values per candidate")
        if prior.shape != (v,) or not torch.all(prior >= 0) or float(prior.sum()) <= 0:
            raise InvalidParameterError("prior", prior.tolist(), f"{v} non-negative weights")
        prior = prior / prior.sum()
        n = x.shape[0]
        xv = x.detach().repeat(v, *([1] * (x.dim() - 1)))  # candidate-major: rows j*n .. j*n+n-1
        xv[:, cols] = cand.repeat_interleave(n, 0)
        yy = y.long().repeat(v)
        q0 = target.queries
        with torch.no_grad():
            if target.capabilities.probabilities:
                p = target.probabilities(xv)
                lik = p.double().gather(1, yy[:, None]).squeeze(1)
                used = "probabilities"
            else:
                if confusion is None:
                    raise InvalidParameterError(
                        "confusion", None, "the model's confusion matrix (K, K) for a labels-only "
                        "target (attacks.privacy.attribute_inference.confusion_matrix)")
                pred = target.labels(xv)
                lik = confusion.double()[yy, pred.long()]
                used = "confusion matrix"
        lik = lik.reshape(v, n).T  # (N, V)
        base = torch.full((n,), int(prior.argmax()), dtype=torch.long)
        if self.method == "fredrikson":
            score = lik.clamp_min(_TINY).log() + prior.clamp_min(_TINY).log()
            guess = score.argmax(1)
        else:
            top = lik == lik.max(1, keepdim=True).values
            guess = torch.where(top, prior.expand(n, v), -1.0).argmax(1)
        return AttributeGuesses(guess, base, lik, int(target.queries - q0), used)
