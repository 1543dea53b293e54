"""Poisoning and backdoor attacks, one module per algorithm."""
