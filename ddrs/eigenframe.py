"""The eigenframe fast path lives in ``manifolds.eigenframe`` (asked for through ``Manifold.eigenframe``);
this module keeps the names ``ddrs`` exported before.

``EigenFrame`` is the base class (any shipped SPD metric's frame is one); ``AffineInvariantFrame``,
``LogEuclideanFrame`` and ``BuresWassersteinFrame`` are the three frames; ``transport_second_moment`` moves
per-coordinate second moments between eigenbases.
"""

from __future__ import annotations

from manifolds.eigenframe import (
    AffineInvariantFrame,
    BuresWassersteinFrame,
    EigenFrame,
    LogEuclideanFrame,
    transport_second_moment,
)

__all__ = [
    "AffineInvariantFrame",
    "BuresWassersteinFrame",
    "EigenFrame",
    "LogEuclideanFrame",
    "transport_second_moment",
]
