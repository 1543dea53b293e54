"""Targets: the one boundary between attacks and a model."""

from advkit.targets.base import Capabilities, InputContract, Target
from advkit.targets.sklearn import SklearnTarget
from advkit.targets.torch import TorchTarget

__all__ = ["Capabilities", "InputContract", "Target", "TorchTarget", "SklearnTarget"]
