"""Eigenframes: a batch of SPD points carried with their eigendecomposition, and, per metric, orthonormal
coordinates of the tangent space aligned with it. One decomposition per optimisation step then serves the
eigenvalue floor, the volume and smallest-eigenvalue terms, the Riemannian gradient and the move.

A manifold hands out a frame through its interface (``Manifold.eigenframe(x)``, ``Manifold.frame_type()``;
None where it has none); optimisers never test for a concrete manifold class. For X = V diag(l) V^T and a
tangent vector U with U~ = V^T U V, the coordinates W (symmetric, d x d) satisfy ||U||_X = ||W||_F, entry
(i, j) being U's component along the eigen-directions i and j:

| metric | coordinates W of U | Riemannian gradient of G, G~ = V^T sym(G) V | Exp_X |
|---|---|---|---|
| affine-invariant | U~ / sqrt(l_i l_j) | sqrt(l_i l_j) G~ | P expm(W) P^T, P = V D^1/2 |
| log-Euclidean | Gamma o U~ (Gamma: divided differences of log) | G~ / Gamma | V expm(diag(log l) + W) V^T |
| Bures-Wasserstein | U~ / sqrt(2 (l_i + l_j)) | sqrt(2 (l_i + l_j)) G~ | X + U + L X L, X L + L X = U |

(Pennec, Fillard, Ayache 2006; Arsigny et al. 2006; Bhatia, Jain, Lim 2019: the metrics of
``manifolds.metrics``, written in the frame so that neither the gradient nor the move needs another
decomposition of X; the affine-invariant retraction is the second-order X + U + U X^-1 U / 2 of Jeuris,
Vandebril, Vandereycken 2012, the other two metrics retract by their exponential map.)

Coordinates are carried between the frames of two points by the rotation R = V_new^T V_old (W -> R W R^T):
the identification V W V^T of tangent vectors, an isometry. For the log-Euclidean metric it is exactly its
parallel transport (V W V^T = Dlog_X U, and the metric is flat in log X); for the affine-invariant metric it
is the transport by X^-1/2 U X^-1/2 coordinates.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from .spectral import divided_difference_log, log_volume_from_eigh, min_eigenvalue_from_eigh, sym

F64 = torch.float64
_TINY = torch.finfo(F64).tiny


def _per_point(value: torch.Tensor | float | None, like: torch.Tensor) -> torch.Tensor | None:
    """A float or (B,) bound as a tensor broadcasting against eigenvalues (B, d)."""
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=F64, device=like.device)
    return t[..., None] if t.ndim else t


class EigenFrame:
    """Batched SPD points (B, d, d) with point = vec diag(lam) vec^T (lam ascending) and the tangent
    coordinates of one metric (subclasses: ``AffineInvariantFrame``, ``LogEuclideanFrame``,
    ``BuresWassersteinFrame``). Build one with ``of(point)`` or ask the manifold (``eigenframe``)."""

    #: the metric whose coordinates the frame uses (``SPDMetric.name``)
    metric_name: ClassVar[str] = ""

    def __init__(self, point: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor):
        self.point, self.lam, self.vec = point, lam, vec

    @classmethod
    def of(cls, point: torch.Tensor) -> EigenFrame:
        """Decompose ``point`` (one ``torch.linalg.eigh``)."""
        if point.ndim != 3 or point.shape[-1] != point.shape[-2]:
            raise ValueError(f"point must be a batch of square matrices (B, d, d), got {tuple(point.shape)}")
        point = sym(point.detach().to(F64))
        lam, vec = torch.linalg.eigh(point)
        if not bool((lam > 0).all()):
            raise ValueError(f"point is not positive definite (smallest eigenvalue {float(lam.min()):.3g})")
        return cls(point, lam, vec)

    def __len__(self) -> int:
        return self.point.shape[0]

    def __getitem__(self, index: slice) -> EigenFrame:
        return type(self)(self.point[index], self.lam[index], self.vec[index])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch={len(self)}, dim={self.point.shape[-1]})"

    # ---- constraint -----------------------------------------------------------------------
    def clamp(self, floor: torch.Tensor | float, ceiling: torch.Tensor | float | None = None) -> EigenFrame:
        """Eigenvalues clamped to [floor, ceiling] (per input), eigenvectors kept: ``SPD.project_floor``
        in the frame. Inputs already inside keep their point exactly; all inside: this frame."""
        lo, hi = _per_point(floor, self.lam), _per_point(ceiling, self.lam)
        lam = self.lam.clamp(min=lo, max=hi)  # monotone: stays ascending
        changed = (lam != self.lam).any(-1)
        if not bool(changed.any()):
            return self
        rebuilt = sym((self.vec * lam.unsqueeze(-2)) @ self.vec.transpose(-1, -2))
        point = torch.where(changed[:, None, None], rebuilt, self.point)
        return type(self)(point, lam, self.vec)

    def align_ties(self, w: torch.Tensor, rtol: float = 1e-6) -> EigenFrame:
        """Within a group of tied eigenvalues every orthonormal basis of the group is an eigenbasis; take the
        one that diagonalises the block of the symmetric coordinates ``w`` there (e.g. the gradient's), so that
        per-direction quantities do not depend on eigh's arbitrary (for near-ties, roundoff-driven) choice.
        Eigenvalues within ``rtol`` (relative) of their neighbour count as tied and are set to the group's
        mean (the point moves by at most rtol, relative). Coordinates of every shipped metric only rotate
        within a tied group (their weights depend on the eigenvalues alone), so this holds for each frame."""
        lam, vec = self.lam, self.vec
        new_lam, new_vec = None, None
        for b in range(lam.shape[0]):
            gap = (lam[b, 1:] - lam[b, :-1]) > rtol * lam[b, 1:].abs()
            cuts = [0] + (gap.nonzero().flatten() + 1).tolist() + [lam.shape[1]]
            for s, e in zip(cuts[:-1], cuts[1:]):
                if e - s > 1:
                    q = torch.linalg.eigh(w[b, s:e, s:e])[1]
                    if new_lam is None or new_vec is None:
                        new_lam, new_vec = lam.clone(), vec.clone()
                    new_vec[b, :, s:e] = vec[b, :, s:e] @ q
                    new_lam[b, s:e] = lam[b, s:e].mean()
        if new_lam is None or new_vec is None:
            return self
        point = 0.5 * ((new_vec * new_lam.unsqueeze(-2)) @ new_vec.transpose(-1, -2))
        return type(self)(point + point.transpose(-1, -2), new_lam, new_vec)

    # ---- tangent coordinates (per metric) ----------------------------------------------------
    def whiten_gradient(self, egrad: torch.Tensor) -> torch.Tensor:
        """Coordinates of the Riemannian gradient of a function with Euclidean gradient ``egrad``; their
        Frobenius norm is the gradient's Riemannian norm."""
        raise NotImplementedError

    def coordinates(self, u: torch.Tensor) -> torch.Tensor:
        """Coordinates W of the tangent vector ``u`` (||W||_F = ||u||_X)."""
        raise NotImplementedError

    def tangent(self, w: torch.Tensor) -> torch.Tensor:
        """The tangent vector with coordinates ``w`` (the inverse of ``coordinates``)."""
        raise NotImplementedError

    def move(self, w: torch.Tensor, method: str = "retr") -> torch.Tensor:
        """The point reached from this frame's point along the tangent vector with coordinates ``w``:
        the metric's exponential map (``"exp"``) or its retraction (``"retr"``)."""
        raise NotImplementedError

    def step_limit(self, max_norm: float) -> torch.Tensor | float:
        """The longest step (metric norm, per point) a step clipped at ``max_norm`` takes: ``max_norm``
        (``SPDMetric.step_limit``; Bures-Wasserstein keeps its steps inside sqrt(lambda_min))."""
        return max_norm

    def clip(self, w: torch.Tensor, max_norm: float | None) -> torch.Tensor:
        """Coordinates ``w`` with their norm (the metric's) clipped at ``step_limit(max_norm)``."""
        if max_norm is None:
            return w
        n = torch.linalg.matrix_norm(w).clamp_min(torch.finfo(w.dtype).tiny)
        return w * (self.step_limit(max_norm) / n).clamp(max=1.0)[..., None, None]

    # ---- carrying coordinates between frames -------------------------------------------------
    def rotation_from(self, basis: torch.Tensor) -> torch.Tensor:
        """R = V^T V_old: coordinates in the eigenbasis ``basis`` move to this frame as R W R^T."""
        return self.vec.transpose(-1, -2) @ basis

    def carry(self, w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """Coordinates ``w`` given in the eigenbasis ``basis`` (another point's), expressed in this frame."""
        r = self.rotation_from(basis)
        return r @ w @ r.transpose(-1, -2)

    def carry_second_moment(self, v: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """Per-coordinate second moments ``v`` given in ``basis``, in this frame: with independent entries,
        Var((R W R^T)_kl) = sum_ij R_ki^2 R_lj^2 Var(W_ij), i.e. v -> (R o R) v (R o R)^T (doubly stochastic:
        the total is kept; the identity when the basis is kept)."""
        r = self.rotation_from(basis)
        q = r * r
        return q @ v @ q.transpose(-1, -2)

    # ---- objective terms (differentiable w.r.t. the point) -----------------------------------
    def log_volume(self, point: torch.Tensor) -> torch.Tensor:
        """Mean log eigenvalue of ``point`` (which must be this frame's point, possibly requiring grad);
        gradient C^-1 / d (``manifolds.spectral.log_volume_spd``, from this frame's decomposition)."""
        return log_volume_from_eigh(point, self.lam, self.vec)

    def min_eigenvalue(self, point: torch.Tensor, rtol: float = 1e-10) -> torch.Tensor:
        """Smallest eigenvalue of ``point`` (this frame's point); subgradient averaged over the (near-)repeated
        eigenspace (``manifolds.spectral.min_eigenvalue_spd``, from this frame's decomposition)."""
        return min_eigenvalue_from_eigh(point, self.lam, self.vec, rtol)


def _check_method(method: str) -> None:
    if method not in ("exp", "retr"):
        raise ValueError(f"method must be 'exp' or 'retr', got {method!r}")


class AffineInvariantFrame(EigenFrame):
    """Affine-invariant coordinates W = D^-1/2 U~ D^-1/2 (the X^-1/2 U X^-1/2 whitening)."""

    metric_name = "affine-invariant"

    def _sqrt_lam(self) -> torch.Tensor:
        return self.lam.clamp_min(_TINY).sqrt()

    def whiten_gradient(self, egrad: torch.Tensor) -> torch.Tensor:
        """X sym(G) X in coordinates: D^1/2 V^T sym(G) V D^1/2 (README, Errata R4)."""
        s = self._sqrt_lam()
        g = self.vec.transpose(-1, -2) @ sym(egrad.to(F64)) @ self.vec
        return sym(g * s[..., :, None] * s[..., None, :])

    def coordinates(self, u: torch.Tensor) -> torch.Tensor:
        s = self._sqrt_lam()
        return sym(self.vec.transpose(-1, -2) @ sym(u.to(F64)) @ self.vec / (s[..., :, None] * s[..., None, :]))

    def tangent(self, w: torch.Tensor) -> torch.Tensor:
        p = self.vec * self._sqrt_lam().unsqueeze(-2)
        return sym(p @ sym(w.to(F64)) @ p.transpose(-1, -2))

    def move(self, w: torch.Tensor, method: str = "retr") -> torch.Tensor:
        """P (I + w + w^2/2) P^T (``"retr"``) or P expm(w) P^T (``"exp"``), P = V D^1/2."""
        _check_method(method)
        w = sym(w.to(F64))
        if method == "retr":
            eye = torch.eye(w.shape[-1], dtype=F64, device=w.device)
            f = eye + w + 0.5 * (w @ w)
        else:
            mu, q = torch.linalg.eigh(w)
            f = (q * mu.exp().unsqueeze(-2)) @ q.transpose(-1, -2)
        p = self.vec * self._sqrt_lam().unsqueeze(-2)
        return sym(p @ sym(f) @ p.transpose(-1, -2))


class LogEuclideanFrame(EigenFrame):
    """Log-Euclidean coordinates W = Gamma o U~ = V^T (Dlog_X U) V: the Euclidean coordinates of log X."""

    metric_name = "log-euclidean"

    def _gamma(self) -> torch.Tensor:
        return divided_difference_log(self.lam)

    def whiten_gradient(self, egrad: torch.Tensor) -> torch.Tensor:
        """(Dlog_X)^-2 sym(G) in coordinates: V^T sym(G) V / Gamma."""
        g = self.vec.transpose(-1, -2) @ sym(egrad.to(F64)) @ self.vec
        return sym(g / self._gamma())

    def coordinates(self, u: torch.Tensor) -> torch.Tensor:
        return sym(self._gamma() * (self.vec.transpose(-1, -2) @ sym(u.to(F64)) @ self.vec))

    def tangent(self, w: torch.Tensor) -> torch.Tensor:
        return sym(self.vec @ (sym(w.to(F64)) / self._gamma()) @ self.vec.transpose(-1, -2))

    def move(self, w: torch.Tensor, method: str = "retr") -> torch.Tensor:
        """expm(log X + Dlog_X U) = V expm(diag(log l) + w) V^T, for both methods (the metric's retraction is
        its exponential map)."""
        _check_method(method)
        mu, q = torch.linalg.eigh(sym(torch.diag_embed(self.lam.log()) + sym(w.to(F64))))
        r = self.vec @ q
        return sym((r * mu.exp().unsqueeze(-2)) @ r.transpose(-1, -2))


class BuresWassersteinFrame(EigenFrame):
    """Bures-Wasserstein coordinates W = U~ / sqrt(2 (l_i + l_j)) (the metric is 1/2 tr(L_X[U] U))."""

    metric_name = "bures-wasserstein"

    def _weight(self) -> torch.Tensor:
        """sqrt(2 (l_i + l_j))."""
        return (2.0 * (self.lam[..., :, None] + self.lam[..., None, :])).sqrt()

    def whiten_gradient(self, egrad: torch.Tensor) -> torch.Tensor:
        """2 (X G + G X) in coordinates: sqrt(2 (l_i + l_j)) V^T sym(G) V."""
        g = self.vec.transpose(-1, -2) @ sym(egrad.to(F64)) @ self.vec
        return sym(g * self._weight())

    def coordinates(self, u: torch.Tensor) -> torch.Tensor:
        return sym(self.vec.transpose(-1, -2) @ sym(u.to(F64)) @ self.vec / self._weight())

    def tangent(self, w: torch.Tensor) -> torch.Tensor:
        return sym(self.vec @ (sym(w.to(F64)) * self._weight()) @ self.vec.transpose(-1, -2))

    def move(self, w: torch.Tensor, method: str = "retr") -> torch.Tensor:
        """X + U + L X L with L~ = U~ / (l_i + l_j), in the eigenbasis, for both methods (the metric's
        retraction is its exponential map)."""
        _check_method(method)
        u = sym(w.to(F64)) * self._weight()  # U~
        a = u / (self.lam[..., :, None] + self.lam[..., None, :])  # L~
        inside = torch.diag_embed(self.lam) + u + (a * self.lam.unsqueeze(-2)) @ a
        return sym(self.vec @ inside @ self.vec.transpose(-1, -2))

    def step_limit(self, max_norm: float) -> torch.Tensor | float:
        """sqrt(lambda_min) (1 - exp(-max_norm / 2)) (``BuresWasserstein.step_limit``)."""
        return self.lam[..., 0].clamp_min(0).sqrt() * -math.expm1(-0.5 * float(max_norm))


def transport_second_moment(v: torch.Tensor, old_vec: torch.Tensor, new_vec: torch.Tensor) -> torch.Tensor:
    """Per-coordinate second moments ``v`` (B, d, d) given in the eigenbasis ``old_vec``, expressed in
    ``new_vec`` (``EigenFrame.carry_second_moment``)."""
    r = new_vec.transpose(-1, -2) @ old_vec
    q = r * r
    return q @ v @ q.transpose(-1, -2)
