"""Certified defenses: randomized smoothing (Cohen, Rosenfeld & Kolter 2019)."""
