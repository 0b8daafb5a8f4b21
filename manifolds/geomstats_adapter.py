"""Lazy, side-effect-free access to Geomstats' SPD metrics (pytorch backend).

Importing ``geomstats.backend`` calls ``torch.set_default_dtype(torch.float64)``; we import it
lazily, on first use, and restore the caller's default dtype afterwards.
This module imports nothing of the project: ``manifolds.metrics`` maps Geomstats metrics to its
own classes (``as_metric``) on top of it.
"""

from __future__ import annotations

import os
import sys
import threading
from types import ModuleType
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


def spd_module() -> ModuleType:
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


def check_space(metric: Any, dim: int | None) -> None:
    """Refuse anything but a Geomstats metric bound to an ``SPDMatrices`` space (of ``dim``, if given)."""
    space = getattr(metric, "_space", None)
    if space is None:
        raise TypeError(f"expected a Geomstats metric bound to an SPDMatrices space, got {metric!r}")
    if dim is not None and getattr(space, "n", dim) != dim:
        raise ValueError(f"metric is defined on SPD({space.n}) but the manifold has dim={dim}")
