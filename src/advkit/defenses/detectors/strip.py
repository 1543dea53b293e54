"""STRIP: detect triggered inputs at inference time by the entropy of perturbed predictions.

Gao, Xu, Wang, Chen, Ranasinghe & Nepal (2019), "STRIP: A Defence Against Trojan Attacks on Deep
Neural Networks", ACSAC. Superimpose an input on ``n_overlays`` clean images and classify each
blend. A clean input's prediction follows whatever it was blended with (high entropy); a triggered
input keeps going to the target class whatever it is blended with, because the trigger still
dominates (low entropy). The score of an input is the mean Shannon entropy (bits) of the model's
class probabilities over its blends; an input is flagged as triggered when its score is below a
threshold set on clean data so that a share ``frr`` of clean inputs is flagged (the paper's
false-rejection rate, 1 %; the paper fits a normal distribution to the clean entropies, here the
empirical quantile is used). The false-acceptance rate (triggered inputs not flagged) is what the
defender measures afterwards (``evaluate``).

Blend: ``clip(x + alpha * x_overlay)`` to the data bounds; ``alpha = 1`` is the paper's
superimposition (its code adds the two images with weight 1 each).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from advkit.defenses.detectors.fine_pruning import check_data, predict_scores, resolve_model
from advkit.errors import InputContractError, InvalidParameterError
from advkit.evaluation.metrics import Proportion, proportion
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_BACKDOOR


@register("strip", family="defense", threat=MITIGATES_BACKDOOR)
@dataclass(frozen=True, kw_only=True)
class Strip:
    """STRIP (Gao 2019): mean prediction entropy over ``n_overlays`` blends with clean images.

    ``fit(model, x_clean)`` keeps ``x_clean`` as the overlay pool and sets ``threshold_`` at the
    ``frr`` quantile of the clean inputs' own entropies. Learned: ``threshold_``,
    ``clean_entropy_`` (float (N,)), ``frr_`` (the share of the clean inputs flagged, a
    Proportion), ``seconds_``. ``detect(x)`` -> bool (N,); ``evaluate(x_clean, x_triggered)`` ->
    dict of FRR and FAR (Proportions, DESIGN §4).
    """

    n_overlays: int = param(100, int, lo=1, doc="clean images blended with each input (paper: N)")
    frr: float = param(0.01, float, lo=0, hi=1, lo_open=True, hi_open=True,
                       doc="false-rejection rate the threshold is set to on clean data")
    alpha: float = param(1.0, float, lo=0, lo_open=True,
                         doc="weight of the overlaid clean image in the blend")
    bounds: tuple[float, float] = param((0.0, 1.0), "pair", strict=True,
                                        doc="the blend is clipped to these bounds")
    batch_size: int = param(1024, int, lo=1)

    def __post_init__(self):
        check_params(self)

    def _model(self):
        if not hasattr(self, "overlays_"):
            raise InvalidParameterError("fit", "not called", "fit(model, x_clean) first")
        return self.model_

    def entropy(self, x, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean entropy (bits) of the predictions on ``n_overlays`` blends of each input: (N,)."""
        model = self._model()
        x = torch.as_tensor(x)
        if tuple(x.shape[1:]) != tuple(self.overlays_.shape[1:]):
            raise InputContractError(
                f"inputs must have the clean data's shape {tuple(self.overlays_.shape[1:])}, got "
                f"{tuple(x.shape[1:])}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        lo, hi = self.bounds
        pool = self.overlays_
        out = torch.empty(len(x), dtype=torch.float64)
        per = max(1, self.batch_size // self.n_overlays)
        for i in range(0, len(x), per):
            xb = x[i : i + per]
            pick = torch.randint(len(pool), (len(xb), self.n_overlays), generator=gen)
            blend = (xb.unsqueeze(1) + self.alpha * pool[pick.to(pool.device)]).clamp(lo, hi)
            p = torch.softmax(predict_scores(model, blend.flatten(0, 1)).double(), 1)
            h = -(p * torch.log2(p.clamp_min(1e-300))).sum(1)
            out[i : i + len(xb)] = h.view(len(xb), self.n_overlays).mean(1).cpu()
        return out

    def fit(self, model, x_clean, y_clean=None, *,
            generator: torch.Generator | None = None) -> Strip:
        """Keep ``x_clean`` as the overlay pool and set the threshold; returns self.
        ``y_clean`` is accepted for a uniform detector signature and not used."""
        t0 = time.perf_counter()
        x = torch.as_tensor(x_clean)
        check_data(x, torch.zeros(len(x), dtype=torch.long))
        if len(x) < 2:
            raise InputContractError("STRIP needs at least 2 clean inputs; pass more x_clean")
        object.__setattr__(self, "model_", resolve_model(model))
        object.__setattr__(self, "overlays_", x)
        h = self.entropy(x, generator=generator)
        thr = float(torch.quantile(h, self.frr))
        for k, v in dict(clean_entropy_=h, threshold_=thr, frr_=proportion(h < thr),
                         seconds_=time.perf_counter() - t0).items():
            object.__setattr__(self, k, v)
        return self

    def detect(self, x, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool (N,): True for inputs flagged as triggered (entropy below ``threshold_``)."""
        return self.entropy(x, generator=generator) < self.threshold_

    def evaluate(self, x_clean, x_triggered, *,
                 generator: torch.Generator | None = None) -> dict[str, Proportion]:
        """FRR (clean inputs flagged / clean inputs) and FAR (triggered inputs not flagged /
        triggered inputs) on held-out data, with 95 % Wilson intervals."""
        return {"frr": proportion(self.detect(x_clean, generator=generator)),
                "far": proportion(~self.detect(x_triggered, generator=generator))}
