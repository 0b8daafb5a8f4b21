"""Verified intersection test for two ellipsoids of any orientation (and the shrink radius).

Convention (the one of ``certify.region``): ``E = {c + delta : ||S^{-1} delta||_2 <= r}``, i.e.
``E = {c + r S u : ||u|| <= 1}``, with ``S`` a scalar, a positive vector or an SPD matrix (exactly
symmetric: ``Ellipsoid`` symmetrises it).  Its shape matrix is ``A = r^2 S^2`` and its support
function ``h_E(v) = <v, c> + r ||S v||`` (exact, since ``S^T = S``).

Soundness by construction.  "Disjoint" is answered only with a proof: a direction ``v`` for which
``separation_gap`` (the support-function gap ``<v, c2 - c1> - r1 ||S1 v|| - r2 ||S2 v||``, computed
from the stored ``(c, S, r)`` directly, never from an eigendecomposition) exceeds a rigorous bound
on its float64 rounding error.  Everything else -- the spectrum, the maximisation over ``t``,
the screens -- only *proposes* ``v``; if the check fails the answer is "intersect".  The verdict is
the same for ``(A, B)`` and ``(B, A)``: the pair is put in a canonical order first.

Proposing v (Gilitschenski & Hanebeck 2012, "A robust computational test for overlap of two
arbitrary-dimensional ellipsoids in fault-detection of Kalman filters"; the support-function /
Minkowski-sum dual).  With ``sqrt(a) + sqrt(b) = min_{t in (0,1)} sqrt(a / t + b / (1 - t))``,

    disjoint  <=>  max_{t in (0,1)} F(t) > 1,   F(t) = delta^T (A1 / t + A2 / (1 - t))^{-1} delta,

``delta = c2 - c1``, and for any t with ``F(t) > 1`` the direction
``v = (A1 / t + A2 / (1 - t))^{-1} delta`` separates: ``<v, delta> = F`` while
``r1 ||S1 v|| + r2 ||S2 v|| <= sqrt(F)``.  A simultaneous diagonalisation makes each evaluation O(d):
with ``G = S1^{-1} S2 = U diag(sigma) W^T`` (an SVD: the spectrum of ``M = G G^T`` is ``sigma^2``,
obtained without squaring the condition number, unlike ``eigh(M)``), ``nu = sigma^2`` and
``w = U^T S1^{-1} delta``,

    F(t) = sum_i w_i^2 / (r1^2 / t + r2^2 nu_i / (1 - t)).

Ball/diagonal pairs and pairs sharing eigenvectors need no decomposition; a diagonal against a
full scale, or two full scales of different orientation, need one d x d SVD (of
``diag(1/v1) V1^T V2 diag(v2)``, one matrix product).  The spectrum does not depend on the radii,
so ``max_disjoint_radius`` computes it once and then costs O(d) per trial radius, plus one verified
check (O(d^2) for a full scale) whose closed form gives the largest radius that direction proves.
``F`` is concave with ``F(0) = F(1) = 0`` (both radii > 0): bisection on the sign of ``F'`` plus a
17-point grid (``PairSpectrum.sup``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .region import Ellipsoid, Region

#: relative margin by which max F must exceed 1 before "disjoint" is answered.
DEFAULT_RTOL = 1e-7

_GRID = np.linspace(0.0, 1.0, 19)[1:-1]


@dataclass(frozen=True)
class PairSpectrum:
    """``F(t; r1, r2) = sum w2_i / (r1^2 / t + r2^2 nu_i / (1 - t))`` for the pair (first, second).

    ``w2`` = squared whitened centre difference, ``nu`` = generalised eigenvalues; ``radius-free``:
    the radii are arguments, so one spectrum serves every radius of either region.  ``S1^{-1} =
    L diag(inv1) L^T`` (``L`` None: identity) and ``U = L @ inner`` (``inner`` None: identity)."""

    w: np.ndarray
    nu: np.ndarray
    left: np.ndarray | None
    inv1: np.ndarray
    inner: np.ndarray | None

    @property
    def w2(self) -> np.ndarray:
        return self.w * self.w

    def coefficients(self, t: float, r1: float, r2: float) -> np.ndarray:
        """``w / h`` with ``h = r1^2 / t + r2^2 nu / (1 - t)`` (a zero radius drops its term, up to a
        positive factor): the separating direction in the simultaneous eigenbasis, before ``U`` and
        ``S1^{-1}`` are applied (``direction``; ``certify.structured`` applies them axis by axis)."""
        if r1 == 0.0 and r2 == 0.0:
            h = np.ones_like(self.nu)
        elif r1 == 0.0:
            h = r2 * r2 * self.nu
        elif r2 == 0.0:
            h = np.full_like(self.nu, r1 * r1)
        else:
            h = r1 * r1 / t + r2 * r2 * self.nu / (1.0 - t)
        return self.w / h

    def direction(self, t: float, r1: float, r2: float) -> np.ndarray:
        """``(A1 / t + A2 / (1 - t))^{-1} delta`` (up to a positive factor) = ``S1^{-1} U (w / h)``."""
        coef = self.coefficients(t, r1, r2)
        y = coef if self.inner is None else self.inner @ coef
        y = y * self.inv1
        return y if self.left is None else self.left @ y

    def value(self, t, r1: float, r2: float):
        t = np.asarray(t, dtype=np.float64)[..., None]
        h = r1 * r1 / t + (r2 * r2) * self.nu / (1.0 - t)
        return np.sum(self.w2 / h, axis=-1)

    def sup(self, r1: float, r2: float, threshold: float | None = None) -> tuple[float, float]:
        """``(max_t F, t*)``: a lower bound of the true maximum, tight up to round-off (``concave_sup``)."""
        if r1 == 0.0 and r2 == 0.0:
            return (np.inf if np.any(self.w != 0) else 0.0), 0.5
        if r1 == 0.0:  # F increases to its limit as t -> 0: membership of c1 in E2
            return float(np.sum(self.w2 / (r2 * r2 * self.nu))), 0.0
        if r2 == 0.0:
            return float(np.sum(self.w2) / (r1 * r1)), 1.0
        a, b = r1 * r1, (r2 * r2) * self.nu
        w2 = self.w2

        def evaluate(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            tg = t[:, None]
            inv = 1.0 / (a / tg + b / (1.0 - tg))
            q = inv * inv * w2
            return inv @ w2, a / (t * t) * q.sum(axis=1) - (q @ b) / (1.0 - t) ** 2

        return concave_sup(evaluate, float(np.sum(w2)) / a, -float(np.sum(w2 / b)), threshold)


class Pencil(Protocol):
    """What proposes separating directions for an ordered pair of regions: ``F(t; r1, r2) = delta^T (A1 / t
    + A2 / (1 - t))^{-1} delta`` with ``A_i = r_i^2 S_i^2`` (``sup``) and its direction (``direction``)."""

    def sup(self, r1: float, r2: float, threshold: float | None = None) -> tuple[float, float]: ...

    def direction(self, t: float, r1: float, r2: float) -> np.ndarray: ...


def concave_sup(
    evaluate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    slope0: float,
    slope1: float,
    threshold: float | None = None,
    grid: np.ndarray = _GRID,
    bisections: int = 60,
) -> tuple[float, float]:
    """``(max_t F, t*)`` of a concave ``F`` on (0, 1) with ``F(0) = F(1) = 0``, from ``evaluate(t) -> (F(t),
    F'(t))`` on an array of t and the end slopes ``F'(0)``, ``F'(1)``: the grid in one call, then bisection on
    the sign of ``F'``. Returns a value F takes (a lower bound of the maximum, tight up to round-off).

    With ``threshold`` the search stops as soon as the answer to "max F > threshold?" is known: a value
    above it was found (a valid certificate for any ``F``), or the tangent-line upper bound of the
    concave ``F`` is below it (this early "no" only relies on concavity, and an error there could only
    turn a "disjoint" into "intersect")."""
    vals, slopes = evaluate(grid)
    k = int(np.argmax(vals))
    best, best_t = float(vals[k]), float(grid[k])
    if threshold is not None and best > threshold:
        return best, best_t
    pos = np.nonzero(slopes > 0)[0]
    if len(pos) == 0:
        t_lo, f_lo, s_lo = 0.0, 0.0, slope0
    else:
        j = int(pos[-1])
        t_lo, f_lo, s_lo = float(grid[j]), float(vals[j]), float(slopes[j])
    neg = np.nonzero(slopes <= 0)[0]
    neg = neg[grid[neg] > t_lo]
    if len(neg) == 0:
        t_hi, f_hi, s_hi = 1.0, 0.0, slope1
    else:
        j = int(neg[0])
        t_hi, f_hi, s_hi = float(grid[j]), float(vals[j]), float(slopes[j])
    for _ in range(bisections):
        if threshold is not None and s_lo > 0 and s_hi < 0:
            tc = (f_hi - f_lo + s_lo * t_lo - s_hi * t_hi) / (s_lo - s_hi)
            upper = f_lo + s_lo * (tc - t_lo)
            if upper <= threshold:
                break
        t = 0.5 * (t_lo + t_hi)
        if not (t_lo < t < t_hi):
            break
        fv, sv = evaluate(np.array([t]))
        f, slope = float(fv[0]), float(sv[0])
        if f > best:
            best, best_t = f, t
            if threshold is not None and best > threshold:
                break
        if slope > 0:
            t_lo, f_lo, s_lo = t, f, slope
        else:
            t_hi, f_hi, s_hi = t, f, slope
    return best, best_t


_UNIT = 2.0**-53  # unit roundoff of float64 (round to nearest)


def _gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): bound on the relative error of n chained operations."""
    return n * _UNIT / (1.0 - n * _UNIT)


def _gap_terms(e1: Region, e2: Region, v: np.ndarray) -> tuple[float, float, float, float, float, float]:
    delta = e2.center - e1.center
    n1, a1 = e1.scaled_norms(v)
    n2, a2 = e2.scaled_norms(v)
    return float(v @ delta), float(np.abs(v) @ np.abs(delta)), n1, a1, n2, a2


def proves_disjoint(e1: Region, e2: Region, v: np.ndarray, rtol: float) -> bool:
    """True iff direction v proves (e1, e2) disjoint with a relative margin: the rounding-safe gap
    exceeds ``rtol / 2`` times the sets' widths along v, ``r1 ||S1 v|| + r2 ||S2 v||`` (a margin on
    top of the rounding bound, so that "touching up to rtol" counts as intersecting; for two balls
    it is the former criterion ``max F > 1 + rtol``)."""
    gap = separation_gap(e1, e2, v)
    if not gap > 0:
        return False
    if rtol <= 0:
        return True
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    width = e1.radius * e1.scaled_norms(v)[0] + e2.radius * e2.scaled_norms(v)[0]
    return bool(gap > 0.5 * rtol * width * (1.0 + 4 * _UNIT))


def separation_gap(e1: Region, e2: Region, v: np.ndarray) -> float:
    """A rigorous lower bound (in float64) of ``min_{y in E2} <v, y> - max_{y in E1} <v, y>``;
    positive only if the direction ``v`` proves the closed regions disjoint.

    Error bound (u = 2^-53, gamma_n = n u / (1 - n u), Higham 2002, Sec. 3.1-3.5; d = dimension):
    * ``fl(c2 - c1)`` errs by <= u |c2 - c1| per entry and the dot product with v by gamma_d
      sum |v_i| |delta_i|; together <= gamma_{d+1} P with ``P = sum |v_i| |fl(delta_i)|`` (1 + u)
      (computed P errs by a factor <= 1 + gamma_d);
    * ``fl(S v)`` errs by <= gamma_d (|S| |v|) componentwise (exact for ball/diagonal up to u), so
      ``| ||fl(S v)|| - ||S v|| | <= gamma_d || |S| |v| ||``; the 2-norm of a d-vector adds a
      relative gamma_{d+1} (sum of squares, then sqrt), the product with r one more u;
    * the two subtractions add u times the magnitudes.
    So |computed gap - gap| <= gamma_{d+3} (P + r1 N1 + r2 N2) + gamma_d (r1 A1 + r2 A2) + O(u^2)
    with ``N = ||S v||``, ``A = || |S| |v| ||`` (A >= N).  We subtract the larger
    ``2 gamma_{d+8} (P + r1 (N1 + 2 A1) + r2 (N2 + 2 A2))``, whose factor 2 also covers the
    rounding of this bound itself, the O(u^2) terms and the computed-vs-exact P, N and A, plus
    1e-290 for gradual underflow (at most d 2^-1074 per sum).  Inputs (c, S, r) are taken as exact:
    they are the stored definition of the region."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)) or not np.any(v != 0):
        return -np.inf
    p, pa, n1, a1, n2, a2 = _gap_terms(e1, e2, v)
    gap = p - e1.radius * n1 - e2.radius * n2
    err = (
        2.0 * _gamma(_rounding_length(e1, e2) + 8) * (pa + e1.radius * (n1 + 2.0 * a1) + e2.radius * (n2 + 2.0 * a2))
        + 1e-290
    )
    return gap - err if np.isfinite(gap) and np.isfinite(err) else -np.inf


def verified_radius(region_first: bool, e1: Region, e2: Region, v: np.ndarray, rtol: float) -> float:
    """The largest radius of the region (e1 if ``region_first`` else e2; the other keeps its
    radius) that ``proves_disjoint`` accepts with direction v (the gap, its error bound and the margin are
    affine in that radius), or -1.0 if none."""
    m = 1.0 + 0.5 * max(rtol, 0.0) * (1.0 + 8 * _UNIT)
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)) or not np.any(v != 0):
        return -1.0
    p, pa, n1, a1, n2, a2 = _gap_terms(e1, e2, v)
    g = 2.0 * _gamma(_rounding_length(e1, e2) + 8)
    if region_first:
        (n_o, a_o, r_o), (n_r, a_r) = (n2, a2, e2.radius), (n1, a1)
    else:
        (n_o, a_o, r_o), (n_r, a_r) = (n1, a1, e1.radius), (n2, a2)
    num = p - r_o * n_o * m - g * (pa + r_o * (n_o + 2.0 * a_o)) - 1e-290
    if not (np.isfinite(num) and num > 0):
        return -1.0
    den = n_r * m + g * (n_r + 2.0 * a_r)
    return float(num / den) * (1.0 - 8 * _UNIT) if den > 0 else np.inf


def _rounding_length(e1: Region, e2: Region) -> int:
    """The longest inner product behind either region's ``scaled_norms`` (at least d)."""
    return max(e1.dim, e1.rounding_length, e2.rounding_length)


_KIND_ORDER = {"ball": 0, "diagonal": 1, "full": 2}


def canonical_swap(e1: Region, e2: Region) -> bool:
    """True if the pair is to be processed as (e2, e1): a fixed order of the unordered pair
    (kind, then centre, then scale, then radius), so that (A, B) and (B, A) get the same computation.
    (Two regions with the same centre always intersect, so the structured kinds need no scale order.)"""
    k1, k2 = _KIND_ORDER.get(e1.kind, 3), _KIND_ORDER.get(e2.kind, 3)
    if k1 != k2:
        return k2 < k1
    if e1.kind != e2.kind:
        return e2.kind < e1.kind
    b1, b2 = e1.center.tobytes(), e2.center.tobytes()
    if b1 != b2:
        return b2 < b1
    if isinstance(e1, Ellipsoid) and isinstance(e2, Ellipsoid):
        s1, s2 = np.asarray(e1.scale).tobytes(), np.asarray(e2.scale).tobytes()
        if s1 != s2:
            return s2 < s1
    return e2.radius < e1.radius


def dense_spectrum(first: Ellipsoid, second: Ellipsoid) -> PairSpectrum:
    """The simultaneous diagonalisation of the pair (first, second), whitening by ``first``."""
    if first.dim != second.dim:
        raise ValueError(f"dimension mismatch: {first.dim} vs {second.dim}")
    delta = second.center - first.center
    v1, b1 = first.axes
    v2, b2 = second.axes
    inv1 = 1.0 / v1
    if b1 is None and b2 is None:  # ball/diagonal pair: already diagonal
        return PairSpectrum(delta * inv1, (v2 * inv1) ** 2, None, inv1, None)
    if first.kind == "ball":  # S1 = s I: M = S2^2 / s^2 in S2's basis
        if b2 is None:
            return PairSpectrum(delta * inv1, (v2 * inv1) ** 2, None, inv1, None)
        return PairSpectrum((delta @ b2) * inv1[0], (v2 * inv1[0]) ** 2, None, inv1, b2)
    if b1 is not None and b2 is not None and (b1 is b2 or np.array_equal(b1, b2)):
        return PairSpectrum((delta @ b1) * inv1, (v2 * inv1) ** 2, b1, inv1, None)
    # general: G' = diag(1/v1) L^T S2 (right factors orthogonal), SVD G' = U' diag(sigma) W^T
    if b1 is None:  # diagonal first, full second: L = I, L^T S2 ~ V2 diag(v2)
        g = (b2 * v2) * inv1[:, None]
        wd = delta * inv1
    else:  # full first: L = V1
        g = ((b1.T @ b2) * v2 if b2 is not None else b1.T * v2) * inv1[:, None]
        wd = (delta @ b1) * inv1
    u, sigma, _ = np.linalg.svd(g, full_matrices=False)
    nu = np.maximum(sigma * sigma, np.finfo(np.float64).tiny)
    return PairSpectrum(wd @ u, nu, b1, inv1, u)
