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

The algebra is in this repository's notes on structured noise (Kronecker: eigenvalues and determinants
of Kronecker products; low rank: Woodbury and the determinant lemma).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .noise import GaussianNoise
from .region import SYMMETRY_RTOL, Ellipsoid

#: the largest dimension for which ``covariance()``, ``scale()`` and ``to_ellipsoid()`` form a dense matrix.
DENSE_LIMIT = 4096


def _as_float64_tensor(value: Any, name: str) -> torch.Tensor:
    """An owned float64 CPU copy of a number, array or tensor (finite), as the noises of ``certify.noise``."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to(device="cpu", dtype=torch.float64, copy=True)
    else:
        try:
            t = torch.tensor(np.array(value, dtype=np.float64, copy=True))
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number, array or tensor, got {type(value).__name__}") from None
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite entries")
    return t


def _randn(count: int, dim: int, generator: torch.Generator | None, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal (count, dim) on the generator's device, moved to ``device`` (the stream of
    ``certify.noise``'s samplers, so that one factor-free draw is FullGaussian's draw)."""
    gen_device = generator.device if generator is not None else device
    z = torch.randn((count, dim), generator=generator, device=gen_device, dtype=dtype)
    return z.to(device, non_blocking=True)


def _check_dense(d: int, what: str) -> None:
    if d > DENSE_LIMIT:
        raise ValueError(
            f"{what}: the dense matrix would be {d} x {d}; dense forms are only built up to d = {DENSE_LIMIT} "
            f"(for tests and small problems). Use the structured methods (sample, region, norm) instead."
        )


def _frozen_np(a: Any) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------- Kronecker
@dataclass(frozen=True, eq=False)
class KroneckerEllipsoid:
    """``{center + delta : ||S^{-1} delta||_2 <= radius}`` with S = (x)_i C_i (row-major vectorisation),
    stored by the factors' eigendecompositions (never as a d x d matrix)."""

    center: np.ndarray
    eigenvalues: tuple[np.ndarray, ...]
    eigenvectors: tuple[np.ndarray, ...]
    radius: float
    _inverse: tuple[np.ndarray, ...] = field(init=False, repr=False)

    kind = "kronecker"

    def __post_init__(self) -> None:
        center = _frozen_np(np.asarray(self.center, dtype=np.float64).reshape(-1))
        if not np.all(np.isfinite(center)):
            raise ValueError("center contains NaN or infinite entries")
        if int(np.prod(self.shape)) != center.shape[0]:
            raise ValueError(f"center has {center.shape[0]} entries; the factors define shape {self.shape}")
        radius = float(self.radius)
        if not (radius >= 0 and np.isfinite(radius)):
            raise ValueError(f"radius must be finite and >= 0, got {radius}")
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "radius", radius)
        inv = tuple(_frozen_np((v / lam) @ v.T) for lam, v in zip(self.eigenvalues, self.eigenvectors))
        object.__setattr__(self, "_inverse", inv)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(lam.shape[0]) for lam in self.eigenvalues)

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

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
        mats = [(vec * lam) @ vec.T for lam, vec in zip(self.eigenvalues, self.eigenvectors)]
        return _apply_along_axes(np.asarray(v, dtype=np.float64), mats, self.shape)

    def norm(self, delta: np.ndarray) -> np.ndarray:
        return np.linalg.norm(self.whiten(delta), axis=-1)

    def contains_delta(self, delta: np.ndarray) -> bool | np.ndarray:
        return self.norm(_as_vectors(delta, self.dim, "delta")) <= self.radius

    def contains_point(self, point: np.ndarray) -> bool | np.ndarray:
        return self.contains_delta(_as_vectors(point, self.dim, "point") - self.center)

    def support(self, direction: np.ndarray) -> float:
        """``max_{y in region} <direction, y> = <direction, c> + radius ||S direction||``."""
        v = np.asarray(direction, dtype=np.float64).reshape(-1)
        return float(v @ self.center + self.radius * np.linalg.norm(self.apply_scale(v)))

    def with_radius(self, radius: float) -> KroneckerEllipsoid:
        return KroneckerEllipsoid(self.center, self.eigenvalues, self.eigenvectors, radius)

    def to_ellipsoid(self) -> Ellipsoid:
        """The same region as a dense ``certify.Ellipsoid`` (d <= DENSE_LIMIT; for the memory and tests)."""
        _check_dense(self.dim, "to_ellipsoid")
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


def _as_vectors(a: np.ndarray, dim: int, name: str) -> np.ndarray:
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
            C = _as_float64_tensor(f, f"factors[{i}]")
            if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] == 0:
                raise ValueError(f"factors[{i}] must be a square (d_i, d_i) matrix, got shape {tuple(C.shape)}")
            asym = (C - C.T).abs().max().item()
            if asym > symmetry_tol * max(1.0, C.abs().max().item()):
                raise ValueError(f"factors[{i}] must be symmetric (max |C - C^T| = {asym:.3g})")
            C = 0.5 * (C + C.T)
            lam, v = torch.linalg.eigh(C)
            if lam[0] <= 0:
                raise ValueError(f"factors[{i}] must be positive definite (smallest eigenvalue {lam[0].item():.3g})")
            mats.append(C)
            vals.append(_frozen_np(lam))
            vecs.append(_frozen_np(v))
        self.factors: tuple[torch.Tensor, ...] = tuple(mats)
        self.shape: tuple[int, ...] = tuple(int(C.shape[0]) for C in mats)
        self._eigenvalues: tuple[np.ndarray, ...] = tuple(vals)
        self._eigenvectors: tuple[np.ndarray, ...] = tuple(vecs)
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
        z = _randn(count, dim, generator, device, dtype).reshape((count,) + self.shape)
        for i, C in enumerate(self._factors_on(device, dtype)):
            z = torch.movedim(torch.tensordot(z, C, dims=([i + 1], [1])), -1, i + 1)
        return z.reshape(count, dim), None

    def region(self, center: np.ndarray, radius: float) -> KroneckerEllipsoid:
        return KroneckerEllipsoid(center, self._eigenvalues, self._eigenvectors, radius)

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
        _check_dense(self.dim, "scale")
        out = np.ones((1, 1))
        for C in self.factors:
            out = np.kron(out, C.numpy())
        return out

    def covariance(self) -> np.ndarray:
        """The dense covariance (x)_i C_i^2 (d <= DENSE_LIMIT)."""
        _check_dense(self.dim, "covariance")
        out = np.ones((1, 1))
        for C in self.factors:
            c = C.numpy()
            out = np.kron(out, c @ c)
        return out

    def __repr__(self) -> str:
        s = self.scale_summary()
        return f"KroneckerGaussian(shape={self.shape}, min_sigma={s['min_sigma']:.4g}, gm_sigma={s['gm_sigma']:.4g})"


# ---------------------------------------------------------------------------------------------- low rank
@dataclass(frozen=True, eq=False)
class LowRankEllipsoid:
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
        center = _frozen_np(np.asarray(self.center, dtype=np.float64).reshape(-1))
        if not np.all(np.isfinite(center)):
            raise ValueError("center contains NaN or infinite entries")
        if center.shape[0] != self.diag.shape[0]:
            raise ValueError(f"center has {center.shape[0]} entries; the noise has dimension {self.diag.shape[0]}")
        radius = float(self.radius)
        if not (radius >= 0 and np.isfinite(radius)):
            raise ValueError(f"radius must be finite and >= 0, got {radius}")
        object.__setattr__(self, "center", center)
        object.__setattr__(self, "radius", radius)
        # capacitance M = I_k + W^T D^-1 W = L L^T (as torch's LowRankMultivariateNormal)
        W, D = self.factor, self.diag
        M = np.eye(W.shape[1]) + (W / D[:, None]).T @ W
        L = np.linalg.cholesky(M)
        object.__setattr__(self, "_capacitance_inverse_tril", _frozen_np(np.linalg.inv(L)))
        object.__setattr__(self, "_log_det", float(2.0 * np.sum(np.log(np.diag(L))) + np.sum(np.log(D))))

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    @property
    def log_det_covariance(self) -> float:
        """log det Sigma = log det M + sum log D (matrix determinant lemma)."""
        return self._log_det

    @property
    def min_eigenvalue_bound(self) -> float:
        """A lower bound on lambda_min(Sigma): min D, plus min lam when k = d (Weyl: lambda_min(A + B)
        >= lambda_min(A) + lambda_min(B), and U diag(lam) U^T has lambda_min 0 for k < d, min lam for
        k = d). Exact in the spiked form D = s I."""
        extra = float(np.min(np.sum(self.factor**2, axis=0))) if self.factor.shape[1] == self.dim else 0.0
        return float(np.min(self.diag)) + extra

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

    def contains_delta(self, delta: np.ndarray) -> bool | np.ndarray:
        return self.norm(_as_vectors(delta, self.dim, "delta")) <= self.radius

    def contains_point(self, point: np.ndarray) -> bool | np.ndarray:
        return self.contains_delta(_as_vectors(point, self.dim, "point") - self.center)

    def support(self, direction: np.ndarray) -> float:
        """``max_{y in region} <direction, y> = <direction, c> + radius sqrt(v^T Sigma v)``."""
        v = np.asarray(direction, dtype=np.float64).reshape(-1)
        wv = v @ self.factor
        return float(v @ self.center + self.radius * math.sqrt(float(v @ (self.diag * v) + wv @ wv)))

    def with_radius(self, radius: float) -> LowRankEllipsoid:
        return LowRankEllipsoid(self.center, self.diag, self.factor, radius, self.spiked)

    def covariance(self) -> np.ndarray:
        _check_dense(self.dim, "covariance")
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
        Ut = _as_float64_tensor(U, "U")
        if Ut.ndim != 2 or Ut.shape[0] == 0 or Ut.shape[1] == 0 or Ut.shape[1] > Ut.shape[0]:
            raise ValueError(f"U must be a (d, k) matrix with 1 <= k <= d, got shape {tuple(Ut.shape)}")
        d, k = Ut.shape
        err = (Ut.T @ Ut - torch.eye(k, dtype=torch.float64)).abs().max().item()
        if err > orthonormal_tol:
            raise ValueError(f"U must have orthonormal columns (max |U^T U - I| = {err:.3g})")
        lt = _as_float64_tensor(lam, "lam").reshape(-1)
        if lt.shape[0] != k:
            raise ValueError(f"lam has {lt.shape[0]} entries but U has {k} columns")
        if (lt <= 0).any():
            raise ValueError(f"lam must be positive (min {lt.min().item():g})")
        Dt = _as_float64_tensor(diag, "diag")
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
        self._diag_np = _frozen_np(Dt)
        self._factor_np = _frozen_np(self._factor)
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
        z = _randn(count, d + k, generator, device, dtype)
        root_diag, factor_t = self._params_on(device, dtype)
        return z[:, :d] * root_diag + z[:, d:] @ factor_t, None

    def region(self, center: np.ndarray, radius: float) -> LowRankEllipsoid:
        return LowRankEllipsoid(center, self._diag_np, self._factor_np, radius, self.spiked)

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
