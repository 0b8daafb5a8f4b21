"""Certified regions: the one ellipsoid convention used everywhere in the library.

A region is ``{center + delta : ||S^{-1} delta||_2 <= radius}`` where ``S`` (the *scale*) is the
noise's own scale: a positive scalar (ball, isotropic noise sigma z), a positive vector (axis-aligned
ellipsoid, noise theta * z) or a symmetric positive definite matrix (ellipsoid of any orientation,
noise C z).  Its semi-axes are ``radius * eig(S)``.  Every other representation (the quadratic form
``(y - c)^T Q (y - c) <= 1`` with ``Q = S^{-2} / radius^2``) is derived here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

import numpy as np

Scale = float | np.ndarray

#: a full scale S is accepted if max |S - S^T| <= SYMMETRY_RTOL * max |S| (then symmetrised).
SYMMETRY_RTOL = 1e-8


def _owned(a: np.ndarray) -> np.ndarray:
    """``a`` itself if it and every array it views are read-only, else a read-only copy."""
    b: np.ndarray | None = a
    while isinstance(b, np.ndarray):
        if b.flags.writeable:
            break
        b = b.base
    else:
        if b is None:
            return a
    a = np.array(a, dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


@runtime_checkable
class Region(Protocol):
    """What a certificate needs of its region: ``Ellipsoid`` and the structured regions of
    ``certify.structured`` (which never form the d x d scale) provide it."""

    @property
    def center(self) -> np.ndarray: ...

    @property
    def radius(self) -> float: ...

    @property
    def dim(self) -> int: ...

    @property
    def l2_radius(self) -> float: ...

    @property
    def proxy_radius(self) -> float: ...

    def norm(self, delta: np.ndarray) -> np.ndarray: ...

    def contains_delta(self, delta: np.ndarray) -> bool | np.ndarray: ...

    def to_ellipsoid(self) -> Ellipsoid:
        """The same set as a dense ``Ellipsoid`` (structured regions refuse above d = 4096)."""
        ...

    # what the memory's pair test (``certify.intersection``, ``certify.pairs``) needs of a region
    @property
    def kind(self) -> str: ...

    @property
    def outer_radius(self) -> float: ...

    @property
    def rounding_length(self) -> int: ...

    def scaled_norms(self, v: np.ndarray) -> tuple[float, float]: ...

    def woodbury_form(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None: ...

    def with_radius(self, radius: float) -> Region: ...

    def recentred(self, center: np.ndarray, radius: float) -> Region: ...


@dataclass(frozen=True, eq=False)
class Ellipsoid:
    """The set ``{center + delta : ||scale^{-1} delta||_2 <= radius}`` (float64 numpy data)."""

    center: np.ndarray
    scale: Scale
    radius: float
    _eig: tuple | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The region owns its data: centre and scale are read-only float64 copies (an array that
        # is already read-only all the way down, e.g. another region's, is shared, not copied), so
        # mutating what the caller passed in changes no region, certificate or memory entry.
        center = _owned(np.asarray(self.center, dtype=np.float64).reshape(-1))
        if not np.all(np.isfinite(center)):
            raise ValueError("center contains NaN or infinite entries")
        object.__setattr__(self, "center", center)
        d = center.shape[0]
        scale = self.scale
        if np.ndim(scale) == 0:
            scale = float(scale)
            if not (np.isfinite(scale) and scale > 0):
                raise ValueError(f"scale must be positive and finite, got {scale}")
        else:
            scale = np.asarray(scale, dtype=np.float64)
            if scale.shape not in ((d,), (d, d)):
                raise ValueError(f"scale has shape {scale.shape}; expected (), ({d},) or ({d}, {d})")
            if not np.all(np.isfinite(scale)):
                raise ValueError("scale contains NaN or infinite entries")
            if scale.ndim == 1:
                if not np.all(scale > 0):
                    raise ValueError(f"a diagonal scale must be positive everywhere (min {scale.min():g})")
                scale = _owned(scale)
            else:
                scale = self._check_matrix(scale)
        object.__setattr__(self, "scale", scale)
        radius = float(self.radius)
        if not (radius >= 0 and np.isfinite(radius)):
            raise ValueError(f"radius must be finite and >= 0, got {radius}")
        object.__setattr__(self, "radius", radius)

    def _check_matrix(self, scale: np.ndarray) -> np.ndarray:
        """A full scale must be symmetric (to SYMMETRY_RTOL relative to its largest entry; then it
        is symmetrised) and positive definite: a non-symmetric or indefinite S describes another
        set than ``radius * eig(S)`` claims (the inscribed-ball radius would over-claim)."""
        asym = float(np.max(np.abs(scale - scale.T)))
        if asym > SYMMETRY_RTOL * float(np.max(np.abs(scale))):
            raise ValueError(
                f"scale must be symmetric (max |S - S^T| = {asym:.3g}, tolerance {SYMMETRY_RTOL:g} relative to max |S|)"
            )
        if asym > 0:
            scale = 0.5 * (scale + scale.T)
        scale = _owned(scale)
        if self._eig is None:
            vals, vecs = np.linalg.eigh(scale)
            eig = (_owned(vals), _owned(vecs))
        else:
            vals, vecs = (_owned(np.asarray(a, dtype=np.float64)) for a in self._eig)
            if vals.shape != (scale.shape[0],) or vecs.shape != scale.shape:
                raise ValueError("_eig does not match the scale's shape")
            eig = (vals, vecs)
        if not (np.all(np.isfinite(eig[0])) and eig[0][0] > 0):
            raise ValueError(f"scale must be positive definite (smallest eigenvalue {eig[0][0]:.3g})")
        object.__setattr__(self, "_eig", eig)
        return scale

    # ------------------------------------------------------------------ spectral data (cached)
    @property
    def dim(self) -> int:
        return self.center.shape[0]

    @property
    def kind(self) -> str:
        """'ball', 'diagonal' or 'full'."""
        if np.ndim(self.scale) == 0:
            return "ball"
        return "diagonal" if np.ndim(self.scale) == 1 else "full"

    @cached_property
    def eigh(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Eigenvalues (ascending) and eigenvectors of the scale (``None`` for ball/diagonal)."""
        if self._eig is not None:
            return self._eig
        if self.kind == "ball":
            return np.full(self.dim, self.scale), None
        if self.kind == "diagonal":
            return np.sort(self.scale), None
        vals, vecs = np.linalg.eigh(self.scale)
        return vals, vecs

    @property
    def semi_axes(self) -> np.ndarray:
        """Semi-axis lengths, ascending: ``radius * eig(scale)``."""
        return self.radius * self.eigh[0]

    @property
    def l2_radius(self) -> float:
        """Radius of the largest l2 ball around the centre inside the region."""
        return float(self.radius * self.eigh[0][0])

    @property
    def proxy_radius(self) -> float:
        """Radius of the l2 ball with the region's volume (ANCER's proxy): r (prod eig)^(1/d)."""
        return float(self.radius * np.exp(np.mean(np.log(self.eigh[0]))))

    @property
    def outer_radius(self) -> float:
        """Radius of the smallest l2 ball around the centre containing the region."""
        return float(self.radius * self.eigh[0][-1])

    # ------------------------------------------------------------------ membership
    def whiten(self, delta: np.ndarray) -> np.ndarray:
        """``scale^{-1} delta`` for a displacement (or a batch of them, shape (..., d))."""
        delta = np.asarray(delta, dtype=np.float64)
        if self.kind == "ball":
            return delta / self.scale
        if self.kind == "diagonal":
            return delta / self.scale
        vals, vecs = self.eigh
        assert vecs is not None  # a full scale always has its eigenvectors
        return ((delta @ vecs) / vals) @ vecs.T

    def norm(self, delta: np.ndarray) -> np.ndarray:
        """The region's own norm ``||scale^{-1} delta||_2`` (the region is norm <= radius)."""
        return np.linalg.norm(self.whiten(delta), axis=-1)

    def _as_vectors(self, a: np.ndarray, name: str) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        if a.size == self.dim:
            return a.reshape(-1)
        if a.ndim >= 2 and a.shape[-1] == self.dim:
            return a
        raise ValueError(f"{name} has shape {a.shape}; the region has dimension {self.dim}")

    def to_ellipsoid(self) -> Ellipsoid:
        """Itself (the dense form every region can give; see :class:`Region`)."""
        return self

    def contains_delta(self, delta: np.ndarray) -> bool | np.ndarray:
        """True iff ``center + delta`` lies in the region (``delta`` of any shape with d entries,
        or a batch of shape (..., d))."""
        return self.norm(self._as_vectors(delta, "delta")) <= self.radius

    def contains_point(self, point: np.ndarray) -> bool | np.ndarray:
        """True iff ``point`` lies in the region."""
        return self.contains_delta(self._as_vectors(point, "point") - self.center)

    def quadratic_form(self) -> np.ndarray:
        """Dense ``Q`` with region ``{y : (y - c)^T Q (y - c) <= 1}``, ``Q = scale^{-2} / radius^2``."""
        if self.radius == 0:
            raise ValueError("a region of radius 0 has no quadratic form")
        vals, vecs = self.eigh
        if vecs is None:
            diag = (
                1.0 / (self.radius * (self.scale if self.kind == "diagonal" else np.full(self.dim, self.scale)))
            ) ** 2
            return np.diag(diag)
        return (vecs / (self.radius * vals) ** 2) @ vecs.T

    def with_radius(self, radius: float) -> Ellipsoid:
        """The same centre and shape with another radius (validated data and caches shared)."""
        radius = float(radius)
        if not (radius >= 0 and np.isfinite(radius)):
            raise ValueError(f"radius must be finite and >= 0, got {radius}")
        new = object.__new__(Ellipsoid)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "radius"})
        object.__setattr__(new, "radius", radius)
        return new

    def as_ball(self, l2_radius: float | None = None) -> Ellipsoid:
        """A ball about the same centre (default: the inscribed ball)."""
        return Ellipsoid(self.center, 1.0, self.l2_radius if l2_radius is None else l2_radius)

    # ------------------------------------------------------------------ added for certify.memory
    @cached_property
    def abs_scale(self) -> np.ndarray:
        """Entrywise ``|scale|`` of a full scale (for rounding bounds of ``scale @ v``)."""
        a = np.abs(self.scale)
        a.setflags(write=False)
        return a

    @cached_property
    def axes(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Principal scales *in coordinate order* and the basis they refer to.

        ``(values, None)``: the scale is ``diag(values)`` in the standard basis (ball: all entries
        equal; diagonal: the scale vector itself, not sorted).  ``(values, vecs)``: the scale is
        ``vecs @ diag(values) @ vecs.T`` (the cached eigendecomposition).  Unlike ``eigh``, the
        values of a diagonal scale stay attached to their coordinates."""
        if self.kind == "ball":
            return np.full(self.dim, self.scale), None
        if self.kind == "diagonal":
            return np.asarray(self.scale), None
        return self.eigh

    @property
    def rounding_length(self) -> int:
        """The inner length of the products behind ``scaled_norms`` (its rounding bound is gamma of it)."""
        return self.dim

    def scaled_norms(self, v: np.ndarray) -> tuple[float, float]:
        """``(fl ||S v||, fl || |S| |v| ||)`` from the stored scale, never an eigendecomposition: the terms
        of the rounding bound of ``certify.intersection.separation_gap``."""
        if self.kind == "ball":
            n = abs(float(self.scale)) * float(np.linalg.norm(v))
            return n, n
        if self.kind == "diagonal":
            n = float(np.linalg.norm(self.scale * v))
            return n, n
        return float(np.linalg.norm(self.scale @ v)), float(np.linalg.norm(self.abs_scale @ np.abs(v)))

    def woodbury_form(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(D, V, mu)`` with covariance ``S^2 = diag(D) + V diag(mu) V^T`` for a ball or a diagonal scale
        (V with no columns); None for a full scale (``certify.pairs``)."""
        if self.kind == "full":
            return None
        vals = self.axes[0]
        return vals * vals, np.zeros((self.dim, 0)), np.zeros(0)

    def recentred(self, center: np.ndarray, radius: float) -> Ellipsoid:
        """The same shape about another centre with another radius (the memory's adopted regions)."""
        return Ellipsoid(center, self.scale, radius, _eig=self.eigh if self.kind == "full" else None)

    def apply_scale(self, v: np.ndarray) -> np.ndarray:
        """``scale @ v`` for a vector (or a batch of shape (..., d))."""
        v = np.asarray(v, dtype=np.float64)
        vals, vecs = self.axes
        if vecs is None:
            return v * vals
        return ((v @ vecs) * vals) @ vecs.T

    def support(self, direction: np.ndarray) -> float:
        """Support function ``max_{y in region} <direction, y> = <direction, c> + radius ||scale v||``."""
        v = np.asarray(direction, dtype=np.float64).reshape(-1)
        return float(v @ self.center + self.radius * np.linalg.norm(self.apply_scale(v)))
