"""Spiked Gaussian noise with spikes of either sign: the scale S = s (I - U U^T) + U diag(t) U^T.

``SpikedGaussian(s, U, t)``: noise S z with U (d, k) orthonormal columns, s > 0 the scale off the spikes and t > 0
(k,) the scale along each spike, larger OR smaller than s (``LowRankGaussian`` only adds variance along its spikes).
S is symmetric positive definite with eigenvalues s (multiplicity d - k) and t, so everything is O(d k):
the region ``{delta : ||S^-1 delta|| <= r}`` with S^-1 delta = (delta - U U^T delta) / s + U diag(1 / t) U^T delta,
the inscribed l2 radius r min(s, min t), the proxy radius r exp(((d - k) log s + sum log t) / d), the outer radius
r max(s, max t). Sampling draws d standard normals (the stream of ``FullGaussian``): S z = s z + U ((t - s) * U^T z).
The spectral facts are those of a symmetric matrix written in an orthonormal eigenbasis (U completed by any
orthonormal basis of its complement). A U is only ever orthonormal to rounding: ``SpikedGaussian`` keeps the polar
factor of the U it is given (within 1e-8 of orthonormal), and the region computes its norms for the U it stores
(Woodbury with G = U^T U) and bounds its extreme eigenvalues with a proven margin for ||U^T U - I||
(``spectral_facts``), so that no stated radius exceeds the truth for the S that is sampled. ``to_ellipsoid()`` gives
the dense ``certify.Ellipsoid`` (d <= DENSE_LIMIT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .noise import GaussianNoise, owned_float64, standard_normal
from .region import Ellipsoid
from .structured import StructuredRegion, check_dense, frozen_array, orthonormal_columns, positive_per_column


def spectral_facts(s: float, U: np.ndarray, t: np.ndarray) -> tuple[tuple[float, float], float, np.ndarray]:
    """For S = s I + U diag(t - s) U^T with U (d, k) of unit-ish columns: bounds (lo, hi) on its extreme eigenvalues,
    log det S and the k x k core M = diag(t - s) (s I + G diag(t - s))^-1 of its inverse, G = U^T U.

    Bounds (proved for any U): with U = Q P its polar decomposition (Q orthonormal, P = G^(1/2)), S = s I + Q P D P Q^T,
    D = diag(t - s), whose eigenvalues are s (off range Q, when k < d) and s + eig(P D P); ||P D P - D|| <=
    ||D|| (2 eta + eta^2) with eta >= ||P - I||, and ||P - I|| <= ||G - I|| (|sqrt(g) - 1| <= |g - 1|), so Weyl's
    inequality gives every eigenvalue within that margin of {s} and t. eta is ||G - I||_2 as computed plus the
    rounding of G (each entry within (d + 2) u ||u_i|| ||u_j||, u = 2^-53, Higham's gamma_d), times k for the
    2-norm. log det S = (d - k) log s + log det(s I_k + D G) (Sylvester's determinant identity)."""
    d, k = U.shape
    G = U.T @ U
    norms = np.sqrt(np.diag(G))
    gram_rounding = k * (d + 2) * 2.0**-53 * float(np.max(norms) ** 2) * 1.01
    eta = float(np.linalg.norm(G - np.eye(k), 2)) * (1 + 1e-12) + gram_rounding
    excess = t - s
    margin = float(np.max(np.abs(excess))) * (2 * eta + eta * eta)
    full = k == d  # no complement: s is not an eigenvalue
    lo = (float(np.min(t)) if full else min(s, float(np.min(t)))) - margin
    hi = (float(np.max(t)) if full else max(s, float(np.max(t)))) + margin
    if not lo > 0:
        raise ValueError(
            f"basis is too far from orthonormal for these spikes: max |U^T U - I| = {np.abs(G - np.eye(k)).max():.3g} "
            "leaves no positive lower bound on the smallest scale"
        )
    capacitance = s * np.eye(k) + G * excess[None, :]  # s I + G D
    sign, logdet_core = np.linalg.slogdet(capacitance)
    if not sign > 0:
        raise ValueError("basis is too far from orthonormal for these spikes: s I + G diag(t - s) is not positive")
    core = frozen_array(excess[:, None] * np.linalg.inv(capacitance))  # D (s I + G D)^-1
    return (lo, hi), float((d - k) * math.log(s) + logdet_core), core


@dataclass(frozen=True, eq=False)
class SpikedEllipsoid(StructuredRegion):
    """``{center + delta : ||S^-1 delta|| <= radius}``, S = s (I - U U^T) + U diag(t) U^T (module docstring)."""

    center: np.ndarray
    scale: float
    basis: np.ndarray  # U, (d, k)
    spikes: np.ndarray  # t, (k,)
    radius: float

    _extremes: tuple[float, float] = field(init=False, repr=False)
    _log_det_scale: float = field(init=False, repr=False)
    _inverse_core: np.ndarray = field(init=False, repr=False)

    kind = "spiked"

    def __post_init__(self) -> None:
        """Checks and owns its data (read-only float64 copies), then the spectral facts of the S it samples with,
        S = s I + U diag(t - s) U^T, for the basis as stored (module docstring: ``spectral_facts``)."""
        basis = frozen_array(self.basis)
        if basis.ndim != 2 or not 1 <= basis.shape[1] <= basis.shape[0]:
            raise ValueError(f"basis must be a (d, k) matrix with 1 <= k <= d, got shape {basis.shape}")
        spikes = frozen_array(np.asarray(self.spikes, dtype=np.float64).reshape(-1))
        scale = float(self.scale)
        if not (np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be one positive finite number, got {self.scale!r}")
        if spikes.shape[0] != basis.shape[1] or not np.all(np.isfinite(spikes) & (spikes > 0)):
            raise ValueError(f"spikes must be {basis.shape[1]} positive finite numbers (one per column of basis)")
        if not np.all(np.isfinite(basis)):
            raise ValueError("basis contains NaN or infinite entries")
        object.__setattr__(self, "basis", basis)
        object.__setattr__(self, "spikes", spikes)
        object.__setattr__(self, "scale", scale)
        self._freeze_center_and_radius(basis.shape[0], f"the noise has dimension {basis.shape[0]}")
        extremes, log_det, core = spectral_facts(scale, basis, spikes)
        object.__setattr__(self, "_extremes", extremes)
        object.__setattr__(self, "_log_det_scale", log_det)
        object.__setattr__(self, "_inverse_core", core)

    @property
    def l2_radius(self) -> float:
        """radius * a lower bound on lambda_min(S): min(s, min t), less the proven margin of ``spectral_facts`` (of
        the order of 1e-16 max |t - s| for the polar-orthonormalised basis ``SpikedGaussian`` keeps)."""
        return float(self.radius * self._extremes[0])

    @property
    def proxy_radius(self) -> float:
        """radius * det(S)^(1/d), det(S) = s^(d - k) det(s I_k + diag(t - s) U^T U) (= s^(d - k) prod t for an
        orthonormal U)."""
        return float(self.radius * math.exp(self._log_det_scale / self.dim))

    @property
    def outer_radius(self) -> float:
        """radius * an upper bound on lambda_max(S): max(s, max t), plus the same margin."""
        return float(self.radius * self._extremes[1])

    def whiten(self, delta: np.ndarray) -> np.ndarray:
        """``S^-1 delta`` for (..., d), O(d k): (delta - U M U^T delta) / s with M = D (s I + G D)^-1, D = diag(t - s),
        G = U^T U (Woodbury; for the stored U, orthonormal or not)."""
        delta = np.asarray(delta, dtype=np.float64)
        c = delta @ self.basis
        return (delta - (c @ self._inverse_core.T) @ self.basis.T) / self.scale

    def apply_scale(self, v: np.ndarray) -> np.ndarray:
        """``S v`` for (..., d), O(d k)."""
        v = np.asarray(v, dtype=np.float64)
        return v * self.scale + ((v @ self.basis) * (self.spikes - self.scale)) @ self.basis.T

    def with_radius(self, radius: float) -> SpikedEllipsoid:
        return SpikedEllipsoid(self.center, self.scale, self.basis, self.spikes, radius)

    @property
    def rounding_length(self) -> int:
        """S v = s v + U ((t - s) * U^T v): inner lengths d and k and three scalar operations."""
        return self.dim + self.basis.shape[1] + 3

    def scaled_norms(self, v: np.ndarray) -> tuple[float, float]:
        """``(fl ||S v||, fl || s |v| + |U| (|t - s| * |U|^T |v|) ||)``, the second bounding |S| |v| as computed."""
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        av, au = np.abs(v), np.abs(self.basis)
        a = self.scale * av + au @ (np.abs(self.spikes - self.scale) * (av @ au))
        return float(np.linalg.norm(self.apply_scale(v))), float(np.linalg.norm(a))

    def woodbury_form(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """S^2 = s^2 I + U diag(t^2 - s^2) U^T (mu of either sign)."""
        return np.full(self.dim, self.scale**2), self.basis, self.spikes**2 - self.scale**2

    def dense_scale(self) -> np.ndarray:
        check_dense(self.dim, "dense_scale")
        return self.apply_scale(np.eye(self.dim))

    def to_ellipsoid(self) -> Ellipsoid:
        """The same region as a dense ``certify.Ellipsoid`` (d <= DENSE_LIMIT)."""
        s = self.dense_scale()
        return Ellipsoid(self.center, 0.5 * (s + s.T), self.radius)


def polar_factor(U: torch.Tensor) -> torch.Tensor:
    """The orthonormal matrix nearest to ``U`` (d, k) in Frobenius norm, U (U^T U)^(-1/2) (its polar factor; float64),
    so that a basis orthonormal to 1e-8 becomes one to rounding, column by column the same directions."""
    vals, vecs = torch.linalg.eigh(U.T @ U)
    return U @ (vecs * vals.rsqrt()) @ vecs.T


class SpikedGaussian(GaussianNoise):
    """``x + S z``, S = scale (I - U U^T) + U diag(spikes) U^T: ``scale`` > 0 off the spikes, ``spikes`` (k,) > 0 along
    the orthonormal columns of U (d, k), each larger or smaller than ``scale``. Covariance S^2; d normals per draw."""

    kind = "spiked"
    param_name = "U"

    def __init__(self, scale: Any, U: Any, spikes: Any, orthonormal_tol: float = 1e-8):
        Ut = polar_factor(orthonormal_columns(U, orthonormal_tol))  # sampled and certified with this U
        d, k = Ut.shape
        st = owned_float64(scale, "scale")
        if st.numel() != 1 or not float(st) > 0:
            raise ValueError(f"scale must be one positive number, got {st.tolist()}")
        tt = positive_per_column(spikes, "spikes", k)
        self.scale_value = float(st)
        self.U, self.spikes = Ut, tt
        self._basis_np, self._spikes_np = frozen_array(Ut), frozen_array(tt)
        self._template = SpikedEllipsoid(np.zeros(d), self.scale_value, self._basis_np, self._spikes_np, 0.0)
        self._cache: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def dim(self) -> int:
        return int(self.U.shape[0])

    @property
    def rank(self) -> int:
        return int(self.U.shape[1])

    def sample(
        self, count: int, dim: int, generator: torch.Generator | None, device: Any, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``count`` draws (count, d) of S z: s z + U ((t - s) * (U^T z)) from d standard normals per draw."""
        if dim != self.dim:
            raise ValueError(f"sample: dim {dim} but the noise has dimension {self.dim}")
        key = (str(device), dtype)
        if key not in self._cache:
            self._cache[key] = (
                self.U.to(device=device, dtype=dtype),
                (self.spikes - self.scale_value).to(device=device, dtype=dtype),
            )
        u, excess = self._cache[key]
        z = standard_normal(count, dim, generator, device, dtype)
        return z * self.scale_value + ((z @ u) * excess) @ u.T, None

    def region(self, center: np.ndarray, radius: float) -> SpikedEllipsoid:
        return SpikedEllipsoid(center, self.scale_value, self._basis_np, self._spikes_np, radius)

    def condition_number(self) -> float:
        """max(s, max t) / min(s, min t) (with the margins of ``spectral_facts``)."""
        lo, hi = self._template._extremes
        return hi / lo

    def scale_summary(self) -> dict[str, float]:
        """min_sigma = min(s, min t) and gm_sigma = det(S)^(1/d), both exact."""
        unit = self._template.with_radius(1.0)
        return {"min_sigma": unit.l2_radius, "gm_sigma": unit.proxy_radius}

    def log_det_covariance(self) -> float:
        """log det S^2 = 2 ((d - k) log s + sum log t) (``spectral_facts``, for the U kept)."""
        return float(2.0 * self._template._log_det_scale)

    def scale(self) -> np.ndarray:
        """The dense symmetric scale S (d <= DENSE_LIMIT)."""
        return self._template.dense_scale()

    def covariance(self) -> np.ndarray:
        """The dense covariance S^2 (d <= DENSE_LIMIT)."""
        s = self.scale()
        return s @ s

    def __repr__(self) -> str:
        s = self.scale_summary()
        return (
            f"SpikedGaussian(d={self.dim}, k={self.rank}, min_sigma={s['min_sigma']:.4g}, gm_sigma={s['gm_sigma']:.4g})"
        )
