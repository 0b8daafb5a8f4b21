"""No false "disjoint" at any condition number, with oracles written here.

Oracles: (a) pairs built around a common point y (y = c + r S u with ||u|| = 1 - margin), checked
in exact rational arithmetic in d = 2; (b) a convex search (SLSQP on min max(q1, q2)) for a common
point, used on memory streams after every query."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import certify
from certify.pairs import ellipsoids_intersect, max_disjoint_radius, separating_direction
from certify.region import Ellipsoid


def _scale(kind, d, cond, rng):
    vals = np.geomspace(1.0, cond, d) if d > 1 else np.ones(1)
    vals = rng.permutation(vals) * 10.0 ** rng.uniform(-2, 1)
    if kind == "ball":
        return float(vals[0])
    if kind == "diagonal":
        return vals
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s = (q * vals) @ q.T
    return 0.5 * (s + s.T)


def _dense(e):
    s = np.asarray(e.scale, dtype=np.float64)
    return s * np.eye(e.dim) if s.ndim == 0 else (np.diag(s) if s.ndim == 1 else s)


def _through(y, scale, radius, u, margin):
    """A region containing y: centre y - r S u' with ||u'|| = 1 - margin."""
    u = u / np.linalg.norm(u) * (1.0 - margin)
    s = scale * np.eye(len(y)) if np.ndim(scale) == 0 else (np.diag(scale) if np.ndim(scale) == 1 else scale)
    return Ellipsoid(y - radius * (s @ u), scale, radius)


def _exact_contains(e, y) -> bool:
    """y in e, in exact rationals (d = 2): (y - c)^T S^{-2} (y - c) <= r^2."""
    s = [[Fraction(float(v)) for v in row] for row in _dense(e)]
    det = s[0][0] * s[1][1] - s[0][1] * s[1][0]
    inv = [[s[1][1] / det, -s[0][1] / det], [-s[1][0] / det, s[0][0] / det]]
    dl = [Fraction(float(a)) - Fraction(float(b)) for a, b in zip(y, e.center)]
    w = [inv[0][0] * dl[0] + inv[0][1] * dl[1], inv[1][0] * dl[0] + inv[1][1] * dl[1]]
    return w[0] ** 2 + w[1] ** 2 <= Fraction(e.radius) ** 2


def _pair(d, kinds, cond, margin, seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=d) * 3
    a = _through(y, _scale(kinds[0], d, cond, rng), 10.0 ** rng.uniform(-1, 1), rng.normal(size=d), margin)
    b = _through(y, _scale(kinds[1], d, cond, rng), 10.0 ** rng.uniform(-1, 1), rng.normal(size=d), margin)
    return y, a, b


def test_issue_reproducer():
    A = Ellipsoid(
        np.array([-1.1936537405552317, -1.3430612294621291]),
        np.array([[0.09255045259443391, -0.2897612586709364], [-0.2897612586709364, 0.9074752009446533]]),
        0.07465064351097764,
    )
    B = Ellipsoid(
        np.array([-1.0764146147973757, -1.2736033538698779]),
        np.array([[0.3114741842828259, 0.4630219266911037], [0.4630219266911037, 0.6886256118466203]]),
        0.36577362437450767,
    )
    y = np.array([-1.170950101925151, -1.4141625444313664])
    assert _exact_contains(A, y) and _exact_contains(B, y)
    assert ellipsoids_intersect(A, B) and ellipsoids_intersect(B, A)
    assert separating_direction(A, B) is None and separating_direction(B, A) is None
    for region, other in ((A, B), (B, A)):
        r = max_disjoint_radius(region, other)
        assert not _exact_contains(region.with_radius(r), y)


KIND_PAIRS = [("ball", "ball"), ("ball", "full"), ("diagonal", "full"), ("full", "full"), ("diagonal", "diagonal")]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(KIND_PAIRS),
    st.sampled_from([1.0, 1e2, 1e4, 1e6, 1e8]),
    st.sampled_from([1e-6, 1e-4, 1e-2]),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_no_false_disjoint_exact_2d(kinds, cond, margin, seed, swap):
    y, a, b = _pair(2, kinds[::-1] if swap else kinds, cond, margin, seed)
    assert _exact_contains(a, y) and _exact_contains(b, y)  # the oracle: a common point, exactly
    assert ellipsoids_intersect(a, b) and ellipsoids_intersect(b, a)
    for region, other in ((a, b), (b, a)):
        r = max_disjoint_radius(region, other)
        assert r < region.radius
        assert not _exact_contains(region.with_radius(r), y)


def _check_high_dimension(d, cond, kinds, seed):
    y, a, b = _pair(d, kinds, cond, 1e-6, seed)
    # membership of y by a backward-stable solve (error ~ cond * eps << margin 1e-6)
    for e in (a, b):
        assert np.linalg.norm(np.linalg.solve(_dense(e), y - e.center)) <= e.radius * (1 - 5e-7)
    assert ellipsoids_intersect(a, b) and ellipsoids_intersect(b, a)
    r = max_disjoint_radius(a, b)
    assert np.linalg.norm(np.linalg.solve(_dense(a), y - a.center)) > r


@pytest.mark.parametrize("d", [3, 10, 100])
@pytest.mark.parametrize("cond", [1e4, 1e8])
def test_no_false_disjoint_high_dimension(d, cond):
    rng = np.random.default_rng(d)
    for k in range(len(KIND_PAIRS)):
        _check_high_dimension(d, cond, KIND_PAIRS[k], int(rng.integers(2**31)))


@pytest.mark.slow
def test_no_false_disjoint_d784():
    _check_high_dimension(784, 1e8, ("full", "full"), 784)
    _check_high_dimension(784, 1e6, ("diagonal", "full"), 785)


@pytest.mark.parametrize("kinds", KIND_PAIRS)
@pytest.mark.parametrize("cond", [1.0, 1e4, 1e8])
def test_touching_separated_and_pushed_pairs(kinds, cond):
    # e2 touches e1 at p (e1's support point along w); moved out by 1e-4 of the width along w it is
    # proved disjoint (tightness); moved 1e-6 of the way towards p, p is interior: they intersect.
    d = 6
    rng = np.random.default_rng(int(np.log10(cond)) * 7 + KIND_PAIRS.index(kinds))
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    e1 = Ellipsoid(rng.normal(size=d), _scale(kinds[0], d, cond, rng), 1.0)
    s2 = _scale(kinds[1], d, cond, rng)
    m1, m2 = _dense(e1), s2 * np.eye(d) if np.ndim(s2) == 0 else (np.diag(s2) if np.ndim(s2) == 1 else s2)
    p = e1.center + m1 @ (m1 @ w) / np.linalg.norm(m1 @ w)
    c2 = p + m2 @ (m2 @ w) / np.linalg.norm(m2 @ w)
    width = np.linalg.norm(m1 @ w) + np.linalg.norm(m2 @ w)
    apart = Ellipsoid(c2 + 1e-4 * width * w, s2, 1.0)
    assert not ellipsoids_intersect(e1, apart) and not ellipsoids_intersect(apart, e1)
    v = separating_direction(e1, apart)
    assert v is not None and e1.support(v) < -apart.support(-v)
    assert max_disjoint_radius(e1, apart) == e1.radius
    pushed = Ellipsoid(c2 + 1e-6 * (p - c2), s2, 1.0)
    assert ellipsoids_intersect(e1, pushed) and ellipsoids_intersect(pushed, e1)
    assert max_disjoint_radius(e1, pushed) < 1.0 and max_disjoint_radius(pushed, e1) < 1.0


def test_verdict_is_symmetric():
    rng = np.random.default_rng(5)
    for _ in range(60):
        kinds = KIND_PAIRS[int(rng.integers(len(KIND_PAIRS)))]
        d = int(rng.integers(2, 6))
        a = Ellipsoid(rng.normal(size=d), _scale(kinds[0], d, 10.0 ** rng.uniform(0, 8), rng), 1.0)
        b = Ellipsoid(rng.normal(size=d), _scale(kinds[1], d, 10.0 ** rng.uniform(0, 8), rng), 1.0)
        assert ellipsoids_intersect(a, b) == ellipsoids_intersect(b, a)


# ---------------------------------------------------------------------------- memory streams
def _common_point(e1, e2):
    """Convex search for a common point: min s s.t. q_i(y) = ||S_i^{-1}(y - c_i)|| / r_i <= s;
    returns y with max(q1, q2) as small as found (the sets meet iff the minimum is <= 1)."""
    inv = [np.linalg.inv(_dense(e)) for e in (e1, e2)]

    def q(y, i, e):
        return np.linalg.norm(inv[i] @ (y - e.center)) / e.radius

    best = None
    for t in (0.5, e1.radius / (e1.radius + e2.radius), 0.1, 0.9):
        y0 = np.append(t * e2.center + (1 - t) * e1.center, 2.0)
        cons = [{"type": "ineq", "fun": (lambda z, i=i, e=e: z[-1] - q(z[:-1], i, e))} for i, e in enumerate((e1, e2))]
        res = minimize(lambda z: z[-1], y0, constraints=cons, method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
        y = res.x[:-1]
        val = max(q(y, 0, e1), q(y, 1, e2))
        if best is None or val < best[0]:
            best = (val, y)
    return best


@pytest.mark.parametrize("d,cond", [(2, 1e6), (2, 1e3), (5, 1e4)])
def test_memory_stream_invariant_after_every_query(d, cond):
    rng = np.random.default_rng(int(cond) + d)
    mem = certify.Memory()
    for i in range(40):
        kind = ("ball", "diagonal", "full")[i % 3]
        center = rng.normal(size=d) * 0.6
        region = Ellipsoid(center, _scale(kind, d, cond, rng), 10.0 ** rng.uniform(-0.5, 0.5))
        cert = certify.Certificate(
            int(rng.integers(3)), 0.9, region.radius, region.l2_radius, region.proxy_radius, region
        )
        mem.add(cert, idx=i)
        stored = [e for e in mem.entries if e.prediction != certify.ABSTAIN and e.region.radius > 0]
        new = mem.entries[-1]
        if new.prediction == certify.ABSTAIN or new.region.radius == 0:
            continue
        for e in stored[:-1]:
            if e.prediction == new.prediction:
                continue
            val, y = _common_point(new.region, e.region)
            # the oracle's point must not lie in both (a margin for the oracle's own rounding)
            assert val > 1.0 - 1e-9, (i, e.idx, val)
        mem.check_invariants()
