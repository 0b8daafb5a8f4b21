"""Smoothing noise distributions: the ``eps`` in ``x + eps``, defined on the flattened input.

Each class is plain data (its parameters, float64) plus a sampler that draws batches on the
model's device and dtype from an explicitly passed ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .region import Ellipsoid, Region

#: noise whose scale has a larger condition number than this is drawn and added to x in float64 (``draw_dtype``)
FLOAT32_CONDITION_LIMIT = 100.0


def owned_float64(value: Any, name: str) -> torch.Tensor:
    """An owned, finite float64 CPU copy of a number, array or tensor (``name`` in the errors)."""
    # always a copy: the noise owns its parameters (mutating the caller's tensor or array later
    # changes neither the noise nor any certificate made with it)
    if isinstance(value, torch.Tensor):
        t = value.detach().to(device="cpu", dtype=torch.float64, copy=True)
    else:
        try:
            t = torch.tensor(np.array(value, dtype=np.float64, copy=True))
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number, array or tensor, got {type(value).__name__}") from None
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite entries")
    return t


def _frozen(t: torch.Tensor) -> np.ndarray:
    """A read-only float64 numpy copy (what regions are built from; shared by all of them)."""
    a = np.array(t.detach().cpu().numpy(), dtype=np.float64, copy=True)
    a.setflags(write=False)
    return a


def standard_normal(
    count: int, dim: int, generator: torch.Generator | None, device: Any, dtype: torch.dtype
) -> torch.Tensor:
    """Standard normal (count, dim) on the generator's device, moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    z = torch.randn((count, dim), generator=generator, device=gen_device, dtype=dtype)
    return z.to(device, non_blocking=True)


def checked_spd(
    value: Any, name: str, symmetry_tol: float, shape: str = "(d, d)"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An owned float64 copy of a square, symmetric (within ``symmetry_tol``), positive definite matrix,
    symmetrised, with its ascending eigenvalues and eigenvectors; ValueError naming ``name`` otherwise."""
    C = owned_float64(value, name)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] == 0:
        raise ValueError(f"{name} must be a square {shape} matrix, got shape {tuple(C.shape)}")
    asym = (C - C.T).abs().max().item()
    if asym > symmetry_tol * max(1.0, C.abs().max().item()):
        raise ValueError(f"{name} must be symmetric (max |C - C^T| = {asym:.3g})")
    C = 0.5 * (C + C.T)
    eigvals, eigvecs = torch.linalg.eigh(C)
    if eigvals[0] <= 0:
        raise ValueError(f"{name} must be positive definite (smallest eigenvalue {eigvals[0].item():.3g})")
    return C, eigvals, eigvecs


def positive_float(value: Any, name: str) -> float:
    """``value`` as a finite float > 0; otherwise a TypeError (not a number) or ValueError naming ``name``."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive float, got {value!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value}")
    return value


class GaussianNoise:
    """Base class: a zero-mean Gaussian ``scale @ z`` (z standard normal) on R^d."""

    #: number of mixture components (1 for a single Gaussian); certificates bound each one.
    num_components: int = 1
    kind: str = "gaussian"

    @property
    def dim(self) -> int | None:
        """Input dimension the noise is defined for (None: any)."""
        return None

    #: name of the parameter that fixes the dimension (for error messages)
    param_name: str = "sigma"

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Refuse an input of ``shape`` (one input, no batch axis) this noise is not defined on (``check_dim`` of its
        size; a noise with axes of its own also checks them)."""
        self.check_dim(math.prod(shape))

    def check_dim(self, d: int) -> None:
        if self.dim is not None and self.dim != d:
            raise ValueError(
                f"shape mismatch between x and {self.param_name}: {self.param_name} defines noise on "
                f"dimension {self.dim} but x has {d} entries"
            )

    def sample(
        self, count: int, dim: int, generator: torch.Generator | None, device, dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draw ``count`` noise vectors (count, dim) and the component index of each (or None)."""
        raise NotImplementedError

    def region(self, center: np.ndarray, radius: float) -> Region:
        """The certified region ``{center + delta : ||scale^{-1} delta|| <= radius}``."""
        raise NotImplementedError

    def condition_number(self) -> float:
        """An upper bound on the ratio of the largest to the smallest scale along which the draws mix entries
        (1 where every entry is drawn on its own: isotropic, diagonal and mixture noise). ``draw_dtype`` reads it."""
        return 1.0

    def draw_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype this noise is drawn in and added to x in, for a float32 or float64 model: float64 instead of
        float32 above ``FLOAT32_CONDITION_LIMIT``. Float32's rounding of the scale and of the product S z errs by
        about 2^-24 sqrt(d) times the largest scale along every axis, so relative to the smallest one by the
        condition number times that (a factor of condition 1e8 rounds to a singular float32 matrix); in float64
        the noise is the stated Gaussian to 2^-53, and the sum's cast to the model's dtype is a rounding of the
        noisy input, part of the base classifier (entry by entry, whatever the noise), not of the noise."""
        if dtype == torch.float32 and self.condition_number() > FLOAT32_CONDITION_LIMIT:
            return torch.float64
        return dtype

    def scale_summary(self) -> dict[str, float]:
        """Smallest and geometric-mean axis of the noise (log columns ``min_sigma``, ``gm_sigma``)."""
        raise NotImplementedError

    def _cast(self, tensor: torch.Tensor, device, dtype) -> torch.Tensor:
        """The parameter on the model's device and dtype, cached until the parameter changes
        (the key holds the tensor's in-place version counter, so an in-place update is seen)."""
        cache = self.__dict__.setdefault("_cast_cache", {})
        key = (id(tensor), tensor._version, str(device), dtype)
        if key not in cache:
            cache.clear()
            cache[key] = (tensor, tensor.to(device=device, dtype=dtype))
        return cache[key][1]


class IsotropicGaussian(GaussianNoise):
    """``x + sigma z`` (Cohen et al. 2019)."""

    kind = "isotropic"

    def __init__(self, sigma: float):
        self.sigma = positive_float(sigma, "sigma")

    def sample(self, count, dim, generator, device, dtype):
        return standard_normal(count, dim, generator, device, dtype).mul_(self.sigma), None

    def region(self, center, radius):
        return Ellipsoid(center, self.sigma, radius)

    def scale_summary(self):
        return {"min_sigma": self.sigma, "gm_sigma": self.sigma}

    def __repr__(self):
        return f"IsotropicGaussian(sigma={self.sigma:g})"


class DiagonalGaussian(GaussianNoise):
    """``x + theta * z`` with theta positive, one entry per input coordinate (ANCER)."""

    kind = "diagonal"
    param_name = "theta"

    def __init__(self, theta):
        theta = owned_float64(theta, "theta").reshape(-1)
        if theta.numel() == 0:
            raise ValueError("theta must not be empty")
        if (theta <= 0).any():
            raise ValueError(f"theta must be positive everywhere (min {theta.min().item():g})")
        self.theta = theta
        self._theta_np = _frozen(theta)

    @property
    def dim(self):
        return self.theta.numel()

    def sample(self, count, dim, generator, device, dtype):
        return standard_normal(count, dim, generator, device, dtype).mul_(self._cast(self.theta, device, dtype)), None

    def region(self, center, radius):
        return Ellipsoid(center, self._theta_np, radius)

    def scale_summary(self):
        return {"min_sigma": float(self.theta.min()), "gm_sigma": float(self.theta.log().mean().exp())}

    def __repr__(self):
        return f"DiagonalGaussian(d={self.dim}, min={float(self.theta.min()):.4g}, max={float(self.theta.max()):.4g})"


class FullGaussian(GaussianNoise):
    """``x + C z`` with C symmetric positive definite (RDDRS); the covariance is C^2."""

    kind = "full"
    param_name = "C"

    def __init__(self, C, symmetry_tol: float = 1e-8):
        C, eigvals, eigvecs = checked_spd(C, "C", symmetry_tol, "(d, d)")
        self.C = C
        self.eigenvalues = eigvals
        self.eigenvectors = eigvecs
        self._np = (_frozen(C), _frozen(eigvals), _frozen(eigvecs))

    @property
    def dim(self):
        return self.C.shape[0]

    def sample(self, count, dim, generator, device, dtype):
        z = standard_normal(count, dim, generator, device, dtype)
        return z @ self._cast(self.C, device, dtype), None  # rows z^T C = (C z)^T, C symmetric

    def region(self, center, radius):
        c, vals, vecs = self._np
        return Ellipsoid(center, c, radius, _eig=(vals, vecs))

    def condition_number(self) -> float:
        return float(self.eigenvalues[-1] / self.eigenvalues[0])

    def scale_summary(self):
        return {"min_sigma": float(self.eigenvalues[0]), "gm_sigma": float(self.eigenvalues.log().mean().exp())}

    def __repr__(self):
        return (
            f"FullGaussian(d={self.dim}, eig in [{float(self.eigenvalues[0]):.4g}, {float(self.eigenvalues[-1]):.4g}])"
        )


class MixtureOfGaussians(GaussianNoise):
    """Isotropic Gaussians of scales ``sigmas`` (Rostermundt and Anderson).

    ``kind="mixture"``: each sample draws one component k with probability ``weights[k]`` and adds
    ``sigma_k z``; certified with a bound derived for the mixture (see ``certify.radius``).
    ``kind="convolution"``: the paper's definition, the sum of K independent Gaussians, which is the
    single Gaussian ``sqrt(sum sigma_k^2) z`` (sampled as such, which is the same distribution).
    """

    def __init__(self, sigmas: Sequence[float], weights: Sequence[float] | None = None, kind: str = "mixture"):
        sig = owned_float64(sigmas, "sigmas").reshape(-1)
        if sig.numel() == 0:
            raise ValueError("sigmas must not be empty")
        if (sig <= 0).any():
            raise ValueError(f"sigmas must all be positive, got {sig.tolist()}")
        if kind not in ("mixture", "convolution"):
            raise ValueError(f"kind must be 'mixture' or 'convolution', got {kind!r}")
        if weights is None:
            w = torch.full_like(sig, 1.0 / sig.numel())
        else:
            w = owned_float64(weights, "weights").reshape(-1)
            if w.numel() != sig.numel():
                raise ValueError(f"weights has {w.numel()} entries but sigmas has {sig.numel()}")
            if (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-6:
                raise ValueError(f"weights must be a probability distribution (non-negative, sum 1), got {w.tolist()}")
            w = w / w.sum()
        if kind == "convolution" and weights is not None:
            raise ValueError("weights have no meaning for kind='convolution' (a sum of Gaussians)")
        self.sigmas = sig
        self.weights = w
        self.kind = kind
        self.num_components = sig.numel() if kind == "mixture" else 1

    @property
    def effective_sigma(self) -> float:
        """sqrt(sum sigma_k^2): the scale of the convolution (README, Errata M1)."""
        return float(self.sigmas.pow(2).sum().sqrt())

    def sample(self, count, dim, generator, device, dtype):
        z = standard_normal(count, dim, generator, device, dtype)
        if self.kind == "convolution":
            return z.mul_(self.effective_sigma), None
        if self.num_components == 1:  # no draw: K = 1 is exactly IsotropicGaussian, same random stream
            return z.mul_(float(self.sigmas[0])), torch.zeros(count, dtype=torch.int64, device=device)
        gen_device = generator.device if generator is not None else "cpu"
        comp = torch.multinomial(self.weights.to(gen_device), count, replacement=True, generator=generator).to(device)
        scales = self._cast(self.sigmas, device, dtype)[comp]
        return z.mul_(scales[:, None]), comp

    def region(self, center, radius):
        # convolution: the effective Gaussian's ball in its own norm; mixture: radius is an l2 radius.
        if self.kind == "convolution":
            return Ellipsoid(center, self.effective_sigma, radius)
        return Ellipsoid(center, 1.0, radius)

    def scale_summary(self):
        if self.kind == "convolution":
            s = self.effective_sigma
            return {"min_sigma": s, "gm_sigma": s}
        # smallest constituent; weighted geometric mean of the constituents
        return {
            "min_sigma": float(self.sigmas.min()),
            "gm_sigma": float((self.weights * self.sigmas.log()).sum().exp()),
        }

    def __repr__(self):
        return f"MixtureOfGaussians(sigmas={self.sigmas.tolist()}, weights={self.weights.tolist()}, kind={self.kind!r})"
