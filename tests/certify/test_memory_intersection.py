"""The exact ellipsoid intersection test against brute force (grid, SLSQP) and constructed cases."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from certify.pairs import ellipsoids_intersect, intersection_value, max_disjoint_radius, separating_direction
from certify.region import Ellipsoid

KINDS = ("ball", "diagonal", "full")


@st.composite
def ellipsoids(draw, d, thin=True, center_scale=3.0):
    kind = draw(st.sampled_from(KINDS))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lo = -4.0 if thin and draw(st.booleans()) else -1.0
    vals = 10.0 ** rng.uniform(lo, 0.5, size=d)
    center = rng.normal(size=d) * center_scale
    if kind == "ball":
        scale = float(vals[0])
    elif kind == "diagonal":
        scale = vals
    else:
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        scale = (q * vals) @ q.T
        scale = 0.5 * (scale + scale.T)
    radius = float(10.0 ** rng.uniform(-0.5, 0.5))
    return Ellipsoid(center, scale, radius)


def ellipsoid_pairs(min_d, max_d, **kwargs):
    """Two ``ellipsoids(d, **kwargs)`` of one dimension d in [min_d, max_d]."""
    return st.integers(min_d, max_d).flatmap(lambda d: st.tuples(ellipsoids(d, **kwargs), ellipsoids(d, **kwargs)))


def dense_scale(e):
    vals, vecs = e.axes
    return np.diag(vals) if vecs is None else (vecs * vals) @ vecs.T


def slsqp_distance(e1, e2, restarts=3, seed=0):
    """Distance between the sets: min ||c1 + r1 S1 u - c2 - r2 S2 v|| over ||u||, ||v|| <= 1."""
    d = e1.dim
    unit = max(e1.outer_radius + e2.outer_radius, 1e-300)  # solve in units of the sets' size
    m1, m2 = dense_scale(e1) * e1.radius / unit, dense_scale(e2) * e2.radius / unit
    delta = (e1.center - e2.center) / unit
    rng = np.random.default_rng(seed)

    def f(z):
        r = delta + m1 @ z[:d] - m2 @ z[d:]
        return r @ r

    def g(z):
        r = delta + m1 @ z[:d] - m2 @ z[d:]
        return np.concatenate([2 * m1.T @ r, -2 * m2.T @ r])

    cons = [
        {
            "type": "ineq",
            "fun": lambda z: 1 - z[:d] @ z[:d],
            "jac": lambda z: np.concatenate([-2 * z[:d], np.zeros(d)]),
        },
        {
            "type": "ineq",
            "fun": lambda z: 1 - z[d:] @ z[d:],
            "jac": lambda z: np.concatenate([np.zeros(d), -2 * z[d:]]),
        },
    ]
    best = np.sqrt(f(np.zeros(2 * d)))
    for k in range(restarts):
        res = minimize(
            f,
            np.zeros(2 * d) if k == 0 else rng.normal(size=2 * d) * 0.3,
            jac=g,
            constraints=cons,
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        z = res.x.copy()
        # project back to feasibility before measuring (SLSQP may end slightly outside)
        for sl in (slice(0, d), slice(d, 2 * d)):
            n = np.linalg.norm(z[sl])
            if n > 1:
                z[sl] /= n
        best = min(best, float(np.sqrt(f(z))))
    return best * unit


def verified_disjoint(e1, e2):
    """Independent exact check of a 'disjoint' answer: the separating direction really separates
    (support functions computed densely)."""
    v = separating_direction(e1, e2)
    if v is None:
        return False
    m1, m2 = dense_scale(e1), dense_scale(e2)
    upper1 = v @ e1.center + e1.radius * np.linalg.norm(m1 @ v)
    lower2 = v @ e2.center - e2.radius * np.linalg.norm(m2 @ v)
    return upper1 < lower2


def unit_ball_grid(d):
    n = 241 if d == 2 else 45
    axis = np.linspace(-1, 1, n)
    pts = np.stack(np.meshgrid(*([axis] * d)), axis=-1).reshape(-1, d)
    return pts[np.linalg.norm(pts, axis=1) <= 1]


GRIDS = {2: unit_ball_grid(2), 3: unit_ball_grid(3)}


@settings(max_examples=150)
@given(ellipsoid_pairs(2, 3, center_scale=1.0))
def test_agrees_with_grid_in_2d_and_3d(pair):
    e1, e2 = pair
    pts = e1.center + (GRIDS[e1.dim] * e1.radius) @ dense_scale(e1)
    common = bool(np.any(e2.contains_point(pts)))
    answer = ellipsoids_intersect(e1, e2)
    assert answer == ellipsoids_intersect(e2, e1)
    if common:
        assert answer, "a grid point lies in both, but the test says disjoint"
    if not answer:
        assert verified_disjoint(e1, e2)
    else:
        scale = e1.outer_radius + e2.outer_radius
        assert slsqp_distance(e1, e2) <= 1e-4 * scale


@settings(max_examples=60)
@given(ellipsoid_pairs(4, 8, thin=False, center_scale=1.5))
def test_agrees_with_slsqp_in_higher_dimensions(pair):
    e1, e2 = pair
    answer = ellipsoids_intersect(e1, e2)
    dist = slsqp_distance(e1, e2)
    scale = e1.outer_radius + e2.outer_radius
    if answer:
        assert dist <= 1e-4 * scale
    else:
        assert verified_disjoint(e1, e2)
        assert dist > 0
    if dist > 1e-3 * scale:  # clearly apart per SLSQP: must be found disjoint
        assert not answer


@settings(max_examples=100)
@given(st.integers(2, 10).flatmap(lambda d: st.tuples(ellipsoids(d), ellipsoids(d), st.integers(0, 2**32 - 1))))
def test_touching_pairs_intersect_and_separated_pairs_do_not(args):
    e1, e2, seed = args
    rng = np.random.default_rng(seed)
    n = rng.normal(size=e1.dim)
    n /= np.linalg.norm(n)
    m1, m2 = dense_scale(e1), dense_scale(e2)
    p = e1.center + e1.radius * m1 @ (m1 @ n) / np.linalg.norm(m1 @ n)  # support point of e1 along n
    c2 = p + e2.radius * m2 @ (m2 @ n) / np.linalg.norm(m2 @ n)  # e2 touches e1 at p from outside
    touching = Ellipsoid(c2, e2.scale, e2.radius)
    assert ellipsoids_intersect(e1, touching)
    assert ellipsoids_intersect(touching, e1)
    width = e1.radius * np.linalg.norm(m1 @ n) + e2.radius * np.linalg.norm(m2 @ n)
    apart = Ellipsoid(c2 + 1e-3 * width * n, e2.scale, e2.radius)
    assert not ellipsoids_intersect(e1, apart)
    assert verified_disjoint(e1, apart)
    # moved towards the contact point p: p is then interior to e2 and they overlap
    assert ellipsoids_intersect(e1, Ellipsoid(c2 + 1e-3 * (p - c2), e2.scale, e2.radius))


@settings(max_examples=60)
@given(st.integers(2, 12).flatmap(lambda d: st.tuples(ellipsoids(d), ellipsoids(d), st.floats(0.01, 0.99))))
def test_nested_and_far_apart(args):
    e1, e2, frac = args
    # a copy of e2's shape small enough to lie inside e1, centred inside e1
    inner_r = frac * e1.l2_radius / e2.eigh[0][-1] * 0.5
    inner = Ellipsoid(e1.center + 0.5 * frac * e1.l2_radius * np.eye(e1.dim)[0], e2.scale, inner_r)
    assert ellipsoids_intersect(e1, inner) and ellipsoids_intersect(inner, e1)
    assert intersection_value(e1, inner)[0] <= 1.0
    shift = np.zeros(e1.dim)
    shift[-1] = 2.0 * (e1.outer_radius + e2.outer_radius) + 1.0
    far = Ellipsoid(e1.center + shift, e2.scale, e2.radius)
    assert not ellipsoids_intersect(e1, far)
    assert verified_disjoint(e1, far)


def test_points_and_concentric():
    e = Ellipsoid(np.zeros(3), np.array([1.0, 2.0, 0.001]), 1.0)
    assert ellipsoids_intersect(e, Ellipsoid(np.array([0, 0, 0.00099]), 1.0, 0.0))
    assert not ellipsoids_intersect(e, Ellipsoid(np.array([0, 0, 0.0011]), 1.0, 0.0))
    assert ellipsoids_intersect(Ellipsoid(np.ones(3), 1.0, 0.0), Ellipsoid(np.ones(3), 2.0, 0.0))
    assert not ellipsoids_intersect(Ellipsoid(np.ones(3), 1.0, 0.0), Ellipsoid(np.zeros(3), 2.0, 0.0))
    assert ellipsoids_intersect(e, Ellipsoid(np.zeros(3), np.eye(3) * 5, 0.1))
    with pytest.raises(ValueError):
        ellipsoids_intersect(e, Ellipsoid(np.zeros(2), 1.0, 1.0))


@settings(max_examples=60)
@given(ellipsoid_pairs(2, 6, thin=False, center_scale=1.0))
def test_max_disjoint_radius_is_tight_and_safe(pair):
    region, obstacle = pair
    assume(not obstacle.contains_point(region.center))
    r = max_disjoint_radius(region, obstacle)
    assert 0.0 <= r <= region.radius
    if r > 0:
        assert verified_disjoint(region.with_radius(r), obstacle)
    if r < region.radius:  # tight: a little more and they intersect (per SLSQP)
        grown = region.with_radius(min(region.radius, r * 1.001 + 1e-9))
        assert slsqp_distance(grown, obstacle) <= 1e-4 * (grown.outer_radius + obstacle.outer_radius)


def test_ball_pair_radius_is_analytic():
    a = Ellipsoid(np.zeros(5), 1.0, 1.0)
    b = Ellipsoid(np.full(5, 1.0), 0.5, 4.0)  # distance sqrt(5): disjoint ball of radius (sqrt5-1)/0.5
    r = max_disjoint_radius(b, a)
    assert r == pytest.approx((np.sqrt(5) - 1) / 0.5, rel=1e-6)
    assert r <= (np.sqrt(5) - 1) / 0.5


def test_full_against_full_of_other_orientation_high_dim():
    rng = np.random.default_rng(3)
    d = 60
    q1, _ = np.linalg.qr(rng.normal(size=(d, d)))
    q2, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1 = (q1 * rng.uniform(0.2, 2, d)) @ q1.T
    s2 = (q2 * rng.uniform(0.2, 2, d)) @ q2.T
    e1 = Ellipsoid(np.zeros(d), 0.5 * (s1 + s1.T), 1.0)
    for dist in (0.5, 2.0, 3.0, 5.0):
        e2 = Ellipsoid(np.full(d, dist / np.sqrt(d)), 0.5 * (s2 + s2.T), 1.0)
        answer = ellipsoids_intersect(e1, e2)
        if not answer:
            assert verified_disjoint(e1, e2)
        else:
            assert slsqp_distance(e1, e2, restarts=1) <= 1e-4 * (e1.outer_radius + e2.outer_radius)
