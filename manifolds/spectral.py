"""Spectral helpers on batched symmetric matrices with NaN-free autograd at repeated eigenvalues.

Public, documented building blocks for a user's own metric or manifold:

* ``sym(x)``: the symmetric part of the last two axes.
* ``eigh(x)``: ``torch.linalg.eigh`` that reuses the last decomposition of the same, unmodified
  storage (one RDDRS step's log-volume, smallest eigenvalue, norm, clipping, exp/retr share one
  eigendecomposition, and the floor's ``remember_eigh`` hands its result to the next step).
* ``sym_apply(x, f)``: the matrix function U f(Lambda) U^T.
* ``log_volume_spd(c)``: mean log eigenvalue, gradient C^-1 / d finite everywhere.
* ``min_eigenvalue_spd(c)``: smallest eigenvalue with the eigenspace-averaged subgradient at ties.
* ``log_volume_from_eigh`` / ``min_eigenvalue_from_eigh``: the same two from a decomposition already at hand
  (``manifolds.eigenframe``: one decomposition per optimisation step).
* ``divided_difference_log(lam)``: the first divided differences of log (Daleckii-Krein), relative
  to the eigenvalues' scale (no absolute tie tolerance).

``torch.linalg.eigh``'s backward divides by eigenvalue gaps and is NaN at C = sigma I; the two functions
the objectives differentiate get closed-form backwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch

F64 = torch.float64
_CACHE = threading.local()


def sym(x: torch.Tensor) -> torch.Tensor:
    """Symmetric part (x + x^T) / 2 of the last two axes."""
    return 0.5 * (x + x.transpose(-1, -2))


def _cache_key(x: torch.Tensor) -> tuple | None:
    """(storage address, offset, shape, strides, dtype, device, version) of ``x``, or None when ``x`` carries
    no version counter (inference tensors) or no storage. Views of one storage (``x.detach()``, ``x.to(x.dtype)``)
    share the version counter, so an in-place change through any of them invalidates the entry; the entry keeps
    a reference to the tensor, so its storage address cannot be reused by another tensor while cached."""
    if x.numel() == 0 or x.device.type == "meta":
        return None
    try:
        version = x._version
        address = x.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # inference tensors carry no version counter; storage-less tensors
        return None
    if address == 0:
        return None
    return (address, x.storage_offset(), tuple(x.shape), x.stride(), x.dtype, x.device, version)


def eigh(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues ascending, eigenvectors) of batched symmetric ``x``, as ``torch.linalg.eigh``.

    The last result is kept (per thread) and returned again while ``x`` views the same, unmodified
    storage (same version counter; e.g. ``x`` itself or ``x.detach()``): the values are identical to a
    fresh call (or, after ``remember_eigh``, the decomposition ``x`` was built from), only the work is
    saved. A tensor that requires grad while grad mode is on is always decomposed afresh (differentiable);
    inside a ``torch.autograd.Function.forward`` (grad mode off) the cache is used. In-place changes that
    bypass the version counter (``x.data``, numpy views) are not seen: decompose such tensors afresh."""
    key = None if (x.requires_grad and torch.is_grad_enabled()) else _cache_key(x)
    last = getattr(_CACHE, "eigh", None)
    if key is not None and last is not None and last[1] == key:
        return last[2], last[3]
    lam, vec = torch.linalg.eigh(x)
    if key is not None:
        _CACHE.eigh = (x, key, lam, vec)
    return lam, vec


def remember_eigh(x: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor) -> None:
    """Record ``(lam, vec)`` as the eigendecomposition ``eigh(x)`` returns next, for an ``x`` just built as
    ``sym(vec diag(lam) vec^T)`` with orthonormal ``vec`` and ascending ``lam`` (e.g. the eigenvalue floor):
    the next step reuses it instead of decomposing ``x`` again."""
    key = _cache_key(x)
    if key is not None:
        _CACHE.eigh = (x, key, lam.detach(), vec.detach())


def sym_apply(x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """U f(Lambda) U^T for symmetric x (no gradient through the decomposition)."""
    lam, vec = torch.linalg.eigh(x)
    return sym((vec * fn(lam).unsqueeze(-2)) @ vec.transpose(-1, -2))


class _LogVolume(torch.autograd.Function):
    """mean log eigenvalue of C from its decomposition (lam, vec); d/dC = C^{-1} / d (Jacobi's formula), with
    C^{-1} = U diag(1/lambda) U^T from the same decomposition (no LU: batched MKL getri misbehaved at d = 784)."""

    @staticmethod
    def forward(ctx, c: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(lam, vec)
        return lam.log().mean(-1).to(c.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        lam, vec = ctx.saved_tensors
        inv = (vec / lam.unsqueeze(-2)) @ vec.transpose(-1, -2)
        return grad[..., None, None] * sym(inv) / lam.shape[-1], None, None


class _MinEigenvalue(torch.autograd.Function):
    """Smallest eigenvalue of C from its decomposition; (sub)gradient = average of u u^T over its eigenspace
    (Clarke)."""

    @staticmethod
    def forward(ctx, c: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor, rtol: float) -> torch.Tensor:
        lmin = lam[..., :1]
        tol = rtol * lam.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(lam.dtype).tiny)
        mask = (lam - lmin <= tol).to(lam.dtype)  # the (near-)repeated eigenspace
        ctx.save_for_backward(vec, mask / mask.sum(-1, keepdim=True))
        return lmin[..., 0].to(c.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        vec, weights = ctx.saved_tensors
        proj = (vec * weights.unsqueeze(-2)) @ vec.transpose(-1, -2)
        return grad[..., None, None] * proj, None, None, None


def _decomposed(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``eigh`` of ``c`` without a graph (shares the cached decomposition of this storage)."""
    with torch.no_grad():
        return eigh(c.detach())


def log_volume_from_eigh(c: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
    """Mean log eigenvalue of ``c`` given its decomposition ``c = vec diag(lam) vec^T`` (differentiable
    w.r.t. ``c``, gradient C^-1 / d); ``log_volume_spd`` decomposes ``c`` itself."""
    return _LogVolume.apply(c, lam, vec)


def min_eigenvalue_from_eigh(
    c: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor, rtol: float = 1e-10
) -> torch.Tensor:
    """Smallest eigenvalue of ``c`` given its decomposition (ascending ``lam``), with the eigenspace-averaged
    subgradient at ties; ``min_eigenvalue_spd`` decomposes ``c`` itself."""
    return _MinEigenvalue.apply(c, lam, vec, rtol)


def log_volume_spd(c: torch.Tensor) -> torch.Tensor:
    """Mean log eigenvalue of batched SPD ``c`` (..., d, d) -> (...), finite gradient everywhere."""
    return log_volume_from_eigh(c, *_decomposed(c))


def min_eigenvalue_spd(c: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
    """Smallest eigenvalue of batched symmetric ``c``, with a finite subgradient at ties."""
    return min_eigenvalue_from_eigh(c, *_decomposed(c), rtol)


def min_value_vector(theta: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
    """min over the last axis with the gradient split evenly over ties (diagonal case)."""
    lmin = theta.min(-1, keepdim=True).values.detach()
    tol = rtol * theta.detach().abs().amax(-1, keepdim=True)
    mask = (theta.detach() - lmin <= tol).to(theta.dtype)
    weights = mask / mask.sum(-1, keepdim=True)
    # value equals the min; the gradient is the tie-averaged indicator
    return (theta * weights).sum(-1) + (lmin[..., 0] - (theta.detach() * weights).sum(-1))


def divided_difference_log(lam: torch.Tensor) -> torch.Tensor:
    """Gamma_ij = (log l_i - log l_j) / (l_i - l_j), 1 / l_i on ties (Daleckii-Krein; Bhatia 2007, 5.3).

    Computed as log1p(t) / (t lo) with lo = min(l_i, l_j), t = (hi - lo) / lo: relative to the
    eigenvalues' scale at every gap (exactly symmetric, no absolute tie tolerance; Geomstats 2.8
    treats gaps below an absolute 1e-6 as ties)."""
    li, lj = lam[..., :, None], lam[..., None, :]
    lo, hi = torch.minimum(li, lj), torch.maximum(li, lj)
    t = (hi - lo) / lo
    tie = t == 0
    ratio = torch.where(tie, torch.ones_like(t), torch.log1p(t) / torch.where(tie, torch.ones_like(t), t))
    return ratio / lo
