"""Low-rank plus diagonal noise: covariance Sigma = D + abar^2 U diag(e^2) U^T, as a manifold (``LowRankSPD``, geometry)
and a noise map (``LowRankNoise``, what a point means); ``spiked=True`` is the rotation-equivariant form D = s^2 I.

Point representation
    One float64 tensor of shape (d, k + 2) per point (a batch is (B, d, k + 2)), ``LowRankLayout``:

    * columns 0..k-1: U, a point of the Stiefel manifold St(d, k) (orthonormal columns, the spike directions);
    * column k: the spikes' relative sizes e in R^k in rows 0..k-1 (rows k.. are zero);
    * column k + 1: a in (0, inf)^d, the per-coordinate standard deviations (D = diag(a^2)); spiked: every entry s.

    The covariance is Sigma = diag(a^2) + abar^2 U diag(e^2) U^T with abar = exp(mean log a) (the geometric mean of
    a; abar = s in the spiked form), i.e. ``certify.LowRankGaussian(a^2, U, abar^2 e^2)``: spike j adds variance
    (abar e_j)^2 along u_j, in units of the diagonal's own scale (so the geometry is scale-free). The noise is drawn
    in square-root form, a * z_d + abar U diag(e) z_k from d + k standard normals (z_d first: the stream of
    ``LowRankGaussian``), and no d x d matrix is ever formed. The library parameterises the noise scale: a is the
    diagonal part of that scale (a std, like ANCER's theta), abar |e_j| the std each spike adds.

Why e is real (and the cold start sits at e = 1e-3)
    Spikes only add noise (lambda_j = abar^2 e_j^2 >= 0), as ``LowRankGaussian`` requires, but e itself is a real
    coordinate: e_j = 0 (no spike) is an interior point, so the isotropic start sigma I is reachable and an ascent
    can grow or remove a spike with plain Euclidean steps in e (a log-metric on lambda would put sigma I at infinite
    distance and crawl away from it at lr per step in log lambda). The objective is even in each e_j, so its gradient
    in e vanishes at e = 0: ``LowRankNoise.from_scales`` starts at e_j = 1e-3 (``SPIKE_START``), the symmetry broken
    by a variance of 1e-6 sigma^2 along k directions: the smallest scale (and with it the certified l2 radius) is
    exactly sigma's, the mean log scale rises by (k / 2d) log(1 + 1e-6) < 1e-6. Adam normalises each part of the
    gradient (``components``), so the small start gradient still gives lr-sized steps. U at the start is a fixed
    generic orthonormal basis (the Q of a Gaussian matrix from a fixed seed: no axis and no image structure favoured).

Metric (a product metric)
    * U: the canonical metric of St(d, k), <A, B>_U = tr(A^T (I - U U^T / 2) B), with its closed-form exponential
      map (Edelman, Arias, Smith 1998, "The geometry of algorithms with orthogonality constraints", eq. 2.42), its
      Riemannian gradient G - U G^T U (ibid., eq. 2.53) and Zimmermann's algorithm for its logarithm (Zimmermann 2017,
      "A matrix-algebraic algorithm for the Riemannian logarithm on the Stiefel manifold", Alg. 1; Geomstats'
      ``StiefelCanonicalMetric.log`` runs the same iteration). The retraction is the QR retraction qf(U + A)
      (Absil, Mahony, Sepulchre 2008, Ex. 4.1.3): first order, O(d k^2).
    * e: Euclidean, <u, v> = sum_j u_j v_j.
    * a: the log-metric sum_i u_i v_i / a_i^2 (the affine-invariant metric on diagonal matrices, ANCER's theta);
      spiked: a = s 1 moves as one, d (u_s / s)^2, the affine-invariant metric of SPD(d) restricted to s I.

Noise map (``LowRankNoise``)
    smallest scale: sqrt(min a^2) <= sqrt(lambda_min(Sigma)) (Weyl: the spikes are PSD), exact in the spiked form (and
    + abar^2 min e^2 when k = d); mean log scale (1 / 2d) (sum log a^2 + log det(I_k + abar^2 E U^T D^-1 U E)), the
    matrix determinant lemma (Harville 1997, Thm 18.1.1), exact; the floor clamps a into [floor, ceiling] and then
    caps |e_j| so that the Weyl upper bound max a^2 + abar^2 e_j^2 of the largest variance stays below ceiling^2.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from .base import F64, Manifold, f64_pair
from .noise_map import NoiseMap
from .spectral import min_value_vector

#: e_j of a cold start (module docstring: breaks the e -> -e symmetry; variance 1e-6 sigma^2 along each spike)
SPIKE_START = 1e-3
#: orthonormality tolerance of U (max |U^T U - I|)
ORTHONORMAL_TOL = 1e-8
#: a conservative injectivity radius of St(d, k) under the canonical metric (numerically ~0.89 pi;
#: Zimmermann and Stoye 2024, "High curvature means low rank", Sec. 5): steps are clipped inside it
STIEFEL_INJECTIVITY = 0.89 * math.pi
#: seed of the fixed generic start basis U0
BASIS_SEED = 20240527


def _check_rank(dim: int, rank: Any) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= dim:
        raise ValueError(f"rank must be an int with 1 <= rank <= dim = {dim}, got {rank!r}")
    return rank


class LowRankLayout:
    """Where U, e and a sit in a point (d, k + 2) (module docstring)."""

    def __init__(self, dim: int, rank: int):
        self.dim, self.rank = int(dim), _check_rank(int(dim), rank)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.dim, self.rank + 2)

    def frame(self, x: torch.Tensor) -> torch.Tensor:
        """U, batch + (d, k)."""
        return x[..., : self.rank]

    def spikes(self, x: torch.Tensor) -> torch.Tensor:
        """e, batch + (k,)."""
        return x[..., : self.rank, self.rank]

    def diagonal(self, x: torch.Tensor) -> torch.Tensor:
        """a, batch + (d,)."""
        return x[..., self.rank + 1]

    def pack(self, u: torch.Tensor, e: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        batch = torch.broadcast_shapes(u.shape[:-2], e.shape[:-1], a.shape[:-1])
        k = self.rank
        e_col = torch.zeros(batch + (self.dim,), dtype=u.dtype, device=u.device)
        e_col[..., :k] = e
        return torch.cat(
            [u.expand(batch + u.shape[-2:]), e_col[..., None], a.expand(batch + a.shape[-1:])[..., None]], -1
        )


def start_basis(dim: int, rank: int, dtype: torch.dtype = F64, device: Any = None) -> torch.Tensor:
    """The fixed generic orthonormal (d, k) basis of a cold start: Q of a seeded Gaussian matrix (signs fixed)."""
    g = torch.randn(dim, rank, generator=torch.Generator().manual_seed(BASIS_SEED), dtype=F64)
    return _qf(g).to(device=device, dtype=dtype)


def _qf(m: torch.Tensor) -> torch.Tensor:
    """The Q factor of a thin QR with a positive diagonal of R (unique for full column rank)."""
    q, r = torch.linalg.qr(m)
    sign = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return q * sign.unsqueeze(-2)


def _sym(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a + a.transpose(-1, -2))


def _skew(a: torch.Tensor) -> torch.Tensor:
    return 0.5 * (a - a.transpose(-1, -2))


# ---------------------------------------------------------------------------------------------- Stiefel (canonical)
def stiefel_proj(u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Z - U sym(U^T Z): the tangent vector at U nearest to Z (Euclidean; Absil et al. 2008, Ex. 3.6.2)."""
    return z - u @ _sym(u.transpose(-1, -2) @ z)


def stiefel_inner(u: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Canonical metric tr(A^T (I - U U^T / 2) B) (Edelman et al. 1998, eq. 2.39)."""
    ua, ub = u.transpose(-1, -2) @ a, u.transpose(-1, -2) @ b
    return (a * b).sum((-2, -1)) - 0.5 * (ua * ub).sum((-2, -1))


def stiefel_egrad2rgrad(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """G - U G^T U (Edelman et al. 1998, eq. 2.53)."""
    return g - u @ (g.transpose(-1, -2) @ u)  # k x k first: never a d x d product


def stiefel_exp(u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Canonical geodesic (Edelman et al. 1998, eq. 2.42): A = U^T D, QR = (I - U U^T) D,
    [M; N] = expm([[A, -R^T], [R, 0]]) [I; 0], Exp = U M + Q N. O(d k^2)."""
    k = u.shape[-1]
    a = _skew(u.transpose(-1, -2) @ delta)
    q, r = torch.linalg.qr(delta - u @ a)
    top = torch.cat([a, -r.transpose(-1, -2)], -1)
    bottom = torch.cat([r, torch.zeros_like(r)], -1)
    mn = torch.linalg.matrix_exp(torch.cat([top, bottom], -2))[..., :k]
    return u @ mn[..., :k, :] + q @ mn[..., k:, :]


def stiefel_retr(u: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """QR retraction qf(U + D) (Absil et al. 2008, Ex. 4.1.3), first order."""
    return _qf(u + delta)


def _orthogonal_log(v: np.ndarray) -> np.ndarray:
    """The real skew logarithm of a rotation (eigen-decomposition of the normal matrix; principal branch)."""
    from scipy.linalg import logm

    out = logm(v)
    out = np.real(out)
    return 0.5 * (out - out.T)


def stiefel_log(u0: torch.Tensor, u1: torch.Tensor, tol: float = 1e-13, max_iter: int = 200) -> torch.Tensor:
    """Canonical logarithm by Zimmermann's algorithm (Zimmermann 2017, Alg. 1), point by point (float64 numpy; the
    optimisers never call it). Raises ValueError when the iteration does not converge (points too far apart)."""
    from scipy.linalg import expm

    shape = torch.broadcast_shapes(u0.shape, u1.shape)
    a0 = u0.expand(shape).reshape((-1,) + shape[-2:]).detach().cpu().numpy()
    a1 = u1.expand(shape).reshape((-1,) + shape[-2:]).detach().cpu().numpy()
    k = shape[-1]
    out = np.empty_like(a0)
    for b in range(a0.shape[0]):
        x0, x1 = a0[b], a1[b]
        m = x0.T @ x1
        q, n = np.linalg.qr(x1 - x0 @ m)
        full, _ = np.linalg.qr(np.vstack([m, n]), mode="complete")
        v = np.block([[m, full[:k, k:]], [n, full[k:, k:]]])
        if np.linalg.det(v) < 0:
            v[:, -1] = -v[:, -1]
        for _ in range(max_iter):
            lv = _orthogonal_log(v)
            c = lv[k:, k:]
            if np.linalg.norm(c) <= tol:
                break
            v[:, k:] = v[:, k:] @ expm(-c)
        else:
            raise ValueError("Stiefel log: Zimmermann's iteration did not converge (the points are too far apart)")
        out[b] = x0 @ lv[:k, :k] + q @ lv[k:, :k]
    return torch.as_tensor(out, dtype=F64, device=u0.device).reshape(shape)


# ---------------------------------------------------------------------------------------------- the manifold
class LowRankSPD(Manifold):
    """Low-rank plus diagonal (or spiked) covariances Sigma = diag(a^2) + abar^2 U diag(e^2) U^T as the product
    St(d, k) x R^k x (0, inf)^d (spiked: x (0, inf) for a = s 1) with the canonical metric on U, the Euclidean one on e
    and the log-metric on a (module docstring). Points (d, k + 2) or (B, d, k + 2) (``LowRankLayout``).

    Parameters
    ----------
    dim : int
        The inputs' dimension d.
    rank : int
        k, the number of spikes (1 <= k <= d).
    spiked : bool, default False
        True: D = s^2 I (every entry of a equal), the rotation-equivariant form whose smallest scale is exact.
    log_eig_range : float, default 1.0
        ``random_point``: log a uniform in +-this, e uniform in +-exp(this), U within canonical distance ~1 of the
        start basis (``start_basis``).
    """

    point_ndim = 2
    metric_name = "stiefel-canonical x euclidean x log"

    def __init__(self, dim: int, rank: int, spiked: bool = False, log_eig_range: float = 1.0):
        super().__init__(dim)
        self.layout = LowRankLayout(self.dim, rank)
        self.rank = self.layout.rank
        self.spiked = bool(spiked)
        self.log_eig_range = float(log_eig_range)

    @property
    def point_shape(self) -> tuple[int, ...]:
        return self.layout.shape

    def default_noise(self) -> LowRankNoise:
        """The noise map of these points (``manifolds.noise_for`` returns it)."""
        return LowRankNoise(self.dim, self.rank, self.spiked)

    # ---- tangent vectors ----------------------------------------------------------------------
    def _diag_tangent(self, v: torch.Tensor) -> torch.Tensor:
        return v.mean(-1, keepdim=True).expand(v.shape) if self.spiked else v

    def proj(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """The tangent vector at ``x`` nearest to ``u``: U's block projected onto T_U St (Euclidean), the padding rows
        of the e column zeroed, the a column made constant in the spiked form."""
        x, u = f64_pair(x, u)
        lay = self.layout
        return lay.pack(stiefel_proj(lay.frame(x), lay.frame(u)), lay.spikes(u), self._diag_tangent(lay.diagonal(u)))

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.component_inner(x, u, v).sum(-1)

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x, g = f64_pair(x, g)
        lay = self.layout
        a = lay.diagonal(x)
        ga = a.square() * self._diag_tangent(lay.diagonal(g))  # spiked: s^2 mean(g) (metric d (u_s / s)^2)
        return lay.pack(stiefel_egrad2rgrad(lay.frame(x), lay.frame(g)), lay.spikes(g), ga)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        x, u = f64_pair(x, u)
        lay = self.layout
        a = lay.diagonal(x)
        new_a = a * torch.exp(self._diag_tangent(lay.diagonal(u)) / a)
        return lay.pack(stiefel_exp(lay.frame(x), lay.frame(u)), lay.spikes(x) + lay.spikes(u), new_a)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """QR retraction on U (first order), e + u on e, a + u + u^2 / (2 a) on a (second order, always > 0)."""
        x, u = f64_pair(x, u)
        lay = self.layout
        a, ua = lay.diagonal(x), self._diag_tangent(lay.diagonal(u))
        new_a = a + ua + 0.5 * ua.square() / a
        return lay.pack(stiefel_retr(lay.frame(x), lay.frame(u)), lay.spikes(x) + lay.spikes(u), new_a)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = f64_pair(x, y)
        lay = self.layout
        a = lay.diagonal(x)
        ua = self._diag_tangent(a * torch.log(lay.diagonal(y) / a))
        return lay.pack(stiefel_log(lay.frame(x), lay.frame(y)), lay.spikes(y) - lay.spikes(x), ua)

    def transp(self, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Projection onto the tangent space at ``y`` (geoopt's transport for embedded manifolds)."""
        return self.proj(y, u)

    def injectivity_radius(self, x: torch.Tensor) -> torch.Tensor:
        """Stiefel's (a conservative 0.89 pi, ``STIEFEL_INJECTIVITY``); the e and a factors are flat."""
        return torch.full(self.batch_shape(x), STIEFEL_INJECTIVITY, dtype=F64, device=x.device)

    # ---- components (per-part second moments of Riemannian Adam) -----------------------------
    @property
    def components(self) -> int:
        """Parts of a tangent vector with their own Adam second moment: U (one Stiefel factor), each e_j, and each
        a_i (spiked: s), the 1-D factors of the product (Becigneul and Ganea 2019, Sec. 4: one adaptive term per
        factor of a product manifold)."""
        return 1 + self.rank + (1 if self.spiked else self.dim)

    def component_inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The metric's inner product split by part: batch + (components,), summing to ``inner``."""
        same = v is u
        x, u = f64_pair(x, u)
        v = u if same else v.to(F64)
        lay = self.layout
        a = lay.diagonal(x)
        frame = stiefel_inner(lay.frame(x), lay.frame(u), lay.frame(v))
        spikes = lay.spikes(u) * lay.spikes(v)
        diag = lay.diagonal(u) * lay.diagonal(v) / a.square()
        if self.spiked:
            diag = diag.sum(-1, keepdim=True)
        return torch.cat([frame[..., None], spikes, diag], -1)

    def scale_components(self, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``u`` with part i multiplied by c[..., i] (c: batch + (components,))."""
        lay, k = self.layout, self.rank
        c = c.to(u.dtype)
        diag = lay.diagonal(u) * (c[..., k + 1 :] if not self.spiked else c[..., k + 1 : k + 2])
        return lay.pack(lay.frame(u) * c[..., :1, None], lay.spikes(u) * c[..., 1 : k + 1], diag)

    # ---- points -------------------------------------------------------------------------------
    def from_parts(self, u: Any, e: Any, a: Any) -> torch.Tensor:
        """The point of (U, e, a) (batch dimensions broadcast); a float ``a`` is s in the spiked form. Checked."""
        u = torch.as_tensor(u, dtype=F64)
        e = torch.as_tensor(e, dtype=F64)
        a = torch.as_tensor(a, dtype=F64)
        if a.ndim == 0 or a.shape[-1] == 1:
            a = a.reshape(a.shape[:-1] if a.ndim else ()).unsqueeze(-1).expand(a.shape[:-1] + (self.dim,))
        point = self.layout.pack(u, e, a)
        self.check_point(point)
        return point

    def isotropic(self, sigma: Any) -> torch.Tensor:
        """The cold start at sigma I (a float or a batch): U the start basis, e = ``SPIKE_START``."""
        return self.default_noise().from_scales(torch.as_tensor(sigma, dtype=F64)[..., None].expand(
            torch.as_tensor(sigma).shape + (self.dim,)))  # fmt: skip

    def random_point(self, *batch_shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        batch = tuple(batch_shape)
        r = self.log_eig_range
        u0 = start_basis(self.dim, self.rank)
        g = torch.randn(batch + (self.dim, self.rank), generator=generator, dtype=F64)
        t = stiefel_proj(u0, g)
        t = t / stiefel_inner(u0, t, t).clamp_min(1e-300).sqrt()[..., None, None]
        t = t * torch.rand(batch, generator=generator, dtype=F64)[..., None, None]  # canonical length <= 1
        e = (torch.rand(batch + (self.rank,), generator=generator, dtype=F64) * 2 - 1) * math.exp(r)
        shape_a = batch + ((1,) if self.spiked else (self.dim,))
        a = ((torch.rand(shape_a, generator=generator, dtype=F64) * 2 - 1) * r).exp().expand(batch + (self.dim,))
        return self.layout.pack(stiefel_exp(u0, t), e, a)

    def check_values(self, x: torch.Tensor) -> None:
        lay, k = self.layout, self.rank
        u = lay.frame(x)
        err = (u.transpose(-1, -2) @ u - torch.eye(k, dtype=F64, device=x.device)).abs().amax()
        if float(err) > ORTHONORMAL_TOL:
            raise ValueError(
                f"U (columns 0..{k - 1}) must have orthonormal columns (max |U^T U - I| = {float(err):.3g})"
            )
        pad = x[..., k:, k]
        if pad.numel() and float(pad.abs().max()) > 0:
            raise ValueError(f"column {k} holds e in rows 0..{k - 1}; its rows {k}.. must be zero")
        a = lay.diagonal(x)
        if not bool((a > 0).all()):
            raise ValueError(f"the diagonal a (column {k + 1}) must be positive, got min {float(a.min()):.3g}")
        if self.spiked:
            spread = (a.amax(-1) - a.amin(-1)) / a.amax(-1)
            if float(spread.max()) > 1e-12:
                raise ValueError(
                    f"spiked points need a constant diagonal a = s 1 (relative spread {float(spread.max()):.3g})"
                )

    def __repr__(self) -> str:
        form = ", spiked=True" if self.spiked else ""
        return f"LowRankSPD(dim={self.dim}, rank={self.rank}{form})"


# ---------------------------------------------------------------------------------------------- the noise map
class LowRankNoise(NoiseMap):
    """eps = a * z_d + abar U diag(e) z_k for a point of ``LowRankSPD(dim, rank, spiked)``: covariance
    diag(a^2) + abar^2 U diag(e^2) U^T, ``certify.LowRankGaussian`` for one point; d + k normals per draw.

    Parameters
    ----------
    dim, rank : int
        d and k, as for ``LowRankSPD``.
    spiked : bool, default False
        The spiked form (only changes ``from_scales``, which then needs isotropic scales, and ``repr``).
    """

    point_ndim: ClassVar[int] = 2

    def __init__(self, dim: int, rank: int, spiked: bool = False):
        super().__init__(dim)
        self.layout = LowRankLayout(self.dim, rank)
        self.rank = self.layout.rank
        self.spiked = bool(spiked)

    @property
    def normals(self) -> int:
        return self.dim + self.rank

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U, e, a, abar) of a point (views; abar = exp(mean log a))."""
        lay = self.layout
        a = lay.diagonal(x)
        return lay.frame(x), lay.spikes(x), a, a.log().mean(-1).exp()

    def apply(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """a * z_d + (abar e * z_k) U^T on rows z (batch + (n, d + k)): O(n d k), no d x d matrix."""
        d = self.dim
        u, e, a, abar = self.parts(x.to(z.dtype))
        w = e * abar[..., None]  # (B, k): std each spike adds
        return z[..., :d] * a.unsqueeze(-2) + (z[..., d:] * w.unsqueeze(-2)) @ u.transpose(-1, -2)

    def min_eigenvalue(self, x: torch.Tensor) -> torch.Tensor:
        """min a: Weyl's lower bound on sqrt(lambda_min(Sigma)) (the spikes are PSD), exact in the spiked form with
        k < d; the bound ``certify.LowRankGaussian`` certifies with."""
        _, _, a, _ = self.parts(x.to(F64))
        return min_value_vector(a)

    def log_volume(self, x: torch.Tensor) -> torch.Tensor:
        """(1 / 2d) log det Sigma = (1 / 2d) (sum log a^2 + log det M), M = I_k + abar^2 E U^T D^-1 U E (the matrix
        determinant lemma; Harville 1997, Thm 18.1.1; torch's ``LowRankMultivariateNormal`` capacitance)."""
        u, e, a, abar = self.parts(x.to(F64))
        w = u * (e * abar[..., None]).unsqueeze(-2) / a.unsqueeze(-1)  # D^-1/2 U diag(abar e), (B, d, k)
        cap = w.transpose(-1, -2) @ w + torch.eye(self.rank, dtype=F64, device=x.device)
        chol = torch.linalg.cholesky(cap)
        log_det_cap = 2.0 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
        return (2.0 * a.log().sum(-1) + log_det_cap) / (2.0 * self.dim)

    def project_floor(
        self, x: torch.Tensor, lambda_min: torch.Tensor | float, lambda_max: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """a clamped into [lambda_min, lambda_max] (the smallest scale's bound min a then holds), then, with a
        ceiling, every |e_j| capped at sqrt(lambda_max^2 - max a^2) / abar so that Weyl's bound max a^2 + abar^2 e_j^2
        on the largest variance stays at lambda_max^2. U is kept; the identity when ``min_eigenvalue`` and that upper
        bound already lie in the window (with k = d the smallest-scale bound counts the spikes too)."""
        x = x.to(F64)
        lay = self.layout
        batch = tuple(x.shape[:-2])
        lo = torch.as_tensor(lambda_min, dtype=F64, device=x.device).expand(batch)
        hi = None if lambda_max is None else torch.as_tensor(lambda_max, dtype=F64, device=x.device).expand(batch)
        u, e, a, _ = self.parts(x)
        new_a = a.clamp(min=lo[..., None], max=None if hi is None else hi[..., None])
        new_e = e
        if hi is not None:
            abar = new_a.log().mean(-1).exp()
            room = (hi.square() - new_a.amax(-1).square()).clamp_min(0).sqrt() / abar
            new_e = torch.minimum(torch.maximum(e, -room[..., None]), room[..., None])
        # inside: this map's own bounds already hold (min_eigenvalue, and Weyl's upper bound with a ceiling)
        inside = self.min_eigenvalue(x) >= lo
        if hi is not None:
            abar_x = a.log().mean(-1).exp()
            top = (a.amax(-1).square() + abar_x.square() * e.square().amax(-1)).sqrt()
            inside = inside & (top <= hi)
        inside = inside | ((a == new_a).all(-1) & (e == new_e).all(-1))
        if bool(inside.all()):
            return x
        out = lay.pack(u, new_e, new_a)
        return torch.where(inside[..., None, None], x, out)

    def point_noise(self, x: torch.Tensor) -> Any:
        """``certify.LowRankGaussian(a^2, U sign(e), max(abar^2 e^2, tiny))``: the same draws as ``apply`` (the column
        signs make sqrt(lambda) = abar e), a spike of e_j = 0 given a variance of 1e-300 (the class wants lambda > 0;
        it adds nothing to any draw)."""
        from certify import LowRankGaussian

        u, e, a, abar = self.parts(x.to(F64))
        sign = torch.where(e < 0, -torch.ones_like(e), torch.ones_like(e))
        lam = (abar * e).square().clamp_min(1e-300)
        diag = a[0].square() if self.spiked else a.square()
        return LowRankGaussian(diag, u * sign, lam)

    def from_scales(self, theta: torch.Tensor) -> torch.Tensor:
        """The cold start of diag(theta) (B, d): a = theta, e = ``SPIKE_START`` (module docstring), U the fixed
        ``start_basis``. The spiked form takes isotropic theta only (a ValueError otherwise)."""
        theta = theta.to(F64)
        if theta.shape[-1] != self.dim or not bool((theta > 0).all()):
            raise ValueError(
                f"theta must be positive with {self.dim} entries per point, got shape {tuple(theta.shape)}"
            )
        if self.spiked and not bool((theta == theta[..., :1]).all()):
            raise ValueError(
                "the spiked low-rank form has D = s^2 I: theta must be isotropic (equal entries per point); start from "
                "sigma_x* or use the diagonal low-rank form (spiked=False)"
            )
        batch = tuple(theta.shape[:-1])
        u = start_basis(self.dim, self.rank, device=theta.device).expand(batch + (self.dim, self.rank))
        e = torch.full(batch + (self.rank,), SPIKE_START, dtype=F64, device=theta.device)
        return self.layout.pack(u, e, theta)

    def __repr__(self) -> str:
        form = ", spiked=True" if self.spiked else ""
        return f"LowRankNoise(dim={self.dim}, rank={self.rank}{form})"


# ---------------------------------------------------------------------------------------------- spikes of either sign
class SignedSpikedSPD(LowRankSPD):
    """The spiked geometry of ``LowRankSPD(dim, rank, spiked=True)`` (U on St(d, k), e in R^k, a = s 1) read by
    ``SignedSpikedNoise``: the noise scale is s (I - U U^T) + s U diag(exp(e)) U^T, so e_j is the log of spike j's scale
    relative to s and a spike may be larger OR smaller than s (shrink the noise along k directions while s grows
    everywhere else). Points, metric, retraction and components are ``LowRankSPD``'s."""

    def __init__(self, dim: int, rank: int, log_eig_range: float = 1.0):
        super().__init__(dim, rank, spiked=True, log_eig_range=log_eig_range)

    def default_noise(self) -> SignedSpikedNoise:  # type: ignore[override]
        return SignedSpikedNoise(self.dim, self.rank)

    def random_point(self, *batch_shape: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``LowRankSPD``'s, with e (a log-scale here) uniform in +-``log_eig_range``."""
        x = super().random_point(*batch_shape, generator=generator)
        lay = self.layout
        return lay.pack(
            lay.frame(x), lay.spikes(x) * (self.log_eig_range / math.exp(self.log_eig_range)), lay.diagonal(x)
        )

    def __repr__(self) -> str:
        return f"SignedSpikedSPD(dim={self.dim}, rank={self.rank})"


class SignedSpikedNoise(NoiseMap):
    """eps = S z, S = s (I - U U^T) + s U diag(exp(e)) U^T, for a point of ``SignedSpikedSPD``: d normals per draw,
    symmetric scale, eigenvalues s (d - k times) and s exp(e_j); ``certify.SpikedGaussian`` for one point. Smallest
    scale s min(1, exp(min e)) and mean log scale log s + sum(e) / d, both exact; the cold start e = 0 is exactly s I
    (and the gradient in e is not zero there: no symmetry to break)."""

    point_ndim: ClassVar[int] = 2

    def __init__(self, dim: int, rank: int):
        super().__init__(dim)
        self.layout = LowRankLayout(self.dim, rank)
        self.rank = self.layout.rank

    def parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(U, e, s) of a point (s = the first entry of a, batch shape)."""
        lay = self.layout
        return lay.frame(x), lay.spikes(x), lay.diagonal(x)[..., 0]

    def apply(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """s z + s ((z U) * (exp(e) - 1)) U^T on rows z (batch + (n, d)): O(n d k)."""
        u, e, s = self.parts(x.to(z.dtype))
        excess = torch.expm1(e).unsqueeze(-2)
        return (z + ((z @ u) * excess) @ u.transpose(-1, -2)) * s[..., None, None]

    def eigenvalues(self, x: torch.Tensor) -> torch.Tensor:
        u, e, s = self.parts(x.to(F64))
        rest = s[..., None].expand(s.shape + (self.dim - self.rank,))
        return torch.sort(torch.cat([rest, s[..., None] * e.exp()], -1), dim=-1).values

    def min_eigenvalue(self, x: torch.Tensor) -> torch.Tensor:
        """Exact: s min(1, exp(min e)) (s exp(min e) when k = d)."""
        _, e, s = self.parts(x.to(F64))
        low = min_value_vector(e) if self.rank == self.dim else -torch.nn.functional.relu(-min_value_vector(e))
        return s * low.exp()

    def log_volume(self, x: torch.Tensor) -> torch.Tensor:
        """Exact: log s + sum(e) / d."""
        _, e, s = self.parts(x.to(F64))
        return s.log() + e.sum(-1) / self.dim

    def project_floor(
        self, x: torch.Tensor, lambda_min: torch.Tensor | float, lambda_max: torch.Tensor | float | None = None
    ) -> torch.Tensor:
        """The eigenvalue clamp into [lambda_min, lambda_max] (the shipped maps' floor): s and every spike's scale
        t_j = s exp(e_j) clamped, e_j = log(t_j / s) recomputed from the clamped pair; U kept, the identity inside."""
        x = x.to(F64)
        batch = tuple(x.shape[:-2])
        lo = torch.as_tensor(lambda_min, dtype=F64, device=x.device).expand(batch)
        hi = None if lambda_max is None else torch.as_tensor(lambda_max, dtype=F64, device=x.device).expand(batch)
        u, e, s = self.parts(x)
        new_s = s.clamp(min=lo, max=hi)
        t = s[..., None] * e.exp()
        new_t = t.clamp(min=lo[..., None], max=None if hi is None else hi[..., None])
        inside = (s == new_s) & (t == new_t).all(-1)
        new_e = (new_t / new_s[..., None]).log()
        if bool(inside.all()):
            return x
        out = self.layout.pack(u, new_e, new_s[..., None].expand(batch + (self.dim,)))
        return torch.where(inside[..., None, None], x, out)

    def point_noise(self, x: torch.Tensor) -> Any:
        from certify import SpikedGaussian

        u, e, s = self.parts(x.to(F64))
        return SpikedGaussian(float(s), u, float(s) * e.exp())

    def from_scales(self, theta: torch.Tensor) -> torch.Tensor:
        """The point of s I for isotropic theta (B, d): e = 0 (exact), U the fixed ``start_basis``."""
        theta = theta.to(F64)
        if theta.shape[-1] != self.dim or not bool((theta > 0).all()):
            raise ValueError(
                f"theta must be positive with {self.dim} entries per point, got shape {tuple(theta.shape)}"
            )
        if not bool((theta == theta[..., :1]).all()):
            raise ValueError(
                "the signed spiked form has the scale s off its spikes: theta must be isotropic (equal entries per "
                "point); start from sigma_x*"
            )
        batch = tuple(theta.shape[:-1])
        u = start_basis(self.dim, self.rank, device=theta.device).expand(batch + (self.dim, self.rank))
        return self.layout.pack(u, torch.zeros(batch + (self.rank,), dtype=F64, device=theta.device), theta)

    def __repr__(self) -> str:
        return f"SignedSpikedNoise(dim={self.dim}, rank={self.rank})"
