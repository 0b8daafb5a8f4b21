"""The reusable property suite (manifolds.testing.check_manifold) on every shipped manifold."""

import pytest
import torch

import manifolds
from manifolds.testing import check_manifold, check_noise_map, spd_points

SHIPPED = [
    ("scalar", 3, "affine-invariant"),
    ("diagonal", 4, "affine-invariant"),
    ("diagonal", 2, "log-euclidean"),
    ("spd", 4, "affine-invariant"),
    ("spd", 3, "log-euclidean"),
    ("spd", 3, "bures-wasserstein"),  # was a non-strict xfail: dist(x, x) ~ 1e-5
]


@pytest.mark.parametrize("kind,dim,metric", SHIPPED)
def test_check_manifold_on_shipped(kind, dim, metric):
    examples = 6 if kind == "spd" else 12
    m = manifolds.get_manifold(kind, dim, metric=metric)
    check_manifold(m, max_examples=examples)
    check_noise_map(manifolds.noise_for(m), m, max_examples=examples)


@pytest.mark.parametrize("metric", ["affine-invariant", "log-euclidean"])
def test_check_manifold_ill_conditioned_spd(metric):
    # kappa up to e^6 ~ 400 with sigma I reachable by shrinking; tangent radius small against kappa
    m = manifolds.SPD(3, metric=metric)
    check_manifold(m, points=spd_points(3, max_log_eig=3.0, log_scale=1.0), max_examples=6, tangent_radius=0.3)


class _WrongGradient(manifolds.PositiveDiagonal):
    def egrad2rgrad(self, x, g):
        return x * g  # missing a factor theta: not the Riemannian gradient


class _FirstOrderRetraction(manifolds.SPD):
    def retr(self, x, u):
        return x + u  # first order only (and may leave the cone)


def test_suite_catches_a_wrong_gradient():
    with pytest.raises(AssertionError, match="riemannian_gradient"):
        check_manifold(_WrongGradient(3), max_examples=5, shrink=False)


def test_suite_catches_a_first_order_retraction():
    with pytest.raises(AssertionError, match="retraction_order|points_and_exp"):
        check_manifold(_FirstOrderRetraction(3), max_examples=5, shrink=False)


def test_user_manifold_in_one_small_class():
    """A user-defined manifold (scaled diagonal metric) passes the suite with one import."""

    class Scaled(manifolds.PositiveDiagonal):
        # metric 4 sum u v / theta^2: inner, egrad2rgrad and dist change consistently
        def inner(self, x, u, v):
            return 4.0 * super().inner(x, u, v)

        def egrad2rgrad(self, x, g):
            return super().egrad2rgrad(x, g) / 4.0

        def dist(self, x, y):
            return 2.0 * super().dist(x, y)

    check_manifold(Scaled(3), max_examples=8)
    assert torch.get_default_dtype() in (torch.float32, torch.float64)


# ---- the six bugs that survived the old suite, planted in subclasses ----
class _CeilingIgnored(manifolds.MatrixNoise):
    def project_floor(self, x, lambda_min, lambda_max=None):
        return super().project_floor(x, lambda_min)


class _CeilingAsSecondFloor(manifolds.MatrixNoise):
    def project_floor(self, x, lambda_min, lambda_max=None):
        return super().project_floor(x, lambda_min if lambda_max is None else max(lambda_min, lambda_max))


class _MinEigenvalueTooLarge(manifolds.MatrixNoise):  # over-claims the inscribed ball: unsound
    def min_eigenvalue(self, x):
        return 1.001 * super().min_eigenvalue(x)


class _ApplyTransposed(manifolds.DiagonalNoise):  # draws other noise than its certify object
    def apply(self, x, z):
        return super().apply(x, z.flip(-1))


class _LogScaled(manifolds.SPD):
    def log(self, x, y):
        return (1 + 5e-4) * super().log(x, y)


class _LogFloat32(manifolds.SPD):
    def log(self, x, y):
        return super().log(x.float(), y.float()).double()


class _DistFloat32(manifolds.SPD):
    def dist(self, x, y):
        return super().dist(x.float().double(), y.float().double()).float().double()


class _DistAsymmetric(manifolds.SPD):
    def dist(self, x, y):
        return super().dist(x, y) + 1e-5 * (x - y).sum((-2, -1)).sign()


class _ExpRaises(manifolds.SPD):
    def exp(self, x, u):
        raise RuntimeError("boom")


PLANTED = [_LogScaled, _LogFloat32, _DistFloat32, _DistAsymmetric, _ExpRaises]
PLANTED_NOISE = [_CeilingIgnored, _CeilingAsSecondFloor, _MinEigenvalueTooLarge, _ApplyTransposed]


@pytest.mark.parametrize("cls", PLANTED, ids=lambda c: c.__name__)
def test_suite_catches_each_planted_bug(cls):
    with pytest.raises(AssertionError, match="property '"):
        check_manifold(cls(3), max_examples=8, shrink=False)


@pytest.mark.parametrize("cls", PLANTED_NOISE, ids=lambda c: c.__name__)
def test_noise_suite_catches_each_planted_bug(cls):
    manifold = manifolds.SPD(3) if cls.point_ndim == 2 else manifolds.PositiveDiagonal(3)
    with pytest.raises(AssertionError, match="property '"):
        check_noise_map(cls(3), manifold, max_examples=8, shrink=False)


def test_suite_names_the_property_of_a_non_assertion_failure():
    with pytest.raises(AssertionError, match="property 'points_and_exp' failed: RuntimeError: boom"):
        check_manifold(_ExpRaises(3), max_examples=2, shrink=False)


def test_first_order_retraction_accepted_when_declared():
    class FirstOrder(manifolds.SPD):  # X + U + 3/4 U X^-1 U = X^1/2 (I + W + 3W^2/4) X^1/2: SPD, first order
        def retr(self, x, u):
            r = super().retr(x, u)  # X + U + 1/2 U X^-1 U
            return r + 0.5 * (r - x - u)

    with pytest.raises(AssertionError, match="retraction_order"):
        check_manifold(FirstOrder(3), max_examples=5, shrink=False)
    check_manifold(FirstOrder(3), max_examples=5, shrink=False, retraction_order=1)
    with pytest.raises(ValueError, match="retraction_order"):
        check_manifold(FirstOrder(3), retraction_order=3)
