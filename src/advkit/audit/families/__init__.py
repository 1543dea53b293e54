"""Threat families of the audit: one module each (see ``advkit.audit.families.base``).

Section names reserved for families still to come are listed in ``RESERVED``: a spec that uses one
gets a clear error until its module exists.
"""

from __future__ import annotations

import importlib

MODULES = ("supply_chain", "evasion", "backdoor", "poisoning", "defenses", "privacy", "extraction",
           "transfer", "privacy_defenses", "watermark")
RESERVED = ()
SECTIONS = tuple(m for m in MODULES if m != "evasion") + RESERVED


def load_all() -> None:
    for m in MODULES:
        try:
            importlib.import_module(f"advkit.audit.families.{m}")
        except ModuleNotFoundError as exc:  # a family still being written is simply absent
            if exc.name != f"advkit.audit.families.{m}":
                raise
