"""advkit: audit machine-learning models for security.

Public names are loaded lazily so that ``import advkit`` stays cheap and does no I/O.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "LpBall": "advkit.threats",
    "Untargeted": "advkit.goals",
    "Targeted": "advkit.goals",
    "TorchTarget": "advkit.targets.torch",
    "SklearnTarget": "advkit.targets.sklearn",
    "InputContract": "advkit.targets.base",
    "Capabilities": "advkit.targets.base",
    "load_dataset": "advkit.data",
    "create": "advkit.registry",
    "register": "advkit.registry",
    "AdvkitError": "advkit.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        value = getattr(mod, "load" if name == "load_dataset" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advkit' has no attribute {name!r}")
