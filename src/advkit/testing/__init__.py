"""Conformance checks every registered attack and defense must pass, and tiny seeded toy models
to run them on."""

from advkit.testing.conformance import (
    ConformanceFailure,
    check_entry,
    check_evasion_attack,
    check_parameters,
)
from advkit.testing.toys import toy_image_target, toy_linear_target

__all__ = ["ConformanceFailure", "check_entry", "check_evasion_attack", "check_parameters",
           "toy_image_target", "toy_linear_target"]
