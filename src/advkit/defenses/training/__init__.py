"""Training defenses: PGD adversarial training (Madry 2018), fast FGSM training (Wong 2020),
TRADES (Zhang 2019) and Gaussian data augmentation (Cohen 2019), as per-batch wrappers and as a
``batch_hook`` for ``advkit.models.train``."""

from advkit.defenses.training.adversarial import (
    FastFGSMTraining,
    PGDAdversarialTraining,
    adversarial_batch_hook,
)
from advkit.defenses.training.gaussian_augmentation import GaussianAugmentation
from advkit.defenses.training.trades import TRADES

__all__ = ["TRADES", "FastFGSMTraining", "GaussianAugmentation", "PGDAdversarialTraining",
           "adversarial_batch_hook"]
