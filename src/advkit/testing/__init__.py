"""Conformance checks any attack must pass, and tiny seeded toy models to run them on."""

from advkit.testing.conformance import ConformanceFailure, check_evasion_attack
from advkit.testing.toys import toy_image_target, toy_linear_target

__all__ = ["ConformanceFailure", "check_evasion_attack", "toy_image_target", "toy_linear_target"]
