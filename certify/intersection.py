"""Exact intersection test for two ellipsoids of any orientation (and the shrink radius).

Convention (the one of ``certify.region``): ``E = {c + delta : ||S^{-1} delta||_2 <= r}``, i.e.
``E = {c + r S u : ||u|| <= 1}``, with ``S`` a scalar, a positive vector or an SPD matrix.  Its shape
matrix is ``A = r^2 S^2`` and its support function ``h_E(v) = <v, c> + r ||S v||``.  Everything
below is derived from ``(c, S, r)`` here and nowhere else (``_pair_spectrum``).

Criterion (Gilitschenski & Hanebeck 2012, "A robust computational test for overlap of two
arbitrary-dimensional ellipsoids in fault-detection of Kalman filters"; equivalently the
support-function / Minkowski-sum dual).  Two compact convex sets are disjoint iff some direction
``v`` strictly separates them: ``<v, c2 - c1> > r1 ||S1 v|| + r2 ||S2 v||``.  With
``sqrt(a) + sqrt(b) = min_{t in (0,1)} sqrt(a / t + b / (1 - t))`` this is

    disjoint  <=>  max_{t in (0,1)} F(t) > 1,   F(t) = delta^T (A1 / t + A2 / (1 - t))^{-1} delta,

``delta = c2 - c1`` (``1 - F`` is Gilitschenski-Hanebeck's ``K(t)``, convex in ``t``, so ``F`` is
concave).  A simultaneous diagonalisation makes each evaluation O(d): with
``M = S1^{-1} S2^2 S1^{-1} = U diag(nu) U^T`` and ``w = U^T S1^{-1} delta``,

    F(t) = sum_i w_i^2 / (r1^2 / t + r2^2 nu_i / (1 - t)).

Ball/diagonal pairs need no decomposition (O(d)); a ball or diagonal against a full ellipsoid, or two
full ellipsoids sharing their eigenvectors, reuse the cached eigendecomposition (O(d^2)); two full
ellipsoids with different orientations (or a diagonal against a full one) need one d x d ``eigh``.
The spectrum does not depend on the radii, so the shrink search (``max_disjoint_radius``) computes it
once and then costs O(d) per trial radius.

Maximisation: ``F`` is concave with ``F(0) = F(1) = 0`` (both radii > 0), so the maximiser is found
by bisection on the sign of ``F'`` (60 halvings) plus a 17-point grid; every evaluated ``t`` gives a
valid lower bound of ``max F``.  Decision: "disjoint" only if the best value found exceeds
``1 + rtol`` (default ``rtol = 1e-7``), i.e. every numerical doubt (round-off in the eigen-
decomposition, an unconverged maximisation, exactly touching sets) is answered "they intersect".
The separating direction for ``t*`` is ``v = (A1 / t* + A2 / (1 - t*))^{-1} delta``
(``separating_direction``), an independent certificate of disjointness.
Radius-0 regions (points) are handled in closed form (membership in the other region).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .region import Ellipsoid

#: relative margin by which max F must exceed 1 before "disjoint" is answered.
DEFAULT_RTOL = 1e-7

_GRID = np.linspace(0.0, 1.0, 19)[1:-1]


@dataclass(frozen=True)
class PairSpectrum:
    """``F(t; r1, r2) = sum w2_i / (r1^2 / t + r2^2 nu_i / (1 - t))`` for the pair (first, second).

    ``w2`` = squared whitened centre difference, ``nu`` = generalised eigenvalues; ``radius-free``:
    the radii are arguments, so one spectrum serves every radius of either region."""

    w2: np.ndarray
    nu: np.ndarray
    swapped: bool  # True if ``first`` of the pair was the caller's second ellipsoid
    basis: np.ndarray | None  # U (None = identity), used to build the separating direction
    whiten_first: object  # the Ellipsoid used for whitening (S1 in the formulas)

    def value(self, t, r1: float, r2: float):
        t = np.asarray(t, dtype=np.float64)[..., None]
        h = r1 * r1 / t + (r2 * r2) * self.nu / (1.0 - t)
        return np.sum(self.w2 / h, axis=-1)

    def sup(self, r1: float, r2: float, threshold: float | None = None) -> tuple[float, float]:
        """``(max_t F, t*)``: a lower bound of the true maximum, tight up to round-off.

        With ``threshold`` the search stops as soon as the answer to "max F > threshold?" is known:
        a value above it was found (a valid certificate for any ``F``), or the tangent-line upper
        bound of the concave ``F`` is below it (this early "no" only relies on concavity, and an
        error there could only turn a "disjoint" into "intersect")."""
        if r1 == 0.0 and r2 == 0.0:
            return (np.inf if np.any(self.w2 > 0) else 0.0), 0.5
        if r1 == 0.0:  # F increases to its limit as t -> 0: membership of c1 in E2
            return float(np.sum(self.w2 / (r2 * r2 * self.nu))), 0.0
        if r2 == 0.0:
            return float(np.sum(self.w2) / (r1 * r1)), 1.0
        a, b = r1 * r1, (r2 * r2) * self.nu
        w2 = self.w2
        # values and slopes on a grid (one vectorised pass), then bisection on the slope's sign
        tg = _GRID[:, None]
        inv = 1.0 / (a / tg + b / (1.0 - tg))
        vals = inv @ w2
        q = inv * inv * w2
        slopes = a / _GRID ** 2 * q.sum(axis=1) - (q @ b) / (1.0 - _GRID) ** 2
        k = int(np.argmax(vals))
        best, best_t = float(vals[k]), float(_GRID[k])
        if threshold is not None and best > threshold:
            return best, best_t
        pos = np.nonzero(slopes > 0)[0]
        if len(pos) == 0:
            t_lo, f_lo, s_lo = 0.0, 0.0, float(np.sum(w2)) / a
        else:
            j = int(pos[-1])
            t_lo, f_lo, s_lo = float(_GRID[j]), float(vals[j]), float(slopes[j])
        neg = np.nonzero(slopes <= 0)[0]
        neg = neg[_GRID[neg] > t_lo]
        if len(neg) == 0:
            t_hi, f_hi, s_hi = 1.0, 0.0, -float(np.sum(w2 / b))
        else:
            j = int(neg[0])
            t_hi, f_hi, s_hi = float(_GRID[j]), float(vals[j]), float(slopes[j])
        for _ in range(60):
            if threshold is not None and s_lo > 0 and s_hi < 0:
                tc = (f_hi - f_lo + s_lo * t_lo - s_hi * t_hi) / (s_lo - s_hi)
                upper = f_lo + s_lo * (tc - t_lo)
                if upper <= threshold:
                    break
            t = 0.5 * (t_lo + t_hi)
            if not (t_lo < t < t_hi):
                break
            inv1 = 1.0 / (a / t + b / (1.0 - t))
            f = float(w2 @ inv1)
            q1 = inv1 * inv1 * w2
            slope = a / (t * t) * float(q1.sum()) - float(q1 @ b) / ((1.0 - t) ** 2)
            if f > best:
                best, best_t = f, t
                if threshold is not None and best > threshold:
                    break
            if slope > 0:
                t_lo, f_lo, s_lo = t, f, slope
            else:
                t_hi, f_hi, s_hi = t, f, slope
        return best, best_t


def _pair_spectrum(e1: Ellipsoid, e2: Ellipsoid) -> PairSpectrum:
    """The simultaneous diagonalisation of the pair (the one place converting (c, S, r))."""
    if e1.dim != e2.dim:
        raise ValueError(f"dimension mismatch: {e1.dim} vs {e2.dim}")
    rank = {"ball": 0, "diagonal": 1, "full": 2}
    swapped = rank[e2.kind] < rank[e1.kind]
    first, second = (e2, e1) if swapped else (e1, e2)
    delta = second.center - first.center
    v1, b1 = first.axes
    v2, b2 = second.axes
    if b1 is None and b2 is None:  # ball/diagonal pair: already diagonal
        w = delta / v1
        return PairSpectrum(w * w, (v2 / v1) ** 2, swapped, None, first)
    if first.kind == "ball":  # S1 = s I: M = S2^2 / s^2 in S2's basis
        w = (delta @ b2) / v1
        return PairSpectrum(w * w, (v2 / v1) ** 2, swapped, b2, first)
    if b1 is not None and b2 is not None and (b1 is b2 or np.array_equal(b1, b2)):
        w = (delta @ b1) / v1
        return PairSpectrum(w * w, (v2 / v1) ** 2, swapped, b1, first)
    # general: M = S1^{-1} S2^2 S1^{-1} = G G^T with G = S1^{-1} V2 diag(v2); one dense eigh.
    if b1 is None:  # diagonal first, full second
        g = (b2 * v2) / v1[:, None]
        wd = delta / v1
    else:  # full first (and full second of another orientation)
        inv = (b1 / v1) @ b1.T
        g = inv @ (b2 * v2) if b2 is not None else inv * v2
        wd = inv @ delta
    m = g @ g.T
    m = 0.5 * (m + m.T)
    nu, u = np.linalg.eigh(m)
    nu = np.maximum(nu, np.finfo(np.float64).tiny)
    w = wd @ u
    return PairSpectrum(w * w, nu, swapped, u, first)


def _radii(spec: PairSpectrum, e1: Ellipsoid, e2: Ellipsoid) -> tuple[float, float]:
    return (e2.radius, e1.radius) if spec.swapped else (e1.radius, e2.radius)


def _bounding_disjoint(e1: Ellipsoid, e2: Ellipsoid, rtol: float) -> bool:
    dist = float(np.linalg.norm(e2.center - e1.center))
    return dist > (e1.outer_radius + e2.outer_radius) * (1.0 + rtol)


def _inscribed_intersect(e1: Ellipsoid, e2: Ellipsoid) -> bool:
    return float(np.linalg.norm(e2.center - e1.center)) <= e1.l2_radius + e2.l2_radius


def intersection_value(e1: Ellipsoid, e2: Ellipsoid) -> tuple[float, float]:
    """``(max_t F, t*)``: the regions are disjoint iff the value exceeds 1 (no screens, no margin)."""
    spec = _pair_spectrum(e1, e2)
    return spec.sup(*_radii(spec, e1, e2))


def ellipsoids_intersect(e1: Ellipsoid, e2: Ellipsoid, rtol: float = DEFAULT_RTOL) -> bool:
    """True unless the two closed regions are certified disjoint (``max F > 1 + rtol``).

    Touching regions intersect.  Errs on the side of "intersect": it never answers False for a pair
    that intersects (up to float64 round-off well below ``rtol``)."""
    if _bounding_disjoint(e1, e2, rtol):
        return False
    if _inscribed_intersect(e1, e2):
        return True
    spec = _pair_spectrum(e1, e2)
    value, _ = spec.sup(*_radii(spec, e1, e2), threshold=1.0 + rtol)
    return not (value > 1.0 + rtol)


def separating_direction(e1: Ellipsoid, e2: Ellipsoid) -> np.ndarray | None:
    """A direction ``v`` separating the regions when the test finds them disjoint (``max F > 1``),
    else None: ``e1.support(v) < -e2.support(-v)`` (max over E1 of <v, y> < min over E2).  It is
    ``(A1 / t* + A2 / (1 - t*))^{-1} (c2 - c1)``, an independent certificate of disjointness."""
    spec = _pair_spectrum(e1, e2)
    r1, r2 = _radii(spec, e1, e2)
    value, t = spec.sup(r1, r2)
    if not value > 1.0:
        return None
    first = spec.whiten_first
    second = e1 if spec.swapped else e2
    delta = second.center - first.center
    if r1 == 0.0 and r2 == 0.0:
        v = delta
    else:
        y = first.whiten(delta)  # S1^{-1} delta
        u = spec.basis
        z = y if u is None else y @ u
        if r1 == 0.0:
            h = r2 * r2 * spec.nu
        elif r2 == 0.0:
            h = np.full_like(spec.nu, r1 * r1)
        else:
            h = r1 * r1 / t + r2 * r2 * spec.nu / (1.0 - t)
        coef = z / h
        v = first.whiten(coef if u is None else u @ coef)
    return -v if spec.swapped else v


def max_disjoint_radius(region: Ellipsoid, obstacle: Ellipsoid, rtol: float = DEFAULT_RTOL,
                        iterations: int = 50) -> float:
    """Largest ``r' <= region.radius`` such that ``region.with_radius(r')`` is certified disjoint from
    ``obstacle`` (bisection on ``r'``, answering from below); 0.0 if even a point is not."""
    if not ellipsoids_intersect(region, obstacle, rtol):
        return region.radius
    spec = _pair_spectrum(region, obstacle)
    ro = obstacle.radius

    def disjoint(r: float) -> bool:
        r1, r2 = (ro, r) if spec.swapped else (r, ro)
        return spec.sup(r1, r2, threshold=1.0 + rtol)[0] > 1.0 + rtol

    if not disjoint(0.0):
        return 0.0
    lo, hi = 0.0, region.radius
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if disjoint(mid):
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * region.radius:
            break
    return lo
