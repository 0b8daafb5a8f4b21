"""How a point of a manifold parameterises the smoothing noise: the noise map, apart from the geometry.

A ``Manifold`` (``manifolds.base``) is geometry only: inner product, Riemannian gradient, exp, log and
random points. A ``NoiseMap`` says what a point means for randomized smoothing: the noise
eps = A(x) z drawn from ``normals`` standard normals z, a lower bound on the smallest singular value of
A(x) (the l2 ball a certificate of that noise contains scales with it), the volume term (1/d) log det,
the floor that keeps that lower bound at or above a level (it need not be an eigenvalue clamp), and the
``certify`` noise object of one point. Nothing in the interface needs a d x d matrix or a full
eigendecomposition; a structured noise (Kronecker factors, a diagonal plus a low-rank part, whose sampler
draws more than d normals: sqrt(D) z + W w) implements it with its own algebra.

The shipped maps read the point as the noise's own scale: ``ScalarNoise`` (sigma: eps = sigma z, Cohen et
al. 2019, DDRS), ``DiagonalNoise`` (theta: eps = theta * z, ANCER) and ``MatrixNoise`` (an SPD C: eps = C z,
covariance C^2, RDDRS; README, Errata R3). ``noise_for(manifold)`` gives the one that matches a manifold's
point shape; pass your own where a point means something else.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .spectral import eigh, log_volume_spd, min_eigenvalue_spd, min_value_vector, remember_eigh, sym

if TYPE_CHECKING:
    from .base import Manifold
    from .eigenframe import EigenFrame

F64 = torch.float64


def _per_point(value: torch.Tensor | float, like: torch.Tensor, point_ndim: int) -> torch.Tensor:
    """A float or (B,) tensor broadcast against the point axes (``point_ndim`` of them) of ``like``."""
    t = torch.as_tensor(value, dtype=F64, device=like.device)
    return t.reshape(t.shape + (1,) * point_ndim) if t.ndim else t


class NoiseMap(abc.ABC):
    """The smoothing noise a point stands for: eps = A(x) z with z ~ N(0, I_normals).

    Subclasses set ``point_ndim`` (0, 1 or 2 trailing axes per point, as their manifold's) and implement
    ``apply``, ``min_eigenvalue``, ``log_volume``, ``project_floor``, ``point_noise`` and ``from_scales``. Points
    are float64 and may carry one leading batch axis; ``apply``, ``min_eigenvalue`` and ``log_volume`` are
    differentiable in the point (the objectives' gradients flow through them).

    Parameters
    ----------
    dim : int
        Dimension d of the inputs the noise is added to.
    """

    #: number of trailing axes of a single point: 0 scalar, 1 vector, 2 matrix
    point_ndim: ClassVar[int] = 0

    def __init__(self, dim: int):
        if isinstance(dim, bool) or int(dim) < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        self.dim = int(dim)

    @property
    def normals(self) -> int:
        """Standard normals per noise draw (default ``dim``; a diagonal-plus-low-rank map draws d + k)."""
        return self.dim

    @abc.abstractmethod
    def apply(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Noise rows A(x) z for standard normal rows ``z`` (B, n, normals) -> (B, n, dim), in z's dtype,
        differentiable w.r.t. x (reparameterised Monte Carlo)."""

    @abc.abstractmethod
    def min_eigenvalue(self, x: torch.Tensor) -> torch.Tensor:
        """A lower bound (exact for the shipped maps) on the smallest singular value of A(x), shape = batch
        shape, differentiable with a finite subgradient at ties: the l2 ball of a certificate of radius r in
        the noise's own metric has radius at least ``min_eigenvalue * r``."""

    @abc.abstractmethod
    def log_volume(self, x: torch.Tensor) -> torch.Tensor:
        """(1/d) log det of the noise's scale (A A^T)^(1/2): the mean log eigenvalue, differentiable."""

    @abc.abstractmethod
    def project_floor(
        self, x: torch.Tensor, lambda_min: torch.Tensor | float, lambda_max: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """A point with ``min_eigenvalue >= lambda_min`` (float or (B,)) and, if given, every scale at most
        ``lambda_max``; the identity when ``x`` already satisfies both (the shipped maps clamp eigenvalues and
        keep eigenvectors)."""

    @abc.abstractmethod
    def point_noise(self, x: torch.Tensor) -> Any:
        """The ``certify`` noise object (e.g. ``certify.FullGaussian(x)``) for ONE float64 point."""

    @abc.abstractmethod
    def from_scales(self, theta: torch.Tensor) -> torch.Tensor:
        """The points whose noise is diag(theta) for positive scales ``theta`` (B, dim) float64: where a stage
        starts from the isotropic sigma_x* I of DDRS (every column sigma_x*) or ANCER's axis-aligned Theta."""

    def to_noise(self, x: torch.Tensor) -> Any:
        """The matching ``certify`` noise for a point (a list for a batch of points)."""
        x = x.detach().to("cpu", F64)  # noise objects live on the CPU (float64 geometry)
        if x.ndim == self.point_ndim:
            return self.point_noise(x)
        shape = tuple(x.shape[x.ndim - self.point_ndim :])
        return [self.point_noise(xi) for xi in x.reshape((-1,) + shape)]

    def eigenvalues(self, x: torch.Tensor) -> torch.Tensor:
        """Optional: the scales of A(x) ascending, batch + (dim,) (property tests of dense maps use it)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its eigenvalues")

    def frame_terms(self, frame: EigenFrame | None) -> bool:
        """Hook: True when a manifold's eigenframe of the point may stand in for this map's floor, volume and
        smallest eigenvalue (the point is the noise scale matrix itself, and nothing the frame re-implements is
        overridden). Default False: the driver calls this map's own methods."""
        return False

    def terms(self, x: torch.Tensor, frame: EigenFrame | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log_volume, min_eigenvalue) of ``x``, from ``frame`` when ``frame_terms(frame)`` (one decomposition
        per optimisation step), else from this map's methods."""
        if frame is not None and self.frame_terms(frame):
            return frame.log_volume(x), frame.min_eigenvalue(x)
        return self.log_volume(x), self.min_eigenvalue(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim})"


class _PointIsScale(NoiseMap):
    """The shipped maps: the point is the noise scale itself (sigma, theta or C)."""

    def frame_terms(self, frame: EigenFrame | None) -> bool:
        own = type(self)
        base = _SHIPPED[self.point_ndim]
        return frame is not None and not any(
            getattr(own, n) is not getattr(base, n) or n in vars(self) for n in _FRAME_NOISE_OPS
        )


class ScalarNoise(_PointIsScale):
    """eps = sigma z (isotropic Gaussian, Cohen et al. 2019); points () or (B,)."""

    point_ndim = 0

    def apply(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z * x.to(z.dtype)[..., None, None]

    def eigenvalues(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(F64).unsqueeze(-1).expand(x.shape + (self.dim,))

    def min_eigenvalue(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(F64) * 1.0

    def log_volume(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(F64).log()

    def project_floor(
        self, x: torch.Tensor, lambda_min: torch.Tensor | float, lambda_max: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        x = x.to(F64).clamp(min=torch.as_tensor(lambda_min, dtype=F64, device=x.device))
        return x if lambda_max is None else x.clamp(max=torch.as_tensor(lambda_max, dtype=F64, device=x.device))

    def point_noise(self, x: torch.Tensor) -> Any:
        from certify import IsotropicGaussian

        return IsotropicGaussian(float(x))

    def from_scales(self, theta: torch.Tensor) -> torch.Tensor:
        if not bool((theta == theta[..., :1]).all()):
            raise ValueError("ScalarNoise represents isotropic noise only: theta must have equal entries per point")
        return theta[..., 0].to(F64)


class DiagonalNoise(_PointIsScale):
    """eps = theta * z (axis-aligned Gaussian, ANCER); points (dim,) or (B, dim)."""

    point_ndim = 1

    def apply(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z * x.to(z.dtype).unsqueeze(-2)

    def eigenvalues(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x.to(F64), dim=-1).values

    def min_eigenvalue(self, x: torch.Tensor) -> torch.Tensor:
        return min_value_vector(x.to(F64))

    def log_volume(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(F64).log().mean(-1)

    def project_floor(
        self, x: torch.Tensor, lambda_min: torch.Tensor | float, lambda_max: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        x = x.to(F64).clamp(min=_per_point(lambda_min, x, 1))
        return x if lambda_max is None else x.clamp(max=_per_point(lambda_max, x, 1))

    def point_noise(self, x: torch.Tensor) -> Any:
        from certify import DiagonalGaussian

        return DiagonalGaussian(x)

    def from_scales(self, theta: torch.Tensor) -> torch.Tensor:
        return theta.to(F64)


class MatrixNoise(_PointIsScale):
    """eps = C z for a dense SPD C (covariance C^2, RDDRS); points (dim, dim) or (B, dim, dim)."""

    point_ndim = 2

    def apply(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ x.to(z.dtype)  # rows z^T C = (C z)^T since C is symmetric

    def eigenvalues(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.eigvalsh(x.to(F64))

    def min_eigenvalue(self, x: torch.Tensor) -> torch.Tensor:
        return min_eigenvalue_spd(x.to(F64))

    def log_volume(self, x: torch.Tensor) -> torch.Tensor:
        return log_volume_spd(x.to(F64))

    def project_floor(
        self, x: torch.Tensor, lambda_min: torch.Tensor | float, lambda_max: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        x = x.to(F64)
        lam, vec = eigh(x)
        lm = torch.as_tensor(lambda_min, dtype=F64, device=x.device)
        lm = lm[..., None] if lm.ndim else lm  # (B,) -> (B, 1) against eigenvalues (B, d)
        hi = None
        if lambda_max is not None:
            hi = torch.as_tensor(lambda_max, dtype=F64, device=x.device)
            hi = hi[..., None] if hi.ndim else hi
        inside = (lam >= lm) if hi is None else (lam >= lm) & (lam <= hi)
        if bool(inside.all()):
            return x  # exactly the identity inside (and the same tensor: its eigh stays cached)
        clamped = lam.clamp(min=lm, max=hi)  # still ascending: clamping is monotone
        floored = sym((vec * clamped.unsqueeze(-2)) @ vec.transpose(-1, -2))
        out = torch.where(inside.all(-1)[..., None, None], x, floored)
        remember_eigh(out, clamped, vec)  # the next step's eigh of this point (floor exact in min_eigenvalue)
        return out

    def point_noise(self, x: torch.Tensor) -> Any:
        from certify import FullGaussian

        return FullGaussian(x)

    def from_scales(self, theta: torch.Tensor) -> torch.Tensor:
        return torch.diag_embed(theta.to(F64))


_SHIPPED: dict[int, type[NoiseMap]] = {0: ScalarNoise, 1: DiagonalNoise, 2: MatrixNoise}
#: what an eigenframe stands in for; a subclass overriding any of them is called itself
_FRAME_NOISE_OPS = ("project_floor", "log_volume", "min_eigenvalue")


def noise_for(manifold: Manifold) -> NoiseMap:
    """The shipped noise map whose points have ``manifold``'s shape (the point is the noise scale: sigma,
    theta or C); a manifold whose points mean something else needs its own ``NoiseMap``, or names it with a
    ``default_noise()`` method (``KroneckerSPD`` does: ``KroneckerNoise``)."""
    own = getattr(manifold, "default_noise", None)
    if callable(own):
        return own()
    try:
        cls = _SHIPPED[manifold.point_ndim]
    except KeyError:
        raise ValueError(
            f"no shipped noise map for point_ndim {manifold.point_ndim} ({manifold!r}): pass a NoiseMap"
        ) from None
    return cls(manifold.dim)


def as_noise_map(noise: Any) -> NoiseMap:
    """``noise`` itself when it is a ``NoiseMap``; for a ``Manifold``, ``noise_for(noise)`` (its points are the
    noise scale). Anything else is a TypeError naming it."""
    if isinstance(noise, NoiseMap):
        return noise
    from .base import Manifold

    if isinstance(noise, Manifold):
        return noise_for(noise)
    raise TypeError(
        f"noise must be a manifolds.NoiseMap (or a Manifold whose points are the noise scale), got {noise!r}"
    )
