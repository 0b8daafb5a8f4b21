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


def to_metric(metric: Any, dim: int | None):
    """An ``SPDMetric`` for a Geomstats SPD metric class or instance: Geomstats' affine-invariant,
    log-Euclidean and Bures-Wasserstein metrics (and subclasses, by ``isinstance``) map to the closed-form
    classes; any other metric runs through ``GeomstatsMetric`` (its exp/log/dist, a Gram solve for rgrad)."""
    from .metrics import AffineInvariant, BuresWasserstein, GeomstatsMetric, LogEuclidean

    mod = spd_module()
    known = (
        (mod.SPDAffineMetric, AffineInvariant),
        (mod.SPDLogEuclideanMetric, LogEuclidean),
        (mod.SPDBuresWassersteinMetric, BuresWasserstein),
    )
    cls = metric if isinstance(metric, type) else type(metric)
    if not (isinstance(metric, type) or hasattr(metric, "inner_product")):
        raise TypeError(
            f"metric must be a name, an SPDMetric, or a Geomstats SPD metric class/instance, got {metric!r}"
        )
    for gs_cls, own in known:
        if issubclass(cls, gs_cls):
            if not isinstance(metric, type):
                _check_space(metric, dim)
            return own()
    if isinstance(metric, type):
        if dim is None:
            raise ValueError("a Geomstats metric class needs the manifold's dim")
        space = mod.SPDMatrices(dim, equip=False)
        space.equip_with_metric(metric)  # equip with a class: instances trip a Geomstats bug (note 1.2)
        metric = space.metric
    _check_space(metric, dim)
    return GeomstatsMetric(metric)


def _check_space(metric: Any, dim: int | None) -> None:
    space = getattr(metric, "_space", None)
    if space is None:
        raise TypeError(f"expected a Geomstats metric bound to an SPDMatrices space, got {metric!r}")
    if dim is not None and getattr(space, "n", dim) != dim:
        raise ValueError(f"metric is defined on SPD({space.n}) but the manifold has dim={dim}")
