"""Spiked Gaussian noise with spikes of either sign: the scale S = s (I - U U^T) + U diag(t) U^T.

``SpikedGaussian(s, U, t)``: noise S z with U (d, k) orthonormal columns, s > 0 the scale off the spikes and t > 0
(k,) the scale along each spike, larger OR smaller than s (``LowRankGaussian`` only adds variance along its spikes).
S is symmetric positive definite with eigenvalues s (multiplicity d - k) and t, so everything is exact and O(d k):
the region ``{delta : ||S^-1 delta|| <= r}`` with S^-1 delta = (delta - U U^T delta) / s + U diag(1 / t) U^T delta,
the inscribed l2 radius r min(s, min t), the proxy radius r exp(((d - k) log s + sum log t) / d), the outer radius
r max(s, max t). Sampling draws d standard normals (the stream of ``FullGaussian``): S z = s z + U ((t - s) * U^T z).
The spectral facts are those of a symmetric matrix written in an orthonormal eigenbasis (U completed by any
orthonormal basis of its complement); ``to_ellipsoid()`` gives the dense ``certify.Ellipsoid`` (d <= DENSE_LIMIT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .noise import GaussianNoise, owned_float64, standard_normal
from .region import Ellipsoid
from .structured import StructuredRegion, check_dense, frozen_array, orthonormal_columns, positive_per_column


@dataclass(frozen=True, eq=False)
class SpikedEllipsoid(StructuredRegion):
    """``{center + delta : ||S^-1 delta|| <= radius}``, S = s (I - U U^T) + U diag(t) U^T (module docstring)."""

    center: np.ndarray
    scale: float
    basis: np.ndarray  # U, (d, k)
    spikes: np.ndarray  # t, (k,)
    radius: float

    kind = "spiked"

    def __post_init__(self) -> None:
        d = self.basis.shape[0]
        self._freeze_center_and_radius(d, f"the noise has dimension {d}")

    @property
    def _extremes(self) -> tuple[float, float]:
        t = self.spikes
        full = self.basis.shape[1] == self.dim  # no complement: s is not an eigenvalue
        lo = float(np.min(t)) if full else min(self.scale, float(np.min(t)))
        hi = float(np.max(t)) if full else max(self.scale, float(np.max(t)))
        return lo, hi

    @property
    def l2_radius(self) -> float:
        """Exact: radius * lambda_min(S) = radius * min(s, min t)."""
        return float(self.radius * self._extremes[0])

    @property
    def proxy_radius(self) -> float:
        """Exact: radius * det(S)^(1/d) = radius * exp(((d - k) log s + sum log t) / d)."""
        d, k = self.basis.shape
        return float(self.radius * math.exp(((d - k) * math.log(self.scale) + float(np.sum(np.log(self.spikes)))) / d))

    @property
    def outer_radius(self) -> float:
        return float(self.radius * self._extremes[1])

    def whiten(self, delta: np.ndarray) -> np.ndarray:
        """``S^-1 delta`` for (..., d), O(d k)."""
        delta = np.asarray(delta, dtype=np.float64)
        c = delta @ self.basis
        return delta / self.scale + (c * (1.0 / self.spikes - 1.0 / self.scale)) @ self.basis.T

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


class SpikedGaussian(GaussianNoise):
    """``x + S z``, S = scale (I - U U^T) + U diag(spikes) U^T: ``scale`` > 0 off the spikes, ``spikes`` (k,) > 0 along
    the orthonormal columns of U (d, k), each larger or smaller than ``scale``. Covariance S^2; d normals per draw."""

    kind = "spiked"
    param_name = "U"

    def __init__(self, scale: Any, U: Any, spikes: Any, orthonormal_tol: float = 1e-8):
        Ut = orthonormal_columns(U, orthonormal_tol)
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

    def scale_summary(self) -> dict[str, float]:
        """min_sigma = min(s, min t) and gm_sigma = det(S)^(1/d), both exact."""
        unit = self._template.with_radius(1.0)
        return {"min_sigma": unit.l2_radius, "gm_sigma": unit.proxy_radius}

    def log_det_covariance(self) -> float:
        """log det S^2 = 2 ((d - k) log s + sum log t)."""
        d, k = self.dim, self.rank
        return float(2.0 * ((d - k) * math.log(self.scale_value) + float(self.spikes.log().sum())))

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
