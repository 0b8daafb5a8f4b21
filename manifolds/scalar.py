"""Positive scalar noise sigma (DDRS, Cohen): the SPD geometry restricted to C = sigma I_dim.

Metric: the affine-invariant (= log-Euclidean) metric of SPD(dim) restricted to sigma I,
<u, v>_sigma = dim u v / sigma^2, so dist(s, t) = sqrt(dim) |log t - log s| (= d_SPD(sI, tI)),
exp_sigma(u) = sigma exp(u / sigma). egrad2rgrad takes the derivative g = df/dsigma.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import F64, Manifold
from .diagonal import check_metric, checked_exp


class PositiveScalar(Manifold):
    """sigma > 0 (noise sigma z: ``manifolds.ScalarNoise``); points () or (B,)."""

    point_ndim = 0

    def __init__(self, dim: int, metric: Any = "affine-invariant", log_eig_range: float = 1.0):
        super().__init__(dim)
        self.metric_name = check_metric(metric)
        self.log_eig_range = float(log_eig_range)

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.dim * u.to(F64) * v.to(F64) / x.to(F64).square()  # tr(C^-1 U C^-1 V), C = sigma I

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x.to(F64).square() * g.to(F64) / self.dim  # inverse of the metric dim / sigma^2

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        x = x.to(F64)
        return checked_exp(x * torch.exp(u.to(F64) / x))

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.metric_name == "log-euclidean":
            return self.exp(x, u)  # SPD(LE).retr is its exp
        x, u = x.to(F64), u.to(F64)
        return x + u + 0.5 * u.square() / x

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.to(F64)
        return x * torch.log(y.to(F64) / x)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.dim**0.5 * (torch.log(y.to(F64)) - torch.log(x.to(F64))).abs()

    def random_point(self, *batch_shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r = self.log_eig_range
        return ((torch.rand(tuple(batch_shape), generator=generator, dtype=F64) * 2 - 1) * r).exp()

    def check_values(self, x: torch.Tensor) -> None:
        if not bool((x > 0).all()):
            raise ValueError(f"sigma must be positive (got min {float(x.min()):.3g})")
