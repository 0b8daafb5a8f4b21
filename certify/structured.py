"""Structured Gaussian noise for inputs of CIFAR-10 and ImageNet size: Kronecker and low-rank SPD.

Neither noise forms a d x d matrix to sample or to certify; each has its own region class with the
interface a ``Certificate`` uses (``l2_radius``, ``proxy_radius``, ``contains_delta``, ``norm``).

* ``KroneckerGaussian(factors)``: noise ``(C_1 (x) C_2 (x) ... (x) C_K) z`` with each C_i symmetric
  positive definite (d_i x d_i), on inputs of shape (d_1, ..., d_K) flattened row-major (the last axis
  fastest: e.g. channel, height, width). The scale is the symmetric S = (x)_i C_i, the covariance
  S^2 = (x)_i C_i^2, and the region ``{delta : ||S^{-1} delta|| <= r}`` is exactly
  ``certify.Ellipsoid(center, S, r)`` (ANCER's theorem for noise S z). The eigenvalues of S are the
  products of the factors' eigenvalues, so lambda_min(S) = prod_i lambda_min(C_i) and
  log det S = sum_i (d / d_i) log det C_i: the inscribed-ball and proxy radii are exact.
* ``LowRankGaussian(diag, U, lam)``: covariance Sigma = D + U diag(lam) U^T (U with orthonormal
  columns, d x k). The region is ``{delta : delta^T Sigma^{-1} delta <= r^2}``, i.e. the region of
  ``FullGaussian(Sigma^{1/2})`` (Sigma^{1/2} the symmetric square root) at the same radius: the
  certificate for Gaussian noise of covariance Sigma does not depend on which square root draws it.
  Norms by Woodbury, log det by the matrix determinant lemma (the capacitance algebra of
  ``torch.distributions.LowRankMultivariateNormal``): O(d k + k^3) per vector after O(d k^2) set-up.
  The inscribed-ball radius uses lambda_min(Sigma) >= min(D) (U diag(lam) U^T is PSD; + min lam when
  k = d), exact when D is constant (spiked form); the proxy radius is exact.

The algebra: eigenvalues, determinants and the mixed-product rule of Kronecker products (Van Loan, "The
ubiquitous Kronecker product", 2000); Woodbury's identity and the matrix determinant lemma (Harville,
"Matrix Algebra From a Statistician's Perspective", 1997, Ch. 18). README of ``certify``, "Structured noise".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from .intersection import PairSpectrum
from .noise import GaussianNoise, checked_spd, owned_float64, standard_normal
from .region import SYMMETRY_RTOL, Ellipsoid

#: the largest dimension for which ``covariance()``, ``scale()`` and ``to_ellipsoid()`` form a dense matrix.
DENSE_LIMIT = 4096


def check_dense(d: int, what: str) -> None:
    """Refuse a dense d x d form above ``DENSE_LIMIT`` (``what`` names the method, for the error)."""
    if d > DENSE_LIMIT:
        raise ValueError(
            f"{what}: the dense matrix would be {d} x {d}; dense forms are only built up to d = {DENSE_LIMIT} "
            f"(for tests and small problems). Use the structured methods (sample, region, norm) instead."
        )


def frozen_array(a: Any) -> np.ndarray:
    """A read-only float64 numpy copy (what regions share)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


def _apply_along_axes(v: np.ndarray, mats: Sequence[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """``((x)_i mats[i]) v`` for flat vectors v of shape (..., d): one small product per axis."""
    lead = v.shape[:-1]
    t = v.reshape(lead + shape)
    offset = len(lead)
    for i, m in enumerate(mats):
        t = np.moveaxis(np.tensordot(t, m, axes=([offset + i], [1])), -1, offset + i)
    return t.reshape(lead + (-1,))


def orthonormal_columns(U: Any, tol: float) -> torch.Tensor:
    """``U`` as an owned float64 (d, k) tensor, 1 <= k <= d, checked to have orthonormal columns (max |U^T U - I| <=
    ``tol``); the errors name ``U``."""
    Ut = owned_float64(U, "U")
    if Ut.ndim != 2 or Ut.shape[0] == 0 or Ut.shape[1] == 0 or Ut.shape[1] > Ut.shape[0]:
        raise ValueError(f"U must be a (d, k) matrix with 1 <= k <= d, got shape {tuple(Ut.shape)}")
    k = Ut.shape[1]
    err = (Ut.T @ Ut - torch.eye(k, dtype=torch.float64)).abs().max().item()
    if err > tol:
        raise ValueError(f"U must have orthonormal columns (max |U^T U - I| = {err:.3g})")
    return Ut


def positive_per_column(values: Any, name: str, k: int) -> torch.Tensor:
    """``values`` as an owned float64 (k,) tensor of positive numbers, one per column of U (errors name ``name``)."""
    t = owned_float64(values, name).reshape(-1)
    if t.shape[0] != k:
        raise ValueError(f"{name} has {t.shape[0]} entries but U has {k} columns")
    if (t <= 0).any():
        raise ValueError(f"{name} must be positive (min {t.min().item():g})")
    return t


class StructuredRegion:
    """What the structured regions share: the checked centre and radius, the dimension, and
    membership through the region's own ``norm`` (each frozen dataclass below defines ``center``,
    ``radius`` and ``norm``)."""

    center: np.ndarray
    radius: float

    def whiten(self, delta: np.ndarray) -> np.ndarray:
        """``S^-1 delta`` for (..., d) (each region with its own algebra)."""
        raise NotImplementedError

    def apply_scale(self, v: np.ndarray) -> np.ndarray:
        """``S v`` for (..., d)."""
        raise NotImplementedError

    def norm(self, delta: np.ndarray) -> np.ndarray:
        """``||S^-1 delta||`` for (..., d)."""
        return np.linalg.norm(self.whiten(delta), axis=-1)

    def support(self, direction: np.ndarray) -> float:
        """``max_{y in region} <direction, y> = <direction, c> + radius ||S direction||``."""
        v = np.asarray(direction, dtype=np.float64).reshape(-1)
        return float(v @ self.center + self.radius * np.linalg.norm(self.apply_scale(v)))

    def _freeze_center_and_radius(self, dim: int, mismatch: str) -> None:
        """Store the centre as a read-only float64 vector of ``dim`` finite entries (``mismatch``: what
        defines ``dim``, for the error) and the radius as a finite float >= 0."""
        center = frozen_array(np.asarray(self.center, dtype=np.float64).reshape(-1))
        if not np.all(np.isfinite(center)):
            raise ValueError("center contains NaN or infinite entries")
        if center.shape[0] != dim:
            raise ValueError(f"center has {center.shape[0]} entries; {mismatch}")
        radius = float(self.radius)
        if not (radius >= 0 and np.isfinite(radius)):
            raise ValueError(f"radius must be finite and >= 0, got {radius}")
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "radius", radius)

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    @property
    def rounding_length(self) -> int:
        """The inner length of the products behind ``scaled_norms`` (their rounding bound is gamma of it)."""
        return self.dim

    def scaled_norms(self, v: np.ndarray) -> tuple[float, float]:
        """``(fl ||B v||, fl || |B| |v| ||)`` for a factor B of the covariance (B^T B = S^2) as the region computes
        it: the terms of the rounding bound of ``certify.intersection.separation_gap``."""
        raise NotImplementedError

    def woodbury_form(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(D, V, mu)`` with covariance ``diag(D) + V diag(mu) V^T``, or None (``certify.pairs``)."""
        return None

    def recentred(self, center: np.ndarray, radius: float) -> Any:
        """The same shape about another centre with another radius (the memory's adopted regions)."""
        return replace(self, center=center, radius=radius)  # type: ignore[type-var]

    def contains_delta(self, delta: np.ndarray) -> bool | np.ndarray:
        return self.norm(as_vectors(delta, self.dim, "delta")) <= self.radius

    def contains_point(self, point: np.ndarray) -> bool | np.ndarray:
        return self.contains_delta(as_vectors(point, self.dim, "point") - self.center)


# ---------------------------------------------------------------------------------------------- Kronecker
@dataclass(frozen=True, eq=False)
class KroneckerEllipsoid(StructuredRegion):
    """``{center + delta : ||S^{-1} delta||_2 <= radius}`` with S = (x)_i C_i (row-major vectorisation),
    stored by its symmetric positive definite factors (its exact definition: the separation proofs of
    ``kronecker_separation_gap`` use them) and their eigendecompositions; never as a d x d matrix."""

    center: np.ndarray
    factors: tuple[np.ndarray, ...]
    radius: float
    _eig: tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]] | None = field(default=None, repr=False)
    _inverse: tuple[np.ndarray, ...] = field(init=False, repr=False)

    kind = "kronecker"

    def __post_init__(self) -> None:
        if isinstance(self.factors, np.ndarray) or len(self.factors) == 0:
            raise TypeError("factors must be a non-empty sequence of square matrices (one per input axis)")
        factors = []
        for i, f in enumerate(self.factors):
            c = np.asarray(f, dtype=np.float64)
            if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] == 0 or not np.all(np.isfinite(c)):
                raise ValueError(f"factors[{i}] must be a finite square (d_i, d_i) matrix, got shape {c.shape}")
            asym = float(np.max(np.abs(c - c.T)))
            if asym > SYMMETRY_RTOL * max(1.0, float(np.max(np.abs(c)))):
                raise ValueError(f"factors[{i}] must be symmetric (max |C - C^T| = {asym:.3g})")
            factors.append(frozen_array(0.5 * (c + c.T)))  # an owned copy (exactly c when c is symmetric)
        object.__setattr__(self, "factors", tuple(factors))
        if self._eig is None:
            pairs = [np.linalg.eigh(c) for c in factors]
            eig = (tuple(frozen_array(a) for a, _ in pairs), tuple(frozen_array(b) for _, b in pairs))
            object.__setattr__(self, "_eig", eig)
        for i, lam in enumerate(self.eigenvalues):
            if not lam[0] > 0:
                raise ValueError(f"factors[{i}] must be positive definite (smallest eigenvalue {lam[0]:.3g})")
        self._freeze_center_and_radius(math.prod(self.shape), f"the factors define shape {self.shape}")
        inv = tuple(frozen_array((v / lam) @ v.T) for lam, v in zip(self.eigenvalues, self.eigenvectors))
        object.__setattr__(self, "_inverse", inv)

    @property
    def eigenvalues(self) -> tuple[np.ndarray, ...]:
        """Each factor's eigenvalues, ascending."""
        assert self._eig is not None  # set in __post_init__
        return self._eig[0]

    @property
    def eigenvectors(self) -> tuple[np.ndarray, ...]:
        assert self._eig is not None
        return self._eig[1]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(lam.shape[0]) for lam in self.eigenvalues)

    @property
    def l2_radius(self) -> float:
        """Exact: radius * lambda_min(S) = radius * prod_i lambda_min(C_i)."""
        return float(self.radius * math.prod(float(lam[0]) for lam in self.eigenvalues))

    @property
    def proxy_radius(self) -> float:
        """Exact: radius * (prod eig S)^(1/d) = radius * exp(sum_i mean(log eig C_i))."""
        return float(self.radius * math.exp(sum(float(np.mean(np.log(lam))) for lam in self.eigenvalues)))

    @property
    def outer_radius(self) -> float:
        """Exact: radius * lambda_max(S)."""
        return float(self.radius * math.prod(float(lam[-1]) for lam in self.eigenvalues))

    def whiten(self, delta: np.ndarray) -> np.ndarray:
        """``S^{-1} delta`` for (..., d): one d_i x d_i product per axis."""
        return _apply_along_axes(np.asarray(delta, dtype=np.float64), self._inverse, self.shape)

    def apply_scale(self, v: np.ndarray) -> np.ndarray:
        """``S v`` for (..., d)."""
        return _apply_along_axes(np.asarray(v, dtype=np.float64), self.factors, self.shape)

    def with_radius(self, radius: float) -> KroneckerEllipsoid:
        return KroneckerEllipsoid(self.center, self.factors, radius, _eig=self._eig)

    @property
    def rounding_length(self) -> int:
        """S v is K chained products of inner lengths d_i: gamma_{sum d_i} (Higham 2002, Lemma 3.3, Sec. 3.5)."""
        return max(self.dim, sum(self.shape))

    def scaled_norms(self, v: np.ndarray) -> tuple[float, float]:
        """``(fl ||S v||, fl || |S| |v| ||)`` from the stored factors, one product per axis (|S| = (x)_i |C_i|)."""
        n = float(np.linalg.norm(_apply_along_axes(v, self.factors, self.shape)))
        a = float(np.linalg.norm(_apply_along_axes(np.abs(v), [np.abs(c) for c in self.factors], self.shape)))
        return n, a

    def to_ellipsoid(self) -> Ellipsoid:
        """The same region as a dense ``certify.Ellipsoid`` (d <= DENSE_LIMIT; for the memory and tests)."""
        check_dense(self.dim, "to_ellipsoid")
        vals, vecs = _kron_eig(self.eigenvalues, self.eigenvectors)
        scale = (vecs * vals) @ vecs.T
        return Ellipsoid(self.center, 0.5 * (scale + scale.T), self.radius, _eig=(vals, vecs))


def _kron_eig(eigenvalues: Sequence[np.ndarray], eigenvectors: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of (x)_i C_i from the factors' (dense; small d only)."""
    vals = np.ones(1)
    vecs = np.ones((1, 1))
    for lam, v in zip(eigenvalues, eigenvectors):
        vals = np.kron(vals, lam)
        vecs = np.kron(vecs, v)
    order = np.argsort(vals, kind="stable")
    return vals[order], vecs[:, order]


def as_vectors(a: np.ndarray, dim: int, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.size == dim:
        return a.reshape(-1)
    if a.ndim >= 2 and a.shape[-1] == dim:
        return a
    raise ValueError(f"{name} has shape {a.shape}; the region has dimension {dim}")


class KroneckerGaussian(GaussianNoise):
    """``x + (C_1 (x) ... (x) C_K) z`` with each C_i symmetric positive definite, on inputs of shape
    (d_1, ..., d_K) flattened row-major; covariance (x)_i C_i^2. Sampling costs O(d sum_i d_i)."""

    kind = "kronecker"
    param_name = "factors"

    def __init__(self, factors: Sequence[Any], symmetry_tol: float = SYMMETRY_RTOL):
        if isinstance(factors, (torch.Tensor, np.ndarray)) or len(factors) == 0:
            raise TypeError("factors must be a non-empty sequence of square matrices (one per input axis)")
        mats, vals, vecs = [], [], []
        for i, f in enumerate(factors):
            C, lam, v = checked_spd(f, f"factors[{i}]", symmetry_tol, "(d_i, d_i)")
            mats.append(C)
            vals.append(frozen_array(lam))
            vecs.append(frozen_array(v))
        self.factors: tuple[torch.Tensor, ...] = tuple(mats)
        self.shape: tuple[int, ...] = tuple(int(C.shape[0]) for C in mats)
        self._eigenvalues: tuple[np.ndarray, ...] = tuple(vals)
        self._eigenvectors: tuple[np.ndarray, ...] = tuple(vecs)
        self._factors_np: tuple[np.ndarray, ...] = tuple(frozen_array(C) for C in mats)
        self._cache: dict[tuple[str, torch.dtype], tuple[torch.Tensor, ...]] = {}

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def _factors_on(self, device: Any, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = tuple(C.to(device=device, dtype=dtype) for C in self.factors)
        return self._cache[key]

    def sample(
        self, count: int, dim: int, generator: torch.Generator | None, device: Any, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``count`` draws (count, d) of S z: d standard normals per draw (the same stream as
        ``FullGaussian``), then one d_i x d_i product along each axis."""
        z = standard_normal(count, dim, generator, device, dtype).reshape((count,) + self.shape)
        for i, C in enumerate(self._factors_on(device, dtype)):
            z = torch.movedim(torch.tensordot(z, C, dims=([i + 1], [1])), -1, i + 1)
        return z.reshape(count, dim), None

    def region(self, center: np.ndarray, radius: float) -> KroneckerEllipsoid:
        return KroneckerEllipsoid(center, self._factors_np, radius, _eig=(self._eigenvalues, self._eigenvectors))

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """x flattened (any shape of the right size), or of the factors' own shape: an input with as many axes as there
        are factors but another shape (channels last against channels first, say) is refused, not silently
        flattened onto the wrong axes."""
        super().check_shape(shape)
        if len(shape) == len(self.shape) and tuple(shape) != self.shape:
            raise ValueError(
                f"shape mismatch between x and factors: the factors define an input of shape {self.shape} (one "
                f"factor per axis, row-major), x has shape {tuple(shape)}"
            )

    def condition_number(self) -> float:
        """prod_i lambda_max(C_i) / lambda_min(C_i)."""
        return math.prod(float(lam[-1] / lam[0]) for lam in self._eigenvalues)

    def scale_summary(self) -> dict[str, float]:
        """min_sigma = lambda_min(S) = prod_i lambda_min(C_i); gm_sigma = exp(sum_i log det C_i / d_i)."""
        return {
            "min_sigma": math.prod(float(lam[0]) for lam in self._eigenvalues),
            "gm_sigma": math.exp(sum(float(np.mean(np.log(lam))) for lam in self._eigenvalues)),
        }

    def log_det_covariance(self) -> float:
        """log det S^2 = 2 sum_i (d / d_i) log det C_i."""
        d = self.dim
        return float(2.0 * sum(d / lam.shape[0] * float(np.sum(np.log(lam))) for lam in self._eigenvalues))

    def scale(self) -> np.ndarray:
        """The dense scale (x)_i C_i (d <= DENSE_LIMIT)."""
        check_dense(self.dim, "scale")
        out = np.ones((1, 1))
        for C in self.factors:
            out = np.kron(out, C.numpy())
        return out

    def covariance(self) -> np.ndarray:
        """The dense covariance (x)_i C_i^2 (d <= DENSE_LIMIT)."""
        check_dense(self.dim, "covariance")
        out = np.ones((1, 1))
        for C in self.factors:
            c = C.numpy()
            out = np.kron(out, c @ c)
        return out

    def __repr__(self) -> str:
        s = self.scale_summary()
        return f"KroneckerGaussian(shape={self.shape}, min_sigma={s['min_sigma']:.4g}, gm_sigma={s['gm_sigma']:.4g})"


# ------------------------------------------------------------------------- Kronecker pairs: intersection
# The pencil of two Kronecker scales with the same factor shapes is the Kronecker product of the factor
# pencils: S1^-1 S2 = (x)_i C_i^-1 B_i, so the simultaneous diagonalisation that ``certify.intersection``
# computes with one d x d SVD is here one d_i x d_i SVD per axis (the SVD of a Kronecker product is the
# Kronecker product of the SVDs), and every vector it needs costs O(d sum_i d_i). As in
# ``certify.intersection`` (Gilitschenski and Hanebeck 2012), the spectrum only proposes a direction v;
# "disjoint" is answered only when the support-function gap along v exceeds a bound on its rounding.


def check_kronecker_pair(e1: KroneckerEllipsoid, e2: KroneckerEllipsoid) -> None:
    if not (isinstance(e1, KroneckerEllipsoid) and isinstance(e2, KroneckerEllipsoid)):
        raise TypeError("both regions must be KroneckerEllipsoid")
    if e1.shape != e2.shape:
        raise ValueError(f"factor shapes differ: {e1.shape} vs {e2.shape} (convert with to_ellipsoid())")


class KroneckerPencil:
    """``certify.intersection.Pencil`` of two Kronecker regions of the same factor shapes, whitening by
    ``first``: per axis the SVD G_i = diag(1/lam1_i) V1_i^T V2_i diag(lam2_i) = U_i diag(sigma_i) W_i^T;
    nu = (x)_i sigma_i^2, w = ((x)_i U_i^T diag(1/lam1_i) V1_i^T) delta (the pencil of two Kronecker products
    is the Kronecker product of the factor pencils): O(d sum_i d_i + sum_i d_i^3), no d x d matrix."""

    def __init__(self, first: KroneckerEllipsoid, second: KroneckerEllipsoid):
        check_kronecker_pair(first, second)
        us: list[np.ndarray] = []
        nu: np.ndarray = np.ones(1)
        inv1: np.ndarray = np.ones(1)
        for lam1, v1, lam2, v2 in zip(first.eigenvalues, first.eigenvectors, second.eigenvalues, second.eigenvectors):
            g = ((v1.T @ v2) * lam2) / lam1[:, None]
            u, sigma, _ = np.linalg.svd(g)
            us.append(u)
            nu = np.kron(nu, sigma * sigma)
            inv1 = np.kron(inv1, 1.0 / lam1)
        nu = np.maximum(nu, np.finfo(np.float64).tiny)
        delta = second.center - first.center
        whiten = [(v / lam).T for lam, v in zip(first.eigenvalues, first.eigenvectors)]
        w = _apply_along_axes(_apply_along_axes(delta, whiten, first.shape), [u.T for u in us], first.shape)
        self.spectrum = PairSpectrum(w, nu, None, inv1, None)
        self.first, self.us = first, us

    def sup(self, r1: float, r2: float, threshold: float | None = None) -> tuple[float, float]:
        return self.spectrum.sup(r1, r2, threshold)

    def direction(self, t: float, r1: float, r2: float) -> np.ndarray:
        """``(A1 / t + A2 / (1 - t))^-1 delta`` up to a positive factor: V1 diag(inv1) U (w / h), axis by axis."""
        return self._from_coefficients(self.spectrum.coefficients(t, r1, r2))

    def _from_coefficients(self, c: np.ndarray) -> np.ndarray:
        y = _apply_along_axes(c, self.us, self.first.shape) * self.spectrum.inv1
        return _apply_along_axes(y, self.first.eigenvectors, self.first.shape)

    # the one-parameter family of ``certify.pairs.max_disjoint_radius``: (tau Sigma1 + Sigma2)^-1 delta
    # = S1^-1 U (w / (tau + nu)); in that basis <v, delta> = c . w, ||S1 v|| = ||c||, ||S2 v||^2 = sum nu c^2.
    @property
    def family_scale(self) -> float:
        return float(np.exp(np.mean(np.log(self.spectrum.nu))))

    def family_direction(self, tau: float) -> np.ndarray:
        return self._from_coefficients(self.spectrum.w / (tau + self.spectrum.nu))

    def family_radii(self, taus: np.ndarray, region_first: bool, other: float) -> np.ndarray:
        """The radius each ``family_direction(tau)`` proves for the region (first if ``region_first``) against the
        other at radius ``other``, from the spectrum (unverified: the search's score; O(d) per tau)."""
        w, nu = self.spectrum.w, self.spectrum.nu
        out = np.empty(len(taus))
        for i, tau in enumerate(taus):
            c = w / (tau + nu)
            p, n1, n2 = float(c @ w), float(np.linalg.norm(c)), math.sqrt(float((c * c) @ nu))
            out[i] = 0.0 if n1 == 0.0 else (p - other * n2) / n1 if region_first else (p - other * n1) / n2
        return out


# ---------------------------------------------------------------------------------------------- low rank
@dataclass(frozen=True, eq=False)
class LowRankEllipsoid(StructuredRegion):
    """``{center + delta : delta^T Sigma^{-1} delta <= radius^2}``, Sigma = D + W W^T with W = U diag(sqrt(lam))
    (the region of ``FullGaussian(Sigma^{1/2})`` at this radius). Norms by Woodbury."""

    center: np.ndarray
    diag: np.ndarray
    factor: np.ndarray  # W, (d, k)
    radius: float
    spiked: bool = False
    _capacitance_inverse_tril: np.ndarray = field(init=False, repr=False)
    _log_det: float = field(init=False, repr=False)

    kind = "lowrank"

    def __post_init__(self) -> None:
        self._freeze_center_and_radius(self.diag.shape[0], f"the noise has dimension {self.diag.shape[0]}")
        # capacitance M = I_k + W^T D^-1 W = L L^T (as torch's LowRankMultivariateNormal)
        W, D = self.factor, self.diag
        M = np.eye(W.shape[1]) + (W / D[:, None]).T @ W
        L = np.linalg.cholesky(M)
        object.__setattr__(self, "_capacitance_inverse_tril", frozen_array(np.linalg.inv(L)))
        object.__setattr__(self, "_log_det", float(2.0 * np.sum(np.log(np.diag(L))) + np.sum(np.log(D))))

    @property
    def log_det_covariance(self) -> float:
        """log det Sigma = log det M + sum log D (matrix determinant lemma)."""
        return self._log_det

    @property
    def min_eigenvalue_bound(self) -> float:
        """A lower bound on lambda_min(Sigma): min D (Weyl: lambda_min(D + W W^T) >= lambda_min(D), W W^T being
        positive semi-definite, whatever W). Exact in the spiked form D = s I with k < d. (For k = d the spikes'
        own smallest eigenvalue could be added, but only as that of W^T W computed with a rounding bound: a column
        norm of W is an upper bound on it, not a lower one.)"""
        return float(np.min(self.diag))

    @property
    def l2_radius(self) -> float:
        """radius * sqrt(min_eigenvalue_bound) <= radius * sqrt(lambda_min(Sigma)); equal in the spiked form."""
        return float(self.radius * math.sqrt(self.min_eigenvalue_bound))

    @property
    def proxy_radius(self) -> float:
        """Exact: radius * (det Sigma)^(1/(2d))."""
        return float(self.radius * math.exp(0.5 * self._log_det / self.dim))

    @property
    def outer_radius(self) -> float:
        """radius * sqrt(max D + max lam) >= radius * sqrt(lambda_max(Sigma)) (an enclosing ball)."""
        lam_max = float(np.max(np.sum(self.factor**2, axis=0))) if self.factor.shape[1] else 0.0
        return float(self.radius * math.sqrt(float(np.max(self.diag)) + lam_max))

    def norm(self, delta: np.ndarray) -> np.ndarray:
        """``sqrt(delta^T Sigma^{-1} delta)`` for (..., d): Woodbury,
        Sigma^-1 = D^-1 - D^-1 W M^-1 W^T D^-1, O(d k) per vector."""
        delta = np.asarray(delta, dtype=np.float64)
        y = delta / self.diag
        t = (y @ self.factor) @ self._capacitance_inverse_tril.T
        q = np.sum(delta * y, axis=-1) - np.sum(t * t, axis=-1)
        return np.sqrt(np.maximum(q, 0.0))

    def support(self, direction: np.ndarray) -> float:
        """``max_{y in region} <direction, y> = <direction, c> + radius sqrt(v^T Sigma v)``."""
        v = np.asarray(direction, dtype=np.float64).reshape(-1)
        wv = v @ self.factor
        return float(v @ self.center + self.radius * math.sqrt(float(v @ (self.diag * v) + wv @ wv)))

    def with_radius(self, radius: float) -> LowRankEllipsoid:
        return LowRankEllipsoid(self.center, self.diag, self.factor, radius, self.spiked)

    def scaled_norms(self, v: np.ndarray) -> tuple[float, float]:
        """With the factor B = [diag(sqrt D); W^T] (B^T B = Sigma): ``||B v||`` = sqrt(v^T Sigma v) and
        ``|| |B| |v| ||``; W^T v has inner length d."""
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        root = np.sqrt(self.diag)
        n = math.hypot(float(np.linalg.norm(root * v)), float(np.linalg.norm(v @ self.factor)))
        a = math.hypot(float(np.linalg.norm(root * np.abs(v))), float(np.linalg.norm(np.abs(v) @ np.abs(self.factor))))
        return n, a

    def woodbury_form(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.diag, self.factor, np.ones(self.factor.shape[1])

    def covariance(self) -> np.ndarray:
        check_dense(self.dim, "covariance")
        return np.diag(self.diag) + self.factor @ self.factor.T

    def to_ellipsoid(self) -> Ellipsoid:
        """The same region as a dense ``certify.Ellipsoid`` with scale Sigma^{1/2} (d <= DENSE_LIMIT)."""
        vals, vecs = np.linalg.eigh(self.covariance())
        if vals[0] <= 0:
            raise ValueError(f"covariance is not positive definite in float64 (smallest eigenvalue {vals[0]:.3g})")
        root = np.sqrt(vals)
        scale = (vecs * root) @ vecs.T
        return Ellipsoid(self.center, 0.5 * (scale + scale.T), self.radius, _eig=(root, vecs))


class LowRankGaussian(GaussianNoise):
    """Gaussian noise of covariance ``D + U diag(lam) U^T``: D > 0 (a scalar: the spiked form s I + ...,
    or one entry per coordinate), U (d, k) with orthonormal columns, lam (k,) > 0.

    Drawn as ``sqrt(D) z_d + U diag(sqrt(lam)) z_k``: d + k standard normals per draw (one (count, d + k)
    draw from the generator, z_d first). The region is the Mahalanobis ball of Sigma (the region of
    ``FullGaussian(Sigma^{1/2})``, ``LowRankEllipsoid``)."""

    kind = "lowrank"
    param_name = "U"

    def __init__(self, diag: Any, U: Any, lam: Any, orthonormal_tol: float = 1e-8):
        Ut = orthonormal_columns(U, orthonormal_tol)
        d, k = Ut.shape
        lt = positive_per_column(lam, "lam", k)
        Dt = owned_float64(diag, "diag")
        spiked = Dt.ndim == 0 or Dt.numel() == 1
        Dt = Dt.reshape(-1).expand(d).clone() if spiked else Dt.reshape(-1)
        if Dt.shape[0] != d:
            raise ValueError(f"diag has {Dt.shape[0]} entries but U has {d} rows")
        if (Dt <= 0).any():
            raise ValueError(f"diag must be positive (min {Dt.min().item():g})")
        self.diag = Dt
        self.U = Ut
        self.lam = lt
        self.spiked = bool(spiked or bool((Dt == Dt[0]).all()))
        self._root_diag = Dt.sqrt()
        self._factor = Ut * lt.sqrt()  # W = U diag(sqrt(lam))
        self._diag_np = frozen_array(Dt)
        self._factor_np = frozen_array(self._factor)
        self._template = LowRankEllipsoid(np.zeros(d), self._diag_np, self._factor_np, 0.0, self.spiked)
        self._cache: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def dim(self) -> int:
        return int(self.U.shape[0])

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])

    def _params_on(self, device: Any, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = (
                self._root_diag.to(device=device, dtype=dtype),
                self._factor.T.contiguous().to(device=device, dtype=dtype),
            )
        return self._cache[key]

    def sample(
        self, count: int, dim: int, generator: torch.Generator | None, device: Any, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``count`` draws (count, d): sqrt(D) z_d + W z_k from one (count, d + k) standard normal draw."""
        d, k = self.dim, self.rank
        if dim != d:
            raise ValueError(f"sample: dim {dim} but the noise has dimension {d}")
        z = standard_normal(count, d + k, generator, device, dtype)
        root_diag, factor_t = self._params_on(device, dtype)
        return z[:, :d] * root_diag + z[:, d:] @ factor_t, None

    def region(self, center: np.ndarray, radius: float) -> LowRankEllipsoid:
        return LowRankEllipsoid(center, self._diag_np, self._factor_np, radius, self.spiked)

    def condition_number(self) -> float:
        """sqrt(max D + max lam) / sqrt(min D): the enclosing and inscribed balls of the unit region."""
        unit = self._template.with_radius(1.0)
        return unit.outer_radius / unit.l2_radius

    def log_det_covariance(self) -> float:
        return self._template.log_det_covariance

    def scale_summary(self) -> dict[str, float]:
        """min_sigma = sqrt(min D) (min D + min lam when k = d): a lower bound on sqrt(lambda_min(Sigma)),
        exact when spiked; gm_sigma = (det Sigma)^(1/(2d)) (exact)."""
        return {
            "min_sigma": math.sqrt(self._template.min_eigenvalue_bound),
            "gm_sigma": math.exp(0.5 * self.log_det_covariance() / self.dim),
        }

    def covariance(self) -> np.ndarray:
        """The dense covariance D + U diag(lam) U^T (d <= DENSE_LIMIT)."""
        return self._template.covariance()

    def scale(self) -> np.ndarray:
        """The dense symmetric square root Sigma^{1/2} (d <= DENSE_LIMIT): ``FullGaussian(scale())`` has
        the same distribution and the same regions."""
        return np.array(self._template.to_ellipsoid().scale)

    def __repr__(self) -> str:
        s = self.scale_summary()
        form = "spiked" if self.spiked else "diagonal"
        return f"LowRankGaussian(d={self.dim}, k={self.rank}, {form}, gm_sigma={s['gm_sigma']:.4g})"
