"""Suite-wide fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _audit_history(tmp_path_factory, monkeypatch):
    """Every `advkit audit` a test runs appends to a throwaway audit history, never to the one in
    the user's data folder."""
    monkeypatch.setenv("ADVKIT_HISTORY", str(tmp_path_factory.getbasetemp() / "history.sqlite"))
