"""Comparing two reports' documents with what legitimately differs between runs removed."""

from __future__ import annotations

from advkit.audit.report_read import (  # noqa: F401 - re-exported
    RUN_VOLATILE,
    run_independent,
)
from advkit.audit.report_read import without_keys as without  # noqa: F401

