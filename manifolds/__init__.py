"""manifolds: the geometry of the smoothing noise's parameter.

``PositiveScalar`` (sigma, DDRS), ``PositiveDiagonal`` (theta, ANCER), ``SPD`` (C, RDDRS) and ``KroneckerSPD``
(s C_1 (x) ... (x) C_m over the input's axes, with its ``KroneckerNoise``) and ``LowRankSPD`` (diagonal or spiked plus
U diag(lambda) U^T on the Stiefel manifold, with its ``LowRankNoise``) share one point-first geometry interface
(``Manifold``). What a point means for smoothing is a ``NoiseMap``, kept
apart: ``ScalarNoise``, ``DiagonalNoise``, ``MatrixNoise`` read the point as the noise scale (``noise_for``
picks the one of a manifold's point shape) and ``to_noise`` hands the point to ``certify``. ``SPD`` takes a
metric object (``AffineInvariant``, ``LogEuclidean``, ``BuresWasserstein``, a user's ``SPDMetric``
subclass, or any Geomstats SPD metric via ``GeomstatsMetric``); names stay as shortcuts.
Geomstats is imported lazily (only for Geomstats metrics), leaving torch's default dtype alone.

Optimiser backends: ``Manifold.step`` (own Riemannian SGD step, exp or retraction, norm-clipped)
or ``manifolds.pymanopt_backend.maximize`` (Pymanopt solvers). Use ``solver="sgd"`` (fixed step)
for Monte-Carlo objectives -- Pymanopt's Armijo line search rejects steps on noisy costs --
and ``"steepest"``/``"cg"`` only for deterministic objectives.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .base import Manifold
from .diagonal import PositiveDiagonal
from .kronecker import KroneckerLayout, KroneckerNoise, KroneckerSPD
from .low_rank import LowRankLayout, LowRankNoise, LowRankSPD, SignedSpikedNoise, SignedSpikedSPD
from .metrics import METRICS, AffineInvariant, BuresWasserstein, GeomstatsMetric, LogEuclidean, SPDMetric
from .noise_map import DiagonalNoise, MatrixNoise, NoiseMap, ScalarNoise, as_noise_map, noise_for
from .scalar import PositiveScalar
from .spd import SPD
from .spectral import eigh, log_volume_spd, min_eigenvalue_spd, remember_eigh, sym

_KINDS: dict[str, type[PositiveScalar] | type[PositiveDiagonal] | type[SPD]] = {
    "scalar": PositiveScalar,
    "diagonal": PositiveDiagonal,
    "spd": SPD,
}
_POINT_NDIM = {"scalar": 0, "diagonal": 1, "spd": 2}


def get_manifold(kind: str | Manifold, dim: int, metric: Any = "affine-invariant") -> Manifold:
    """Factory: kind in {"scalar", "diagonal", "spd"} (``metric`` as in ``SPD``), or a ``Manifold``
    instance, returned as is after checking that its ``dim`` matches."""
    if isinstance(kind, Manifold):
        if kind.dim != int(dim):
            raise ValueError(f"manifold {kind!r} has dim {kind.dim}, but the inputs have {dim} entries")
        return kind
    try:
        cls = _KINDS[kind.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"kind must be one of {sorted(_KINDS)} or a Manifold, got {kind!r}") from None
    return cls(dim, metric=metric)


def resolve_manifold(manifold: Manifold | None, kind: str, dim: int, metric: Any = "affine-invariant") -> Manifold:
    """The manifold a method runs on: the user's ``manifold`` (checked: a ``Manifold`` of ``dim`` with the
    point shape ``kind`` needs) or ``get_manifold(kind, dim, metric)``."""
    if manifold is None:
        return get_manifold(kind, dim, metric)
    if not isinstance(manifold, Manifold):
        raise TypeError(f"manifold must be a manifolds.Manifold instance, got {type(manifold).__name__}")
    if manifold.point_ndim != _POINT_NDIM[kind]:
        raise ValueError(
            f"manifold {manifold!r} has point_ndim {manifold.point_ndim}; this method needs "
            f"{_POINT_NDIM[kind]} ({kind} points)"
        )
    return get_manifold(manifold, dim)


def __getattr__(name: str) -> ModuleType:
    # submodules with optional heavy imports (pymanopt, hypothesis) load on first access
    if name in ("pymanopt_backend", "testing"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METRICS",
    "AffineInvariant",
    "DiagonalNoise",
    "MatrixNoise",
    "NoiseMap",
    "ScalarNoise",
    "as_noise_map",
    "noise_for",
    "BuresWasserstein",
    "GeomstatsMetric",
    "KroneckerLayout",
    "KroneckerNoise",
    "KroneckerSPD",
    "LogEuclidean",
    "LowRankLayout",
    "LowRankNoise",
    "LowRankSPD",
    "SignedSpikedNoise",
    "SignedSpikedSPD",
    "Manifold",
    "PositiveDiagonal",
    "PositiveScalar",
    "SPD",
    "SPDMetric",
    "eigh",
    "get_manifold",
    "log_volume_spd",
    "min_eigenvalue_spd",
    "remember_eigh",
    "resolve_manifold",
    "sym",
]
