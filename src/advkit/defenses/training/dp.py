"""DP-SGD: differentially private training through Opacus, with the accountant's epsilon.

DP-SGD (Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar & Zhang 2016, "Deep Learning with
Differential Privacy", ACM CCS): each step samples a batch by Poisson sampling (every training
point independently with rate q = batch_size / N), clips every per-example gradient to L2 norm
``max_grad_norm`` and adds Gaussian noise of standard deviation ``noise_multiplier *
max_grad_norm`` to their sum before the optimizer's step. The privacy loss of the whole run is
tracked by an accountant: Rényi DP of the subsampled Gaussian mechanism (Mironov 2017, "Rényi
Differential Privacy", IEEE CSF; Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of the
Sampled Gaussian Mechanism") or the PRV accountant (Gopi, Lee & Wutschitz 2021, "Numerical
Composition of Differential Privacy", NeurIPS). The result is (epsilon, delta)-DP for the
``delta`` given: an upper bound that any membership attack's empirical epsilon lower bound
(Jagielski, Ullman & Oprea 2020) must respect.

The per-example gradients, the clipping, the noise, the Poisson batches and the accountants are
Opacus's (``pip install 'advkit[privacy]'``); advkit builds the run from a recipe, keeps it
deterministic under one ``torch.Generator`` (batches and noise), and reports the epsilon.
``advkit.models.cache.Recipe(dp=...)`` and the audit spec's ``model: {dp: {...}}`` train with it.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from advkit.errors import AdvkitError, InvalidParameterError, MissingDependencyError
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_MEMBERSHIP

log = logging.getLogger("advkit.defenses")
ACCOUNTANTS = ("rdp", "prv")


def _opacus():
    try:
        import opacus
    except ImportError:
        raise MissingDependencyError("DP-SGD training", "opacus", "privacy") from None
    return opacus


@register("dp-sgd", family="defense", threat=MITIGATES_MEMBERSHIP)
@dataclass(frozen=True, kw_only=True)
class DPSGD:
    """DP-SGD (Abadi et al. 2016) through Opacus: clipped per-example gradients plus Gaussian
    noise, Poisson-sampled batches, and the accountant's (epsilon, delta)."""

    noise_multiplier: float = param(1.0, float, lo=0, lo_open=True,
                                    doc="noise standard deviation / max_grad_norm")
    max_grad_norm: float = param(1.0, float, lo=0, lo_open=True,
                                 doc="L2 bound each per-example gradient is clipped to")
    delta: float = param(1e-5, float, lo=0, hi=1, lo_open=True, hi_open=True,
                         doc="delta of the (epsilon, delta) guarantee reported")
    accountant: str = param("rdp", str, choices=ACCOUNTANTS,
                            doc="rdp (Mironov 2017) or prv (Gopi et al. 2021)")

    def __post_init__(self):
        check_params(self)

    def as_dict(self) -> dict:
        return {"noise_multiplier": float(self.noise_multiplier),
                "max_grad_norm": float(self.max_grad_norm), "delta": float(self.delta),
                "accountant": self.accountant}

    def train(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int,
              batch_size: int, lr: float, weight_decay: float = 0.0, optimizer: str = "adam",
              generator: torch.Generator | None = None):
        """Train ``model`` in place with DP-SGD; return (TrainHistory, facts).

        ``batch_size`` is the expected batch (Poisson rate ``batch_size / N``); ``optimizer``
        ``adam`` or ``sgd`` (momentum 0.9) runs on the noisy clipped gradients (post-processing:
        the guarantee is the same). ``facts``: the settings, ``epsilon`` (the accountant's, at
        ``delta``), ``steps`` and ``sample_rate``. The model ends in eval mode.
        """
        from advkit.models.train import OPTIMIZERS, SGD_MOMENTUM, TrainHistory, _as_tensors
        from advkit.targets.torch import module_device

        _opacus()
        from opacus import PrivacyEngine
        from opacus.validators import ModuleValidator

        if optimizer not in OPTIMIZERS:
            raise InvalidParameterError("optimizer", optimizer, f"one of {', '.join(OPTIMIZERS)}")
        x, y = _as_tensors(x, y)
        work = copy.deepcopy(model).train()  # trained here, its weights copied back at the end
        problems = ModuleValidator.validate(work, strict=False)
        if problems:
            raise InvalidParameterError(
                "model", type(model).__name__,
                "a model DP-SGD can train per example (no BatchNorm or other layers that mix "
                f"examples); Opacus says: {'; '.join(str(p) for p in problems[:3])}")
        n = x.shape[0]
        if batch_size > n:
            raise InvalidParameterError("batch_size", batch_size,
                                        f"at most the {n} training points for DP-SGD")
        dev = module_device(model)
        gen = generator if generator is not None else torch.Generator()
        params = [p for p in work.parameters() if p.requires_grad]
        opt = (torch.optim.SGD(params, lr=float(lr), momentum=SGD_MOMENTUM,
                               weight_decay=float(weight_decay)) if optimizer == "sgd" else
               torch.optim.Adam(params, lr=float(lr), weight_decay=float(weight_decay)))
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y),
                                             batch_size=batch_size, generator=gen)
        with warnings.catch_warnings():  # "secure RNG turned off": we want determinism here
            warnings.simplefilter("ignore", UserWarning)
            engine = PrivacyEngine(accountant=self.accountant)
            gsm, dp_opt, dp_loader = engine.make_private(
                module=work, optimizer=opt, data_loader=loader,
                noise_multiplier=float(self.noise_multiplier),
                max_grad_norm=float(self.max_grad_norm), noise_generator=gen)
        history, steps = TrainHistory(), 0
        try:
            for epoch in range(1, epochs + 1):
                t0 = time.perf_counter()
                gsm.train()
                loss_sum, correct, seen = 0.0, 0, 0
                with warnings.catch_warnings():  # Opacus's hooks on inputs without grad
                    warnings.simplefilter("ignore", UserWarning)
                    for xb, yb in dp_loader:
                        xb, yb = xb.to(dev), yb.to(dev)
                        dp_opt.zero_grad(set_to_none=True)
                        if xb.shape[0] == 0:  # an empty Poisson batch still takes a noisy step
                            logits = gsm(torch.zeros(1, *x.shape[1:], device=dev))
                            loss = logits.sum() * 0.0
                        else:
                            logits = gsm(xb)
                            loss = nn.functional.cross_entropy(logits, yb)
                            loss_sum += float(loss.detach()) * yb.shape[0]
                            correct += int((logits.detach().argmax(1) == yb).sum())
                            seen += yb.shape[0]
                        loss.backward()
                        dp_opt.step()
                        steps += 1
                mean_loss = loss_sum / max(seen, 1)
                if not np.isfinite(mean_loss):
                    raise AdvkitError(f"DP-SGD diverged: the loss is {mean_loss} in epoch "
                                      f"{epoch}; lower lr (now {lr}) or max_grad_norm")
                history.loss.append(mean_loss)
                history.accuracy.append(correct / max(seen, 1))
                history.seconds.append(time.perf_counter() - t0)
            epsilon = float(engine.get_epsilon(float(self.delta)))
        finally:
            if hasattr(gsm, "remove_hooks"):
                gsm.remove_hooks()
        model.load_state_dict(gsm._module.state_dict())
        model.eval()
        facts = {**self.as_dict(), "epsilon": epsilon, "steps": steps,
                 "sample_rate": float(getattr(dp_loader, "sample_rate", batch_size / n))}
        log.info("DP-SGD: epsilon %.3f at delta %g after %d steps", epsilon, self.delta, steps)
        return history, facts
