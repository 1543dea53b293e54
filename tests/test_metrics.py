"""Metrics follow DESIGN §4 exactly; Wilson intervals match closed forms."""

import math

import torch

from advkit.evaluation.metrics import (
    attack_success_rate,
    backdoor_success_rate,
    clean_accuracy,
    robust_accuracy,
    targeted_success_rate,
    wilson_interval,
    worst_case_robust,
)


def test_wilson_known_values():
    # 8/10 at 95 %: (0.4902, 0.9433) (Newcombe 1998, table I method 3)
    lo, hi = wilson_interval(8, 10)
    assert math.isclose(lo, 0.4902, abs_tol=1e-4) and math.isclose(hi, 0.9433, abs_tol=1e-4)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and math.isclose(hi, 0.1611, abs_tol=1e-4)


def test_definitions():
    y = torch.tensor([0, 1, 2, 3, 0])
    clean = torch.tensor([0, 1, 2, 0, 0])  # 4 correct of 5
    adv = torch.tensor([1, 1, 2, 3, 2])  # point 3 "becomes correct" but was wrong before
    assert clean_accuracy(clean, y).k == 4
    ra = robust_accuracy(clean, adv, y)
    assert (ra.k, ra.n) == (2, 5)  # points 1 and 2; point 3 was misclassified before the attack
    asr = attack_success_rate(clean, adv, y)
    assert (asr.k, asr.n) == (2, 4)  # among the 4 clean-correct, 0 and 4 are fooled
    t = torch.tensor([1, 1, 1, 1, 1])
    ts = targeted_success_rate(adv, y, t)
    assert (ts.k, ts.n) == (1, 4)  # y != 1 for points 0, 2, 3, 4; only point 0 -> 1
    bd = backdoor_success_rate(torch.tensor([0, 0, 1, 0, 0]), y, 0)
    assert (bd.k, bd.n) == (2, 3)
    wc = worst_case_robust([torch.tensor([1, 1, 0, 1]).bool(), torch.tensor([1, 0, 1, 1]).bool()])
    assert wc.tolist() == [True, False, False, True]
