"""LpBall: projections against closed forms, random starts inside the ball, steepest directions."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from advkit.errors import InvalidParameterError
from advkit.threats import LpBall, lp_norm, project_l1


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_linf_projection_is_clamp():
    ball = LpBall(norm="inf", eps=0.1)
    x = torch.zeros(3, 4)
    xa = torch.tensor([[0.5, -0.5, 0.05, 0.0]] * 3)
    assert torch.equal(ball.project(xa, x), torch.tensor([[0.1, -0.1, 0.05, 0.0]] * 3))


def test_l2_projection_rescales_only_outside():
    ball = LpBall(norm=2, eps=1.0)
    x = torch.zeros(2, 2)
    xa = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    out = ball.project(xa, x)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8]))
    assert torch.equal(out[1], xa[1])


def test_l1_projection_matches_bruteforce_closed_form():
    # projection of (3, 1) onto the L1 ball of radius 2: soft-threshold at theta = 1 -> (2, 0)
    out = project_l1(torch.tensor([[3.0, 1.0]]), 2.0)
    assert torch.allclose(out, torch.tensor([[2.0, 0.0]]))
    # (1, 1, 1) radius 1.5 -> theta = 0.5 -> (0.5, 0.5, 0.5)
    out = project_l1(torch.tensor([[1.0, -1.0, 1.0]]), 1.5)
    assert torch.allclose(out, torch.tensor([[0.5, -0.5, 0.5]]))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.floats(0.05, 5.0), st.integers(0, 10_000))
def test_l1_projection_is_the_closest_point_in_the_ball(d, eps, seed):
    v = torch.randn((4, d), generator=_g(seed), dtype=torch.float64) * 2
    p = project_l1(v, eps)
    assert (p.abs().sum(1) <= eps + 1e-9).all()
    # optimality: no random feasible point is closer
    cands = LpBall(norm=1, eps=eps).random_delta(v.repeat(50, 1), _g(seed + 1)).to(torch.float64)
    dist_p = (v - p).norm(dim=1).repeat(50)
    dist_c = (v.repeat(50, 1) - cands).norm(dim=1)
    assert (dist_p <= dist_c + 1e-9).all()


@pytest.mark.parametrize("norm", ["inf", 2, 1])
def test_random_init_inside_ball_and_seeded(norm):
    ball = LpBall(norm=norm, eps=0.3)
    x = torch.rand(64, 1, 5, 5, generator=_g(1))
    a = ball.random_init(x, _g(7))
    b = ball.random_init(x, _g(7))
    assert torch.equal(a, b)
    assert (ball.distance(a, x) <= 0.3 + 1e-5).all()
    assert (ball.distance(a, x) > 0).all()


@pytest.mark.parametrize("norm", ["inf", 2, 1])
def test_normalize_grad_has_unit_norm_and_ascends(norm):
    ball = LpBall(norm=norm, eps=1.0)
    g = torch.randn(8, 20, generator=_g(2))
    d = ball.normalize_grad(g)
    n = torch.linalg.vector_norm(d, ord=ball.p, dim=1)
    assert torch.allclose(n, torch.ones(8), atol=1e-5)
    assert ((d * g).sum(1) > 0).all()


@pytest.mark.parametrize(
    "bad", [{"norm": 3}, {"norm": "l7"}, {"eps": -1.0}, {"eps": math.inf}, {"eps": float("nan")}]
)
def test_bad_parameters_raise(bad):
    with pytest.raises(InvalidParameterError) as ei:
        LpBall(**bad)
    assert next(iter(bad)) in str(ei.value)


@pytest.mark.parametrize("norm", ["inf", 2, 1])
def test_lp_norm_matches_vector_norm(norm):
    ball = LpBall(norm=norm, eps=1.0)
    d = torch.randn(6, 3, 5, generator=_g(4))
    d[2] = 0
    expected = torch.linalg.vector_norm(d.reshape(6, -1), ord=ball.p, dim=1)
    assert torch.allclose(lp_norm(d, ball.p), expected)
