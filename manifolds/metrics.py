"""One small class per Riemannian metric on SPD matrices (geoopt style); ``SPD(dim, metric=...)`` takes one.

A metric implements six batched float64 operations, point first: ``inner``, ``egrad2rgrad``,
``exp``, ``log``, and optionally ``retr`` (default: exp), ``dist`` (default: ||Log_x y||_x) and
``injectivity_radius`` (default: infinite). Inputs arrive symmetric, float64 and broadcast to a
common shape (``SPD`` does that); outputs are symmetric. The shipped metrics work in the
eigenbasis of x from one (cached) ``eigh``: no LU anywhere (batched MKL getrf hangs at d = 784
with 2 threads; tests/manifolds/test_manifolds_lu_free.py) and no absolute eigenvalue tolerance
(the log-Euclidean maps are scale-invariant; tests/manifolds/test_manifolds_metrics.py).

Adding a metric (see manifolds/README.md for a tested example)::

    class Scaled(AffineInvariant):          # 4 x the affine-invariant metric
        name = "scaled-ai"
        def inner(self, x, u, v): return 4 * super().inner(x, u, v)
        def egrad2rgrad(self, x, g): return super().egrad2rgrad(x, g) / 4
        def dist(self, x, y): return 2 * super().dist(x, y)
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import MetricOperations
from .geomstats_adapter import check_space, spd_module
from .spectral import divided_difference_log, eigh, remember_eigh, sym, sym_apply

F64 = torch.float64
_TINY = torch.finfo(F64).tiny


def _in_basis(vec: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """V^T U V: a symmetric matrix in the eigenbasis V."""
    return vec.transpose(-1, -2) @ u @ vec


def _from_basis(vec: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """V A V^T (symmetrised)."""
    return sym(vec @ a @ vec.transpose(-1, -2))


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a_i b_j over the last axis: (..., n) x (..., n) -> (..., n, n)."""
    return a[..., :, None] * b[..., None, :]


class SPDMetric(MetricOperations):
    """A Riemannian metric on SPD(n): the operations ``SPD`` delegates to (all batched, float64; ``MetricOperations``:
    ``inner``, ``egrad2rgrad`` (for a symmetric Euclidean gradient), ``exp`` and ``log`` to implement)."""

    #: short name for logs and ``repr``
    name: str = ""

    def batch_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return tuple(x.shape[:-2])

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AffineInvariant(SPDMetric):
    """<U, V>_X = tr(X^-1 U X^-1 V) (Rao-Fisher; Pennec, Fillard, Ayache 2006), the RDDRS paper's metric.

    Everything in the eigenbasis X = V D V^T: whitened W = D^-1/2 V^T U V D^-1/2, Exp = P expm(W) P^T with
    P = V D^1/2; the second-order retraction X + U + 1/2 U X^-1 U (Jeuris, Vandebril, Vandereycken 2012)."""

    name = "affine-invariant"

    @staticmethod
    def _whiten(x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W in the eigenbasis of x, sqrt eigenvalues s, eigenvectors V)."""
        lam, vec = eigh(x)
        s = lam.clamp_min(_TINY).sqrt()
        return _in_basis(vec, u) / _outer(s, s), s, vec

    @staticmethod
    def _unwhiten(f: torch.Tensor, s: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        p = vec * s.unsqueeze(-2)  # V D^1/2
        return sym(p @ f @ p.transpose(-1, -2))

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a = self._whiten(x, u)[0]
        b = a if v is u else self._whiten(x, v)[0]
        return (a * b).sum((-2, -1))

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return sym(x @ sym(g) @ x)  # X sym(G) X (Pennec et al. 2006; README, Errata R4)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        w, s, vec = self._whiten(x, u)
        return self._unwhiten(sym_apply(sym(w), torch.exp), s, vec)

    def retr(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        w, s, vec = self._whiten(x, u)
        return _from_basis(vec, torch.diag_embed(s.square()) + _in_basis(vec, u) + 0.5 * w @ w * _outer(s, s))

    def whitened_step(self, x: torch.Tensor, u: torch.Tensor, limit: torch.Tensor | None, method: str) -> torch.Tensor:
        """Exp_x(c u) or retr_x(c u), c = min(1, limit / ||u||_x) per point, for symmetric u: the norm's whitening
        W = D^-1/2 V^T U V D^-1/2 in x's (cached) eigenbasis is reused by the move unless some point is clipped
        (then U is rescaled and whitened again). Bit for bit the generic ``Manifold.step`` (norm, clip, then
        ``exp``/``retr``) for symmetric u, minus 2 (exp) or 4 (retr) d^3 matrix products. ``SPD.step`` calls
        it only when none of inner/norm/exp/retr/step_limit/injectivity_radius is overridden."""
        lam, vec = eigh(x)
        s = lam.clamp_min(_TINY).sqrt()
        raw = _in_basis(vec, u)
        w = raw / _outer(s, s)
        if limit is not None:
            n = (w * w).sum((-2, -1)).clamp_min(0).sqrt()
            scale = (limit / n.clamp_min(_TINY)).clamp(max=1.0)
            if bool((scale < 1).any()):  # the same rescaled U the generic step whitens
                raw = _in_basis(vec, u * scale[..., None, None])
                w = raw / _outer(s, s)
        if method == "retr":  # X + U + 1/2 U X^-1 U in the eigenbasis (as ``retr``)
            return _from_basis(vec, torch.diag_embed(s.square()) + raw + 0.5 * w @ w * _outer(s, s))
        return self._unwhiten(sym_apply(sym(w), torch.exp), s, vec)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w, s, vec = self._whiten(x, y)
        return self._unwhiten(sym_apply(sym(w), lambda lam: lam.clamp_min(_TINY).log()), s, vec)

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """||log lambda(X^-1 Y)||_2 from Cholesky-whitened L^-1 Y L^-T (X = L L^T) AND L_y^-1 X L_y^-T: eigh
        resolves each side's large eigenvalues to relative accuracy, so every log eigenvalue comes from the side
        where it is >= 0 (accurate at condition numbers where one whitening loses digits); symmetric by
        construction, d(x, y) == d(y, x) exactly."""
        mu, nu = _whitened_eigvals(x, y), _whitened_eigvals(y, x)
        return 0.5 * (_log_norm(mu, nu) + _log_norm(nu, mu))


def _whitened_eigvals(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues of L^-1 Y L^-T, X = L L^T (triangular solves: no LU)."""
    chol, info = torch.linalg.cholesky_ex(x)
    if bool((info != 0).any()):
        raise ValueError(
            "affine-invariant distance: a point is not numerically positive definite (Cholesky failed; "
            "condition number beyond ~1e15 in float64)"
        )
    a = torch.linalg.solve_triangular(chol, y, upper=False)
    lam = torch.linalg.eigvalsh(sym(torch.linalg.solve_triangular(chol, a.transpose(-1, -2), upper=False)))
    if bool((lam <= 0).any()):
        raise ValueError("affine-invariant distance: a point is not numerically positive definite")
    return lam


def _log_norm(mu: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """||log mu||_2 with mu_i < 1 replaced by the reciprocal 1 / nu_(n-1-i) of the reverse whitening."""
    logs = torch.where(mu >= 1, mu.log(), -nu.flip(-1).log())
    return logs.square().sum(-1).sqrt()


class LogEuclidean(SPDMetric):
    """<U, V>_X = <Dlog_X U, Dlog_X V>_F (Arsigny et al. 2006): Euclidean geometry of log X.

    Dlog_X U = V (Gamma o V^T U V) V^T with Gamma the divided differences of log at X's eigenvalues
    (relative at every gap); Exp_X U = expm(log X + Dlog_X U), Log_X Y = Dlog_X^-1 (log Y - log X)."""

    name = "log-euclidean"

    @staticmethod
    def _dlog(x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Gamma o V^T U V, eigenvalues, eigenvectors) of x."""
        lam, vec = eigh(x)
        return divided_difference_log(lam) * _in_basis(vec, u), lam, vec

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a = self._dlog(x, u)[0]
        b = a if v is u else self._dlog(x, v)[0]
        return (a * b).sum((-2, -1))

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # (Dlog_X)^-2 [sym G]: divide V^T G V by Gamma o Gamma (the Daleckii-Krein divided differences of log)
        lam, vec = eigh(x)
        return _from_basis(vec, _in_basis(vec, sym(g)) / divided_difference_log(lam).square())

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a, lam, vec = self._dlog(x, u)
        return self._exp_from(a, lam, vec)

    @staticmethod
    def _exp_from(a: torch.Tensor, lam: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        """expm(log X + Dlog_X U) from a = Gamma o V^T U V: with log X + Dlog_X U = V Q diag(mu) Q^T V^T the result
        is (VQ) e^mu (VQ)^T, an eigendecomposition, handed to the next ``eigh`` of the result (the floor's)."""
        mu, q = torch.linalg.eigh(sym(torch.diag_embed(lam.log()) + a))  # log X + Dlog_X U in X's eigenbasis
        r = vec @ q
        out = sym((r * mu.exp().unsqueeze(-2)) @ r.transpose(-1, -2))
        remember_eigh(out, mu.exp(), r)
        return out

    def clipped_exp(self, x: torch.Tensor, u: torch.Tensor, limit: torch.Tensor | None) -> torch.Tensor:
        """Exp_x(c u), c = min(1, limit / ||u||_x) per point, for symmetric u: the norm's Gamma o V^T U V is reused
        by exp unless some point is clipped. Bit for bit the generic ``Manifold.step`` (norm, clip, exp) for
        symmetric u, minus 2 d^3 matrix products; ``SPD.step`` calls it only when nothing it replaces is
        overridden."""
        a, lam, vec = self._dlog(x, u)
        if limit is not None:
            n = (a * a).sum((-2, -1)).clamp_min(0).sqrt()
            scale = (limit / n.clamp_min(_TINY)).clamp(max=1.0)
            if bool((scale < 1).any()):
                a, lam, vec = self._dlog(x, u * scale[..., None, None])
        return self._exp_from(a, lam, vec)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lam, vec = eigh(x)
        logy = _in_basis(vec, sym_apply(y, lambda mu: mu.clamp_min(_TINY).log()))
        return _from_basis(vec, (logy - torch.diag_embed(lam.log())) / divided_difference_log(lam))

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logm = lambda a: sym_apply(a, lambda mu: mu.clamp_min(_TINY).log())  # noqa: E731
        return torch.linalg.matrix_norm(logm(y) - logm(x))


class BuresWasserstein(SPDMetric):
    """g_X(U, V) = 1/2 tr(L_X[U] V), X L + L X = U: the 2-Wasserstein metric of N(0, X)
    (Bhatia, Jain, Lim 2019; Malago et al. 2018). Exp_X U = X + U + L X L; Log_X Y = (XY)^1/2 + (YX)^1/2 - 2X;
    d^2 = min over orthogonal Q of ||X^1/2 - Y^1/2 Q||_F^2 (Procrustes form: no cancellation at x = y).
    Exp is a minimising geodesic only within sqrt(lambda_min(X)) (Massart and Absil 2020)."""

    name = "bures-wasserstein"

    @staticmethod
    def _lyap(x: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(V^T L_X[U] V, eigenvalues, eigenvectors): the Lyapunov solve in X's eigenbasis."""
        lam, vec = eigh(x)
        return _in_basis(vec, u) / (lam[..., :, None] + lam[..., None, :]), lam, vec

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a, lam, vec = self._lyap(x, u)
        return 0.5 * (a * _in_basis(vec, v)).sum((-2, -1))

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g = sym(g)
        return 2.0 * sym(x @ g + g @ x)  # inverse of U -> 1/2 L_X[U] (Bhatia et al. 2019)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        a, lam, vec = self._lyap(x, u)
        return _from_basis(vec, torch.diag_embed(lam) + _in_basis(vec, u) + (a * lam.unsqueeze(-2)) @ a)

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lam, vec = eigh(x)
        s = lam.clamp_min(0).sqrt()
        root = _sqrtm(sym(_in_basis(vec, y) * _outer(s, s)))  # (X^1/2 Y X^1/2)^1/2 in X's eigenbasis
        t = s[..., :, None] * root / s.clamp_min(_TINY)[..., None, :]  # (XY)^1/2 in X's eigenbasis
        return _from_basis(vec, t + t.transpose(-1, -2) - 2.0 * torch.diag_embed(lam))

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (_bw_procrustes(x, y) + _bw_procrustes(y, x))

    def injectivity_radius(self, x: torch.Tensor) -> torch.Tensor:
        return eigh(x)[0][..., 0].clamp_min(0).sqrt()

    def step_limit(self, x: torch.Tensor, max_norm: float) -> torch.Tensor:
        """sqrt(lambda_min) (1 - exp(-max_norm / 2)): BW distances are Euclidean in sqrt-eigenvalues, so this
        step shrinks sqrt(lambda_min) at most by exp(-max_norm / 2), i.e. lambda_min by exp(-max_norm), the
        bound ``max_norm`` sets under the scale-invariant AI/LE metrics; always inside the injectivity radius.
        A plain max_norm = 2 reaches 4-5x past sqrt(lambda_min) at sigma ~ 0.2 and left BW RDDRS 25-35 %
        below the other metrics (tests/manifolds/test_manifolds_rddrs.py)."""
        return self.injectivity_radius(x) * -math.expm1(-0.5 * float(max_norm))


def _sqrtm(a: torch.Tensor) -> torch.Tensor:
    return sym_apply(a, lambda mu: mu.clamp_min(0).sqrt())


def _bw_procrustes(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||X^1/2 - Y^1/2 Q||_F, Q the orthogonal polar factor of Y^1/2 X^1/2 (Bhatia et al. 2019, Thm 1)."""
    rx, ry = _sqrtm(x), _sqrtm(y)
    uu, _, vh = torch.linalg.svd(ry @ rx)
    return torch.linalg.matrix_norm(rx - ry @ (uu @ vh))


class GeomstatsMetric(SPDMetric):
    """Any Geomstats SPD metric (an instance on ``SPDMatrices(n)``): inner, exp, log, dist from Geomstats;
    egrad2rgrad by solving its Gram system, built from one batched autograd pass of ``inner_product``
    (k = n(n+1)/2 basis matrices). Refused above ``max_dim`` (default 64, a few seconds per point):
    write an ``SPDMetric`` subclass with a closed-form ``egrad2rgrad`` instead."""

    max_dim: int = 64

    def __init__(self, gs_metric: Any, max_dim: int | None = None):
        if getattr(gs_metric, "_space", None) is None or not hasattr(gs_metric, "inner_product"):
            raise TypeError(f"expected a Geomstats SPD metric instance, got {gs_metric!r}")
        self.gs = gs_metric
        self.name = type(gs_metric).__name__
        if max_dim is not None:
            self.max_dim = int(max_dim)

    def inner(self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.gs.inner_product(u, v, x)

    def exp(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return sym(self.gs.exp(u, x))

    def log(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return sym(self.gs.log(y, x))

    def dist(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.gs.squared_dist(x, y).clamp_min(0).sqrt()

    def egrad2rgrad(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        if n > self.max_dim:
            raise ValueError(
                f"GeomstatsMetric.egrad2rgrad solves a k x k Gram system (k = n(n+1)/2 = {n * (n + 1) // 2}); "
                f"n = {n} exceeds max_dim = {self.max_dim}. Subclass manifolds.SPDMetric with a closed-form "
                "egrad2rgrad (or raise max_dim if memory allows ~40 k n^2 bytes)"
            )
        iu = torch.triu_indices(n, n, device=x.device)
        k = iu.shape[1]
        basis = torch.zeros(k, n, n, dtype=F64, device=x.device)  # E_ij + E_ji (E_ii on the diagonal)
        basis[torch.arange(k), iu[0], iu[1]] = 1.0
        basis[torch.arange(k), iu[1], iu[0]] = 1.0
        weight = torch.where(iu[0] == iu[1], 1.0, 2.0).to(F64)  # <E_a, M>_F = weight_a M[i_a, j_a], M symmetric
        out = []
        for xi, gi in zip(x.reshape(-1, n, n), sym(g).reshape(-1, n, n)):
            u = torch.zeros(k, n, n, dtype=F64, device=x.device, requires_grad=True)
            with torch.enable_grad():
                total = self.gs.inner_product(u, basis, xi.expand(k, n, n)).sum()
                (gu,) = torch.autograd.grad(total, u)  # gu[b] = G_x(E_b): <U, G_x(E_b)>_F = g_x(U, E_b)
            gram = weight[:, None] * sym(gu)[:, iu[0], iu[1]].T  # gram[a, b] = g_x(E_a, E_b), SPD
            coef = torch.cholesky_solve((weight * gi[iu[0], iu[1]])[:, None], torch.linalg.cholesky(gram))[:, 0]
            r = torch.zeros(n, n, dtype=F64, device=x.device)
            r[iu[0], iu[1]] = coef
            r[iu[1], iu[0]] = coef
            out.append(r)
        return torch.stack(out).reshape(x.shape)

    def __repr__(self) -> str:
        return f"GeomstatsMetric({self.name})"


#: shortcut names accepted wherever a metric is
METRICS: dict[str, type[SPDMetric]] = {
    "affine-invariant": AffineInvariant,
    "ai": AffineInvariant,
    "log-euclidean": LogEuclidean,
    "le": LogEuclidean,
    "bures-wasserstein": BuresWasserstein,
    "bw": BuresWasserstein,
}


def as_metric(metric: Any, dim: int | None = None) -> SPDMetric:
    """An ``SPDMetric`` from a name, an SPDMetric class or instance, or a Geomstats SPD metric class or
    instance (Geomstats' affine-invariant, log-Euclidean and Bures-Wasserstein metrics and their
    subclasses map to the closed-form classes here; any other one is wrapped in ``GeomstatsMetric``)."""
    if isinstance(metric, SPDMetric):
        return metric
    if isinstance(metric, type) and issubclass(metric, SPDMetric):
        return metric()
    if isinstance(metric, str):
        key = metric.lower().replace("_", "-")
        if key not in METRICS:
            raise ValueError(
                f"unknown SPD metric {metric!r}; choose one of {sorted(METRICS)}, an SPDMetric, "
                "or a Geomstats SPD metric class/instance"
            )
        return METRICS[key]()
    return from_geomstats(metric, dim)


def from_geomstats(metric: Any, dim: int | None) -> SPDMetric:
    """An ``SPDMetric`` for a Geomstats SPD metric class or instance: Geomstats' affine-invariant,
    log-Euclidean and Bures-Wasserstein metrics (and subclasses, by ``isinstance``) map to the closed-form
    classes; any other metric runs through ``GeomstatsMetric`` (its exp/log/dist, a Gram solve for rgrad).
    Geomstats is imported here, on first use (``manifolds.geomstats_adapter.spd_module``)."""
    mod = spd_module()
    known: tuple[tuple[Any, type[SPDMetric]], ...] = (
        (mod.SPDAffineMetric, AffineInvariant),
        (mod.SPDLogEuclideanMetric, LogEuclidean),
        (mod.SPDBuresWassersteinMetric, BuresWasserstein),
    )
    cls = metric if isinstance(metric, type) else type(metric)
    if not (isinstance(metric, type) or hasattr(metric, "inner_product")):
        raise TypeError(
            f"metric must be a name, an SPDMetric, or a Geomstats SPD metric class/instance, got {metric!r}"
        )
    for gs_cls, own in known:
        if issubclass(cls, gs_cls):
            if not isinstance(metric, type):
                check_space(metric, dim)
            return own()
    if isinstance(metric, type):
        if dim is None:
            raise ValueError("a Geomstats metric class needs the manifold's dim")
        space = mod.SPDMatrices(dim, equip=False)
        space.equip_with_metric(metric)  # equip with a class: instances trip a Geomstats bug (note 1.2)
        metric = space.metric
    check_space(metric, dim)
    return GeomstatsMetric(metric)
