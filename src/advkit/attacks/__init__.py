"""Attacks: evasion, poisoning and privacy. Leaves register themselves by name."""
