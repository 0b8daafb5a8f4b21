"""Spectral helpers on batched symmetric matrices with NaN-free autograd at repeated eigenvalues.

``torch.linalg.eigh``'s backward divides by eigenvalue gaps and is NaN at C = sigma I (pytorch
#47599, geomstats #982); the two functions the objectives differentiate get closed-form backwards.
"""

from __future__ import annotations

import torch

F64 = torch.float64


def sym(x: torch.Tensor) -> torch.Tensor:
    """Symmetric part (x + x^T) / 2 of the last two axes."""
    return 0.5 * (x + x.transpose(-1, -2))


def sym_apply(x: torch.Tensor, fn) -> torch.Tensor:
    """U f(Lambda) U^T for symmetric x (no gradient through the decomposition)."""
    lam, vec = torch.linalg.eigh(x)
    return sym((vec * fn(lam).unsqueeze(-2)) @ vec.transpose(-1, -2))


class _LogVolumeSPD(torch.autograd.Function):
    """mean log eigenvalue of C; d/dC = C^{-1} / d (Jacobi's formula), with C^{-1} = U diag(1/lambda) U^T
    from the forward's eigendecomposition (no LU: batched MKL getri misbehaved at d = 784)."""

    @staticmethod
    def forward(ctx, c: torch.Tensor) -> torch.Tensor:
        lam, vec = torch.linalg.eigh(c)
        ctx.save_for_backward(lam, vec)
        return lam.log().mean(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        lam, vec = ctx.saved_tensors
        inv = (vec / lam.unsqueeze(-2)) @ vec.transpose(-1, -2)
        return grad[..., None, None] * sym(inv) / lam.shape[-1]


class _MinEigenvalueSPD(torch.autograd.Function):
    """Smallest eigenvalue of C; (sub)gradient = average of u u^T over its eigenspace (Clarke)."""

    @staticmethod
    def forward(ctx, c: torch.Tensor, rtol: float) -> torch.Tensor:
        lam, vec = torch.linalg.eigh(c)
        lmin = lam[..., :1]
        tol = rtol * lam.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(lam.dtype).tiny)
        mask = (lam - lmin <= tol).to(lam.dtype)  # the (near-)repeated eigenspace
        proj = (vec * (mask / mask.sum(-1, keepdim=True)).unsqueeze(-2)) @ vec.transpose(-1, -2)
        ctx.save_for_backward(proj)
        return lmin[..., 0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (proj,) = ctx.saved_tensors
        return grad[..., None, None] * proj, None


def log_volume_spd(c: torch.Tensor) -> torch.Tensor:
    """Mean log eigenvalue of batched SPD ``c`` (..., d, d) -> (...), finite gradient everywhere."""
    return _LogVolumeSPD.apply(c)


def min_eigenvalue_spd(c: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
    """Smallest eigenvalue of batched symmetric ``c``, with a finite subgradient at ties."""
    return _MinEigenvalueSPD.apply(c, rtol)


def min_value_vector(theta: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
    """min over the last axis with the gradient split evenly over ties (diagonal case)."""
    lmin = theta.min(-1, keepdim=True).values.detach()
    tol = rtol * theta.detach().abs().amax(-1, keepdim=True)
    mask = (theta.detach() - lmin <= tol).to(theta.dtype)
    weights = mask / mask.sum(-1, keepdim=True)
    # value equals the min; the gradient is the tie-averaged indicator
    return (theta * weights).sum(-1) + (lmin[..., 0] - (theta.detach() * weights).sum(-1))


def divided_difference_log(lam: torch.Tensor) -> torch.Tensor:
    """Gamma_ij = (log l_i - log l_j) / (l_i - l_j), 1/l_i on ties (Daleckii-Krein; Bhatia 2007, 5.3)."""
    li, lj = lam[..., :, None], lam[..., None, :]
    diff = li - lj
    logdiff = lam.log()[..., :, None] - lam.log()[..., None, :]
    tie = diff.abs() <= 1e-9 * torch.maximum(li.abs(), lj.abs())
    safe = torch.where(tie, torch.ones_like(diff), diff)
    # on ties use 2/(l_i+l_j), the symmetric first-order limit
    return torch.where(tie, 2.0 / (li + lj), logdiff / safe)
