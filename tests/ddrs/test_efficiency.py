"""The levers of the fast RDDRS recipe: unbiased gradients, and each switch does what it claims."""

from __future__ import annotations

import numpy as np
import torch
from test_ddrs import Ellipse, gen

import ddrs
import manifolds


def _gradients(antithetic: bool, seeds: range) -> np.ndarray:
    model = Ellipse([1.0, 0.4, 0.7], scale=3.0)
    x = torch.tensor([[0.1, -0.05, 0.2]], dtype=torch.float64)
    m = manifolds.get_manifold("spd", 3)
    C = torch.tensor([[[0.5, 0.1, 0.0], [0.1, 0.4, 0.05], [0.0, 0.05, 0.3]]], dtype=torch.float64)
    est = ddrs.SoftSmoothingEstimator(samples=64, antithetic=antithetic, clamp=0.0)
    # the expected-probability objective is linear in G, so its gradient estimate is unbiased
    objective = lambda terms: terms.p_top
    out = []
    for s in seeds:
        z = est.draw(1, 3, gen(s), x.device, x.dtype)
        out.append(est.evaluate(model, m, x, C, objective, z)[1].flatten().numpy())
    return np.array(out)


def test_antithetic_gradient_is_unbiased_and_not_noisier():
    plain = _gradients(False, range(300))
    anti = _gradients(True, range(1000, 1300))
    reference = _gradients(False, range(2000, 2300)).mean(0)
    se = np.sqrt(plain.var(0) / len(plain) + anti.var(0) / len(anti))
    z = np.abs(anti.mean(0) - plain.mean(0)) / np.maximum(se, 1e-12)
    assert z.max() < 4.5  # means agree within Monte Carlo error (9 entries)
    assert np.abs(anti.mean(0) - reference).max() < 5 * se.max()
    assert anti.var(0).sum() <= 1.1 * plain.var(0).sum()


def test_antithetic_draws_are_negated_pairs():
    est = ddrs.SoftSmoothingEstimator(samples=6, antithetic=True)
    z = est.draw(2, 4, gen(0), "cpu", torch.float64)
    assert torch.equal(z[:, 3:], -z[:, :3])
    plain = ddrs.SoftSmoothingEstimator(samples=6).draw(2, 4, gen(0), "cpu", torch.float64)
    assert not torch.equal(plain[:, 3:], -plain[:, :3])


def test_warm_start_from_ancer_starts_at_its_theta():
    model = Ellipse([1.5, 0.3, 0.6], scale=10.0)
    x = torch.zeros(2, 3, dtype=torch.float64)
    an = ddrs.ANCER(iterations=5, samples=16).fit(model, x, init=0.2, generator=gen(0))
    rd = ddrs.RDDRS(iterations=0, samples=16).fit(model, x, init=an, generator=gen(0))
    assert torch.allclose(rd.points, torch.diag_embed(an.points))
    assert torch.equal(rd.sigma_star, an.sigma_star)
    cold = ddrs.RDDRS(iterations=0, samples=16).fit(model, x, init=0.2, generator=gen(0))
    assert torch.allclose(cold.points, 0.2 * torch.eye(3, dtype=torch.float64).expand(2, 3, 3))


def test_retraction_switch_uses_the_retraction(monkeypatch):
    calls = {"exp": 0, "retr": 0}
    m = manifolds.SPD
    orig_exp, orig_retr = m.exp, m.retr

    def exp(self, x, u):
        calls["exp"] += 1
        return orig_exp(self, x, u)

    def retr(self, x, u):
        calls["retr"] += 1
        return orig_retr(self, x, u)

    monkeypatch.setattr(m, "exp", exp)
    monkeypatch.setattr(m, "retr", retr)
    model = Ellipse([1.5, 0.3], scale=10.0)
    x = torch.zeros(1, 2, dtype=torch.float64)
    ddrs.RDDRS(iterations=3, samples=16, method="retr", adaptive=False, shared_frame=False).fit(
        model, x, init=0.2, generator=gen(0)
    )
    assert calls == {"exp": 0, "retr": 3}
    ddrs.RDDRS(iterations=3, samples=16, method="exp", adaptive=False, shared_frame=False).fit(
        model, x, init=0.2, generator=gen(0)
    )
    assert calls == {"exp": 3, "retr": 3}


def test_network_evaluations_are_counted_per_sample():
    model = Ellipse([1.5, 0.3], scale=10.0)
    x = torch.zeros(3, 2, dtype=torch.float64)
    r = ddrs.RDDRS(iterations=4, samples=10, keep_best=False, select=False).fit(model, x, init=0.2, generator=gen(0))
    assert r.network.forward == 4 * 3 * 10 and r.network.backward == 4 * 3 * 10
    s = ddrs.RDDRS(iterations=4, samples=10, keep_best=False, selection_samples=50).fit(
        model, x, init=0.2, generator=gen(0)
    )
    assert s.network.forward == 4 * 3 * 10 + 2 * 3 * 50 and s.network.backward == 4 * 3 * 10
    paper = ddrs.RDDRS.paper()
    assert (paper.iterations, paper.samples, paper.step_size, paper.kappa, paper.method) == (
        98,
        20000,
        1.0,
        1e-8,
        "exp",
    )
