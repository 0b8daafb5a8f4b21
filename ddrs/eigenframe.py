"""One eigendecomposition per RDDRS step, shared by the floor projection, the volume and smallest-eigenvalue
terms, the Riemannian gradient and the move (affine-invariant metric).

A point X = V diag(lam) V^T of SPD(d) is carried with its decomposition (an ``EigenFrame``). In the
frame's whitened coordinates (P = V diag(sqrt lam), tangent vector U = P W P^T):

* the affine-invariant norm is the Frobenius norm, ||U||_X = ||W||_F (Pennec, Fillard, Ayache 2006);
* the Riemannian gradient X sym(G) X of a Euclidean gradient G is W = D^1/2 (V^T sym(G) V) D^1/2
  (errata rddrs item 4);
* the exponential map is P expm(W) P^T and the second-order retraction X + U + U X^-1 U / 2
  (Jeuris, Vandebril, Vandereycken 2012) is P (I + W + W^2 / 2) P^T (``manifolds.AffineInvariant``'s
  formulas, written in the frame so that they need no decomposition of X);
* the floor/ceiling projection clamps lam and keeps V (``SPD.project_floor``), so the projected point's
  frame is known without a new decomposition;
* mean log eigenvalue and smallest eigenvalue, with the gradients of ``manifolds.spectral``
  (C^-1 / d; the eigenspace-averaged subgradient at ties), read off lam and V.

At d = 784 one ``eigh`` costs about as much as the rest of a step's geometry together
(benchmarks/results/manifold_ops.csv), so a step that decomposes once is several times cheaper than
one that calls the manifold's floor, norm, retraction and volume separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

F64 = torch.float64
_TINY = torch.finfo(F64).tiny


def _sym(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x + x.transpose(-1, -2))


@dataclass
class EigenFrame:
    """Batched SPD points (B, d, d) with their decomposition point = vec diag(lam) vec^T (lam ascending)."""

    point: torch.Tensor
    lam: torch.Tensor
    vec: torch.Tensor

    @classmethod
    def of(cls, point: torch.Tensor) -> EigenFrame:
        """Decompose ``point`` (one ``torch.linalg.eigh``)."""
        if point.ndim != 3 or point.shape[-1] != point.shape[-2]:
            raise ValueError(f"point must be a batch of square matrices (B, d, d), got {tuple(point.shape)}")
        point = _sym(point.detach().to(F64))
        lam, vec = torch.linalg.eigh(point)
        if not bool((lam > 0).all()):
            raise ValueError(f"point is not positive definite (smallest eigenvalue {float(lam.min()):.3g})")
        return cls(point, lam, vec)

    def __len__(self) -> int:
        return self.point.shape[0]

    def __getitem__(self, index: slice) -> EigenFrame:
        return EigenFrame(self.point[index], self.lam[index], self.vec[index])

    # ---- constraint ---------------------------------------------------------------
    def clamp(self, floor: torch.Tensor | float, ceiling: torch.Tensor | float | None = None) -> EigenFrame:
        """Eigenvalues clamped to [floor, ceiling] (per input), eigenvectors kept: ``SPD.project_floor``
        in the frame. Inputs already inside keep their point exactly."""
        lo = torch.as_tensor(floor, dtype=F64, device=self.lam.device)
        lo = lo[..., None] if lo.ndim else lo
        hi = None
        if ceiling is not None:
            hi = torch.as_tensor(ceiling, dtype=F64, device=self.lam.device)
            hi = hi[..., None] if hi.ndim else hi
        lam = self.lam.clamp(min=lo, max=hi)  # monotone: stays ascending
        changed = (lam != self.lam).any(-1)
        if not bool(changed.any()):
            return self
        rebuilt = _sym((self.vec * lam.unsqueeze(-2)) @ self.vec.transpose(-1, -2))
        point = torch.where(changed[:, None, None], rebuilt, self.point)
        return EigenFrame(point, lam, self.vec)

    # ---- affine-invariant geometry in whitened coordinates --------------------------------
    def whiten_gradient(self, egrad: torch.Tensor) -> torch.Tensor:
        """The affine-invariant Riemannian gradient X sym(G) X in whitened frame coordinates,
        D^1/2 V^T sym(G) V D^1/2; its Frobenius norm is the gradient's Riemannian norm."""
        s = self.lam.clamp_min(_TINY).sqrt()
        g = self.vec.transpose(-1, -2) @ _sym(egrad.to(F64)) @ self.vec
        return _sym(g * s[..., :, None] * s[..., None, :])

    def move(self, w: torch.Tensor, method: str = "retr") -> torch.Tensor:
        """The point reached from X along the tangent vector with whitened coordinates ``w``:
        P (I + w + w^2/2) P^T (``"retr"``) or P expm(w) P^T (``"exp"``), P = V D^1/2."""
        w = _sym(w.to(F64))
        if method == "retr":
            eye = torch.eye(w.shape[-1], dtype=F64, device=w.device)
            f = eye + w + 0.5 * (w @ w)
        elif method == "exp":
            mu, q = torch.linalg.eigh(w)
            f = (q * mu.exp().unsqueeze(-2)) @ q.transpose(-1, -2)
        else:
            raise ValueError(f"method must be 'exp' or 'retr', got {method!r}")
        p = self.vec * self.lam.clamp_min(_TINY).sqrt().unsqueeze(-2)
        return _sym(p @ _sym(f) @ p.transpose(-1, -2))

    # ---- objective terms (differentiable w.r.t. the point) ------------------------------
    def log_volume(self, point: torch.Tensor) -> torch.Tensor:
        """Mean log eigenvalue of ``point`` (which must be this frame's point, possibly requiring grad);
        gradient C^-1 / d (Jacobi's formula), as ``manifolds.spectral.log_volume_spd``."""
        return _FrameLogVolume.apply(point, self.lam, self.vec)

    def min_eigenvalue(self, point: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
        """Smallest eigenvalue of ``point`` (this frame's point); subgradient averaged over the
        (near-)repeated eigenspace, as ``manifolds.spectral.min_eigenvalue_spd``."""
        return _FrameMinEigenvalue.apply(point, self.lam, self.vec, rtol)


class _FrameLogVolume(torch.autograd.Function):
    @staticmethod
    def forward(ctx, point: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(lam, vec)
        return lam.log().mean(-1).to(point.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        lam, vec = ctx.saved_tensors
        inv = (vec / lam.unsqueeze(-2)) @ vec.transpose(-1, -2)
        return grad[..., None, None] * _sym(inv) / lam.shape[-1], None, None


class _FrameMinEigenvalue(torch.autograd.Function):
    @staticmethod
    def forward(ctx, point: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor, rtol: float) -> torch.Tensor:
        lmin = lam[..., :1]
        tol = rtol * lam.abs().amax(-1, keepdim=True).clamp_min(_TINY)
        mask = (lam - lmin <= tol).to(lam.dtype)
        ctx.save_for_backward(vec, mask / mask.sum(-1, keepdim=True))
        return lmin[..., 0].to(point.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        vec, weights = ctx.saved_tensors
        proj = (vec * weights.unsqueeze(-2)) @ vec.transpose(-1, -2)
        return grad[..., None, None] * proj, None, None, None


def transport_second_moment(v: torch.Tensor, old_vec: torch.Tensor, new_vec: torch.Tensor) -> torch.Tensor:
    """Per-direction second moments v (B, d, d), given in the eigenbasis ``old_vec``, expressed in
    ``new_vec``: with R = new_vec^T old_vec, a whitened matrix moves as W' = R W R^T, and if W's entries
    are independent, Var(W'_kl) = sum_ij R_ki^2 R_lj^2 Var(W_ij), i.e. v' = (R o R) v (R o R)^T.
    (R o R is doubly stochastic: the total second moment is kept; the identity when the basis is kept.)"""
    r = new_vec.transpose(-1, -2) @ old_vec
    q = r * r
    return q @ v @ q.transpose(-1, -2)
