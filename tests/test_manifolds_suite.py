"""The reusable property suite (manifolds.testing.check_manifold) on every shipped manifold."""
import pytest
import torch

import manifolds
from manifolds.testing import check_manifold, spd_points

SHIPPED = [
    ("scalar", 3, "affine-invariant"),
    ("diagonal", 4, "affine-invariant"),
    ("diagonal", 2, "log-euclidean"),
    ("spd", 4, "affine-invariant"),
    ("spd", 3, "log-euclidean"),
    ("spd", 3, "bures-wasserstein"),
]


@pytest.mark.parametrize("kind,dim,metric", SHIPPED)
def test_check_manifold_on_shipped(kind, dim, metric):
    examples = 6 if kind == "spd" else 12
    check_manifold(manifolds.get_manifold(kind, dim, metric=metric), max_examples=examples)


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
