"""Kronecker-structured SPD noise: the scale S = s C_1 (x) ... (x) C_m over the axes of an input of shape
(n_1, ..., n_m), as a manifold (``KroneckerSPD``, geometry) and a noise map (``KroneckerNoise``, what a point means).

Point representation
    One float64 tensor per point, the block-diagonal matrix ``blockdiag(s, C_1, ..., C_m)`` of size
    N = 1 + n_1 + ... + n_m (off-block entries zero; a batch is (B, N, N)): s > 0 is a 1 x 1 block, each C_i an SPD
    (n_i, n_i) block with det C_i = 1. A tensor (not a tuple) so that every driver, batching rule and backend that
    moves matrix points moves these; N is small (58 for a 1x28x28 input, 452 for 3x224x224) while S is d x d.
    The noise is S z on the row-major flattening of the input (last axis fastest), covariance
    S^2 = s^2 (x)_i C_i^2: the convention of ``certify.KroneckerGaussian`` (the library parameterises the noise scale).

The scale ambiguity
    (a C_1) (x) (C_2 / a) = C_1 (x) C_2: factor tuples over-parameterise S by m - 1 scales. Normalising every factor
    to det C_i = 1 and pulling the common scale out as s makes (s, C_1, ..., C_m) -> S one-to-one onto the Kronecker-
    structured SPD matrices (s = det(S)^(1/d), then each C_i is fixed up to a scale, which det 1 fixes). This slice
    is a normalisation, not a quotient: it is exact for the metrics below, for which it is totally geodesic.

Metric (each factor: the user's SPD metric, affine-invariant by default)
    With the affine-invariant metric of SPD(d) on S, a tangent dS = (ds/s) S + sum_i s (C_1 (x) .. dC_i .. (x) C_m)
    whitens to (ds/s) I_d + sum_i I (x) .. W_i .. (x) I with W_i = C_i^-1/2 dC_i C_i^-1/2 and tr W_i = 0 (det 1).
    Since tr(A (x) B) = tr A tr B the cross terms vanish and (Van Loan 2000, "The ubiquitous Kronecker product")

        ||dS||_S^2 = d (ds / s)^2 + sum_i (d / n_i) ||W_i||_F^2,

    d times the scalar affine-invariant metric on s and (d / n_i) times the affine-invariant metric on each unit-det
    factor. The terms I (x) W_i (x) I commute, so expm of their sum is the Kronecker product of the factors'
    exponentials: Exp_S = s e^(u/s) (x)_i Exp_{C_i}(U_i), and Exp_{C_i} keeps det 1 when tr W_i = 0. The Kronecker
    matrices are a totally geodesic submanifold of SPD(d) and this product metric is the one it inherits (Pennec,
    Fillard, Ayache 2006 for the affine-invariant exp): distances are the SPD(d) distances of the Kronecker products,
    and a step of length r here is a step of length r for full-C RDDRS. The same holds for the log-Euclidean
    metric (Arsigny et al. 2006): log S = log s I + sum_i I (x) log C_i (x) I spans a linear subspace of the symmetric
    matrices. Metrics: 'affine-invariant', 'log-euclidean', their subclasses (e.g. a rescaled one) and the Geomstats
    metrics that map to them. Bures-Wasserstein is refused: scaling is not one of its isometries
    (d(aX, aY) = sqrt(a) d(X, Y)), so the common scale can neither be quotiented out nor split off as a product.

Noise map (``KroneckerNoise``; nothing of size d x d)
    apply: one (n_i x n_i) product per axis, O(d sum_i n_i) per draw; smallest scale s prod_i lambda_min(C_i) and
    mean log scale log s + sum_i mean log eig C_i, both exact (the eigenvalues of a Kronecker product are the
    products of the factors'); the floor clamps each factor's log-spectrum to the same relative window of its range,
    chosen so that the product's extremes land on the bounds (``KroneckerNoise.project_floor``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from .base import F64, Manifold, f64_pair
from .eigenframe import EigenFrame
from .metrics import AffineInvariant, LogEuclidean, SPDMetric, as_metric
from .noise_map import NoiseMap
from .spd import SPD
from .spectral import eigh, log_volume_spd, min_eigenvalue_spd, sym

#: tolerance of the unit-determinant check (mean log eigenvalue of a factor), and of a separable theta's log
UNIT_DET_TOL = 1e-9


class KroneckerLayout:
    """Where the scale and the factors sit in a point ``blockdiag(s, C_1, ..., C_m)`` for an input of ``shape``.

    Parameters
    ----------
    shape : sequence of int
        The input's shape (n_1, ..., n_m), e.g. (channels, height, width); every n_i >= 1.
    """

    def __init__(self, shape: Sequence[int]):
        if isinstance(shape, (int, torch.Tensor)) or not isinstance(shape, Sequence) or len(shape) == 0:
            raise ValueError(f"shape must be a non-empty sequence of positive ints (the input's axes), got {shape!r}")
        dims = []
        for i, n in enumerate(shape):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ValueError(f"shape[{i}] must be a positive int, got {n!r}")
            dims.append(int(n))
        self.shape: tuple[int, ...] = tuple(dims)
        self.dim = math.prod(self.shape)
        self.size = 1 + sum(self.shape)
        self.offsets = tuple(1 + sum(self.shape[:i]) for i in range(len(self.shape)))

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """s, batch shape."""
        return x[..., 0, 0]

    def factor(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The i-th factor block (a view), batch + (n_i, n_i)."""
        o, n = self.offsets[i], self.shape[i]
        return x[..., o : o + n, o : o + n]

    def factors(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.factor(x, i) for i in range(len(self.shape))]

    def pack(self, s: torch.Tensor, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        """``blockdiag(s, C_1, ..., C_m)`` (batch + (N, N)) from s (batch) and the factors (batch + (n_i, n_i))."""
        batch = tuple(s.shape)
        out = torch.zeros(batch + (self.size, self.size), dtype=s.dtype, device=s.device)
        out[..., 0, 0] = s
        for i, c in enumerate(factors):
            o, n = self.offsets[i], self.shape[i]
            out[..., o : o + n, o : o + n] = c
        return out

    def block_mask(self, device: Any = None) -> torch.Tensor:
        """Boolean (N, N): True on the blocks."""
        mask = torch.zeros(self.size, self.size, dtype=torch.bool, device=device)
        mask[0, 0] = True
        for o, n in zip(self.offsets, self.shape):
            mask[o : o + n, o : o + n] = True
        return mask

    def normalised(self, s: torch.Tensor, factors: Sequence[torch.Tensor]) -> torch.Tensor:
        """The point of the product ``s (x)_i factors[i]`` for any SPD factors: each factor divided by
        det^(1/n_i), the scales multiplied into s."""
        out, scale = [], s.to(F64).log()
        for c in factors:
            c = sym(c.to(F64))
            m = _mean_log_det(c)
            out.append(c * torch.exp(-m)[..., None, None])
            scale = scale + m
        return self.pack(scale.exp(), out)


def _mean_log_det(c: torch.Tensor) -> torch.Tensor:
    """(1/n) log det of SPD ``c`` by Cholesky (no LU: batched getrf hangs at some sizes; manifolds/metrics.py)."""
    chol, info = torch.linalg.cholesky_ex(c)
    if bool((info != 0).any()):
        raise ValueError("a Kronecker factor is not numerically positive definite (Cholesky failed)")
    return 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().mean(-1)


def _unit_det(c: torch.Tensor) -> torch.Tensor:
    """``c`` divided by det(c)^(1/n) (removes the rounding drift of a move along the unit-det slice)."""
    return c * torch.exp(-_mean_log_det(c))[..., None, None]


def _inverse(c: torch.Tensor) -> torch.Tensor:
    lam, vec = eigh(c)
    return sym((vec / lam.unsqueeze(-2)) @ vec.transpose(-1, -2))


def _check_metric(metric: SPDMetric) -> SPDMetric:
    if not isinstance(metric, (AffineInvariant, LogEuclidean)):
        raise ValueError(
            f"metric {metric!r}: KroneckerSPD needs a metric invariant under scaling X -> aX, for which the unit-"
            "determinant factors are totally geodesic: 'affine-invariant', 'log-euclidean' or a subclass of "
            "manifolds.AffineInvariant / manifolds.LogEuclidean (Bures-Wasserstein scales distances by sqrt(a), so "
            "the scale shared between factors cannot be split off)"
        )
    return metric


class KroneckerSPD(Manifold):
    """Kronecker-structured SPD scales s C_1 (x) ... (x) C_m (det C_i = 1) over the axes of an input of ``shape``,
    with the metric SPD(d) induces on them (module docstring): R_+ x SSPD(n_1) x ... x SSPD(n_m), weighted d on
    the scale and d / n_i on factor i, each factor under ``metric``. Points: ``blockdiag(s, C_1, ..., C_m)``,
    (N, N) or (B, N, N), N = 1 + sum_i n_i (``point_shape``); ``dim`` is the input's d = prod_i n_i.

    Parameters
    ----------
    shape : sequence of int
        The input's shape (e.g. (1, 28, 28) or (3, 32, 32)), flattened row-major like ``certify.KroneckerGaussian``.
    metric : str, SPDMetric or Geomstats metric, default 'affine-invariant'
        The metric of every factor: 'affine-invariant' or 'log-euclidean' (or a subclass / Geomstats equivalent).
    log_eig_range : float, default 1.0
        ``random_point``: log s and each factor's log-eigenvalues (before normalising) uniform in this range.
    """

    point_ndim = 2

    def __init__(self, shape: Sequence[int], metric: Any = "affine-invariant", log_eig_range: float = 1.0):
        layout = KroneckerLayout(shape)
        super().__init__(layout.dim)
        self.layout = layout
        self.shape = layout.shape
        self.metric: SPDMetric = _check_metric(as_metric(metric))
        self.metric_name = self.metric.name or type(self.metric).__name__
        self.spaces = tuple(SPD(n, self.metric) for n in self.shape)
        self.weights = tuple(self.dim / n for n in self.shape)  # d / n_i (module docstring)
        self.log_eig_range = float(log_eig_range)

    @property
    def point_shape(self) -> tuple[int, ...]:
        return (self.layout.size, self.layout.size)

    def default_noise(self) -> KroneckerNoise:
        """The noise map of these points (``manifolds.noise_for`` returns it)."""
        return KroneckerNoise(self.shape)

    # ---- eigenframe (per-factor coordinates for the Riemannian step rules) ---------------------
    def frame_type(self) -> type[EigenFrame] | None:
        """``KroneckerFrame`` bound to this manifold (the factors' eigenframes side by side), or None when a factor's
        metric has no eigenframe (``SPD.frame_type``) or this object overrides an operation the frame re-implements."""
        if any(getattr(type(self), n) is not getattr(KroneckerSPD, n) or n in vars(self) for n in _FRAME_OPS):
            return None
        kinds = [space.frame_type() for space in self.spaces]
        if any(k is None for k in kinds) or len(set(kinds)) != 1:
            return None
        bound = getattr(self, "_frame_class", None)
        if bound is None:
            name = kinds[0].metric_name  # type: ignore[union-attr]
            attrs = {"manifold": self, "factor_frame": kinds[0], "metric_name": f"Kronecker ({name} per factor)"}
            bound = type("KroneckerFrame", (KroneckerFrame,), attrs)
            self._frame_class = bound
        return bound

    # ---- tangent vectors --------------------------------------------------------------------
    def _normal(self, i: int, c: torch.Tensor) -> torch.Tensor:
        """The metric's normal to the unit-det slice at factor ``c``: the Riemannian gradient of log det (C^-1)."""
        return self.spaces[i].egrad2rgrad(c, _inverse(c))

    def _project_factor(self, i: int, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection of symmetric ``u`` onto T_c SSPD(n_i) = {tr(C^-1 U) = 0}: U - <U, N> / <N, N> N."""
        u = sym(u)
        inv = _inverse(c)
        normal = self._normal(i, c)
        coef = (inv * u).sum((-2, -1)) / (inv * normal).sum((-2, -1))  # <U, N>_C = tr(C^-1 U) by N's definition
        return u - coef[..., None, None] * normal

    def proj(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The tangent vector at ``x`` nearest to ``u``: off-block entries dropped, blocks symmetrised, each factor's
        component normal to its unit-det slice removed."""
        x, u = f64_pair(x, u)
        lay = self.layout
        parts = [self._project_factor(i, c, lay.factor(u, i)) for i, c in enumerate(lay.factors(x))]
        return lay.pack(lay.scale(u), parts)

    # ---- metric -----------------------------------------------------------------------------
    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        same = v is u
        x, u = f64_pair(x, u)
        v = u if same else v.to(F64)
        lay, s = self.layout, self.layout.scale(x)
        out = self.dim * lay.scale(u) * lay.scale(v) / s.square()
        for i, c in enumerate(lay.factors(x)):
            ui = lay.factor(u, i)
            vi = ui if same else lay.factor(v, i)
            out = out + self.weights[i] * self.spaces[i].inner(c, ui, vi)
        return out

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x, g = f64_pair(x, g)
        lay, s = self.layout, self.layout.scale(x)
        parts = [
            self._project_factor(i, c, self.spaces[i].egrad2rgrad(c, lay.factor(g, i)) / self.weights[i])
            for i, c in enumerate(lay.factors(x))
        ]
        return lay.pack(s.square() * lay.scale(g) / self.dim, parts)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        u = self.proj(x, u)
        x = x.to(F64)
        lay, s = self.layout, self.layout.scale(x)
        parts = [_unit_det(self.spaces[i].exp(c, lay.factor(u, i))) for i, c in enumerate(lay.factors(x))]
        return lay.pack(s * torch.exp(lay.scale(u) / s), parts)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Second order: s + u + u^2 / (2 s) (> 0) and each factor's metric retraction, put back on det 1."""
        u = self.proj(x, u)
        x = x.to(F64)
        lay, s = self.layout, self.layout.scale(x)
        us = lay.scale(u)
        parts = [_unit_det(self.spaces[i].retr(c, lay.factor(u, i))) for i, c in enumerate(lay.factors(x))]
        return lay.pack(s + us + 0.5 * us.square() / s, parts)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = f64_pair(x, y)
        lay, s = self.layout, self.layout.scale(x)
        parts = [
            self._project_factor(i, c, self.spaces[i].log(c, lay.factor(y, i))) for i, c in enumerate(lay.factors(x))
        ]
        return lay.pack(s * torch.log(lay.scale(y) / s), parts)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """sqrt(d log(s_y / s_x)^2 + sum_i (d / n_i) dist_i^2): the SPD(d) distance of the Kronecker products."""
        x, y = f64_pair(x, y)
        lay = self.layout
        sq = self.dim * torch.log(lay.scale(y) / lay.scale(x)).square()
        for i, (cx, cy) in enumerate(zip(lay.factors(x), lay.factors(y))):
            sq = sq + self.weights[i] * self.spaces[i].dist(cx, cy).square()
        return sq.clamp_min(0).sqrt()

    def transp(self, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Projection onto the tangent space at ``y`` (the unit-det slices are not open sets: T_y differs from T_x)."""
        return self.proj(y, u)

    # ---- components (per-factor optimiser state) --------------------------------------------
    @property
    def components(self) -> int:
        """How many parts a tangent vector has for a per-part optimiser state: the scale and one per factor."""
        return 1 + len(self.shape)

    def component_inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The metric's inner product split by part: batch + (components,), summing to ``inner``."""
        same = v is u
        x, u = f64_pair(x, u)
        v = u if same else v.to(F64)
        lay, s = self.layout, self.layout.scale(x)
        out = [self.dim * lay.scale(u) * lay.scale(v) / s.square()]
        for i, c in enumerate(lay.factors(x)):
            ui = lay.factor(u, i)
            out.append(self.weights[i] * self.spaces[i].inner(c, ui, ui if same else lay.factor(v, i)))
        return torch.stack(out, -1)

    def scale_components(self, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``u`` with part k multiplied by c[..., k] (c: batch + (components,))."""
        lay = self.layout
        c = c.to(u.dtype)
        parts = [lay.factor(u, i) * c[..., i + 1, None, None] for i in range(len(self.shape))]
        return lay.pack(lay.scale(u) * c[..., 0], parts)

    # ---- points -------------------------------------------------------------------------------
    def from_factors(self, factors: Sequence[Any], scale: Any = 1.0) -> torch.Tensor:
        """The point of the scale ``scale * factors[0] (x) ... (x) factors[-1]`` for any SPD factors (each (n_i, n_i)
        or batch + (n_i, n_i)); the factors' determinants are moved into s."""
        if len(factors) != len(self.shape):
            raise ValueError(f"factors: {len(factors)} given for an input of shape {self.shape}")
        mats = [torch.as_tensor(f, dtype=F64) for f in factors]
        for i, (f, n) in enumerate(zip(mats, self.shape)):
            if f.shape[-2:] != (n, n):
                raise ValueError(f"factors[{i}] has shape {tuple(f.shape)}; axis {i} needs ({n}, {n})")
        batch = torch.broadcast_shapes(*(f.shape[:-2] for f in mats))
        s = torch.as_tensor(scale, dtype=F64).expand(batch)
        point = self.layout.normalised(s, [f.expand(batch + f.shape[-2:]) for f in mats])
        self.check_point(point)
        return point

    def isotropic(self, sigma: Any) -> torch.Tensor:
        """The point of sigma I_d (a float or a batch of sigmas): s = sigma, every factor I."""
        s = torch.as_tensor(sigma, dtype=F64)
        eye = [torch.eye(n, dtype=F64).expand(tuple(s.shape) + (n, n)) for n in self.shape]
        return self.layout.pack(s, eye)

    def random_point(self, *batch_shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r = self.log_eig_range
        s = ((torch.rand(tuple(batch_shape), generator=generator, dtype=F64) * 2 - 1) * r).exp()
        factors = [_unit_det(space.random_point(*batch_shape, generator=generator)) for space in self.spaces]
        return self.layout.pack(s, factors)

    def check_values(self, x: torch.Tensor) -> None:
        lay = self.layout
        scale = x.abs().amax((-2, -1))
        off = (x * ~lay.block_mask(x.device)).abs().amax((-2, -1))
        if bool((off > 1e-12 * scale).any()):
            raise ValueError(
                f"entries outside the blocks blockdiag(s, C_1, ..., C_m) must be zero (max {float(off.max()):.3g})"
            )
        s = lay.scale(x)
        if not bool((s > 0).all()):
            raise ValueError(f"the scale s (entry [0, 0]) must be positive, got min {float(s.min()):.3g}")
        for i, c in enumerate(lay.factors(x)):
            try:
                self.spaces[i].check_values(c)
            except ValueError as err:
                raise ValueError(f"factor {i} (axis of size {self.shape[i]}): {err}") from None
            m = torch.linalg.eigvalsh(sym(c)).log().mean(-1).abs()
            if bool((m > UNIT_DET_TOL).any()):
                raise ValueError(
                    f"factor {i} must have determinant 1 (|mean log eigenvalue| = {float(m.max()):.3g}); build points "
                    "with from_factors, which moves the factors' scales into s"
                )

    def __repr__(self) -> str:
        return f"KroneckerSPD(shape={self.shape}, metric={self.metric!r})"


#: what ``KroneckerFrame`` re-implements; a subclass of ``KroneckerSPD`` overriding any of them has no frame
_FRAME_OPS = ("inner", "norm", "egrad2rgrad", "exp", "retr", "step_limit", "injectivity_radius", "proj")


class KroneckerFrame(EigenFrame):
    """A batch of ``KroneckerSPD`` points (B, N, N) with each factor's eigenframe (``manifolds.eigenframe``: the
    affine-invariant or log-Euclidean coordinates of the factor's metric), so that the Riemannian step rules step
    factor by factor: per-direction Adam becomes per-direction within each factor (its eigenvalue directions and
    rotations) plus one coordinate for the scale, the per-factor counterpart of full C's eigenframe Adam.

    Coordinates are block diagonal like the points, w = blockdiag(u_s / s, W_1, ..., W_m) with W_i factor i's own
    coordinates of U_i (trace-free: the unit-det slice): each factor is stepped as if it were its own parameter on
    its own SPD(n_i), so an Adam step of lr moves each factor's log-eigenvalues (and log s) by about lr, as full-C
    Adam moves each eigenvalue of C. These coordinates are orthonormal per factor, not for the product metric, whose
    norm weighs them (d on the scale, d / n_i on factor i; ``norm``): ``clip`` measures that norm, so
    ``max_step_norm`` means what it means for ``KroneckerSPD.step`` and full C. ``vec`` = blockdiag(1, V_1, ...,
    V_m): carrying coordinates and second moments between frames (``carry``, ``carry_second_moment``) rotates each
    factor's block by its own rotation. A step whose per-coordinate scaling left a factor's block with a trace
    (Adam's preconditioner) is projected back onto the tangent space before it is clipped and taken. Built by
    ``KroneckerSPD.frame_type()`` (a class bound to the manifold)."""

    manifold: ClassVar[KroneckerSPD]
    factor_frame: ClassVar[type[EigenFrame]]

    def __init__(self, point: torch.Tensor, scale: torch.Tensor, frames: Sequence[EigenFrame]):
        lay = self.manifold.layout
        self.scale, self.frames = scale, list(frames)
        lam = torch.cat([scale[..., None]] + [f.lam for f in self.frames], -1)
        vec = lay.pack(torch.ones_like(scale), [f.vec for f in self.frames])
        super().__init__(point, lam, vec)

    @classmethod
    def of(cls, point: torch.Tensor) -> KroneckerFrame:
        size = cls.manifold.layout.size
        if point.ndim != 3 or tuple(point.shape[-2:]) != (size, size):
            raise ValueError(
                f"point must be a batch of KroneckerSPD points (B, {size}, {size}), got {tuple(point.shape)}"
            )
        lay = cls.manifold.layout
        point = point.detach().to(F64)
        frames = [cls.factor_frame.of(c) for c in lay.factors(point)]
        scale = lay.scale(point)
        return cls(lay.pack(scale, [f.point for f in frames]), scale, frames)

    def __getitem__(self, index: slice) -> KroneckerFrame:
        return type(self)(self.point[index], self.scale[index], [f[index] for f in self.frames])

    def _rebuilt(self, scale: torch.Tensor, frames: Sequence[EigenFrame]) -> KroneckerFrame:
        return type(self)(self.manifold.layout.pack(scale, [f.point for f in frames]), scale, frames)

    def tangential(self, w: torch.Tensor) -> torch.Tensor:
        """Coordinates ``w`` projected onto the tangent space: off-block entries dropped, blocks symmetrised, each
        factor's block made trace-free (its normal, the factor itself, has coordinates I in every frame)."""
        lay = self.manifold.layout
        return lay.pack(lay.scale(w), [_trace_free(sym(lay.factor(w, i))) for i in range(len(self.frames))])

    def norm(self, w: torch.Tensor) -> torch.Tensor:
        """The product metric's norm of the tangent vector with coordinates ``w``: sqrt(d w_s^2 + sum_i (d / n_i)
        ||W_i||_F^2)."""
        lay, m = self.manifold.layout, self.manifold
        sq = m.dim * lay.scale(w).square()
        for i in range(len(self.frames)):
            sq = sq + m.weights[i] * lay.factor(w, i).square().sum((-2, -1))
        return sq.clamp_min(0).sqrt()

    def whiten_gradient(self, egrad: torch.Tensor) -> torch.Tensor:
        """Coordinates of the Riemannian gradient (``KroneckerSPD.egrad2rgrad``): s g_s / d and, per factor, its
        frame's whitened gradient divided by d / n_i, made trace-free."""
        lay, m = self.manifold.layout, self.manifold
        egrad = egrad.to(F64)
        parts = [_trace_free(f.whiten_gradient(lay.factor(egrad, i))) / m.weights[i] for i, f in enumerate(self.frames)]
        return lay.pack(self.scale * lay.scale(egrad) / m.dim, parts)

    def coordinates(self, u: torch.Tensor) -> torch.Tensor:
        lay = self.manifold.layout
        u = u.to(F64)
        parts = [_trace_free(f.coordinates(lay.factor(u, i))) for i, f in enumerate(self.frames)]
        return lay.pack(lay.scale(u) / self.scale, parts)

    def tangent(self, w: torch.Tensor) -> torch.Tensor:
        lay = self.manifold.layout
        w = self.tangential(w.to(F64))
        parts = [f.tangent(lay.factor(w, i)) for i, f in enumerate(self.frames)]
        return lay.pack(lay.scale(w) * self.scale, parts)

    def clip(self, w: torch.Tensor, max_norm: float | None) -> torch.Tensor:
        """Tangential ``w`` with its metric norm (``norm``) clipped at ``max_norm``."""
        w = self.tangential(w.to(F64))
        if max_norm is None:
            return w
        n = self.norm(w).clamp_min(torch.finfo(F64).tiny)
        return w * (float(max_norm) / n).clamp(max=1.0)[..., None, None]

    def move(self, w: torch.Tensor, method: str = "retr") -> torch.Tensor:
        """Each factor moved by its frame (the metric's exp or retraction, put back on det 1) and the scale by
        s e^t (``"exp"``) or s (1 + t + t^2 / 2) (``"retr"``), t = w_s: ``KroneckerSPD.exp`` / ``retr``."""
        if method not in ("exp", "retr"):
            raise ValueError(f"method must be 'exp' or 'retr', got {method!r}")
        lay = self.manifold.layout
        w = self.tangential(w.to(F64))
        t = lay.scale(w)
        s = self.scale * (torch.exp(t) if method == "exp" else 1 + t + 0.5 * t.square())
        parts = [_unit_det(f.move(lay.factor(w, i), method)) for i, f in enumerate(self.frames)]
        return lay.pack(s, parts)

    def align_ties(self, w: torch.Tensor, rtol: float = 1e-6) -> KroneckerFrame:
        """Each factor's ``align_ties`` with its block of ``w``."""
        lay = self.manifold.layout
        frames = [f.align_ties(lay.factor(w, i), rtol) for i, f in enumerate(self.frames)]
        if all(a is b for a, b in zip(frames, self.frames)):
            return self
        return self._rebuilt(self.scale, frames)

    def clamp(self, floor: torch.Tensor | float, ceiling: torch.Tensor | float | None = None) -> EigenFrame:
        raise NotImplementedError("the Kronecker floor is KroneckerNoise.project_floor (it clamps the factors jointly)")

    def log_volume(self, point: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("use KroneckerNoise.log_volume")

    def min_eigenvalue(self, point: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
        raise NotImplementedError("use KroneckerNoise.min_eigenvalue")


def _trace_free(w: torch.Tensor) -> torch.Tensor:
    n = w.shape[-1]
    tr = torch.diagonal(w, dim1=-2, dim2=-1).sum(-1)
    return w - (tr / n)[..., None, None] * torch.eye(n, dtype=w.dtype, device=w.device)


class KroneckerNoise(NoiseMap):
    """eps = s (C_1 (x) ... (x) C_m) z for a point ``blockdiag(s, C_1, ..., C_m)`` of ``KroneckerSPD(shape)``:
    covariance s^2 (x)_i C_i^2, ``certify.KroneckerGaussian`` for one point. Nothing of size d x d is formed.

    Parameters
    ----------
    shape : sequence of int
        The input's shape, as for ``KroneckerSPD``.
    """

    point_ndim = 2

    def __init__(self, shape: Sequence[int]):
        layout = KroneckerLayout(shape)
        super().__init__(layout.dim)
        self.layout = layout
        self.shape = layout.shape

    def factors(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(s, [C_1, ..., C_m]) of a point (views)."""
        return self.layout.scale(x), self.layout.factors(x)

    def apply(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """s (x)_i C_i applied to rows z (batch + (n, d)): one (n_i x n_i) product along each input axis, no copy of
        the rows between axes (axis i is the middle of a (P, n_i, Q) view, P and Q the sizes before and after it);
        1 x 1 factors join the scale."""
        batch = tuple(x.shape[:-2])
        lead = tuple(z.shape[:-1])  # batch + (n,)
        xz = x.to(z.dtype)
        s = self.layout.scale(xz)
        t = z
        for i, c in enumerate(self.layout.factors(xz)):
            n_i = self.shape[i]
            if n_i == 1:
                s = s * c[..., 0, 0]
                continue
            before, after = math.prod(self.shape[:i]), math.prod(self.shape[i + 1 :])
            c = c.reshape(batch + (1,) * (len(lead) - len(batch)) + (n_i, n_i))
            if after == 1:  # the last axis: rows (before, n_i) times C^T
                t = (t.reshape(lead + (before, n_i)) @ c.transpose(-1, -2)).reshape(z.shape)
            else:  # C times the (n_i, after) slices
                t = (c.unsqueeze(-3) @ t.reshape(lead + (before, n_i, after))).reshape(z.shape)
        return t * s.reshape(batch + (1,) * (z.ndim - len(batch)))

    def min_eigenvalue(self, x: torch.Tensor) -> torch.Tensor:
        """Exact: s prod_i lambda_min(C_i) (the eigenvalues of a Kronecker product are the products of the
        factors'; Van Loan 2000, Sec. 2)."""
        x = x.to(F64)
        out = self.layout.scale(x) * 1.0
        for c in self.layout.factors(x):
            out = out * min_eigenvalue_spd(c)
        return out

    def log_volume(self, x: torch.Tensor) -> torch.Tensor:
        """(1/d) log det S = log s + sum_i (1/n_i) log det C_i (log det of (x)_i C_i = sum_i (d / n_i) log det C_i;
        Van Loan 2000, Sec. 2)."""
        x = x.to(F64)
        out = self.layout.scale(x).log()
        for c in self.layout.factors(x):
            out = out + log_volume_spd(c)
        return out

    def project_floor(
        self, x: torch.Tensor, lambda_min: torch.Tensor | float, lambda_max: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """Every eigenvalue of S in [lambda_min, lambda_max], factors' eigenvectors kept.

        In logs the spectrum of S spans [a, b] = [log s + sum_i lo_i, log s + sum_i hi_i] (lo_i, hi_i: factor i's
        extreme log-eigenvalues, spread r_i = hi_i - lo_i, R = sum_i r_i). Its target is [A, B] = [clamp(a), clamp(b)]
        into [log lambda_min, log lambda_max]. Each factor's log-eigenvalues are clamped to the same relative window
        of its own range, lo_i + r_i [(A - a) / R, 1 - (b - B) / R]: the product's extremes become exactly A and B
        (one factor: the eigenvalue clamp of ``MatrixNoise``). With R = 0 (every factor isotropic) s moves instead.
        The clamped factors are put back on det 1, their scales moved into s. The identity when already inside.
        """
        x = x.to(F64)
        lay = self.layout
        batch = tuple(x.shape[:-2])
        lo_b = torch.as_tensor(lambda_min, dtype=F64, device=x.device).log().expand(batch)
        hi_b = (
            torch.full(batch, math.inf, dtype=F64, device=x.device)
            if lambda_max is None
            else torch.as_tensor(lambda_max, dtype=F64, device=x.device).log().expand(batch)
        )
        mu = lay.scale(x).log()
        decs = [eigh(c) for c in lay.factors(x)]
        logs = [lam.log() for lam, _ in decs]
        lo = [ell[..., 0] for ell in logs]
        hi = [ell[..., -1] for ell in logs]
        a, b = mu + torch.stack(lo).sum(0), mu + torch.stack(hi).sum(0)
        inside = (a >= lo_b) & (b <= hi_b)
        if bool(inside.all()):
            return x
        big_a = torch.minimum(torch.maximum(a, lo_b), hi_b)
        big_b = torch.minimum(torch.maximum(b, lo_b), hi_b)
        spread = b - a
        flat = spread <= 0
        safe = torch.where(flat, torch.ones_like(spread), spread)
        t_lo = torch.where(flat, torch.zeros_like(spread), (big_a - a) / safe)
        t_hi = torch.where(flat, torch.ones_like(spread), 1 - (b - big_b) / safe)
        new_mu = torch.where(flat, mu + (big_a - a), mu)
        parts = []
        for ell, low, h, (_, vec) in zip(logs, lo, hi, decs):
            r = h - low
            p, q = low + r * t_lo, low + r * t_hi
            e = torch.minimum(torch.maximum(ell, p[..., None]), q[..., None])
            mean = e.mean(-1)
            new_mu = new_mu + mean
            lam = torch.exp(e - mean[..., None])
            parts.append(sym((vec * lam.unsqueeze(-2)) @ vec.transpose(-1, -2)))
        out = lay.pack(new_mu.exp(), parts)
        return torch.where(inside[..., None, None], x, out)

    def point_noise(self, x: torch.Tensor) -> Any:
        from certify import KroneckerGaussian

        s, factors = self.factors(x.to(F64))
        return KroneckerGaussian([float(s) * factors[0], *factors[1:]])

    def from_scales(self, theta: torch.Tensor) -> torch.Tensor:
        """The point of diag(theta) when theta (B, d) is a Kronecker product of per-axis scales (log theta additively
        separable over the input's axes, e.g. the constant sigma_x* of a cold start); otherwise a ValueError (an
        axis-aligned ANCER Theta is in general not one)."""
        theta = theta.to(F64)
        if theta.shape[-1] != self.dim or not bool((theta > 0).all()):
            raise ValueError(
                f"theta must be positive with {self.dim} entries per point, got shape {tuple(theta.shape)}"
            )
        batch = tuple(theta.shape[:-1])
        logs = theta.log().reshape(batch + self.shape)
        m = len(self.shape)
        axes = tuple(range(len(batch), len(batch) + m))
        mu = logs.mean(axes)
        rebuilt = mu.reshape(batch + (1,) * m).expand(logs.shape)
        per_axis = []
        for i in range(m):
            others = tuple(a for a in axes if a != axes[i])
            f = logs.mean(others) - mu[..., None] if others else logs - mu[..., None]
            per_axis.append(f)
            view = [1] * m
            view[i] = self.shape[i]
            rebuilt = rebuilt + f.reshape(batch + tuple(view))
        err = float((rebuilt - logs).abs().max()) if logs.numel() else 0.0
        if err > UNIT_DET_TOL * max(1.0, float(logs.abs().max())):
            raise ValueError(
                f"theta is not a Kronecker product of per-axis scales over the shape {self.shape} (log theta is not "
                f"separable: residual {err:.3g}); start the Kronecker structure from an isotropic sigma_x* instead"
            )
        return self.layout.pack(mu.exp(), [torch.diag_embed(f.exp()) for f in per_axis])

    def __repr__(self) -> str:
        return f"KroneckerNoise(shape={self.shape})"
