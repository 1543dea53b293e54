"""Detectors of poisoned data and backdoored models (scikit-learn style: ``fit`` -> self)."""
