"""Full SPD noise matrices C (RDDRS): exp/log/dist from Geomstats, the rest in torch.

Geomstats supplies exp, log and dist for whatever SPD metric is chosen (affine-invariant,
log-Euclidean, Bures-Wasserstein, or any Geomstats SPD metric); we add what it lacks:
``egrad2rgrad``, the second-order AI retraction, the eigenvalue floor and safe spectral gradients.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from . import geomstats_adapter as gsa
from .base import F64, Manifold
from .spectral import divided_difference_log, log_volume_spd, min_eigenvalue_spd, sym, sym_apply


def random_orthogonal(*shape: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Haar-distributed orthogonal matrices: eigenvectors of a GOE matrix (Mehta 2004, 3.1)."""
    a = torch.randn(*shape, dim, dim, generator=generator, dtype=F64)
    return torch.linalg.eigh(a + a.transpose(-1, -2))[1]


class SPD(Manifold):
    """Symmetric positive definite C (dim x dim); points (dim, dim) or (B, dim, dim).

    ``metric``: "affine-invariant" (Rao-Fisher, default), "log-euclidean", "bures-wasserstein",
    or any Geomstats SPD metric class or instance.
    """

    point_ndim = 2

    def __init__(self, dim: int, metric: Any = "affine-invariant", log_eig_range: float = 1.0):
        super().__init__(dim)
        self.gs_metric = gsa.make_metric(self.dim, metric)
        self.kind = gsa.metric_kind(self.gs_metric)
        self.metric_name = self.kind if self.kind != "other" else type(self.gs_metric).__name__
        self.log_eig_range = float(log_eig_range)

    # ---- metric -----------------------------------------------------------------
    def inner(self, x, u, v):
        x, u, v = x.to(F64), u.to(F64), v.to(F64)
        if self.kind == "affine-invariant":
            # tr(X^-1 U X^-1 V) = <X^-1/2 U X^-1/2, X^-1/2 V X^-1/2>_F (Bhatia 2007, ch. 6), X^-1/2 from
            # eigh: no LU (batched MKL getrf/laswp hangs at d = 784 with 2 threads, issue 12 item 0)
            _, isqrt = self._ai_halves(x)
            a = isqrt @ u @ isqrt
            b = a if v is u else isqrt @ v @ isqrt
            return (a * b).sum((-2, -1))
        x, u, v = torch.broadcast_tensors(x, u, v)
        return self.gs_metric.inner_product(u, v, x)

    def egrad2rgrad(self, x, g):
        x, g = x.to(F64), sym(g.to(F64))
        if self.kind == "affine-invariant":
            return sym(x @ g @ x)  # C sym(G) C (Pennec et al. 2006; errata item 4)
        if self.kind == "log-euclidean":
            # (Dlog_X)^-2 [sym G]: divide U^T G U by Gamma o Gamma (Arsigny et al. 2006; anchors note 2.4)
            lam, vec = torch.linalg.eigh(x)
            gam = divided_difference_log(lam)
            return sym(vec @ ((vec.transpose(-1, -2) @ g @ vec) / gam.square()) @ vec.transpose(-1, -2))
        if self.kind == "bures-wasserstein":
            # g_X(U,V) = 1/2 <L_X[U], V> with X L + L X = U, so rgrad = 2 (X G + G X) (Bhatia et al. 2019)
            return 2.0 * sym(x @ g + g @ x)
        return self._egrad2rgrad_generic(x, g)

    def _egrad2rgrad_generic(self, x, g):
        """Solve the metric's Gram system on a basis of Sym(n) (any Geomstats metric; O(n^4) inner products)."""
        n = self.dim
        iu = torch.triu_indices(n, n)
        k = iu.shape[1]
        basis = torch.zeros(k, n, n, dtype=F64)
        basis[torch.arange(k), iu[0], iu[1]] = 1.0
        basis = sym(basis) * torch.where(iu[0] == iu[1], 1.0, 2.0).to(F64)[:, None, None]  # E_ij + E_ji
        bshape = x.shape[:-2]
        a = basis[:, None].expand(k, k, n, n)
        b = basis[None, :].expand(k, k, n, n)
        xb = x.reshape((-1, 1, 1, n, n)).expand(-1, k, k, n, n)
        m = xb.shape[0]
        gram = self.gs_metric.inner_product(
            a.expand(m, k, k, n, n).reshape(-1, n, n), b.expand(m, k, k, n, n).reshape(-1, n, n), xb.reshape(-1, n, n)
        ).reshape(m, k, k)
        rhs = (g.reshape(-1, 1, n, n) * basis).sum((-2, -1))
        coef = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)
        return sym(torch.einsum("mk,kij->mij", coef, basis)).reshape(bshape + (n, n))

    _halves_cache: tuple | None = None

    def _ai_halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(X^1/2, X^-1/2) from one eigendecomposition of X (no LU anywhere in the AI geometry);
        reuses the one ``step`` computed for the same tensor."""
        cached = self._halves_cache
        if cached is not None and cached[0] is x:
            return cached[1], cached[2]
        lam, vec = torch.linalg.eigh(x)
        s = lam.clamp_min(torch.finfo(F64).tiny).sqrt().unsqueeze(-2)
        return sym((vec * s) @ vec.transpose(-1, -2)), sym((vec / s) @ vec.transpose(-1, -2))

    @staticmethod
    def _ai_from_whitened(sqrt: torch.Tensor, w: torch.Tensor, method: str) -> torch.Tensor:
        """X^1/2 f(W) X^1/2 with f = expm (exp, Pennec et al. 2006) or I + W + W^2/2 (retr)."""
        if method == "exp":
            fw = sym_apply(sym(w), torch.exp)
        else:
            # = X + V + 1/2 V X^-1 V, second order for AI (Jeuris, Vandebril, Vandereycken 2012)
            eye = torch.eye(w.shape[-1], dtype=w.dtype, device=w.device)
            fw = eye + w + 0.5 * w @ w
        return sym(sqrt @ fw @ sqrt)

    def exp(self, x, u):
        if self.kind == "affine-invariant":
            if not (x.shape == u.shape and x.dtype == F64):  # else x itself, so step's cache hits
                x, u = torch.broadcast_tensors(x.to(F64), u.to(F64))
            sqrt, isqrt = self._ai_halves(x)
            return self._ai_from_whitened(sqrt, isqrt @ sym(u.to(F64)) @ isqrt, "exp")
        x, u = torch.broadcast_tensors(x.to(F64), u.to(F64))
        return sym(self.gs_metric.exp(sym(u), x))

    def retr(self, x, u):
        if self.kind != "affine-invariant":
            return self.exp(x, u)
        if not (x.shape == u.shape and x.dtype == F64):
            x, u = torch.broadcast_tensors(x.to(F64), u.to(F64))
        sqrt, isqrt = self._ai_halves(x)
        return self._ai_from_whitened(sqrt, isqrt @ sym(u.to(F64)) @ isqrt, "retr")

    def step(self, x, rgrad, step_size, method="exp", max_norm=None):
        """As ``Manifold.step``; for AI the norm, the clipping and exp/retr share one eigh of x."""
        if self.kind != "affine-invariant":
            return super().step(x, rgrad, step_size, method=method, max_norm=max_norm)
        if method not in ("exp", "retr"):
            raise ValueError(f"method must be 'exp' or 'retr', got {method!r}")
        with torch.no_grad():
            x = x.detach().to(F64)
            u = self._expand_scalar(step_size, x) * sym(rgrad.detach().to(F64))
            if u.shape != x.shape:
                x, u = torch.broadcast_tensors(x, u)
                x = x.contiguous()
            sqrt, isqrt = self._ai_halves(x)
            if max_norm is not None:
                n = torch.linalg.matrix_norm(isqrt @ u @ isqrt)  # ||U||_X = ||X^-1/2 U X^-1/2||_F
                scale = (float(max_norm) / n.clamp_min(torch.finfo(F64).tiny)).clamp(max=1.0)
                u = u * scale[..., None, None]
            self._halves_cache = (x, sqrt, isqrt)  # exp/retr below reuse this eigendecomposition
            try:
                return self.exp(x, u) if method == "exp" else self.retr(x, u)
            finally:
                self._halves_cache = None

    def log(self, x, y):
        x, y = torch.broadcast_tensors(x.to(F64), y.to(F64))
        return sym(self.gs_metric.log(y, x))

    def dist(self, x, y):
        x, y = torch.broadcast_tensors(x.to(F64), y.to(F64))
        if self.kind in ("affine-invariant", "log-euclidean", "bures-wasserstein"):
            # squared_dist then a clamped sqrt: the plain sqrt is NaN-prone at x = y
            return self.gs_metric.squared_dist(x, y).clamp_min(0).sqrt()
        return self.gs_metric.dist(x, y)

    def injectivity_radius(self, x: torch.Tensor) -> torch.Tensor:
        """Radius within which exp is a minimising geodesic: sqrt(lambda_min) for Bures-Wasserstein
        (Massart and Absil 2020), infinite for AI and LE (Hadamard manifolds)."""
        lam = torch.linalg.eigvalsh(x.to(F64))
        if self.kind == "bures-wasserstein":
            return lam[..., 0].clamp_min(0).sqrt()
        return torch.full_like(lam[..., 0], math.inf)

    # ---- spectrum ---------------------------------------------------------------
    def eigenvalues(self, x):
        return torch.linalg.eigvalsh(x.to(F64))

    def project_floor(self, x, lambda_min, lambda_max=None):
        x = x.to(F64)
        lam, vec = torch.linalg.eigh(x)
        lm = torch.as_tensor(lambda_min, dtype=F64)
        lm = lm[..., None] if lm.ndim else lm  # (B,) -> (B, 1) against eigenvalues (B, d)
        hi = None
        if lambda_max is not None:
            hi = torch.as_tensor(lambda_max, dtype=F64)
            hi = hi[..., None] if hi.ndim else hi
        floored = sym((vec * lam.clamp(min=lm, max=hi).unsqueeze(-2)) @ vec.transpose(-1, -2))
        inside = (lam >= lm) if hi is None else (lam >= lm) & (lam <= hi)
        return torch.where(inside.all(-1)[..., None, None], x, floored)  # exactly the identity inside

    def log_volume(self, x):
        return log_volume_spd(x.to(F64))

    def min_eigenvalue(self, x):
        return min_eigenvalue_spd(x.to(F64))

    # ---- points and noise -----------------------------------------------------------
    def random_point(self, *batch_shape, generator=None):
        q = random_orthogonal(*batch_shape, dim=self.dim, generator=generator)
        r = self.log_eig_range
        lam = (torch.rand(*batch_shape, self.dim, generator=generator, dtype=F64) * 2 - 1) * r
        return sym((q * lam.exp().unsqueeze(-2)) @ q.transpose(-1, -2))

    def noise_matrix_apply(self, x, z):
        return z @ x.to(z.dtype)  # rows z^T C = (C z)^T since C is symmetric

    def _to_noise_single(self, x):
        from certify import FullGaussian

        return FullGaussian(x)

    def _check_values(self, x):
        asym = (x - x.transpose(-1, -2)).abs().amax()
        if asym > 1e-8 * max(1.0, float(x.abs().amax())):
            raise ValueError(f"matrix is not symmetric (max |C - C^T| = {float(asym):.3g})")
        lmin = float(torch.linalg.eigvalsh(sym(x)).amin())
        if not lmin > 0:
            raise ValueError(f"matrix is not positive definite (smallest eigenvalue {lmin:.3g})")
