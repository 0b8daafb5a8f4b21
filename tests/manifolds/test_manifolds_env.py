"""Import hygiene (default dtype, Geomstats backend) and the Pymanopt backend."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from manifolds import SPD, PositiveDiagonal, PositiveScalar, noise_for
from manifolds.pymanopt_backend import maximize

F64 = torch.float64
ROOT = str(Path(__file__).resolve().parents[2])


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "GEOMSTATS_BACKEND"}
    full_env.update(env)
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_import_is_lazy_and_leaves_default_dtype_unchanged():
    code = (
        "import sys, torch; torch.set_default_dtype(torch.float32)\n"
        "import manifolds; a = torch.get_default_dtype(); lazy = 'geomstats' not in sys.modules\n"
        "m = manifolds.SPD(3, 'log-euclidean'); x = m.random_point(); m.exp(x, x); m.dist(x, x)\n"
        "own = 'geomstats' not in sys.modules  # the shipped metrics are own code\n"
        "from manifolds.geomstats_adapter import spd_module\n"
        "g = manifolds.SPD(3, spd_module().SPDLogEuclideanMetric); g.exp(x, x); g.dist(x, x)\n"
        "print(a, torch.get_default_dtype(), lazy, own, 'geomstats' in sys.modules)"
    )
    out = _run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["torch.float32", "torch.float32", "True", "True", "True"]


def test_in_process_geomstats_use_leaves_default_dtype_unchanged():
    before = torch.get_default_dtype()
    from manifolds.geomstats_adapter import spd_module

    SPD(2, spd_module().SPDBuresWassersteinMetric).exp(torch.eye(2, dtype=F64), torch.zeros(2, 2, dtype=F64))
    assert torch.get_default_dtype() == before


def test_wrong_geomstats_backend_raises_clearly():
    code = "import manifolds.geomstats_adapter as g; g.spd_module()"
    out = _run(code, GEOMSTATS_BACKEND="numpy")
    assert out.returncode != 0 and "GEOMSTATS_BACKEND" in out.stderr and "pytorch" in out.stderr


def _mc_problem(m, p, n_samples=64, seed=0):
    """Monte-Carlo maximisation of E[-1/2 ||P^-1/2 C z||^2] + d log_volume(C) (maximiser C = P^{1/2} for SPD)."""
    gen = torch.Generator().manual_seed(seed)
    pinv = torch.linalg.inv(p) if m.point_ndim == 2 else 1.0 / p

    def cost_and_rgrad(x):
        z = torch.randn(1, n_samples, m.dim, generator=gen)  # float32 "model" samples
        xr = x.clone().requires_grad_(True)
        eps = noise_for(m).apply(xr.unsqueeze(0), z).double()
        if m.point_ndim == 2:
            quad = ((eps @ pinv) * eps).sum(-1).mean()
        else:
            quad = (eps.square() * pinv).sum(-1).mean()
        val = -0.5 * quad + m.dim * noise_for(m).log_volume(xr)
        (g,) = torch.autograd.grad(val, xr)
        return float(val.detach()), m.egrad2rgrad(x, g)

    return cost_and_rgrad


def test_pymanopt_sgd_on_monte_carlo_objective_spd():
    m = SPD(3)
    q = torch.linalg.eigh(torch.tensor([[2.0, 1, 0], [1, 3, 1], [0, 1, 1]], dtype=F64))[1]
    target = (q * torch.tensor([0.5, 1.0, 2.0], dtype=F64)) @ q.T  # the maximiser C
    x0 = torch.eye(3, dtype=F64)
    seen = []
    x, trace = maximize(
        _mc_problem(m, target @ target, n_samples=256),
        x0,
        m,
        solver="sgd",
        step_size=0.1,
        max_iterations=150,
        callback=lambda k, xk, v: seen.append(k),
    )
    assert x.dtype == F64 and x.shape == (3, 3)
    m.check_point(x)
    assert float(m.dist(x, target)) < 0.15 < float(m.dist(x0, target))
    assert len(trace) >= 100 and seen[:3] == [0, 1, 2]
    assert trace[-1]["objective"] > trace[0]["objective"]


def test_pymanopt_cost_and_gradient_share_samples():
    calls = []
    m = PositiveDiagonal(2)

    def f(x):
        calls.append(x.clone())
        return float(-(x - 1).square().sum()), m.egrad2rgrad(x, -2 * (x - 1))

    maximize(f, torch.tensor([2.0, 3.0], dtype=F64), m, solver="sgd", step_size=0.1, max_iterations=5)
    # one evaluation per iterate, although pymanopt asks for cost and gradient separately
    assert len(calls) == len({tuple(c.tolist()) for c in calls})


@pytest.mark.parametrize("solver", ["steepest", "cg", "sgd"])
def test_pymanopt_deterministic_batched_spd(solver):
    m = SPD(3)
    p = m.random_point(2, generator=torch.Generator().manual_seed(1))

    def f(x):  # -1/2 tr(P^-1 X) + 1/2 log det X, maximiser X = P, batch of 2 on SPD(3, k=2)
        xr = x.clone().requires_grad_(True)
        val = (
            -0.5 * torch.linalg.solve(p, xr).diagonal(dim1=-2, dim2=-1).sum(-1) + 1.5 * noise_for(m).log_volume(xr)
        ).sum()
        (g,) = torch.autograd.grad(val, xr)
        return float(val.detach()), m.egrad2rgrad(x, g)

    x, trace = maximize(
        f, torch.eye(3, dtype=F64).expand(2, 3, 3).clone(), m, solver=solver, step_size=0.5, max_iterations=300
    )
    assert x.shape == (2, 3, 3)
    assert float(m.dist(x, p).max()) < 1e-4


@pytest.mark.parametrize("manifold", [SPD(2, "log-euclidean"), PositiveDiagonal(3), PositiveScalar(4)])
def test_pymanopt_adapter_other_manifolds(manifold):
    m = manifold
    p = m.random_point(generator=torch.Generator().manual_seed(3))
    if m.point_ndim == 2:
        p = p @ p
    x, _ = maximize(
        _mc_problem(m, p, n_samples=512),
        noise_for(m).project_floor(m.random_point(), 1.0),
        m,
        solver="sgd",
        step_size=0.05,
        max_iterations=200,
    )
    target = (
        p.sqrt()
        if m.point_ndim < 2
        else torch.linalg.eigh(p)[1] @ torch.diag_embed(torch.linalg.eigvalsh(p).sqrt()) @ torch.linalg.eigh(p)[1].T
    )
    assert float(m.dist(x, target)) < 0.2


def test_armijo_is_the_wrong_tool_for_monte_carlo():
    """Documented behaviour: Armijo backtracking stalls on noisy costs; fixed-step SGD gets closer."""
    m = SPD(3)
    target = torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=F64))
    x0 = torch.eye(3, dtype=F64)
    x_sgd, _ = maximize(
        _mc_problem(m, target @ target, 32, seed=1), x0, m, solver="sgd", step_size=0.05, max_iterations=200
    )
    x_arm, tr = maximize(_mc_problem(m, target @ target, 32, seed=1), x0, m, solver="steepest", max_iterations=200)
    assert float(m.dist(x_sgd, target)) < float(m.dist(x_arm, target))


def test_unknown_solver():
    with pytest.raises(ValueError, match="solver"):
        maximize(lambda x: (0.0, x), torch.tensor(1.0, dtype=F64), PositiveScalar(2), solver="adam")
