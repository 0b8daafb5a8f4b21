"""No batched LU in the SPD geometry (batched MKL getrf hangs at d = 784, 2 threads)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import manifolds
from manifolds import noise_for

ROOT = str(Path(__file__).resolve().parents[2])
F64 = torch.float64

_COLD_START = """
import os, threading, time, torch
torch.set_num_threads(2)
import ddrs

def expire():  # the GIL is free while MKL spins: this watchdog ends a hung LU call after the limit
    print("timeout", flush=True)
    os._exit(3)

watchdog = threading.Timer(STEP_LIMIT, expire)
watchdog.daemon = True
watchdog.start()  # after the imports, which can be slow on a loaded machine

class Linear(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3, d, generator=g, dtype=torch.float64) / d ** 0.5)
    def forward(self, x):
        return x.flatten(1) @ self.w.T

d, B = 784, 2  # batched torch.linalg.solve on (2, 784, 784) with 2 threads still hangs (DLASWP errors)
model = Linear(d)
x = torch.rand(B, 1, 28, 28, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
t = time.perf_counter()
# SPD.step (norm-clipped retraction) and the floor; shared_frame=False: the manifold's own geometry, not
# manifolds.eigenframe's (both are checked for LU calls in-process below). The affine-invariant norm used batched LU
# solves in every step. One fit, 2 batched eighs: with 2 threads on a loaded 2-core machine one batched
# d = 784 eigh can stall for 2-20 s (OpenMP barriers oversubscribed), so the test does no more than it must
r = ddrs.RDDRS(iterations=1, samples=8, step_size=1.0, metric="affine-invariant", method="retr",
               adaptive=False, shared_frame=False, keep_best=False, select=False).fit(
    model, x, init=0.25, generator=torch.Generator().manual_seed(2))
assert r.points.shape == (B, d, d) and torch.isfinite(r.points).all()
moved = (r.points - 0.25 * torch.eye(d, dtype=torch.float64)).abs().amax((-2, -1))
assert (moved > 1e-6).all(), moved  # every point took a real step
watchdog.cancel()
print("ok", time.perf_counter() - t)
"""

#: seconds for the batched step: the LU path never returns; a healthy run takes ~1 s on a quiet machine and
#: 5-40 s with both cores busy elsewhere (2 threads oversubscribed); the subprocess as a whole (imports) gets
#: PROCESS_LIMIT
STEP_LIMIT = 120
PROCESS_LIMIT = 300


@pytest.mark.slow
def test_batched_d784_cold_start_rddrs_steps_finish_with_two_threads():
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    try:
        code = f"STEP_LIMIT = {STEP_LIMIT}\n" + _COLD_START
        run = [sys.executable, "-c", code]
        out = subprocess.run(run, capture_output=True, text=True, env=env, timeout=PROCESS_LIMIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the d = 784 subprocess did not finish within {PROCESS_LIMIT} s")
    if out.stdout.startswith("timeout"):  # the LU path printed DLASWP errors and never returned
        pytest.fail(f"batched d = 784 RDDRS steps did not finish within {STEP_LIMIT} s with 2 threads (LU hang?)")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "DLASWP" not in out.stderr and "oneMKL ERROR" not in out.stderr
    assert out.stdout.startswith("ok")


@pytest.mark.parametrize("options", [{}, {"adaptive": False}, {"adaptive": False, "shared_frame": False}])
def test_rddrs_steps_call_no_lu(options, monkeypatch):
    """The default RDDRS step (Riemannian Adam in the eigenframe), plain ascent in the eigenframe and plain ascent
    through SPD.step, batched, reach no torch.linalg LU routine (what hung at d = 784 with 2 threads; checked
    here at d = 16, in-process)."""
    import ddrs

    def refuse(*args, **kwargs):
        raise AssertionError("LU-based routine called in an RDDRS step")

    model = torch.nn.Linear(16, 3).double()
    x = torch.rand(3, 16, generator=torch.Generator().manual_seed(1), dtype=F64)
    for name in ("solve", "inv", "lu_factor", "lu", "solve_ex", "inv_ex"):
        monkeypatch.setattr(torch.linalg, name, refuse)
    r = ddrs.RDDRS(iterations=3, samples=16, select=False, **options).fit(
        model, x, init=0.25, generator=torch.Generator().manual_seed(2)
    )
    assert torch.isfinite(r.points).all() and r.trace is not None and len(r.trace) == 4


def test_ai_geometry_calls_no_lu(monkeypatch):
    """inner, norm, step (exp and retr, clipped) and the floor never reach torch.linalg.solve/inv/lu."""

    def refuse(*args, **kwargs):
        raise AssertionError("LU-based routine called in the SPD geometry")

    for name in ("solve", "inv", "lu_factor", "lu", "solve_ex", "inv_ex"):
        monkeypatch.setattr(torch.linalg, name, refuse)
    m = manifolds.SPD(5)
    g = torch.Generator().manual_seed(0)
    x = m.random_point(3, generator=g)
    u = m.random_point(3, generator=g) - m.random_point(3, generator=g)
    assert torch.isfinite(m.inner(x, u, u)).all() and torch.isfinite(m.norm(x, u)).all()
    for method in ("exp", "retr"):
        y = m.step(x, m.egrad2rgrad(x, u), 0.7, method=method, max_norm=0.5)
        noise_for(m).project_floor(y, 0.5, 2.0)


def test_ai_step_clips_in_the_metric_norm_and_matches_exp_retr():
    m = manifolds.SPD(6)
    g = torch.Generator().manual_seed(3)
    x = m.random_point(4, generator=g)
    a = torch.randn(4, 6, 6, generator=g, dtype=F64)
    u = 3.0 * (a + a.transpose(-1, -2))
    n = m.norm(x, u)
    assert (n > 0.5).all()
    v = u * (0.5 / n)[:, None, None]
    for method, ref in (("exp", m.exp), ("retr", m.retr)):
        y = m.step(x, u, 1.0, method=method, max_norm=0.5)
        torch.testing.assert_close(y, ref(x, v), rtol=1e-10, atol=1e-12)
    # retr = X + V + 1/2 V X^-1 V exactly (Jeuris et al. 2012), via the eigenvalue route
    xinv = torch.cholesky_inverse(torch.linalg.cholesky(x))
    torch.testing.assert_close(m.retr(x, v), x + v + 0.5 * v @ xinv @ v, rtol=1e-10, atol=1e-12)


def test_ai_step_uses_one_eigendecomposition_of_x(monkeypatch):
    m = manifolds.SPD(4)
    g = torch.Generator().manual_seed(1)
    x = m.random_point(2, generator=g)
    u = x - m.random_point(2, generator=g)
    calls = []
    orig = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda a: calls.append(a.shape) or orig(a))
    m.step(x, u, 1.0, method="retr", max_norm=0.3)
    assert len(calls) == 1  # norm, clip and retraction share it
    m.step(x, u, 1.0, method="exp", max_norm=0.3)
    assert len(calls) == 2  # x's decomposition is still cached; + the expm of the whitened step
    m.step(x.clone(), u, 1.0, method="exp", max_norm=0.3)
    assert len(calls) == 4  # a new tensor: decomposed afresh


# ---- the fast affine-invariant step (one whitening) and a user's overrides ---------------------------
def _x_u(d=5, b=3, seed=4):
    m = manifolds.SPD(d)
    g = torch.Generator().manual_seed(seed)
    x = m.random_point(b, generator=g)
    a = torch.randn(b, d, d, generator=g, dtype=F64)
    return m, x, m.egrad2rgrad(x, a + a.transpose(-1, -2))


@pytest.mark.parametrize("method", ["exp", "retr"])
@pytest.mark.parametrize("max_norm", [None, 0.3, 5.0, 100.0])  # all, some (norms 4.6-6.1), none clipped
def test_fast_ai_step_equals_the_generic_step(method, max_norm, monkeypatch):
    m, x, u = _x_u()
    assert m._ai_fast_path() and m.plain_affine_invariant()
    used = []
    fast = manifolds.AffineInvariant.whitened_step
    monkeypatch.setattr(manifolds.AffineInvariant, "whitened_step", lambda *a: used.append(1) or fast(*a))
    ops = {**manifolds.spd._AI_OPS, "whitened_step": manifolds.AffineInvariant.whitened_step}
    monkeypatch.setitem(manifolds.spd._FAST_OPS, manifolds.AffineInvariant, ops)
    y = m.step(x, u, 0.7, method=method, max_norm=max_norm)
    assert used == [1]
    ref = manifolds.Manifold.step(m, x, u, 0.7, method=method, max_norm=max_norm)  # norm, then exp/retr
    assert torch.equal(y, ref)  # bit for bit: trajectories (and seeded tests downstream) do not move
    if max_norm is not None and method == "exp":
        assert (m.dist(x, y) <= max_norm * (1 + 1e-9)).all()


def _overriding_classes():
    class ScaledInner(manifolds.AffineInvariant):  # a metric whose norm is 4 x: clipping must see it
        def inner(self, x, u, v):
            return 16.0 * super().inner(x, u, v)

    class ShiftedRetr(manifolds.AffineInvariant):
        def retr(self, x, u):
            return super().retr(x, u) + 1e-3 * torch.eye(x.shape[-1], dtype=F64)

    class OwnExp(manifolds.SPD):  # the SPD subclass's exp: the step must call it
        def exp(self, x, u):
            return super().exp(x, u) * 1.5

    class OwnNorm(manifolds.SPD):
        def norm(self, x, u):
            return 4.0 * super().norm(x, u)

    class Limited(manifolds.AffineInvariant):
        def step_limit(self, x, max_norm):
            return torch.full(x.shape[:-2], 0.01, dtype=F64)

    class ScaledLE(manifolds.LogEuclidean):
        def inner(self, x, u, v):
            return 16.0 * super().inner(x, u, v)

    return [
        ("metric inner", manifolds.SPD(5, ScaledInner()), "exp"),
        ("metric retr", manifolds.SPD(5, ShiftedRetr()), "retr"),
        ("SPD exp", OwnExp(5), "exp"),
        ("SPD norm", OwnNorm(5), "retr"),
        ("metric step_limit", manifolds.SPD(5, Limited()), "exp"),
        ("log-Euclidean inner", manifolds.SPD(5, ScaledLE()), "exp"),
    ]


@pytest.mark.parametrize("case", range(6))
def test_step_honours_a_users_overridden_inner_norm_exp_retr(case):
    """The fast path is for the shipped metric only: any override is used by ``step``."""
    name, m, method = _overriding_classes()[case]
    _, x, u = _x_u()
    assert not m._ai_fast_path() and not m.plain_affine_invariant(), name
    y = m.step(x, u, 0.7, method=method, max_norm=0.3)
    # what the generic step computes with this object's own methods
    n = m.norm(x, 0.7 * u)
    v = 0.7 * u * (m.step_limit(x, 0.3) / n).clamp(max=1.0)[:, None, None]
    torch.testing.assert_close(y, m.exp(x, v) if method == "exp" else m.retr(x, v), rtol=1e-12, atol=1e-14)
    plain = manifolds.SPD(5).step(x, u, 0.7, method=method, max_norm=0.3)
    assert (y - plain).abs().amax() > 1e-4, name  # the override changed the result


@pytest.mark.parametrize("max_norm", [None, 0.3, 5.0, 100.0])
def test_fast_log_euclidean_step_equals_the_generic_step_and_hands_on_its_eigh(max_norm, monkeypatch):
    _, x, u = _x_u()
    m = manifolds.SPD(5, "log-euclidean")
    assert m._fast_step_metric() is m.metric and not m.plain_affine_invariant()
    ref = manifolds.Manifold.step(m, x, u, 0.7, method="exp", max_norm=max_norm)
    y = m.step(x, u, 0.7, method="exp", max_norm=max_norm)
    assert torch.equal(y, ref)
    calls = []
    orig = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda a: calls.append(1) or orig(a))
    floored = noise_for(m).project_floor(
        y, float(torch.linalg.eigvalsh(y)[:, 2].min())
    )  # exp's (VQ) e^mu (VQ)^T: no new eigh
    assert calls == []
    torch.testing.assert_close(torch.linalg.eigvalsh(floored), noise_for(m).eigenvalues(floored), rtol=1e-12, atol=0)


def test_instance_level_override_is_honoured():
    m, x, u = _x_u()
    m.retr = lambda x, u: x.clone()  # e.g. a monkeypatched retraction
    assert not m._ai_fast_path()
    torch.testing.assert_close(m.step(x, u, 0.7, method="retr", max_norm=0.3), x)


def test_floor_hands_its_eigendecomposition_to_the_next_step(monkeypatch):
    """One eigh per retr step: the floor's (clamped eigenvalues, eigenvectors) serve log-volume, the smallest
    eigenvalue, the norm and the move of the next step; the floor is exact in min_eigenvalue."""
    m, x, u = _x_u(d=6, b=2)
    calls = []
    orig = torch.linalg.eigh
    monkeypatch.setattr(torch.linalg, "eigh", lambda a: calls.append(1) or orig(a))
    lam_min = float(torch.linalg.eigvalsh(x).amax(-1).min())  # floors every point
    y = noise_for(m).project_floor(x, lam_min)
    assert len(calls) == 1
    point = y.detach().requires_grad_(True)  # what the estimator differentiates
    lv, me = noise_for(m).log_volume(point), noise_for(m).min_eigenvalue(point)
    assert len(calls) == 1 and (me.detach() == lam_min).all()
    torch.autograd.grad((lv + me).sum(), point)
    m.step(y, u, 0.1, method="retr", max_norm=0.3)
    assert len(calls) == 1
    torch.testing.assert_close(lv.detach(), torch.linalg.eigvalsh(y).log().mean(-1), rtol=1e-13, atol=0)
    y.add_(0.0)  # an in-place change (version bump) invalidates the entry
    m.step(y, u, 0.1, method="retr", max_norm=0.3)
    assert len(calls) == 2
