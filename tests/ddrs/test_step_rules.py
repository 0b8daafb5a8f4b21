"""Step rules: the ``check_step_rule`` battery on every shipped rule x manifold x metric, planted bugs it must
catch, the eigenframe asked for through the manifold interface, and each metric's frame against its metric."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import ddrs
import manifolds
from ddrs.testing import check_step_rule
from manifolds import SPD, AffineInvariant, PositiveDiagonal, PositiveScalar
from manifolds.eigenframe import (
    AffineInvariantFrame,
    BuresWassersteinFrame,
    EigenFrame,
    LogEuclideanFrame,
)

F64 = torch.float64


class ScaledAffineInvariant(AffineInvariant):
    """4 x the affine-invariant metric: a user's metric, so SPD offers no eigenframe for it."""

    name = "scaled-affine-invariant"

    def inner(self, x, u, v):
        return 4.0 * super().inner(x, u, v)

    def egrad2rgrad(self, x, g):
        return super().egrad2rgrad(x, g) / 4.0

    def dist(self, x, y):
        return 2.0 * super().dist(x, y)


RULES = {
    "riemannian-exp": ddrs.RiemannianAscent(),
    "riemannian-retr": ddrs.RiemannianAscent(method="retr"),
    "riemannian-adam": ddrs.RiemannianAdam(),
    "riemannian-adam-exp": ddrs.RiemannianAdam(method="exp"),
    "riemannian-adam-scalar": ddrs.RiemannianAdam(per_direction=False),
    "euclidean": ddrs.EuclideanAscent(),
    "adam": ddrs.AdamAscent(),
}
MANIFOLDS = {
    "scalar-ai": lambda: PositiveScalar(3),
    "scalar-le": lambda: PositiveScalar(3, metric="log-euclidean"),
    "diagonal-ai": lambda: PositiveDiagonal(3),
    "diagonal-le": lambda: PositiveDiagonal(3, metric="log-euclidean"),
    "spd-ai": lambda: SPD(3),
    "spd-le": lambda: SPD(3, metric="log-euclidean"),
    "spd-bw": lambda: SPD(3, metric="bures-wasserstein"),
    "spd-user-metric": lambda: SPD(3, metric=ScaledAffineInvariant()),
}


@pytest.mark.parametrize("manifold", sorted(MANIFOLDS))
@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_shipped_rule_on_every_manifold_and_metric(rule, manifold):
    r, m = RULES[rule], MANIFOLDS[manifold]()
    if rule in ("euclidean", "adam") and manifold.startswith("spd"):  # raw-parameter steps: said up front
        with pytest.raises(ValueError, match="scalar and diagonal"):
            check_step_rule(r, m)
        return
    check_step_rule(r, m)


# ---- planted bugs: the battery names the property ----------------------------------------------------------


@dataclasses.dataclass
class Leaky(ddrs.StepRule):
    """A step counter kept on the rule object (the design this battery forbids): a decaying step size."""

    lr: float = 0.5

    def __post_init__(self):
        self.calls = 0

    def update(self, manifold, point, egrad, state=None, frame=None):
        self.calls += 1
        g = manifold.egrad2rgrad(point, egrad)
        return manifold.step(point, g, self.lr / self.calls**0.5, method="exp", max_norm=0.5)


@dataclasses.dataclass(frozen=True)
class Descending(ddrs.StepRule):
    def update(self, manifold, point, egrad, state=None, frame=None):
        return manifold.step(point, -manifold.egrad2rgrad(point, egrad), 0.5, method="exp", max_norm=0.5)


@dataclasses.dataclass(frozen=True)
class Unseeded(ddrs.StepRule):
    def update(self, manifold, point, egrad, state=None, frame=None):
        u = manifold.egrad2rgrad(point, egrad) * (1 + 0.1 * torch.rand(()))  # global RNG: not reproducible
        return manifold.step(point, u, 0.5, method="exp", max_norm=0.5)


@pytest.mark.parametrize(
    ("rule", "prop"),
    [(Leaky(), "stateless"), (Descending(), "ascends"), (Unseeded(), "deterministic")],
)
def test_the_battery_catches_planted_bugs(rule, prop):
    with pytest.raises(AssertionError, match=f"property '{prop}'"):
        check_step_rule(rule, SPD(3, metric="log-euclidean"))


def test_the_battery_catches_a_rule_that_leaves_the_manifold():
    class Off(ddrs.RiemannianAscent):
        def update(self, manifold, point, egrad, state=None, frame=None):
            new = super().update(manifold, point, egrad, state, frame)
            return new - 5.0 * torch.eye(manifold.dim, dtype=F64) if state is not None and state.step > 3 else new

    with pytest.raises(AssertionError, match="property '(ascends|on_manifold)'.*(not positive definite|not on)"):
        check_step_rule(Off(), SPD(3))


def test_rules_are_stateless_configuration():
    for rule in RULES.values():
        assert dataclasses.is_dataclass(rule)
        with pytest.raises(dataclasses.FrozenInstanceError):
            rule.lr = 1.0  # type: ignore[misc]
        s = rule.init_state()
        assert isinstance(s, ddrs.StepState) and s.step == 0 and s.buffers == {}
    a, b = ddrs.RiemannianAdam(), ddrs.RiemannianAdam()
    assert a == b and hash(a) == hash(b)  # configuration only: equal rules are interchangeable


# ---- the eigenframe through the interface -----------------------------------------------------------------


def test_the_manifold_hands_out_its_frame_and_none_where_it_has_none():
    x = SPD(3).random_point(2, generator=torch.Generator().manual_seed(0))
    assert type(SPD(3).eigenframe(x)) is AffineInvariantFrame
    assert type(SPD(3, metric="log-euclidean").eigenframe(x)) is LogEuclideanFrame
    assert type(SPD(3, metric="bures-wasserstein").eigenframe(x)) is BuresWassersteinFrame
    assert SPD(3, metric=ScaledAffineInvariant()).eigenframe(x) is None  # its own inner: stepped through it
    assert PositiveScalar(3).eigenframe(torch.ones(2, dtype=F64)) is None
    assert PositiveDiagonal(3).frame_type() is None

    class OwnFloor(manifolds.MatrixNoise):
        def project_floor(self, x, lambda_min, lambda_max=None):
            return super().project_floor(x, lambda_min, lambda_max)

    frame = SPD(3).eigenframe(x)
    assert manifolds.MatrixNoise(3).frame_terms(frame)
    assert not OwnFloor(3).frame_terms(frame)  # a frame would bypass the override
    own = manifolds.MatrixNoise(3)
    own.min_eigenvalue = lambda x: manifolds.MatrixNoise.min_eigenvalue(own, x)  # type: ignore[method-assign]
    assert not own.frame_terms(frame)
    m = SPD(3)
    m.exp = lambda x, u: SPD.exp(m, x, u)  # type: ignore[method-assign]  # instance attribute
    assert m.frame_type() is None


def test_the_optimiser_never_tests_for_the_spd_class():
    import inspect

    import ddrs.optimizers as opt

    source = inspect.getsource(opt)
    assert "isinstance(manifold" not in source and "from manifolds import SPD" not in source
    assert "plain_affine_invariant" not in source


@pytest.mark.parametrize("metric", ["affine-invariant", "log-euclidean", "bures-wasserstein"])
def test_each_frame_is_its_metric_in_coordinates(metric):
    """Coordinates are orthonormal (Frobenius = the metric's norm), the gradient's coordinates are those of the
    metric's Riemannian gradient, the move is the metric's exp (and retr), and the step limit is the metric's."""
    m = SPD(4, metric=metric)
    gen = torch.Generator().manual_seed(3)
    x = m.random_point(3, generator=gen)
    x[2] = 0.4 * torch.eye(4, dtype=F64)  # tied spectrum
    frame = m.eigenframe(x)
    assert isinstance(frame, EigenFrame) and frame.metric_name == metric
    g = torch.randn(3, 4, 4, generator=gen, dtype=F64)
    rgrad = m.egrad2rgrad(x, g)
    w = frame.whiten_gradient(g)
    torch.testing.assert_close(frame.tangent(w), rgrad, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(frame.coordinates(rgrad), w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(torch.linalg.matrix_norm(w), m.norm(x, rgrad), rtol=1e-9, atol=0)
    u = 0.3 * w / torch.linalg.matrix_norm(w)[:, None, None]
    torch.testing.assert_close(frame.move(u, "exp"), m.exp(x, frame.tangent(u)), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(frame.move(u, "retr"), m.retr(x, frame.tangent(u)), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(
        torch.as_tensor(frame.step_limit(2.0), dtype=F64).expand(3), m.step_limit(x, 2.0), rtol=1e-12, atol=0
    )
    clipped = frame.clip(10 * w, 2.0)
    assert float(torch.linalg.matrix_norm(clipped).max()) <= float(m.step_limit(x, 2.0).max()) * (1 + 1e-12)
    for ours, theirs in (
        (frame.log_volume, manifolds.noise_for(m).log_volume),
        (frame.min_eigenvalue, manifolds.noise_for(m).min_eigenvalue),
    ):
        a, b = frame.point.clone().requires_grad_(True), frame.point.clone().requires_grad_(True)
        torch.testing.assert_close(ours(a), theirs(b), rtol=1e-12, atol=1e-14)
        (ga,) = torch.autograd.grad(ours(a).sum(), a)
        (gb,) = torch.autograd.grad(theirs(b).sum(), b)
        torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)


def test_log_euclidean_frame_transport_is_parallel_transport():
    """In log-Euclidean coordinates R W R^T (R = V_new^T V_old) is the metric's parallel transport:
    Dlog at the new point of the carried vector equals Dlog at the old point of the original."""
    m = SPD(4, metric="log-euclidean")
    gen = torch.Generator().manual_seed(5)
    x, y = m.random_point(2, generator=gen), m.random_point(2, generator=gen)
    fx, fy = m.eigenframe(x), m.eigenframe(y)
    w = fx.coordinates(m.egrad2rgrad(x, torch.randn(2, 4, 4, generator=gen, dtype=F64)))
    carried = fy.carry(w, fx.vec)
    torch.testing.assert_close(
        fy.vec @ carried @ fy.vec.transpose(-1, -2), fx.vec @ w @ fx.vec.transpose(-1, -2), rtol=1e-10, atol=1e-12
    )


def test_bures_wasserstein_adam_keeps_inside_the_injectivity_radius():
    m = SPD(3, metric="bures-wasserstein")
    x = 0.3 * torch.eye(3, dtype=F64)[None]
    rule, state = ddrs.RiemannianAdam(lr=5.0), ddrs.RiemannianAdam().init_state()
    g = torch.randn(1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    y = rule.update(m, x, g, state, m.eigenframe(x))
    assert float(m.dist(x, y)) <= math.sqrt(0.3) * -math.expm1(-1.0) * (1 + 1e-9)


# ---- the fit names the rule; nothing is replaced silently ---------------------------------------------------


def test_the_generic_form_is_named_and_rotation_lr_needs_a_frame():
    user = SPD(3, metric=ScaledAffineInvariant())
    assert "geoopt's form, one second moment per point" in ddrs.RiemannianAdam().describe(user)
    assert "per-direction second moments in the bures-wasserstein eigenframe" in ddrs.RiemannianAdam().describe(
        SPD(3, metric="bures-wasserstein")
    )
    assert "geoopt's form" in ddrs.RDDRS(manifold=user).step_rule_for(3)
    with pytest.raises(ValueError, match="rotation_lr"):
        ddrs.RiemannianAdam(rotation_lr=0.01).check(user)
    ddrs.RiemannianAdam(rotation_lr=0.01).check(SPD(3))


def test_pymanopt_sgd_runs_any_rule_with_the_iterates_of_the_own_backend():
    from test_ddrs import Ellipse, gen

    model = Ellipse([1.5, 0.4, 0.8], scale=10.0).eval()
    x = 0.1 * torch.randn(2, 3, generator=gen(1), dtype=F64)
    for metric in ("affine-invariant", "log-euclidean", "bures-wasserstein"):
        for step in (None, "riemannian", ddrs.RiemannianAdam(lr=0.1, per_direction=False)):
            kw = dict(iterations=6, samples=32, metric=metric, step=step, select=False)
            own = ddrs.RDDRS(**kw).fit(model, x, init=0.2, generator=gen(0))
            pym = ddrs.RDDRS(backend="pymanopt", **kw).fit(model, x, init=0.2, generator=gen(0))
            assert torch.equal(own.points, pym.points), (metric, step)
            assert pym.step_rule == "pymanopt SteepestDescent loop stepping by " + own.step_rule


# ---- the acceptance study's bookkeeping ----------------------------------------------------------------------


def test_metric_swap_rows_acceptance_and_refusal_to_overwrite_committed_results():
    from ddrs_app.compare import BUDGETS

    from benchmarks.analysis.outputs import RESULTS_DIR
    from benchmarks.studies import metric_swap

    rows = metric_swap.configs(BUDGETS["digits"])
    names = [n for n, _ in rows]
    assert names[:6] == ["ai-rgd", "ai-pymanopt", "le-rgd", "le-pymanopt", "bw-rgd", "bw-pymanopt"]
    assert all(c.options == {} and c.sigma == 0.25 for _, c in rows[:6])  # the defaults a user gets
    assert [c.options for _, c in rows[6:]] == [{"step": "riemannian"}] * 2

    def row(name, acr, accs, rule="default"):
        return {"row": name, "rule": rule, "acr_proxy": acr} | {f"proxy@{r:g}": a for r, a in zip((0.5, 1.0), accs)}

    good = [row("a", 1.0, (0.9, 0.5)), row("b", 0.95, (0.85, 0.46)), row("c", 0.3, (0.1, 0.0), "former")]
    verdict = metric_swap.acceptance(good, (0.5, 1.0))
    assert verdict == {"best": "a", "ok": True} and not good[2]["ok"]
    bad = [row("a", 1.0, (0.9, 0.5)), row("b", 0.95, (0.85, 0.0))]
    assert metric_swap.acceptance(bad, (0.5, 1.0))["ok"] is False and bad[1]["acc_ratio"] == 0.0
    with pytest.raises(SystemExit) as err:
        metric_swap.main(["--out-dir", str(RESULTS_DIR)])
    assert err.value.code == 2 and "pass --results" in str(err.value)
