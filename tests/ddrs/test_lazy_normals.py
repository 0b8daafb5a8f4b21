"""Draws too large to hold (ImageNet-sized inputs) are made block by block on demand (``ddrs.estimator.LazyNormals``):
the same numbers on every read, and the estimator and the selection give what they give on the whole tensor."""

from __future__ import annotations

import pytest
import torch

import ddrs
import manifolds
from ddrs import estimator as est_module
from ddrs.estimator import LazyNormals, samples_per_chunk
from ddrs.selection import hard_vote_radii
from tests.classifiers import Ellipse


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_lazy_draws_are_the_same_numbers_on_every_read_and_slice():
    z = LazyNormals.draw(3, 10, 4, block=3, generator=gen(0), device="cpu", dtype=torch.float64)
    whole = z[:, 0:10]
    assert whole.shape == (3, 10, 4)
    assert torch.equal(whole, z[:, :])
    assert torch.equal(torch.cat([z[:, 0:4], z[:, 4:7], z[:, 7:10]], dim=1), whole)  # across block boundaries
    assert torch.equal(z[1:3][:, 2:9], whole[1:3, 2:9])  # sub-batches keep their inputs' draws
    again = LazyNormals.draw(3, 10, 4, block=3, generator=gen(0), device="cpu", dtype=torch.float64)
    assert torch.equal(again[:, 0:10], whole)  # a function of the caller's generator
    other = LazyNormals.draw(3, 10, 4, block=3, generator=gen(1), device="cpu", dtype=torch.float64)
    assert not torch.equal(other[:, 0:10], whole)
    many = LazyNormals.draw(2, 20_000, 5, block=1_000, generator=gen(2), device="cpu", dtype=torch.float64)[:, :]
    assert abs(float(many.mean())) < 0.01 and abs(float(many.var()) - 1.0) < 0.01  # standard normal


def test_a_draw_above_the_budget_is_lazy_and_gives_the_whole_tensor_s_value_and_gradient(monkeypatch):
    monkeypatch.setattr(est_module, "DRAW_ELEMENTS", 200)  # small inputs above the budget: the lazy route
    model = Ellipse([1.0, 0.5], scale=3.0)
    x = torch.tensor([[0.1, 0.2], [0.0, -0.1]], dtype=torch.float64)
    m = manifolds.get_manifold("spd", 2)
    C = torch.tensor([[[0.3, 0.05], [0.05, 0.2]], [[0.25, 0.0], [0.0, 0.25]]], dtype=torch.float64)
    est = ddrs.SoftSmoothingEstimator(samples=500, chunk_size=10_000)
    z = est.draw(2, 2, gen(1), x.device, x.dtype)
    assert isinstance(z, LazyNormals) and z.block == samples_per_chunk(10_000, 2, 2) == 50
    v_lazy, g_lazy, _ = est.evaluate(model, m, x, C, ddrs.ancer_objective(2.0), z)
    monkeypatch.setattr(est_module, "DRAW_ELEMENTS", 2**26)
    whole = z[:, :]
    v, g, _ = ddrs.SoftSmoothingEstimator(samples=500, chunk_size=10_000).evaluate(
        model, m, x, C, ddrs.ancer_objective(2.0), whole
    )
    assert torch.allclose(v_lazy, v, rtol=1e-10) and torch.allclose(g_lazy, g, rtol=1e-8, atol=1e-12)
    radii = hard_vote_radii(model, m, x, C, z, 0.01)
    assert all(torch.equal(radii[k], hard_vote_radii(model, m, x, C, whole, 0.01)[k]) for k in radii)


@pytest.mark.parametrize("batch,dim", [(20, 784), (20, 3072), (5, 64)])
def test_below_the_budget_nothing_changes(batch, dim):
    """The project's budgets up to d = 3072 (20 inputs x 1,000 samples) draw and chunk exactly as before the lazy
    route existed."""
    assert samples_per_chunk(20_000, batch, dim) == 20_000 // batch
    assert batch * 1000 * dim <= est_module.DRAW_ELEMENTS
    small = ddrs.SoftSmoothingEstimator(samples=10, chunk_size=20_000).draw(batch, dim, gen(0), "cpu", torch.float32)
    assert isinstance(small, torch.Tensor)
