"""Positive diagonal noise theta (ANCER): the SPD geometry restricted to diagonal matrices.

Metric: on diagonal matrices the affine-invariant and log-Euclidean metrics coincide,
<u, v>_theta = sum_i u_i v_i / theta_i^2 (tr(C^-1 U C^-1 V) with C = diag(theta)); it is the
Euclidean metric of log theta, so exp_theta(u) = theta exp(u / theta) and
dist = ||log theta' - log theta||_2.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import F64, Manifold
from .metrics import AffineInvariant, LogEuclidean


def check_metric(metric: Any) -> str:
    """'affine-invariant' or 'log-euclidean' (a name or the metric class/instance): the two coincide on
    commuting matrices, so exp/log/dist agree; ``retr`` follows SPD's (the AI retraction, or exp for LE)."""
    kind = metric if isinstance(metric, str) else getattr(metric, "name", None)
    if isinstance(metric, type):
        kind = getattr(metric, "name", None) if issubclass(metric, (AffineInvariant, LogEuclidean)) else None
    elif not isinstance(metric, (str, AffineInvariant, LogEuclidean)):
        kind = None
    key = kind.lower().replace("_", "-") if isinstance(kind, str) else None
    if key not in ("affine-invariant", "ai", "log-euclidean", "le"):
        raise ValueError(
            f"diagonal and scalar manifolds support metric 'affine-invariant' or 'log-euclidean' "
            f"(identical on commuting matrices), got {metric!r}"
        )
    return "log-euclidean" if key in ("log-euclidean", "le") else "affine-invariant"


def checked_exp(y: torch.Tensor) -> torch.Tensor:
    """exp's contract: a point or an error; x exp(u / x) under/overflows for |u| / x > ~700."""
    if not bool(((y > 0) & torch.isfinite(y)).all()):
        raise FloatingPointError(
            "exp left the manifold in float64 (x exp(u / x) underflowed to 0 or overflowed): "
            "clip the step, e.g. step(..., max_norm=...)"
        )
    return y


class PositiveEntries(Manifold):
    """What the scalar and diagonal manifolds share: positive entries x (one per point, or ``dim`` of them) moved
    in log coordinates, x exp(u / x) (C^1/2 expm(C^-1/2 U C^-1/2) C^1/2 on commuting matrices); ``inner``,
    ``egrad2rgrad`` and ``dist`` are each subclass's own. ``symbol`` names the entries in errors."""

    symbol = "x"

    def __init__(self, dim: int, metric: Any = "affine-invariant", log_eig_range: float = 1.0):
        super().__init__(dim)
        self.metric_name = check_metric(metric)
        self.log_eig_range = float(log_eig_range)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        x = x.to(F64)
        return checked_exp(x * torch.exp(u.to(F64) / x))

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.metric_name == "log-euclidean":
            return self.exp(x, u)  # SPD(LE).retr is its exp
        x, u = x.to(F64), u.to(F64)
        return x + u + 0.5 * u.square() / x  # X + V + 1/2 V X^-1 V on commuting matrices (always > 0)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.to(F64)
        return x * torch.log(y.to(F64) / x)

    def random_point(self, *batch_shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r = self.log_eig_range
        return ((torch.rand(tuple(batch_shape) + self.point_shape, generator=generator, dtype=F64) * 2 - 1) * r).exp()

    def check_values(self, x: torch.Tensor) -> None:
        if not bool((x > 0).all()):
            raise ValueError(f"{self.symbol} must be positive (min {float(x.min()):.3g})")


class PositiveDiagonal(PositiveEntries):
    """theta in (0, inf)^dim (noise theta * z: ``manifolds.DiagonalNoise``); points (dim,) or (B, dim)."""

    point_ndim = 1
    symbol = "theta"

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        x = x.to(F64)
        return (u.to(F64) * v.to(F64) / x.square()).sum(-1)  # tr(C^-1 U C^-1 V) on diagonals

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x.to(F64).square() * g.to(F64)  # C G C on diagonals

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (torch.log(y.to(F64)) - torch.log(x.to(F64))).norm(dim=-1)
