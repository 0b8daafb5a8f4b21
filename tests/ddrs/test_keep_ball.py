"""The containment constraint ``keep_ball`` (ANCER's eq. (4) and its SPD counterpart), in closed form.

A half-space classifier, class A where w.x < D, at x = 0: for noise M z (M symmetric positive definite,
covariance M^2; README, Errata R3) p_A = Phi(D / ||M w||) exactly, so the certified l2 radius (inscribed
ball) is lambda_min(M) D / ||M w|| and the proxy radius (ball of equal volume) is det(M)^(1/d) D / ||M w||.
The DDRS ball (isotropic sigma) is D for every sigma. With w tilted off the axes, stretching the axis
nearly orthogonal to w raises the proxy above D but shrinks the inscribed ball below D: the volume-only
forms (``keep_ball=False``) take such a point, the constrained forms keep the DDRS ball.
"""

from __future__ import annotations

import math

import pytest
import torch

import ddrs
import manifolds
from tests.classifiers import HalfSpace

D, SIGMA = 0.375, 0.25  # DDRS ball D, p_A = Phi(1.5) = 0.933 at sigma
TILT = math.atan(0.2)
W = torch.tensor([math.cos(TILT), math.sin(TILT)], dtype=torch.float64)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def closed_form(point: torch.Tensor) -> tuple[float, float]:
    """(l2 radius, proxy radius) of noise ``point`` (diagonal (d,) or SPD (d, d)) on the half-space."""
    M = torch.diag(point) if point.ndim == 1 else point
    r = D / torch.linalg.norm(M @ W)
    ev = torch.linalg.eigvalsh(M)
    return float(ev.min() * r), float(ev.log().mean().exp() * r)


def problem():
    return HalfSpace(W.tolist(), D, scale=1e4).eval(), torch.zeros(1, 2, dtype=torch.float64)


def test_the_isotropic_start_is_the_ddrs_ball():
    l2, proxy = closed_form(torch.full((2,), SIGMA, dtype=torch.float64))
    assert math.isclose(l2, D) and math.isclose(proxy, D)


def test_volume_only_ancer_loses_the_ddrs_ball_and_keep_ball_keeps_it():
    model, x = problem()
    loose = ddrs.ANCER(kappa=1e-8, keep_ball=False).fit(model, x, init=SIGMA, generator=gen(0))
    l2, proxy = closed_form(loose.points[0])
    assert loose.kept_new.tolist() == [True]
    assert proxy > 1.4 * D and l2 < 0.85 * D  # larger ellipsoid, smaller inscribed ball
    kept = ddrs.ANCER(kappa=1e-8, keep_ball=True).fit(model, x, init=SIGMA, generator=gen(0))
    assert ddrs.ANCER().keep_ball and kept.kept_new.tolist() == [False]  # no axis-aligned stretch keeps the ball
    assert closed_form(kept.points[0])[0] >= D - 1e-12


def _rotation(w: torch.Tensor) -> torch.Tensor:
    return torch.stack([w, torch.stack([-w[1], w[0]])], dim=1)  # first column w


def test_spd_selection_rejects_a_point_that_shrinks_the_ball_and_accepts_one_that_keeps_it():
    model, x = problem()
    m = manifolds.get_manifold("spd", 2)
    start = SIGMA * torch.eye(2, dtype=torch.float64)[None]
    stretch = torch.diag(torch.tensor([SIGMA, 4 * SIGMA], dtype=torch.float64))
    R = _rotation(W)
    axis = stretch[None]  # stretched along the axis nearly orthogonal to w: ball 0.80 D, proxy 1.59 D
    aligned = (R @ stretch @ R.T)[None]  # stretched exactly orthogonal to w: ball D, proxy 2 D
    assert closed_form(axis[0])[0] < 0.85 * D < 1.4 * D < closed_form(axis[0])[1]
    assert math.isclose(closed_form(aligned[0])[0], D) and math.isclose(closed_form(aligned[0])[1], 2 * D)
    draw = lambda: torch.randn(1, 4000, 2, generator=gen(3), dtype=torch.float64)  # noqa: E731
    for new, keeps_ball in ((axis, False), (aligned, True)):
        counter = ddrs.NetworkCounter()
        _, loose = ddrs.select(model, m, x, start, new, draw, 0.001, "proxy", counter)
        _, kept = ddrs.select(model, m, x, start, new, draw, 0.001, "proxy", counter, keep_ball=True)
        assert loose.tolist() == [True] and kept.tolist() == [keeps_ball]
        assert counter.forward == 2 * (2 * 4000)  # one vote per candidate and draw serves both radii


def test_rddrs_keeps_the_ddrs_ball_by_default_and_the_paper_form_does_not_select():
    model, x = problem()
    fitted = ddrs.RDDRS().fit(model, x, init=SIGMA, generator=gen(0))
    l2, proxy = closed_form(fitted.points[0])
    assert l2 >= 0.97 * D
    assert ddrs.RDDRS().keep_ball and not ddrs.RDDRS.paper().keep_ball and not ddrs.RDDRS.paper().select


def test_rddrs_is_rotation_invariant_where_ancer_is_not():
    """RDDRS can stretch exactly orthogonal to w (ball D, proxy up to 2 D at the ceiling 4 sigma): even its
    volume-only form finds that direction and keeps the ball, where ANCER's axis-aligned stretch cannot (its
    volume-only form gives the ball up, its constrained form keeps the start); the constrained RDDRS keeps the ball
    and never falls below the start's volume."""
    model, x = problem()
    loose = ddrs.RDDRS(keep_ball=False, iterations=100).fit(model, x, init=SIGMA, generator=gen(1))
    l2, proxy = closed_form(loose.points[0])
    # (0.966 D on one CPU, 0.97 D on another: a Monte Carlo fit; the axis-aligned stretch keeps only 0.80 D)
    assert l2 >= 0.95 * D and proxy > 1.5 * D
    kept = ddrs.RDDRS(keep_ball=True, iterations=100).fit(model, x, init=SIGMA, generator=gen(1))
    l2, proxy = closed_form(kept.points[0])
    assert l2 >= 0.97 * D and proxy >= D - 1e-12


def test_keep_ball_penalises_only_below_the_target():
    ones = torch.ones(3, dtype=torch.float64)
    p = torch.tensor([0.9, 0.9, 0.9], dtype=torch.float64)
    terms = ddrs.Terms(gap=ones, log_volume=0 * ones, min_eigenvalue=0.5 * ones, p_top=p, p_second=1 - p, point=ones)
    r = 0.5 * float(torch.special.ndtri(p[0]))
    assert torch.equal(ddrs.KeepBall()(terms), torch.zeros(3, dtype=torch.float64))  # no target: no constraint
    terms.l2_target = torch.tensor([r - 0.1, r, r + 0.1], dtype=torch.float64)
    torch.testing.assert_close(ddrs.KeepBall(weight=4.0)(terms), torch.tensor([0.0, 0.0, -0.4], dtype=torch.float64))
    assert ddrs.Problem.feasible(terms, terms.l2_target).tolist() == [True, True, False]
    with pytest.raises(ValueError, match="weight"):
        ddrs.KeepBall(weight=-1.0)


def test_hard_vote_radii_match_the_closed_form():
    model, x = problem()
    m = manifolds.get_manifold("spd", 2)
    point = torch.diag(torch.tensor([SIGMA, 4 * SIGMA], dtype=torch.float64))[None]
    z = torch.randn(1, 200_000, 2, generator=gen(5), dtype=torch.float64)
    radii = ddrs.selection.hard_vote_radii(model, m, x, point, z, 0.001)
    l2, proxy = closed_form(point[0])
    assert abs(float(radii["l2"]) - l2) < 0.02 and abs(float(radii["proxy"]) - proxy) < 0.04
    assert float(radii["l2"]) < l2 and float(radii["proxy"]) < proxy  # lower bounds (p_A_lower)
