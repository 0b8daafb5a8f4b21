"""Abstract manifold of smoothing-noise parameters (geoopt/Manopt vocabulary, point first): geometry only.

A point parameterises the noise: sigma (scalar), theta (diagonal) or C (SPD). What the point means for
smoothing (the noise it draws, its smallest scale, volume, floor and ``certify`` object) is a
``manifolds.noise_map.NoiseMap``, kept apart. Points live in float64 and may carry one leading batch axis.
"""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .eigenframe import EigenFrame

F64 = torch.float64


def f64_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``a`` and ``b`` in float64, broadcast to one shape (a point and a tangent vector, or two points)."""
    a, b = a.to(F64), b.to(F64)
    if a.shape != b.shape:
        a, b = torch.broadcast_tensors(a, b)
    return a, b


class MetricOperations(abc.ABC):
    """The operations of a Riemannian metric, point first (Manopt/geoopt vocabulary), batched and float64: what a
    ``Manifold`` exposes and what an ``SPDMetric`` implements for ``SPD``. Four to implement (``inner``,
    ``egrad2rgrad``, ``exp``, ``log``) and ``batch_shape``; ``norm``, ``retr``, ``dist``, ``injectivity_radius`` and
    ``step_limit`` have defaults."""

    @abc.abstractmethod
    def batch_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """Leading batch shape of ``x`` (``()`` for a single point)."""

    @abc.abstractmethod
    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Riemannian inner product <u, v>_x, shape = batch shape."""

    def norm(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Riemannian norm ||u||_x."""
        return self.inner(x, u, u).clamp_min(0).sqrt()

    @abc.abstractmethod
    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Riemannian gradient from the Euclidean gradient ``g`` (defined by <rgrad, v>_x = <g, v>_F)."""

    @abc.abstractmethod
    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Exponential map Exp_x(u)."""

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """A retraction (default: the exponential map)."""
        return self.exp(x, u)

    @abc.abstractmethod
    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Logarithm Log_x(y), the inverse of ``exp``."""

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Geodesic distance (default ||Log_x y||_x)."""
        return self.norm(x, self.log(x, y))

    def injectivity_radius(self, x: torch.Tensor) -> torch.Tensor:
        """Hook: radius (per point) within which exp is a minimising geodesic; a clipped step never moves
        farther. Default: infinite (Hadamard manifolds: scalar, diagonal, SPD with AI or LE)."""
        return torch.full(self.batch_shape(x), math.inf, dtype=F64, device=x.device)

    def step_limit(self, x: torch.Tensor, max_norm: float) -> torch.Tensor:
        """Hook: the longest step (metric norm, per point) taken when asked to clip at ``max_norm``;
        default min(max_norm, injectivity_radius(x))."""
        return self.injectivity_radius(x).clamp(max=float(max_norm))


class Manifold(MetricOperations):
    """The geometry every noise-parameter manifold implements (geoopt-sized).

    Subclasses set ``point_ndim`` (0, 1 or 2 trailing axes per point) and implement six methods: ``inner``,
    ``egrad2rgrad``, ``exp``, ``log``, ``random_point`` and ``check_values``; ``norm``, ``retr`` (default exp),
    ``dist``, ``transp``, ``step``, ``check_point`` and the injectivity radius come for free, and ``frame_type``
    is the optional eigenframe fast path. The noise a point stands for is a ``NoiseMap``.

    Parameters
    ----------
    dim : int
        Dimension d of the inputs the noise is added to.
    """

    #: number of trailing axes of a single point: 0 scalar, 1 diagonal, 2 matrix
    point_ndim: int = 0
    #: short name of the metric, for logs
    metric_name: str = ""

    def __init__(self, dim: int):
        if int(dim) < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        self.dim = int(dim)

    # ---- shapes -----------------------------------------------------------------
    @property
    def point_shape(self) -> tuple[int, ...]:
        """Shape of one (unbatched) point."""
        return (self.dim,) * self.point_ndim

    def batch_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """Leading batch shape of ``x`` (``()`` for a single point)."""
        return tuple(x.shape[: x.ndim - self.point_ndim])

    def _expand_scalar(self, value: Any, x: torch.Tensor) -> torch.Tensor:
        """A float or (B,) tensor broadcast against the point axes of ``x``."""
        t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
        return t.reshape(t.shape + (1,) * self.point_ndim)

    # ---- points ---------------------------------------------------------------------
    @abc.abstractmethod
    def random_point(self, *batch_shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random float64 point of shape batch_shape + point_shape."""

    def check_point(self, x: torch.Tensor) -> None:
        """Raise ValueError naming the problem if ``x`` is not a point of this manifold."""
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"point must be a torch.Tensor, got {type(x).__name__}")
        if (
            x.ndim not in (self.point_ndim, self.point_ndim + 1)
            or tuple(x.shape[x.ndim - self.point_ndim :]) != self.point_shape
        ):
            raise ValueError(f"wrong shape {tuple(x.shape)}: expected {self.point_shape} or (B, *{self.point_shape})")
        if not torch.isfinite(x).all():
            raise ValueError("point contains NaN or infinite entries")
        self.check_values(x.detach().to(F64))

    @abc.abstractmethod
    def check_values(self, x: torch.Tensor) -> None:
        """Hook: raise ValueError naming the problem if the float64 ``x`` (shape and finiteness already
        checked by ``check_point``; batched or not) is not on the manifold."""

    def transp(self, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Hook: a vector transport of ``u`` from the tangent space at ``x`` to the one at ``y`` (an optimiser's
        momentum). Default: the projection onto the tangent space at ``y`` (geoopt's choice for embedded
        manifolds); every shipped manifold is an open subset of its ambient space, so that is ``u`` itself."""
        return u

    # ---- eigenframe (one decomposition per optimisation step) ----------------------------
    def frame_type(self) -> type[EigenFrame] | None:
        """Hook: the ``manifolds.eigenframe.EigenFrame`` class that carries this manifold's points with their
        eigendecomposition and its metric's tangent coordinates, or None when it has none (default). A subclass
        that overrides any operation a frame re-implements must return None (``SPD`` checks)."""
        return None

    def eigenframe(self, x: torch.Tensor) -> EigenFrame | None:
        """The eigenframe of the batch of points ``x`` (B, *point_shape): one decomposition, shared by the
        floor, the volume terms, the Riemannian gradient and the move of an optimisation step; None when this
        manifold has no frame (``frame_type``). Optimisers ask for it here, never by the manifold's class."""
        cls = self.frame_type()
        return None if cls is None else cls.of(x)

    # ---- optimiser helper ----------------------------------------------------------
    def step(
        self,
        x: torch.Tensor,
        rgrad: torch.Tensor,
        step_size: torch.Tensor | float,
        method: str = "exp",
        max_norm: float | None = None,
    ) -> torch.Tensor:
        """Move x along ``step_size * rgrad`` by exp or retr, the step's Riemannian norm clipped to
        ``step_limit(x, max_norm)`` (``max_norm`` itself, or less inside the injectivity radius).

        Clipping in the metric's own norm keeps a large exp step inside the cone (Manopt's warning). The
        limit matters for metrics that are not scale-invariant: Bures-Wasserstein's injectivity radius is
        sqrt(lambda_min), ~0.4 at sigma ~ 0.2, and exp past it is no longer a geodesic
        (manifolds/README.md, backends x metrics).
        """
        if method not in ("exp", "retr"):
            raise ValueError(f"method must be 'exp' or 'retr', got {method!r}")
        with torch.no_grad():
            x = (x.detach() if x.requires_grad else x).to(F64)  # same tensor: its cached eigh is reused
            return self.clipped_move(x, self._expand_scalar(step_size, x) * rgrad.detach().to(F64), method, max_norm)

    def clipped_move(self, x: torch.Tensor, u: torch.Tensor, method: str, max_norm: float | None) -> torch.Tensor:
        """Hook: ``exp`` or ``retr`` of the float64 tangent vector ``u`` at ``x``, its norm first clipped to
        ``step_limit(x, max_norm)`` (no clip for None); ``step`` calls it without grad."""
        if max_norm is not None:
            n = self.norm(x, u)
            limit = self.step_limit(x, max_norm)
            scale = (limit / n.clamp_min(torch.finfo(F64).tiny)).clamp(max=1.0)
            u = u * scale.reshape(scale.shape + (1,) * self.point_ndim)
        return self.exp(x, u) if method == "exp" else self.retr(x, u)

    def __repr__(self) -> str:
        metric = f", metric={self.metric_name!r}" if self.metric_name else ""
        return f"{type(self).__name__}(dim={self.dim}{metric})"
