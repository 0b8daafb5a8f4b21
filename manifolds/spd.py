"""Full SPD noise matrices C (RDDRS): the manifold SPD(dim) equipped with a metric object.

``SPD`` owns what every metric shares (shapes, float64 casting, random points, the point check); the metric
(``manifolds.metrics``: one small class each for affine-invariant, log-Euclidean, Bures-Wasserstein, or any
Geomstats metric) owns inner, egrad2rgrad, exp, log, retr, dist and the injectivity radius. The noise a point
stands for (C z, its floor and spectral terms) is ``manifolds.MatrixNoise``.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import F64, Manifold
from .eigenframe import AffineInvariantFrame, BuresWassersteinFrame, EigenFrame, LogEuclideanFrame
from .metrics import AffineInvariant, BuresWasserstein, LogEuclidean, SPDMetric, as_metric
from .spectral import sym


def random_orthogonal(*shape: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Haar-distributed orthogonal matrices: eigenvectors of a GOE matrix (Mehta 2004, 3.1)."""
    a = torch.randn(*shape, dim, dim, generator=generator, dtype=F64)
    return torch.linalg.eigh(a + a.transpose(-1, -2))[1]


def _f64(*ts: torch.Tensor) -> list[torch.Tensor]:
    """float64 tensors broadcast to one shape (no copy when they already agree)."""
    ts64 = [t.to(F64) for t in ts]
    if all(t.shape == ts64[0].shape for t in ts64):
        return ts64
    return list(torch.broadcast_tensors(*ts64))


class SPD(Manifold):
    """Symmetric positive definite C (dim x dim); points (dim, dim) or (B, dim, dim).

    ``metric``: an ``SPDMetric`` instance or class (``AffineInvariant`` default, ``LogEuclidean``,
    ``BuresWasserstein``, your own subclass), a name ("affine-invariant", "log-euclidean",
    "bures-wasserstein"), or a Geomstats SPD metric class/instance.
    """

    point_ndim = 2

    def __init__(self, dim: int, metric: Any = "affine-invariant", log_eig_range: float = 1.0):
        super().__init__(dim)
        self.metric: SPDMetric = as_metric(metric, self.dim)
        self.metric_name = self.metric.name or type(self.metric).__name__
        self.log_eig_range = float(log_eig_range)

    # ---- metric (delegated) --------------------------------------------------------
    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if v is u:  # one whitening for a norm
            x, u = _f64(x, u)
            return self.metric.inner(x, u, u)
        x, u, v = _f64(x, u, v)
        return self.metric.inner(x, u, v)

    def norm(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        x, u = _f64(x, u)
        return self.metric.norm(x, u)

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x, g = _f64(x, g)
        return self.metric.egrad2rgrad(x, sym(g))

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        x, u = _f64(x, u)
        return self.metric.exp(x, sym(u))

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        x, u = _f64(x, u)
        return self.metric.retr(x, sym(u))

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = _f64(x, y)
        return self.metric.log(x, y)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = _f64(x, y)
        return self.metric.dist(x, y)

    def injectivity_radius(self, x: torch.Tensor) -> torch.Tensor:
        """Radius within which exp is a minimising geodesic (the metric's: sqrt(lambda_min) for
        Bures-Wasserstein, Massart and Absil 2020; infinite for AI and LE, Hadamard manifolds)."""
        return self.metric.injectivity_radius(x.to(F64))

    def step_limit(self, x: torch.Tensor, max_norm: float) -> torch.Tensor:
        """The metric's longest clipped step (see ``SPDMetric.step_limit``)."""
        return self.metric.step_limit(x.to(F64), max_norm)

    # ---- optimiser step ------------------------------------------------------------
    def clipped_move(self, x: torch.Tensor, u: torch.Tensor, method: str, max_norm: float | None) -> torch.Tensor:
        """``Manifold.clipped_move``; with the shipped affine-invariant or log-Euclidean metric and nothing it relies
        on overridden (``_fast_step_metric``), norm, clip and move share one whitening / one Dlog
        (``AffineInvariant.whitened_step``, ``LogEuclidean.clipped_exp``, bit for bit the generic step).
        Otherwise the generic move, which calls this object's own (possibly overridden) norm/exp/retr."""
        metric = self._fast_step_metric()
        if metric is None:
            return super().clipped_move(x, u, method, max_norm)
        x, u = _f64(x, sym(u))
        limit = None if max_norm is None else self.step_limit(x, max_norm)
        if isinstance(metric, AffineInvariant):
            return metric.whitened_step(x, u, limit, method)
        assert isinstance(metric, LogEuclidean)
        return metric.clipped_exp(x, u, limit)  # retr is exp for this metric

    def plain_affine_invariant(self) -> bool:
        """True when this manifold's geometry is exactly the shipped affine-invariant one (``SPD.step``'s
        ``AffineInvariant.whitened_step`` is used only then); otherwise a user's overridden
        inner/norm/exp/retr/step_limit/injectivity_radius must be called."""
        return isinstance(self._fast_step_metric(), AffineInvariant)

    def frame_type(self) -> type[EigenFrame] | None:
        """The eigenframe of the metric (``manifolds.eigenframe``: affine-invariant, log-Euclidean or
        Bures-Wasserstein coordinates) when it is a shipped metric and neither this object nor its metric
        overrides an operation the frame re-implements (``_FRAME_OPS``, class or instance attribute); else None,
        so that a user's subclass is stepped through its own methods."""
        if any(getattr(type(self), n) is not f or n in vars(self) for n, f in _FRAME_SPD_OPS.items()):
            return None
        metric = self.metric
        for cls, (frame, ops) in _FRAMES.items():
            if isinstance(metric, cls):
                plain = not any(getattr(type(metric), n) is not f or n in vars(metric) for n, f in ops.items())
                return frame if plain else None
        return None

    def _ai_fast_path(self) -> bool:
        """``plain_affine_invariant`` (kept for callers of the first version)."""
        return self.plain_affine_invariant()

    def _fast_step_metric(self) -> SPDMetric | None:
        """The metric when it is the shipped ``AffineInvariant`` or ``LogEuclidean`` and neither this object nor its
        metric overrides what the fast step replaces (class or instance attribute); else None, so a user's
        subclass keeps the generic, override-honouring step."""
        if any(getattr(type(self), n) is not f or n in vars(self) for n, f in _SPD_OPS.items()):
            return None
        metric = self.metric
        for cls, ops in _FAST_OPS.items():
            if isinstance(metric, cls):
                plain = not any(getattr(type(metric), n) is not f or n in vars(metric) for n, f in ops.items())
                return metric if plain else None
        return None

    # ---- points -------------------------------------------------------------------
    def random_point(self, *batch_shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        q = random_orthogonal(*batch_shape, dim=self.dim, generator=generator)
        r = self.log_eig_range
        lam = (torch.rand(*batch_shape, self.dim, generator=generator, dtype=F64) * 2 - 1) * r
        return sym((q * lam.exp().unsqueeze(-2)) @ q.transpose(-1, -2))

    def check_values(self, x: torch.Tensor) -> None:
        # relative per point: max |C - C^T| <= 1e-8 max |C| (an absolute floor would pass any tiny matrix)
        asym = (x - x.transpose(-1, -2)).abs().amax((-2, -1))
        scale = x.abs().amax((-2, -1))
        bad = asym > 1e-8 * scale
        if bool(bad.any()):
            i = int(bad.reshape(-1).nonzero()[0])
            a, m = float(asym.reshape(-1)[i]), float(scale.reshape(-1)[i])
            raise ValueError(f"matrix is not symmetric (max |C - C^T| = {a:.3g} > 1e-8 max |C| = {1e-8 * m:.3g})")
        lmin = float(torch.linalg.eigvalsh(sym(x)).amin())
        if not lmin > 0:
            raise ValueError(f"matrix is not positive definite (smallest eigenvalue {lmin:.3g})")

    def __repr__(self) -> str:
        return f"SPD(dim={self.dim}, metric={self.metric!r})"


#: what ``AffineInvariant.whitened_step`` stands in for; overriding any of them disables the fast step
_STEP_OPS = ("inner", "norm", "exp", "retr", "step_limit", "injectivity_radius")
_SPD_OPS = {name: getattr(SPD, name) for name in _STEP_OPS}
_AI_OPS = {name: getattr(AffineInvariant, name) for name in (*_STEP_OPS, "whitened_step")}
_LE_OPS = {name: getattr(LogEuclidean, name) for name in (*_STEP_OPS, "clipped_exp", "_exp_from", "_dlog")}
_FAST_OPS: dict[type[SPDMetric], dict[str, Any]] = {AffineInvariant: _AI_OPS, LogEuclidean: _LE_OPS}
#: what an eigenframe re-implements of the geometry (``SPD.frame_type``): the metric's step operations and gradient;
#: overriding any of them leaves the manifold without a frame (the noise map's floor and spectral terms are checked
#: by ``NoiseMap.frame_terms``)
_FRAME_OPS = (*_STEP_OPS, "egrad2rgrad")
_FRAME_SPD_OPS = {name: getattr(SPD, name) for name in _FRAME_OPS}
_FRAMES: dict[type[SPDMetric], tuple[type[EigenFrame], dict[str, Any]]] = {
    cls: (frame, {name: getattr(cls, name) for name in _FRAME_OPS})
    for cls, frame in (
        (AffineInvariant, AffineInvariantFrame),
        (LogEuclidean, LogEuclideanFrame),
        (BuresWasserstein, BuresWassersteinFrame),
    )
}
