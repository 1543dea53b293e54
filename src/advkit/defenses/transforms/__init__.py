"""Input transformations that compose into a target (``target.with_transforms(JPEG(quality=75))``).

Each transform declares how gradients pass it: ``"exact"`` (autograd is meaningful) or ``"bpda"``
(non-differentiable or with a masked gradient; adaptive attacks use the identity backward pass of
Athalye, Carlini & Wagner 2018), and whether it is ``randomized`` (adaptive attacks then average
gradients over draws, EOT).
"""

from advkit.defenses.transforms.base import InputTransform
from advkit.defenses.transforms.gaussian import GaussianNoise
from advkit.defenses.transforms.jpeg import JPEG
from advkit.defenses.transforms.smoothing import MedianSmoothing
from advkit.defenses.transforms.squeeze import BitDepth

__all__ = ["BitDepth", "GaussianNoise", "InputTransform", "JPEG", "MedianSmoothing"]
