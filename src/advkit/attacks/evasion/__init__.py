"""Evasion attacks (adversarial examples), one module per algorithm."""
