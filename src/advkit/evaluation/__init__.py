"""Metrics (with confidence intervals) and validity checks."""
