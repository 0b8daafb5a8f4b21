"""manifolds: the geometry of the smoothing noise's parameter.

``PositiveScalar`` (sigma, DDRS), ``PositiveDiagonal`` (theta, ANCER) and ``SPD`` (C, RDDRS) share
one point-first interface (``Manifold``); ``to_noise`` hands the point to ``certify``.
Geomstats (for SPD exp/log/dist) is imported lazily, leaving torch's default dtype alone.

Optimiser backends: ``Manifold.step`` (own Riemannian SGD step, exp or retraction, norm-clipped)
or ``manifolds.pymanopt_backend.maximize`` (Pymanopt solvers). Use ``solver="sgd"`` (fixed step)
for Monte-Carlo objectives -- Pymanopt's Armijo line search rejects steps on noisy costs --
and ``"steepest"``/``"cg"`` only for deterministic objectives.
"""

from __future__ import annotations

from typing import Any

from .base import Manifold
from .diagonal import PositiveDiagonal
from .scalar import PositiveScalar
from .spd import SPD

_KINDS = {"scalar": PositiveScalar, "diagonal": PositiveDiagonal, "spd": SPD}


def get_manifold(kind: str, dim: int, metric: Any = "affine-invariant") -> Manifold:
    """Factory: kind in {"scalar", "diagonal", "spd"}; ``metric`` as in ``SPD``."""
    try:
        cls = _KINDS[kind.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}") from None
    return cls(dim, metric=metric)


def __getattr__(name: str):
    # submodules with optional heavy imports (pymanopt, hypothesis) load on first access
    if name in ("pymanopt_backend", "testing"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Manifold", "PositiveDiagonal", "PositiveScalar", "SPD", "get_manifold"]
