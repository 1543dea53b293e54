"""Helpers of the evasion template."""

import torch

from advkit.attacks.base import take_rows_


def test_take_rows_is_an_exact_row_select():
    """take_rows_ must equal torch.where bit for bit (it relies on how torch evaluates lerp)."""
    g = torch.Generator().manual_seed(0)
    for scale in (1e-30, 1.0, 1e6, 1e30):
        dst = torch.randn(64, 3, 4, 4, generator=g) * scale
        src = torch.randn(64, 3, 4, 4, generator=g) * scale
        mask = torch.rand(64, generator=g) > 0.5
        expected = torch.where(mask.view(-1, 1, 1, 1), src, dst)
        out = take_rows_(dst, src, mask)
        assert out is dst and torch.equal(out, expected)
    d64 = torch.rand(5, 7, dtype=torch.float64)
    s64 = torch.rand(5, 7, dtype=torch.float64)
    m = torch.tensor([True, False, True, True, False])
    assert torch.equal(take_rows_(d64.clone(), s64, m), torch.where(m[:, None], s64, d64))
