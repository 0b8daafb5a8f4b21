"""Positive scalar noise sigma (DDRS, Cohen): the SPD geometry restricted to C = sigma I_dim.

Metric: the affine-invariant (= log-Euclidean) metric of SPD(dim) restricted to sigma I,
<u, v>_sigma = dim u v / sigma^2, so dist(s, t) = sqrt(dim) |log t - log s| (= d_SPD(sI, tI)),
exp_sigma(u) = sigma exp(u / sigma). egrad2rgrad takes the derivative g = df/dsigma.
"""

from __future__ import annotations

import torch

from .base import F64
from .diagonal import PositiveEntries


class PositiveScalar(PositiveEntries):
    """sigma > 0 (noise sigma z: ``manifolds.ScalarNoise``); points () or (B,)."""

    point_ndim = 0
    symbol = "sigma"

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.dim * u.to(F64) * v.to(F64) / x.to(F64).square()  # tr(C^-1 U C^-1 V), C = sigma I

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x.to(F64).square() * g.to(F64) / self.dim  # inverse of the metric dim / sigma^2

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.dim**0.5 * (torch.log(y.to(F64)) - torch.log(x.to(F64))).abs()
