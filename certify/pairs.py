"""The memory's pair test for regions of any structure, without a d x d matrix where the structure allows.

``certify.intersection`` proves two regions disjoint with a separating direction v checked against a rigorous
float64 bound (``separation_gap``, from each region's ``scaled_norms``), and proposes v by maximising
``F(t) = delta^T (A1 / t + A2 / (1 - t))^{-1} delta`` over t in (0, 1), ``A_i = r_i^2 Sigma_i`` (Gilitschenski
and Hanebeck 2012); v = (A1 / t + A2 / (1 - t))^{-1} delta at the maximiser. This module gives the proposers
(``Pencil``s) for pairs that are not two dense ``Ellipsoid``s, chosen by ``structured_pencil``:

* two Kronecker regions of the same factor shapes, or a ball and a Kronecker region (s I is the Kronecker
  product of s^(1/K) I_{d_i}): ``certify.structured.KroneckerPencil``, the exact spectrum axis by axis;
* any two of ball, diagonal, low-rank plus diagonal and spiked (each ``diag(D) + V diag(mu) V^T``,
  ``woodbury_form``): ``WoodburyPencil``, F(t) exact by Woodbury's identity with a 2k x 2k capacitance,
  O(d k^2) per t (Harville 1997, Ch. 18);
* any other pair up to d = ``DENSE_LIMIT``: the dense spectrum of both as ``Ellipsoid``s (exact, O(d^3));
* any other pair above it: ``MatrixFreePencil``, conjugate gradients on A1 / t + A2 / (1 - t) at a few t.
  It is only a proposer, so it is sound, but not exact: it may miss a separating direction and answer
  "intersect" for a disjoint pair (the memory then shrinks a region more than it had to, never less).

Whatever proposes v, "disjoint" is decided by ``separation_gap`` on the regions as stored. This module also holds
the pair test itself for any two regions (``ellipsoids_intersect``, ``separating_direction``, ``max_disjoint_radius``:
the dense algebra and the rounding-safe check they build on are ``certify.intersection``'s). The exact
proposers agree with the dense test except within the ``rtol`` band near tangency (``tests/certify``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .intersection import (
    DEFAULT_RTOL,
    Pencil,
    canonical_swap,
    concave_sup,
    dense_spectrum,
    proves_disjoint,
    separation_gap,
    verified_radius,
)
from .region import Ellipsoid, Region
from .structured import DENSE_LIMIT, KroneckerEllipsoid, KroneckerPencil, check_kronecker_pair

_SMALL_GRID = np.linspace(0.0, 1.0, 9)[1:-1]


def _as_kronecker(e: Region, shape: tuple[int, ...]) -> KroneckerEllipsoid | None:
    """``e`` as a Kronecker region of the factor shapes ``shape`` when it is one exactly (a Kronecker region of
    that shape, or a ball: s I = (x)_i s^(1/K) I_{d_i}), else None."""
    if isinstance(e, KroneckerEllipsoid):
        return e if e.shape == shape else None
    if isinstance(e, Ellipsoid) and e.kind == "ball":
        root = float(e.scale) ** (1.0 / len(shape))
        return KroneckerEllipsoid(e.center, tuple(root * np.eye(n) for n in shape), e.radius)
    return None


def structured_pencil(first: Region, second: Region) -> Pencil:
    """The proposer for (first, second) (module docstring); ``first`` and ``second`` in the pair test's order."""
    for shaped in (first, second):
        if isinstance(shaped, KroneckerEllipsoid):
            k1, k2 = _as_kronecker(first, shaped.shape), _as_kronecker(second, shaped.shape)
            if k1 is not None and k2 is not None:
                return KroneckerPencil(k1, k2)
    if first.woodbury_form() is not None and second.woodbury_form() is not None:
        return WoodburyPencil(first, second)
    if first.dim <= DENSE_LIMIT:
        return pair_pencil(first.to_ellipsoid(), second.to_ellipsoid())
    return MatrixFreePencil(first, second)


def _woodbury_solve(d: np.ndarray, v: np.ndarray, m: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``(diag(d) + V diag(m) V^T)^{-1} rhs`` by Woodbury's identity in the form
    D^-1 - D^-1 V (I + diag(m) V^T D^-1 V)^-1 diag(m) V^T D^-1, which allows m of either sign and zeros."""
    y = rhs / d
    if v.shape[1] == 0:
        return y
    vd = v / d[:, None]
    capacitance = np.eye(v.shape[1]) + m[:, None] * (v.T @ vd)
    return y - vd @ np.linalg.solve(capacitance, m * (v.T @ y))


def _quadratic(d: np.ndarray, v: np.ndarray, m: np.ndarray, x: np.ndarray) -> float:
    """``x^T (diag(d) + V diag(m) V^T) x``."""
    c = x @ v
    return float(x @ (d * x) + c @ (m * c))


class WoodburyPencil:
    """``Pencil`` of two regions with covariances Sigma_i = diag(D_i) + V_i diag(mu_i) V_i^T: A1 / t + A2 / (1 - t)
    is diag(a D1 / t + b D2 / (1 - t)) + [V1 V2] diag(a mu1 / t, b mu2 / (1 - t)) [V1 V2]^T (a = r1^2, b = r2^2),
    so F(t) and F'(t) = a x^T Sigma1 x / t^2 - b x^T Sigma2 x / (1 - t)^2 (x = the direction) are exact in
    O(d k^2 + k^3), k = k1 + k2; ``concave_sup`` maximises F."""

    def __init__(self, first: Region, second: Region):
        f1, f2 = first.woodbury_form(), second.woodbury_form()
        if f1 is None or f2 is None:
            raise TypeError("WoodburyPencil needs two regions with a woodbury_form")
        (self.d1, v1, self.mu1), (self.d2, v2, self.mu2) = f1, f2
        self.v1, self.v2 = v1, v2
        self.v = np.concatenate([v1, v2], axis=1)
        self.delta = second.center - first.center

    def _combined(self, t: float, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        if a == 0.0:
            return b * self.d2, np.concatenate([np.zeros_like(self.mu1), b * self.mu2])
        if b == 0.0:
            return a * self.d1, np.concatenate([a * self.mu1, np.zeros_like(self.mu2)])
        return a * self.d1 / t + b * self.d2 / (1.0 - t), np.concatenate([a * self.mu1 / t, b * self.mu2 / (1.0 - t)])

    def _x(self, t: float, a: float, b: float) -> np.ndarray:
        d, m = self._combined(t, a, b)
        return _woodbury_solve(d, self.v, m, self.delta)

    def sup(self, r1: float, r2: float, threshold: float | None = None) -> tuple[float, float]:
        a, b = r1 * r1, r2 * r2
        if a == 0.0 and b == 0.0:
            return (np.inf if np.any(self.delta != 0) else 0.0), 0.5
        if a == 0.0:  # F increases to delta^T A2^-1 delta as t -> 0
            return float(self.delta @ self._x(0.0, a, b)), 0.0
        if b == 0.0:
            return float(self.delta @ self._x(1.0, a, b)), 1.0

        def evaluate(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            vals, slopes = np.empty(len(ts)), np.empty(len(ts))
            for i, t in enumerate(ts):
                x = self._x(float(t), a, b)
                vals[i] = float(self.delta @ x)
                q1 = _quadratic(self.d1, self.v1, self.mu1, x)
                q2 = _quadratic(self.d2, self.v2, self.mu2, x)
                slopes[i] = a * q1 / (t * t) - b * q2 / (1.0 - t) ** 2
            return vals, slopes

        slope0 = float(self.delta @ self._x(1.0, a, 0.0))  # F ~ t delta^T A1^-1 delta near 0
        slope1 = -float(self.delta @ self._x(0.0, 0.0, b))
        return concave_sup(evaluate, slope0, slope1, threshold)

    def direction(self, t: float, r1: float, r2: float) -> np.ndarray:
        if r1 == 0.0 and r2 == 0.0:
            return self.delta
        return self._x(t, r1 * r1, r2 * r2)

    def family_direction(self, tau: float) -> np.ndarray:
        """``(tau Sigma1 + Sigma2)^{-1} delta``: every ``direction(t, r1, r2)`` is one of these up to a positive
        factor (tau = r1^2 (1 - t) / (r2^2 t)), so a search over tau alone finds the tangent direction of any
        radii (``certify.pairs.max_disjoint_radius``)."""
        return _woodbury_solve(tau * self.d1 + self.d2, self.v, np.concatenate([tau * self.mu1, self.mu2]), self.delta)

    @property
    def family_scale(self) -> float:
        """The tau at which both terms weigh alike (the centre of the search)."""
        return float(np.mean(self.d2) / np.mean(self.d1))

    #: each trial costs a Woodbury solve: a grid 2.5 decades apart, then 20 golden-section steps (the bracket shrinks
    #: to 1e-4 of its 5 decades; the radius, quadratic near its maximum, to far below the tests' 1e-5)
    family_grid = np.linspace(-10.0, 10.0, 9)
    family_refine = 20

    def family_radii(self, taus: np.ndarray, region_first: bool, other: float) -> np.ndarray:
        """The radius each ``family_direction(tau)`` proves for the region (first if ``region_first``) against the
        other at radius ``other``: (<v, delta> - other sqrt(v^T Sigma_o v)) / sqrt(v^T Sigma_r v), unverified (the
        search's score; the winner is verified)."""
        out = np.empty(len(taus))
        for i, tau in enumerate(taus):
            v = self.family_direction(float(tau))
            p = float(v @ self.delta)
            q1 = math.sqrt(max(_quadratic(self.d1, self.v1, self.mu1, v), 0.0))
            q2 = math.sqrt(max(_quadratic(self.d2, self.v2, self.mu2, v), 0.0))
            mine, theirs = (q1, q2) if region_first else (q2, q1)
            out[i] = 0.0 if mine == 0.0 else (p - other * theirs) / mine
        return out


def _covariance_apply(e: Region, x: np.ndarray) -> np.ndarray:
    """``Sigma x`` (Sigma = S^2) of any region: by its Woodbury form, else its scale twice."""
    form = e.woodbury_form()
    if form is not None:
        d, v, m = form
        return d * x + v @ (m * (x @ v))
    return e.apply_scale(e.apply_scale(x))  # type: ignore[attr-defined]


class MatrixFreePencil:
    """``Pencil`` of any two regions by conjugate gradients on M_t = A1 / t + A2 / (1 - t) (``_covariance_apply``,
    ``iterations`` steps): F on a 7-point grid and a few bisection steps. A proposer only: an inexact
    direction can fail the check and the answer is then "intersect" (sound, not exact)."""

    def __init__(self, first: Region, second: Region, iterations: int = 60):
        self.first, self.second = first, second
        self.delta = second.center - first.center
        self.iterations = iterations

    def _x(self, t: float, a: float, b: float) -> np.ndarray:
        def apply(x: np.ndarray) -> np.ndarray:
            out = np.zeros_like(x)
            if a > 0:
                out += (a / t) * _covariance_apply(self.first, x)
            if b > 0:
                out += (b / (1.0 - t)) * _covariance_apply(self.second, x)
            return out

        x = np.zeros_like(self.delta)
        r = self.delta.copy()
        p = r.copy()
        rr = float(r @ r)
        stop = 1e-20 * rr
        for _ in range(self.iterations):
            ap = apply(p)
            pap = float(p @ ap)
            if not pap > 0:
                break
            step = rr / pap
            x += step * p
            r -= step * ap
            rr_new = float(r @ r)
            if rr_new <= stop:
                break
            p = r + (rr_new / rr) * p
            rr = rr_new
        return x

    def sup(self, r1: float, r2: float, threshold: float | None = None) -> tuple[float, float]:
        a, b = r1 * r1, r2 * r2
        if a == 0.0 and b == 0.0:
            return (np.inf if np.any(self.delta != 0) else 0.0), 0.5
        if a == 0.0:
            return float(self.delta @ self._x(0.0, 0.0, b)), 0.0
        if b == 0.0:
            return float(self.delta @ self._x(1.0, a, 0.0)), 1.0

        def evaluate(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            vals, slopes = np.empty(len(ts)), np.empty(len(ts))
            for i, t in enumerate(ts):
                x = self._x(float(t), a, b)
                vals[i] = float(self.delta @ x)
                q1 = float(x @ _covariance_apply(self.first, x))
                q2 = float(x @ _covariance_apply(self.second, x))
                slopes[i] = a * q1 / (t * t) - b * q2 / (1.0 - t) ** 2
            return vals, slopes

        return concave_sup(evaluate, math.inf, -math.inf, threshold, grid=_SMALL_GRID, bisections=6)

    def direction(self, t: float, r1: float, r2: float) -> np.ndarray:
        a, b = r1 * r1, r2 * r2
        if a == 0.0 and b == 0.0:
            return self.delta
        return self._x(t if a > 0 and b > 0 else (0.0 if a == 0.0 else 1.0), a, b)


# ------------------------------------------------------------------------ the pair test for any two regions
def pair_pencil(first: Region, second: Region) -> Pencil:
    """What proposes separating directions for (first, second): the dense ``PairSpectrum`` of two
    ``Ellipsoid``s (``certify.intersection``), otherwise ``structured_pencil``."""
    if isinstance(first, Ellipsoid) and isinstance(second, Ellipsoid):
        return dense_spectrum(first, second)
    return structured_pencil(first, second)


def _ordered(e1: Region, e2: Region) -> tuple[Region, Region, bool]:
    if e1.dim != e2.dim:
        raise ValueError(f"dimension mismatch: {e1.dim} vs {e2.dim}")
    swapped = canonical_swap(e1, e2)
    return (e2, e1, True) if swapped else (e1, e2, False)


def prove_disjoint(
    first: Region, second: Region, rtol: float, spec: Pencil | None = None
) -> tuple[np.ndarray | None, Pencil | None]:
    """A direction proving (first, second) disjoint (``separation_gap > 0``), or None."""
    delta = second.center - first.center
    if proves_disjoint(first, second, delta, rtol):  # the centre line (the bounding-ball screen)
        return delta, spec
    if float(np.linalg.norm(delta)) <= first.l2_radius + second.l2_radius:  # inscribed balls meet
        return None, spec
    if spec is None:
        spec = pair_pencil(first, second)
    r1, r2 = first.radius, second.radius
    for threshold in (1.0 + 2.0 * max(rtol, 0.0), None):  # early stop first, then the maximiser
        value, t = spec.sup(r1, r2, threshold=threshold)
        if not value > 1.0:
            return None, spec
        v = spec.direction(t, r1, r2)
        if proves_disjoint(first, second, v, rtol):
            return v, spec
    return None, spec


def intersection_value(e1: Region, e2: Region) -> tuple[float, float]:
    """``(max_t F, t*)`` from the spectrum (unverified; > 1 suggests disjoint)."""
    first, second, _ = _ordered(e1, e2)
    return pair_pencil(first, second).sup(first.radius, second.radius)


def ellipsoids_intersect(e1: Region, e2: Region, rtol: float = DEFAULT_RTOL) -> bool:
    """True unless the two closed regions are *proved* disjoint by a separating direction whose
    support-function gap exceeds its float64 rounding bound (``separation_gap``).

    Touching regions intersect, and so do regions closer than ``rtol`` times their widths along the
    direction (a margin on top of the rounding bound).  Symmetric in its arguments.  A negative
    ``rtol`` gives the loose audit test "max F <= 1 - |rtol|" (intersect only when clearly so),
    used to look for violations, never to store regions."""
    first, second, _ = _ordered(e1, e2)
    if rtol < 0:
        value, _ = pair_pencil(first, second).sup(first.radius, second.radius, threshold=1.0 + rtol)
        return not (value > 1.0 + rtol)
    v, _ = prove_disjoint(first, second, rtol)
    return v is None


def separating_direction(e1: Region, e2: Region) -> np.ndarray | None:
    """A verified direction ``v`` with ``e1.support(v) < -e2.support(-v)`` (max over E1 of <v, y> <
    min over E2, with a margin above the rounding bound), or None when none is found."""
    first, second, swapped = _ordered(e1, e2)
    v, _ = prove_disjoint(first, second, 0.0)
    if v is None:
        return None
    return -v if swapped else v


def max_disjoint_radius(region: Region, obstacle: Region, rtol: float = DEFAULT_RTOL, iterations: int = 50) -> float:
    """Largest ``r' <= region.radius`` such that ``region.with_radius(r')`` is *proved* disjoint from
    ``obstacle`` (bisection on ``r'`` with the spectrum, then the radius the final direction
    proves); ``region.radius`` iff ``ellipsoids_intersect`` is False; 0.0 if even the centre is
    not proved outside the obstacle."""
    first, second, swapped = _ordered(region, obstacle)
    region_first = not swapped
    spec: Pencil | None = None
    if not (isinstance(first, Ellipsoid) and isinstance(second, Ellipsoid)):
        if proves_disjoint(first, second, second.center - first.center, rtol):  # the centre line
            return region.radius
        spec = pair_pencil(first, second)
        if hasattr(spec, "family_radii"):  # one search decides both "disjoint?" and "how far?"
            return _max_radius_on_family(spec, region, first, second, region_first, rtol)
    v, spec = prove_disjoint(first, second, rtol, spec)
    if v is not None:
        return region.radius
    if spec is None:
        spec = pair_pencil(first, second)
    ro = obstacle.radius

    def radii(r: float) -> tuple[float, float]:
        return (r, ro) if region_first else (ro, r)

    def disjoint(r: float) -> bool:
        return spec.sup(*radii(r), threshold=1.0 + rtol)[0] > 1.0 + rtol

    def pair(r: float) -> tuple[Region, Region]:
        shrunk = region.with_radius(r)
        return (shrunk, obstacle) if region_first else (obstacle, shrunk)

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
    best, used = -1.0, None
    for r in (lo, 0.0):  # the direction found at lo, else the one at a point
        value, t = spec.sup(*radii(r))
        if not value > 1.0:
            continue
        v = spec.direction(t, *radii(r))
        cand = min(lo, verified_radius(region_first, *pair(r), v, rtol))
        if cand > best:
            best, used = cand, v
        if best >= lo:
            break
    if best < 0.0 or used is None:
        return 0.0
    return _confirmed(best, used, region, first, second, region_first, rtol)


_FAMILY_GRID = np.linspace(-10.0, 10.0, 41)  # log10(tau / tau0): half a decade apart
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def _max_radius_on_family(
    spec: Any, region: Region, first: Region, second: Region, region_first: bool, rtol: float, refine: int = 30
) -> float:
    """``max_disjoint_radius`` for a pencil whose directions form the one-parameter family ``family_direction(tau)``
    (``certify.pairs.WoodburyPencil``, ``certify.structured.KroneckerPencil``): a direction v proves the closed-form
    radius ``verified_radius``, and the tangent direction of the largest disjoint radius is in the family, so a
    search over log tau (a grid, then golden-section refinement around its best point) replaces the bisection on
    the radius. The search scores each tau by the pencil's ``family_radii`` (the same radius without its rounding
    bound: O(d) per tau from a Kronecker spectrum, one Woodbury solve for a low-rank pair); only the winner's radius
    is returned, verified, so the answer is sound whatever the search finds, and exact when it finds the maximiser
    (``tests/certify/test_pairs.py`` holds it to the dense test)."""
    tau0 = spec.family_scale
    refine = getattr(spec, "family_refine", refine)
    other = second.radius if region_first else first.radius

    def score(log_tau: np.ndarray) -> np.ndarray:
        return spec.family_radii(tau0 * 10.0**log_tau, region_first, other)

    grid = getattr(spec, "family_grid", _FAMILY_GRID)
    scores = score(grid)
    k = int(np.argmax(scores))
    best_log, best = float(grid[k]), float(scores[k])
    lo, hi = float(grid[max(k - 1, 0)]), float(grid[min(k + 1, len(grid) - 1)])
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = (float(f) for f in score(np.array([a, b])))
    for _ in range(refine):
        for f, t in ((fa, a), (fb, b)):
            if f > best:
                best, best_log = f, t
        if fa >= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = float(score(np.array([a]))[0])
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = float(score(np.array([b]))[0])
    used = spec.family_direction(tau0 * 10.0**best_log)
    verified = min(verified_radius(region_first, first, second, used, rtol), region.radius)
    return _confirmed(verified, used, region, first, second, region_first, rtol)


def _confirmed(
    radius: float, v: np.ndarray, region: Region, first: Region, second: Region, region_first: bool, rtol: float
) -> float:
    """The largest of ``radius`` times 1, 1 - 1e-12, 1 - 1e-9, 1 - 1e-6 at which direction v passes ``proves_disjoint``
    for the region (0.0 if none). The closed form of ``verified_radius`` is affine in the radius, but a radius
    far below the other terms of the gap can miss the check by rounding; the check itself decides."""
    for factor in (1.0, 1.0 - 1e-12, 1.0 - 1e-9, 1.0 - 1e-6):
        r = radius * factor
        if not r > 0.0:
            return 0.0
        shrunk = region.with_radius(r)
        if proves_disjoint(*((shrunk, second) if region_first else (first, shrunk)), v, rtol):
            return r
    return 0.0


# ------------------------------------------------------------------------ Kronecker pairs by name
def kronecker_separation_gap(e1: KroneckerEllipsoid, e2: KroneckerEllipsoid, v: np.ndarray) -> float:
    """``certify.intersection.separation_gap`` for two Kronecker regions: S v computed one factor at a time,
    whose K chained products of inner lengths d_i err componentwise by at most gamma_{sum d_i} (|S| |v|)
    (``KroneckerEllipsoid.rounding_length``). The factors (c, C_i, r) are taken as exact."""
    check_kronecker_pair(e1, e2)
    return separation_gap(e1, e2, v)


def kronecker_ellipsoids_intersect(e1: KroneckerEllipsoid, e2: KroneckerEllipsoid, rtol: float = DEFAULT_RTOL) -> bool:
    """``certify.ellipsoids_intersect`` for two Kronecker regions of the same factor shapes (``KroneckerPencil``):
    True unless proved disjoint by a direction whose gap exceeds its rounding bound and ``rtol`` times the
    widths. Symmetric."""
    check_kronecker_pair(e1, e2)
    return ellipsoids_intersect(e1, e2, max(rtol, 0.0))


def kronecker_separating_direction(e1: KroneckerEllipsoid, e2: KroneckerEllipsoid) -> np.ndarray | None:
    """A verified v with ``e1.support(v) < -e2.support(-v)``, or None when none is found."""
    check_kronecker_pair(e1, e2)
    return separating_direction(e1, e2)
