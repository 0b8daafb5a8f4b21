"""Objectives over the certified gap, and the eigenvalue-floor constraint.

An objective is any callable ``Terms -> Tensor (B,)`` to be maximised; the classes below compose
with ``+``. A user's objective is one small class with ``__call__(self, terms)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .estimator import Terms


class Objective:
    """Base class: ``__call__(terms) -> (B,)``; objectives add with ``+``."""

    def __call__(self, terms: Terms) -> torch.Tensor:
        raise NotImplementedError

    def __add__(self, other: "Objective") -> "Objective":
        return Sum(self, other)


class Sum(Objective):
    """The sum of objectives."""

    def __init__(self, *parts: Objective):
        self.parts = []
        for p in parts:
            self.parts.extend(p.parts if isinstance(p, Sum) else [p])

    def __call__(self, terms: Terms) -> torch.Tensor:
        return sum(p(terms) for p in self.parts)

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.parts))


@dataclass
class Radius(Objective):
    """The isotropic certified radius sigma R / 2 (DDRS, Alfarra et al.; Cohen et al. Thm 1), with
    sigma the smallest axis of the noise (the scalar itself for DDRS)."""

    def __call__(self, terms: Terms) -> torch.Tensor:
        return terms.min_eigenvalue * terms.gap / 2


@dataclass
class VolumeProxy(Objective):
    """R * P with P the geometric mean of the noise axes (ANCER's volume proxy; RDDRS eq. (5)),
    computed as exp(mean log eigenvalue) so that d = 784 products never under/overflow."""

    def __call__(self, terms: Terms) -> torch.Tensor:
        return terms.gap * torch.exp(terms.log_volume)


@dataclass
class KappaPenalty(Objective):
    """kappa * K * R with K the smallest axis (ANCER; RDDRS eq. (5)): rewards keeping the largest
    inscribed ball, i.e. the DDRS ball, large."""

    kappa: float = 2.0

    def __post_init__(self) -> None:
        if not (self.kappa >= 0):
            raise ValueError(f"kappa must be >= 0, got {self.kappa}")

    def __call__(self, terms: Terms) -> torch.Tensor:
        return self.kappa * terms.min_eigenvalue * terms.gap


def ancer_objective(kappa: float = 2.0) -> Objective:
    """H = R P + kappa K R (ANCER; RDDRS eq. (5))."""
    return VolumeProxy() + KappaPenalty(kappa)


@dataclass
class EigenvalueFloor:
    """The constraint lambda_i >= floor (RDDRS's superset condition; ANCER's projection
    Theta >= sigma_x*): applied as a projection after every step, not as a penalty, so the certified
    region always contains the ball of radius floor * R. ``floor`` is a float or a (B,) tensor.

    ``ceiling`` (optional) also bounds the axes from above. Without it, an axis along which the base
    model is insensitive (a constant border pixel; the far-field of a ReLU network) grows without
    bound: the certificate is still true for that noise, but it certifies regions far outside the
    data domain, against a model never trained at that noise level."""

    floor: torch.Tensor | float
    ceiling: torch.Tensor | float | None = None

    def project(self, manifold, point: torch.Tensor) -> torch.Tensor:
        return manifold.project_floor(point, self.floor, self.ceiling)
