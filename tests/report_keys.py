"""Comparing two reports' documents with what legitimately differs between runs removed."""

from __future__ import annotations


def without(obj, keys: set[str]):
    """``obj`` (a report dict) without the ``keys`` (timings, paths, run ids), at any depth."""
    if isinstance(obj, dict):
        return {k: without(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [without(v, keys) for v in obj]
    return obj
