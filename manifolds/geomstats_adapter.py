"""Lazy, side-effect-free access to Geomstats' SPD metrics (pytorch backend).

Importing ``geomstats.backend`` calls ``torch.set_default_dtype(torch.float64)``; we import it
lazily, on first use, and restore the caller's default dtype afterwards (anchors note, 1.3).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import torch

_LOCK = threading.Lock()
_MODULES: dict[str, Any] = {}

#: short names accepted by ``SPD(metric=...)`` -> Geomstats class name in ``spd_matrices``
METRIC_NAMES = {
    "affine-invariant": "SPDAffineMetric",
    "ai": "SPDAffineMetric",
    "log-euclidean": "SPDLogEuclideanMetric",
    "le": "SPDLogEuclideanMetric",
    "bures-wasserstein": "SPDBuresWassersteinMetric",
    "bw": "SPDBuresWassersteinMetric",
}


def _check_backend() -> None:
    """Select the pytorch backend, or fail clearly if Geomstats already runs another one."""
    loaded = sys.modules.get("geomstats._backend")
    if loaded is not None:
        name = getattr(loaded, "BACKEND_NAME", None)
        if name != "pytorch":
            raise RuntimeError(
                f"geomstats was already imported with the {name!r} backend; manifolds needs "
                "GEOMSTATS_BACKEND=pytorch set before the first geomstats import"
            )
        return
    env = os.environ.get("GEOMSTATS_BACKEND")
    if env is None:
        os.environ["GEOMSTATS_BACKEND"] = "pytorch"
    elif env != "pytorch":
        raise RuntimeError(
            f"GEOMSTATS_BACKEND={env!r}; manifolds needs the 'pytorch' backend "
            "(unset the variable or set it to 'pytorch')"
        )


def spd_module():
    """``geomstats.geometry.spd_matrices``, imported once with torch's default dtype preserved."""
    mod = _MODULES.get("spd")
    if mod is not None:
        return mod
    with _LOCK:
        if "spd" not in _MODULES:
            _check_backend()
            saved = torch.get_default_dtype()
            try:
                import geomstats.backend  # noqa: F401  (sets torch default dtype to float64)
                from geomstats.geometry import spd_matrices
            finally:
                torch.set_default_dtype(saved)
            _MODULES["spd"] = spd_matrices
    return _MODULES["spd"]


def make_metric(dim: int, metric: Any):
    """A Geomstats SPD metric on ``SPDMatrices(dim)`` from a name, a metric class or an instance."""
    mod = spd_module()
    if isinstance(metric, str):
        key = metric.lower().replace("_", "-")
        if key not in METRIC_NAMES:
            raise ValueError(
                f"unknown SPD metric {metric!r}; choose one of {sorted(set(METRIC_NAMES))} "
                "or pass a Geomstats SPD metric class/instance"
            )
        metric = getattr(mod, METRIC_NAMES[key])
    if isinstance(metric, type):
        space = mod.SPDMatrices(dim, equip=False)
        space.equip_with_metric(metric)  # equip with a class: instances trip a Geomstats bug (note 1.2)
        return space.metric
    space = getattr(metric, "_space", None)
    if space is None or not hasattr(metric, "exp"):
        raise TypeError(f"metric must be a name, a Geomstats metric class or instance, got {metric!r}")
    if getattr(space, "n", dim) != dim:
        raise ValueError(f"metric is defined on SPD({space.n}) but the manifold has dim={dim}")
    return metric


def metric_kind(metric) -> str:
    """'affine-invariant', 'log-euclidean', 'bures-wasserstein' or 'other' for a Geomstats metric."""
    mod = spd_module()
    for name, cls in (
        ("affine-invariant", mod.SPDAffineMetric),
        ("log-euclidean", mod.SPDLogEuclideanMetric),
        ("bures-wasserstein", mod.SPDBuresWassersteinMetric),
    ):
        if type(metric) is cls:
            return name
    return "other"
