"""The statistics of Neural Cleanse's decision (Wang et al. 2019, IEEE S&P, §IV-C).

The reversed triggers' L1 norms are compared by the median absolute deviation: a class is flagged
when its norm is below the median and its anomaly index ``|norm - median| / (1.4826 * MAD)`` is
above the threshold (2 in the paper: a 95 % chance of being an outlier under a normal model).
``decision_margin`` states how far the decision was from going the other way.
"""

from __future__ import annotations

import numpy as np

MAD_CONSISTENCY = 1.4826  # makes MAD a consistent estimator of a normal's standard deviation


def anomaly_index(norms) -> np.ndarray:
    """MAD anomaly index of each value: |x - median| / (1.4826 * median(|x - median|)).

    NaN entries (classes that could not be reversed) are left out of the statistics and get NaN.
    With MAD = 0 a value equal to the median scores 0 and any other scores inf.
    """
    v = np.asarray(norms, dtype=np.float64)
    ok = np.isfinite(v)
    out = np.full(v.shape, np.nan)
    if not ok.any():
        return out
    med = np.median(v[ok])
    dev = np.abs(v[ok] - med)
    mad = MAD_CONSISTENCY * np.median(dev)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[ok] = np.where(dev == 0, 0.0, dev / mad) if mad > 0 else np.where(dev == 0, 0.0, np.inf)
    return out


def flag_classes(norms, threshold: float = 2.0) -> np.ndarray:
    """Classes with a norm below the median (of the finite norms) and an index above threshold."""
    v = np.asarray(norms, dtype=np.float64)
    idx = anomaly_index(v)
    med = np.median(v[np.isfinite(v)]) if np.isfinite(v).any() else np.nan
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(np.isfinite(v) & (v < med) & (idx > threshold))


def decision_margin(norms, threshold: float = 2.0) -> float:
    """Largest anomaly index among the classes whose norm is below the median, minus the
    threshold: > 0 means a class is flagged (by that much), <= 0 that none is (the nearest class
    was this far below the threshold). ``-threshold`` when no finite norm is below the median;
    nan when no norm is finite."""
    v = np.asarray(norms, dtype=np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return float("nan")
    idx = anomaly_index(v)
    low = ok & (v < np.median(v[ok]))
    if not low.any():
        return -float(threshold)
    return float(np.max(idx[low]) - threshold)
