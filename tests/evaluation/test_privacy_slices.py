"""Membership leakage per class and on the misclassified slice (issue 13): exact values on
hand-made scores, the too-few-points rule, the report's table and the finding's rule."""

from __future__ import annotations

import numpy as np
import pytest

from advkit.audit import privacy_slices_report as rep
from advkit.errors import InvalidParameterError
from advkit.evaluation.privacy_slices import membership_slices

# class 0: members 10..19 above every non-member 0..9 (perfectly separated);
# class 1: members k + 0.5 against non-members k + 0.25, k = 0..9 (barely separated)
M0, N0 = np.arange(10, 20.0), np.arange(0, 10.0)
M1, N1 = np.arange(10) + 0.5, np.arange(10) + 0.25


def _points(*groups):
    """(scores, is_member, labels) of (members, non-members, class) groups."""
    s, m, y = [], [], []
    for mem, non, c in groups:
        s += [*mem, *non]
        m += [True] * len(mem) + [False] * len(non)
        y += [c] * (len(mem) + len(non))
    return np.array(s), np.array(m), np.array(y)


def _cp_all(n):  # Clopper-Pearson 95 % lower end of n successes in n: (0.025)^(1/n)
    return 0.025 ** (1 / n)


def _cp_one_low(n):  # lower end of 1 success in n: 1 - 0.975^(1/n)
    return 1 - 0.975 ** (1 / n)


def test_slices_of_hand_made_scores_have_the_exact_values():
    s, member, y = _points((M0, N0, 0), (M1, N1, 1))
    correct = y == 0  # class 1 is the misclassified slice, class 0 the correct one
    out = membership_slices(s, member, y, correct, class_names=("zero", "one"), fpr=0.1)
    # the whole: 20 non-members at 10 % FPR admit 2 false positives -> threshold 9
    # (non-members 9.25 and 9); members at or above it: class 0's 10 and 9.5 -> 11 of 20
    whole = out["whole"]
    assert whole["threshold"] == 9.0
    assert (whole["tpr"]["k"], whole["tpr"]["n"], whole["fpr"]["k"]) == (11, 20, 2)
    c0, c1 = out["classes"]
    assert (c0["class"], c0["name"], c1["name"]) == (0, "zero", "one")
    assert (c0["n_members"], c0["n_nonmembers"], c0["too_few"]) == (10, 10, False)
    assert c0["auc"] == 1.0 and c0["advantage"] == 1.0
    # class 1: member k + 0.5 beats the non-members j <= k: (1 + ... + 10) / 100
    assert c1["auc"] == pytest.approx(0.55) and c1["advantage"] == pytest.approx(0.1)
    own0, own1 = c0["tpr_at_fpr"]["0.1"], c1["tpr_at_fpr"]["0.1"]
    # its own 10 non-members admit 1 false positive: threshold 9 (class 0), 9.25 (class 1)
    assert (own0["threshold"], own0["tp"], own0["resolvable"]) == (9.0, 10, True)
    assert (own1["threshold"], own1["tp"]) == (9.25, 1)
    at0, at1 = c0["at_threshold"], c1["at_threshold"]
    assert (at0["tpr"]["k"], at0["fpr"]["k"]) == (10, 1)
    assert (at1["tpr"]["k"], at1["fpr"]["k"]) == (1, 1)  # 9.5 and 9.25
    assert at0["tpr"]["ci_low"] == pytest.approx(_cp_all(10)) and at0["tpr"]["ci_high"] == 1.0
    assert at0["fpr"]["ci_low"] == pytest.approx(_cp_one_low(10))
    strip = {"class", "name"}
    assert out["misclassified"] == {k: v for k, v in c1.items() if k not in strip}
    assert out["correct"] == {k: v for k, v in c0.items() if k not in strip}


def test_a_slice_with_too_few_members_or_nonmembers_has_no_figure():
    s, member, y = _points((M0, N0, 0), (M1[:9], N1, 1))  # class 1: 9 members
    out = membership_slices(s, member, y, np.ones_like(member), fpr=0.1)
    assert out["classes"][1] == {"class": 1, "name": "1", "n_members": 9, "n_nonmembers": 10,
                                 "too_few": True}
    assert out["classes"][0]["too_few"] is False  # exactly 10 of each is enough
    assert out["misclassified"] == {"n_members": 0, "n_nonmembers": 0, "too_few": True}
    row = rep._row("class 1", out["classes"][1], 0.1)
    assert row == ["class 1", 9, 10, rep.TOO_FEW, None, None, None, None]
    # 10 non-members cannot resolve 1 % FPR: the table says so instead of a TPR of 0
    small = membership_slices(s, member, y, np.ones_like(member))
    assert "not resolvable" in rep._row("class 0", small["classes"][0], 0.01)[5]


@pytest.mark.parametrize("change,needle", [
    (lambda s, m, y, c: (s[:-1], m, y, c), "is_member"),
    (lambda s, m, y, c: (s, m, y[:, None], c), "labels"),
    (lambda s, m, y, c: (s, m, y - 5, c), "labels"),
    (lambda s, m, y, c: (s, np.ones_like(m), y, c), "both members and non-members"),
    (lambda s, m, y, c: (np.where(m, np.nan, s), m, y, c), "finite"),
])
def test_bad_inputs_raise_a_typed_error(change, needle):
    s, member, y = _points((M0, N0, 0), (M1, N1, 1))
    with pytest.raises(InvalidParameterError, match=needle):
        membership_slices(*change(s, member, y, y == 0))


def test_a_class_that_leaks_far_more_than_the_whole_is_a_finding_naming_it():
    # 100 of each per class; class 0 separated, class 1 members and non-members identical
    m0, n0 = np.arange(100, 200.0), np.arange(0, 100.0)
    both = np.arange(100) + 0.5
    s, member, y = _points((m0, n0, 0), (both, both, 1))
    sl = membership_slices(s, member, y, y == 0, class_names=("zero", "one"))
    # whole: 200 non-members at 1 % FPR admit 2 -> threshold 99 (99.5, 99); TPR 101 / 200
    assert (sl["whole"]["tpr"]["k"], sl["whole"]["fpr"]["k"]) == (101, 2)
    assert [h[0] for h in rep.hot(sl)] == ["class 0 (zero)"]
    rec = {"id": "privacy/membership/loss", "label": "loss", "attack": "loss",
           "headline": "loss", "slices": sl}
    (f,) = rep.findings([rec], {"loss": "black box"})
    assert f.check == "privacy.membership.loss.slices" and f.severity == "warning"
    assert "class 0 (zero)" in f.why and "one" not in f.why.split("slices (")[1]
    assert f.value == 1.0 and f.threshold == pytest.approx(101 / 200)
    (t,) = rep.tables([rec])
    assert t.collapsed and [r[0] for r in t.rows] == ["class 0 (zero)", "class 1 (one)",
                                                      "misclassified", "correctly classified"]
    # the same slices without class 0's gap: no finding
    s2, member2, y2 = _points((both, both, 0), (both, both, 1))
    flat = {**rec, "slices": membership_slices(s2, member2, y2, y2 == 0)}
    assert rep.findings([flat], {}) == []
