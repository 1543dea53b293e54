"""Label consistency against a model trained on trusted data: find dirty-label poison.

A dirty-label backdoor (BadNets, Gu et al. 2017; blended, Chen et al. 2017) relabels inputs of
other classes as the target, so every poisoned sample carries a label its own content does not
support. A model that never saw the poison, trained on the defender's trusted clean data, gives
those samples a low probability of their label, while it gives most clean samples of the class a
high one. This is the idea of filtering training labels by their agreement with a model or with
neighbours that the attacker did not control (Paudice, Muñoz-González & Lupu 2018, "Label
Sanitization against Label Flipping Poisoning Attacks", ECML PKDD workshops, with k-NN; Baracaldo
et al. 2017, "Mitigating Poisoning Attacks on Machine Learning Models: A Data Provenance Based
Approach", AISec, on trusted data), made class-aware because a backdoor targets few classes:

1. Split the trusted data: ``trusted_fit`` of it trains a fresh copy of the audited model's
   architecture (weights re-drawn from the generator, ``epochs`` epochs of Adam with the learning
   rate divided by 10 after ``lr_milestones``); the rest is the held-out baseline.
2. A sample is *inconsistent* when that model gives its label a probability below ``tau``.
3. A class is *poisoned* when its share of inconsistent training samples exceeds the same share on
   the held-out trusted samples of that class, by Fisher's exact test (one-sided) at ``alpha / K``
   for K classes (Bonferroni: a clean training set flags any class with probability at most
   ``alpha``).
   The per-class baseline matters: some clean classes (an 8, a 9) are simply harder for a small
   model than others, and a test against the median class flags them.
4. The inconsistent samples of the poisoned classes are flagged; nothing else is.

What it assumes and misses: trusted clean data of every class (a few hundred samples each), and a
dirty-label attack. Clean-label poisoning (the poison keeps its true label: Shafahi et al. 2018,
Turner et al. 2019) is consistent with its label by construction and is not found. Measured on
BadNets LeNet/MNIST at 1/5/10 % in ``benchmarks/README.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from advkit.defenses.detectors.activation_clustering import check_fit_inputs
from advkit.errors import InputContractError, InvalidParameterError
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_BACKDOOR


@register("label_consistency", family="defense", threat=MITIGATES_BACKDOOR)
@dataclass(frozen=True, kw_only=True)
class LabelConsistency:
    """Flag training samples whose label a model trained on trusted data rejects, in the classes
    where such samples are significantly more common than on held-out trusted data.

    ``fit(model, x, y, x_trusted=, y_trusted=, generator=)``; learned: ``poisoned_mask_`` (bool
    (N,)), ``flagged_classes_``, ``per_class_`` (per class: n, inconsistent, share, the held-out
    share, Fisher's p-value, flagged), ``trusted_accuracy_`` (the trusted model's accuracy on the
    held-out trusted data), ``seconds_``.
    """

    tau: float = param(0.1, float, lo=0, hi=1, lo_open=True, hi_open=True,
                       doc="a sample is inconsistent when its label's probability is below tau")
    alpha: float = param(0.01, float, lo=0, hi=1, lo_open=True, hi_open=True,
                         doc="family-wise significance: each class is tested at alpha / K "
                             "(Bonferroni over the K classes)")
    trusted_fit: float = param(2 / 3, float, lo=0, hi=1, lo_open=True, hi_open=True,
                               doc="share of the trusted data the trusted model trains on")
    epochs: int = param(3, int, lo=1, doc="epochs of the trusted model's training")
    lr: float = param(3e-3, float, lo=0, lo_open=True)
    lr_milestones: tuple[int, ...] | None = param((2,), "ints", optional=True,
                                                  doc="epochs after which lr is /10 (None: "
                                                      "constant)")
    batch_size: int = param(32, int, lo=1)

    def __post_init__(self):
        check_params(self)

    def fit(self, model: nn.Module, x, y, *, x_trusted, y_trusted,
            generator: torch.Generator | None = None) -> LabelConsistency:
        from scipy.stats import fisher_exact

        from advkit.defenses.detectors.ac_reclassify import reinitialised
        from advkit.defenses.detectors.fine_pruning import predict_scores
        from advkit.models.train import train

        t0 = time.perf_counter()
        x, y = check_fit_inputs(x, y)
        xt, yt = check_fit_inputs(x_trusted, y_trusted)
        if tuple(xt.shape[1:]) != tuple(x.shape[1:]):
            raise InputContractError(
                f"x_trusted must have the training data's shape {tuple(x.shape[1:])}, got "
                f"{tuple(xt.shape[1:])}")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        perm = torch.randperm(len(yt), generator=g).to(yt.device)
        n_fit = int(round(self.trusted_fit * len(yt)))
        fit_i, held_i = perm[:n_fit], perm[n_fit:]
        classes = torch.unique(y).tolist()
        for name, idx in (("training", fit_i), ("held-out", held_i)):
            missing = sorted(set(classes) - set(yt[idx].tolist()))
            if missing:
                raise InvalidParameterError(
                    "x_trusted", f"{len(yt)} samples",
                    f"trusted samples of every class in both parts ({name} part lacks classes "
                    f"{missing[:10]}): give more trusted data or change trusted_fit")
        trusted = reinitialised(model, g)
        train(trusted, xt[fit_i], yt[fit_i], epochs=self.epochs, lr=self.lr,
              batch_size=self.batch_size, generator=g, progress=False,
              lr_schedule="step" if self.lr_milestones else "constant",
              lr_milestones=self.lr_milestones or ())
        trusted.eval()

        def label_prob(xs, ys):
            p = torch.softmax(predict_scores(trusted, xs).double(), 1)
            return p.gather(1, ys.view(-1, 1).to(p.device)).flatten().cpu().numpy()

        low = label_prob(x, y) < self.tau
        p_held = label_prob(xt[held_i], yt[held_i])
        y_np, yh = y.cpu().numpy(), yt[held_i].cpu().numpy()
        held_low = p_held < self.tau
        mask = np.zeros(len(y_np), dtype=bool)
        per_class = {}
        for c in classes:
            in_c, h_c = y_np == c, yh == c
            k, n, k2, n2 = int(low[in_c].sum()), int(in_c.sum()), int(held_low[h_c].sum()), \
                int(h_c.sum())
            pv = float(fisher_exact([[k, n - k], [k2, n2 - k2]], alternative="greater")[1])
            flagged = pv < self.alpha / len(classes)
            if flagged:
                mask |= in_c & low
            per_class[int(c)] = dict(n=n, inconsistent=k, share=k / n, held_out_n=n2,
                                     held_out_share=k2 / n2, p_value=pv, flagged=flagged,
                                     removed=flagged)
        pred_held = predict_scores(trusted, xt[held_i]).argmax(1).cpu().numpy()
        for k_, v in dict(poisoned_mask_=torch.as_tensor(mask, device=y.device),
                          flagged_classes_=[c for c, s in per_class.items() if s["flagged"]],
                          per_class_=per_class,
                          trusted_accuracy_=float((pred_held == yh).mean()),
                          seconds_=time.perf_counter() - t0).items():
            object.__setattr__(self, k_, v)
        return self

    def score(self, poisoned) -> tuple:
        """(precision, recall) of ``poisoned_mask_`` against a ``PoisonedData``'s truth."""
        if not hasattr(self, "poisoned_mask_"):
            raise InvalidParameterError("detector", "unfitted", "a fitted detector: call fit first")
        return poisoned.detection_scores(self.poisoned_mask_)
