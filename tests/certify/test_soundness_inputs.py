"""Sampling precision, ownership, validation, no mutation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import norm

import certify
from ddrs.estimator import SoftSmoothingEstimator


# ---------------------------------------------------------------------------- 2. half precision
def _threshold_model(t: float, scale: float = 1e3):
    """Plain callable: class 1 iff v[0] > t (evaluated in float64 on whatever it is given)."""

    def m(v):
        s = v[:, 0].double() - t
        return (torch.stack([-s, s], 1) * scale).float()

    return m


class _HalfThreshold(torch.nn.Module):
    """A module whose parameters are in ``dtype`` (so certify feeds it ``dtype`` inputs)."""

    def __init__(self, t: float, dtype):
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1, dtype=dtype))
        self.t = t
        self.seen = set()

    def forward(self, v):
        self.seen.add(v.dtype)
        s = v[:, 0].double() - self.t
        return torch.stack([-s, s], 1) * 1e3


def _cert(model, x, sigma, seed=3, n=100_000):
    sm = certify.Smooth(model, certify.IsotropicGaussian(sigma), 2)
    return sm.certify(x, 100, n, 1e-3, batch_size=10_000, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_input_plain_callable_issue_reproducer(dtype):
    # the issue's reproducer: a parameter-free callable gets float32 noise added to x in float32
    c = _cert(_threshold_model(1000.2), torch.tensor([1000.0], dtype=dtype), 0.25)
    assert c.prediction == 0
    assert c.l2_radius <= 0.2  # true radius: 0.25 * Phi^-1(Phi(0.8)) = 0.2 (was 0.2437 / 1.78)
    assert c.l2_radius > 0.185


def test_bfloat16_realistic_case():
    t = 0.75 + 0.0508
    c = _cert(_threshold_model(t), torch.tensor([0.75], dtype=torch.bfloat16), 0.05)
    assert c.l2_radius <= 0.0508  # was 0.0523
    assert c.l2_radius > 0.047


@pytest.mark.parametrize("dtype,grid", [(torch.float16, 2.0**-10), (torch.bfloat16, 2.0**-7)])
def test_half_model_certifies_cast_then_model(dtype, grid):
    # a float16/bfloat16 model is certified as "round x + eps to its dtype, then the model";
    # closed form: with spacing h on [0.5, 1), round(v) > t iff v >= (ceil(t / h) - 1/2) h.
    x0, sigma, t = 0.75, 0.05, 0.8008
    h = grid / 2.0  # spacing in [0.5, 1) is 2^-(mantissa bits + 1)
    cut = (math.ceil(t / h) - 0.5) * h
    truth = sigma * norm.ppf(norm.cdf((cut - x0) / sigma))
    model = _HalfThreshold(t, dtype).eval()
    c = _cert(model, torch.tensor([x0], dtype=dtype), sigma)
    assert model.seen == {dtype}
    assert c.l2_radius <= truth
    assert c.l2_radius > truth - 0.004


def test_noise_is_drawn_in_float32_for_half_models():
    seen = {}

    class Spy(certify.IsotropicGaussian):
        def sample(self, count, dim, generator, device, dtype):
            seen["dtype"] = dtype
            return super().sample(count, dim, generator, device, dtype)

    model = _HalfThreshold(0.0, torch.float16).eval()
    certify.Smooth(model, Spy(0.5), 2).certify(torch.zeros(1, dtype=torch.float16), 10, 10, 0.1)
    assert seen["dtype"] == torch.float32
    model = _HalfThreshold(0.0, torch.float64).eval()
    certify.Smooth(model, Spy(0.5), 2).certify(torch.zeros(1), 10, 10, 0.1)
    assert seen["dtype"] == torch.float64


def test_ddrs_estimator_never_draws_half_noise():
    est = SoftSmoothingEstimator(samples=8)
    z = est.draw(2, 3, torch.Generator().manual_seed(0), "cpu", torch.float16)
    assert z.dtype == torch.float32
    z = est.draw(2, 3, torch.Generator().manual_seed(0), "cpu", torch.float64)
    assert z.dtype == torch.float64


# ---------------------------------------------------------------------------- 3. ownership
def _linear(d, k=2):
    """Class 1 on the half-space v[0] > -10 (certify always answers 1 near 0)."""
    lin = torch.nn.Linear(d, k).double()
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[1, 0] = 1.0
        lin.bias.copy_(torch.tensor([-10.0, 0.0]))
    return lin.eval()


def test_mutating_x_changes_no_certificate():
    x = torch.zeros(4, dtype=torch.float64)
    x[0] = 1
    sm = certify.Smooth(_linear(4), certify.IsotropicGaussian(0.5), 2)
    c = sm.certify(x, 10, 200, 0.01, generator=torch.Generator().manual_seed(0))
    before = c.region.center.copy()
    x.mul_(0)
    assert np.array_equal(c.region.center, before)
    with pytest.raises(ValueError):
        c.region.center[0] = 3.0  # read-only


@pytest.mark.parametrize("as_numpy", [False, True])
def test_mutating_theta_changes_no_certificate(as_numpy):
    th = torch.full((4,), 0.5, dtype=torch.float64)
    theta = th.numpy() if as_numpy else th
    noise = certify.DiagonalGaussian(theta)
    c = certify.Smooth(_linear(4), noise, 2).certify(
        torch.zeros(4, dtype=torch.float64), 10, 200, 0.01, generator=torch.Generator().manual_seed(0)
    )
    l2, scale = c.l2_radius, np.array(c.region.scale)
    probe = np.zeros(4)
    probe[0] = 1.01 * c.l2_radius
    inside = c.contains(probe)
    th.mul_(4)
    assert np.array_equal(c.region.scale, scale) and c.region.l2_radius == l2
    assert c.contains(probe) == inside
    assert torch.all(noise.theta == 0.5)


def test_mutating_C_changes_no_certificate():
    C = torch.eye(4, dtype=torch.float64) * 0.5
    C[0, 1] = C[1, 0] = 0.1
    noise = certify.FullGaussian(C)
    c = certify.Smooth(_linear(4), noise, 2).certify(
        torch.zeros(4, dtype=torch.float64), 10, 200, 0.01, generator=torch.Generator().manual_seed(0)
    )
    scale = np.array(c.region.scale)
    C.mul_(10)
    assert np.array_equal(c.region.scale, scale)
    assert torch.allclose(noise.C[0, 0], torch.tensor(0.5, dtype=torch.float64))
    assert not c.region.scale.flags.writeable


def test_mutating_sigma_and_mixture_parameters():
    s = torch.tensor(0.5, dtype=torch.float64)
    iso = certify.IsotropicGaussian(s)
    s.mul_(3)
    assert iso.sigma == 0.5
    sig = np.array([0.25, 0.5])
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    mog = certify.MixtureOfGaussians(sig, w)
    sig *= 4
    w.mul_(0).add_(0.5)
    assert mog.sigmas.tolist() == [0.25, 0.5] and mog.weights.tolist() == pytest.approx([0.3, 0.7])


def test_memory_entries_own_their_inputs():
    mem = certify.Memory()
    x = np.zeros(3)
    mem.add(certify.Certificate.abstain(), x=x)  # stored as a point
    region = certify.Ellipsoid(np.ones(3), np.array([1.0, 2.0, 3.0]), 0.5)
    cert = certify.Certificate(1, 0.9, 0.5, region.l2_radius, region.proxy_radius, region)
    mem.add(cert)
    x += 7
    assert np.array_equal(mem.entries[0].region.center, np.zeros(3))
    assert not mem.entries[1].region.center.flags.writeable
    with pytest.raises(ValueError):
        mem.entries[1].region.scale[0] = 100.0


def test_ellipsoid_copies_caller_arrays():
    c, s = np.zeros(2), np.array([[2.0, 0.5], [0.5, 1.0]])
    e = certify.Ellipsoid(c, s, 1.0)
    r = e.l2_radius
    c[:] = 5
    s[:] = np.eye(2) * 100
    assert np.array_equal(e.center, [0, 0]) and e.l2_radius == r
    assert np.shares_memory(e.with_radius(2.0).scale, e.scale)  # frozen data is shared, not copied


# ---------------------------------------------------------------------------- 4. validation
def test_ellipsoid_rejects_indefinite_and_nonsymmetric_scale():
    with pytest.raises(ValueError, match="positive definite"):
        certify.Ellipsoid(np.zeros(4), -np.eye(4), 1.0)
    s = np.eye(4)
    s[0, 1] = 2
    with pytest.raises(ValueError, match="symmetric"):
        certify.Ellipsoid(np.zeros(4), s, 1.0)
    with pytest.raises(ValueError, match="NaN"):
        certify.Ellipsoid(np.zeros(2), np.array([[1.0, np.nan], [np.nan, 1.0]]), 1.0)
    with pytest.raises(ValueError, match="center"):
        certify.Ellipsoid(np.array([0.0, np.inf]), 1.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        certify.Ellipsoid(np.zeros(2), np.array([1.0, 0.0]), 1.0)


def test_ellipsoid_symmetrises_within_tolerance():
    s = np.array([[2.0, 0.5], [0.5 + 1e-12, 1.0]])
    e = certify.Ellipsoid(np.zeros(2), s, 1.0)
    assert np.array_equal(e.scale, e.scale.T)


def test_memory_checks_size_and_finiteness_of_x():
    theta = np.full(64, 0.5)
    region = certify.Ellipsoid(np.zeros(64), theta, 1.0)
    cert = certify.Certificate(2, 0.9, 1.0, region.l2_radius, region.proxy_radius, region)
    with pytest.raises(ValueError, match="x has 10 entries"):
        certify.Memory().add(cert, x=np.zeros(10), idx=2)
    with pytest.raises(ValueError, match="x contains NaN"):
        certify.Memory().add(certify.Certificate.abstain(), x=np.full(3, np.nan))
    mem = certify.Memory()
    mem.add(cert)
    with pytest.raises(ValueError, match="x has 3 entries"):
        mem.add(certify.Certificate.abstain(), x=np.zeros(3))
    small = certify.Ellipsoid(np.zeros(3), 1.0, 1.0)
    with pytest.raises(ValueError, match="certificate.region has dimension 3"):
        mem.add(certify.Certificate(1, 0.9, 1.0, 1.0, 1.0, small))
    with pytest.raises(TypeError, match="certificate"):
        mem.add((1, region))


# ---------------------------------------------------------------------------------- the door checks
class _Conv(torch.nn.Module):
    def __init__(self, bn: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.bn = torch.nn.BatchNorm2d(2) if bn else torch.nn.Identity()
        self.head = torch.nn.Linear(2 * 6 * 6, 3)

    def forward(self, v):
        return self.head(self.bn(self.conv(v)).flatten(1))


def test_batch_where_one_input_is_expected():
    sm = certify.Smooth(_Conv().eval(), certify.IsotropicGaussian(0.25), 3)
    ok = sm.certify(torch.zeros(1, 8, 8), 10, 20, 0.1, generator=torch.Generator().manual_seed(0))
    assert ok.n == 20
    with pytest.raises(ValueError, match="ONE input"):
        sm.certify(torch.zeros(5, 1, 8, 8), 10, 20, 0.1)
    with pytest.raises(ValueError, match="ONE input"):
        sm.predict(torch.zeros(5, 1, 8, 8), 20, 0.1)


def test_training_mode_warns_and_never_mutates_the_model():
    model = _Conv(bn=True)  # training mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sm = certify.Smooth(model, certify.IsotropicGaussian(0.5), 3)
    with pytest.warns(UserWarning, match="training mode"):
        sm.certify(torch.ones(1, 8, 8), 10, 50, 0.1, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="training mode"):
        sm.predict(torch.ones(1, 8, 8), 50, 0.1, generator=torch.Generator().manual_seed(0))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model.bn.training  # the caller's mode is left alone
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sm.certify(torch.ones(1, 8, 8), 10, 50, 0.1, generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
