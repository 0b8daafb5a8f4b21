"""The public primitives of ``certify`` shared by certification and the noise choice: the one vectorised
Clopper-Pearson, the sampling statistics, the noisy-forward routine, the model guard, the certificate
from a bound and the typed certificate fields that replaced the free-form ``extras`` dict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import beta

import certify
import ddrs
import manifolds
from certify.bounds import clopper_pearson
from certify.sampling import LogitsError, noisy_forward, sample_statistics, sampling_dtype, untouched
from ddrs.estimator import noisy_logits
from ddrs.selection import hard_vote_radii
from manifolds import noise_for


# ---------------------------------------------------------------------------- Clopper-Pearson
def test_clopper_pearson_is_the_beta_quantile_bit_for_bit():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 5000, size=400)
    k = np.minimum(rng.integers(0, 5000, size=400), n)
    k[:20], k[20:40] = 0, n[20:40]  # both ends
    a = rng.uniform(1e-6, 0.2, size=400)
    lo, up = clopper_pearson(k, n, a, "two-sided")
    for i in range(400):
        want_lo = 0.0 if k[i] == 0 else beta.ppf(a[i] / 2, k[i], n[i] - k[i] + 1)
        want_up = 1.0 if k[i] == n[i] else beta.ppf(1 - a[i] / 2, k[i] + 1, n[i] - k[i])
        assert lo[i] == want_lo and up[i] == want_up  # exact: the same ufunc on the same numbers
        assert certify.clopper_pearson_lower(int(k[i]), int(n[i]), a[i]) == (
            0.0 if k[i] == 0 else beta.ppf(a[i], int(k[i]), int(n[i] - k[i] + 1))
        )
        assert certify.clopper_pearson_upper(int(k[i]), int(n[i]), a[i]) == (
            1.0 if k[i] == n[i] else beta.ppf(1.0 - a[i], int(k[i]) + 1, int(n[i] - k[i]))
        )
    one_lo, one_up = clopper_pearson(k, n, a / 2, "lower")
    assert np.array_equal(one_lo, lo) and np.all(one_up == 1.0)
    up_lo, up_up = clopper_pearson(k, n, a / 2, "upper")
    assert np.array_equal(up_up, up) and np.all(up_lo == 0.0)


def test_clopper_pearson_broadcasts_and_checks_its_alternative():
    lo, up = clopper_pearson(np.array([[0], [5], [10]]), 10, np.array([0.01, 0.1]))
    assert lo.shape == up.shape == (3, 2) and np.all(lo <= up)
    assert np.all(lo[0] == 0.0) and np.all(up[2] == 1.0) and np.all(lo[:, 0] <= lo[:, 1])
    scalar = clopper_pearson(3, 10, 0.05)
    assert scalar[0].shape == () and 0 < float(scalar[0]) < 0.3 < float(scalar[1]) < 1
    assert certify.clopper_pearson_lower(3, 0, 0.1) == 0.0 and certify.clopper_pearson_upper(0, 0, 0.1) == 1.0
    with pytest.raises(ValueError, match="alternative"):
        clopper_pearson(1, 2, 0.1, "both")


# ---------------------------------------------------------------------------- sampling
class Linear(torch.nn.Module):
    def __init__(self, d: int, c: int, dtype=torch.float32):
        super().__init__()
        self.f = torch.nn.Linear(d, c, dtype=dtype)
        torch.nn.init.normal_(self.f.weight, generator=torch.Generator().manual_seed(1))

    def forward(self, v):
        return self.f(v.reshape(v.shape[0], -1))


def test_sample_statistics_is_smooth_s_and_counts_every_draw():
    model = Linear(6, 3).eval()
    noise = certify.IsotropicGaussian(0.5)
    x = torch.rand(2, 3)
    smooth = certify.Smooth(model, noise, 3)
    labels: list = []
    a = smooth.sample_statistics(x, 250, 100, torch.Generator().manual_seed(3), labels=labels)
    b = sample_statistics(model, noise, x, 250, 3, batch_size=100, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.counts, b.counts) and a.counts.shape == (1, 3) and int(a.counts.sum()) == 250
    assert int(a.per_component.sum()) == 250 and torch.equal(a.scores(), a.counts.sum(0))
    assert [len(t) for t in labels] == [100, 100, 50] and torch.equal(
        torch.bincount(torch.cat(labels), minlength=3), a.scores()
    )
    soft = sample_statistics(model, noise, x, 50, 3, smoothing="soft", generator=torch.Generator().manual_seed(3))
    assert soft.sums.sum().item() == pytest.approx(50.0) and torch.equal(soft.scores(), soft.sums.sum(0))
    mix = certify.MixtureOfGaussians([0.25, 0.5], kind="mixture")
    m = sample_statistics(model, mix, x, 300, 3, generator=torch.Generator().manual_seed(0))
    assert m.counts.shape == (2, 3) and int(m.per_component.sum()) == 300
    pooled = m.pooled()
    assert pooled.counts.shape == (1, 3) and torch.equal(pooled.counts[0], m.counts.sum(0))
    assert 0 < pooled.lower_bound(0, int(pooled.scores().argmax()), 0.01) < 1


def test_noisy_forward_adds_in_the_sampling_dtype_then_casts_to_the_model_s():
    seen = []

    def model(v):
        seen.append(v)
        return torch.zeros(v.shape[0], 2, dtype=v.dtype)

    x = torch.tensor([1.0, 2.0], dtype=torch.float32)
    eps = torch.tensor([[1e-4, 0.0], [0.0, 1e-3]], dtype=torch.float32)
    noisy_forward(model, x, eps, torch.float16, (2,))
    assert seen[-1].dtype == torch.float16
    assert torch.equal(seen[-1], (x + eps).to(torch.float16))  # one rounding, of the float32 sum
    assert sampling_dtype(torch.float16) == sampling_dtype(torch.bfloat16) == torch.float32
    assert sampling_dtype(torch.float64) == torch.float64
    with pytest.raises(LogitsError, match=r"\(2, 3\); got \(2, 2\) \(hint\)"):
        noisy_forward(model, x, eps, torch.float32, (2,), 3, hint=" (hint)")
    with pytest.raises(LogitsError, match="NaN"):
        noisy_forward(lambda v: torch.full((2, 2), float("nan")), x, eps, torch.float32, (2,), check_finite=True)
    assert torch.isnan(noisy_forward(lambda v: torch.full((2, 2), float("nan")), x, eps, torch.float32, (2,))).all()


def test_estimator_and_selection_send_the_same_noisy_copies_through_the_network():
    """One routine: the selection's hard votes are the argmax of the estimator's logits, for a
    float32 model (bit-identical to the former model-dtype arithmetic there) and a float16 one
    (noise added in float32 and then rounded, as in certification; it used to fail)."""
    for dtype in (torch.float32, torch.float16):
        model = Linear(4, 3, dtype).eval()
        x = torch.rand(2, 4).to(dtype)
        manifold = manifolds.PositiveScalar(4)
        point = torch.tensor([0.3, 0.6], dtype=torch.float64)
        z = ddrs.SoftSmoothingEstimator(samples=64).draw(2, 4, torch.Generator().manual_seed(0), "cpu", dtype)
        logits = noisy_logits(model, manifold, x, point, z, 3)
        assert logits.shape == (128, 3) and logits.dtype == dtype
        if dtype == torch.float32:  # what the selection computed before, in the model's dtype
            old = model((x.reshape(2, 1, 4) + noise_for(manifold).apply(point.to(dtype), z)).reshape(128, 4))
            assert torch.equal(logits, old)
        top = torch.nn.functional.one_hot(logits.argmax(1).reshape(2, -1), 3).sum(1).max(1).values
        lower = torch.as_tensor(clopper_pearson(top.double().numpy(), 64, 0.01, "lower")[0])
        want = torch.where(lower > 0.5, torch.special.ndtri(lower) * point, torch.zeros(2, dtype=torch.float64))
        assert torch.equal(hard_vote_radii(model, manifold, x, point, z, 0.01)["l2"], want)


def test_untouched_warns_in_training_mode_and_restores_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    before = [b.clone() for b in model.buffers()]
    with pytest.warns(UserWarning, match="training mode"), untouched(model):
        model(torch.randn(8, 3))
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers())) and model.training
    model.eval()
    with untouched(model):
        pass


# ---------------------------------------------------------------------------- certificates
def test_certificate_from_bound_and_the_typed_fields():
    noise = certify.DiagonalGaussian([0.5, 1.0])
    center = np.zeros(2)
    cert = certify.certificate_from_bound(noise, center, 1, 0.9, 1.2, n0=10, n=90, alpha=0.01, seconds=0.5)
    assert (cert.prediction, cert.radius, cert.n0, cert.n, cert.samples, cert.noise) == (
        1,
        1.2,
        10,
        90,
        100,
        "diagonal",
    )
    assert cert.l2_radius == pytest.approx(0.6) and cert.min_sigma == 0.5 and cert.seconds == 0.5
    assert cert.contains(np.array([0.59, 0.0])) and not cert.contains(np.array([0.61, 0.0]))
    assert cert.decided is None and cert.paper_radius is None and cert.memory_action is None
    none = certify.certificate_from_bound(noise, center, 1, 0.4, -0.25, n0=1, n=1, alpha=0.01, paper_radius=0.1)
    assert none.abstained and none.region is None and none.paper_radius == 0.1 and none.log_row()["paper_radius"] == 0.1
    assert "paper_radius" not in cert.log_row()


def test_extras_is_a_deprecated_view_of_the_fields():
    model = Linear(2, 2).eval()
    x = torch.tensor([0.3, -0.2])
    gen = torch.Generator().manual_seed(0)
    seq = certify.Smooth(model, certify.IsotropicGaussian(0.25), 2).certify(
        x, 50, 2000, 0.01, generator=gen, radii=[0.1]
    )
    assert isinstance(seq.decided, tuple) and seq.radii == (0.1,) and seq.looks >= 1
    assert len(seq.decided_at) == 1 and seq.samples == seq.n0 + seq.n <= 2050
    with pytest.warns(DeprecationWarning, match="typed fields"):
        extras = seq.extras
    assert extras == {
        "decided": seq.decided,
        "radii": (0.1,),
        "looks": seq.looks,
        "decided_at": seq.decided_at,
        "samples": seq.samples,
    }
    mix = certify.Smooth(model, certify.MixtureOfGaussians([0.25, 0.5], kind="mixture"), 2).certify(
        x, 50, 500, 0.01, generator=gen
    )
    assert isinstance(mix.component_p_lowers, tuple) and len(mix.component_p_lowers) == 2
    assert mix.paper_radius_is_certificate is False and mix.paper_radius is not None
    with pytest.warns(DeprecationWarning):
        assert set(mix.extras) == {"component_p_lowers", "paper_radius", "paper_radius_is_certificate"}
    plain = certify.Smooth(model, certify.IsotropicGaussian(0.25), 2).certify(x, 50, 500, 0.01, generator=gen)
    with pytest.warns(DeprecationWarning):
        assert plain.extras == {}


def test_memory_records_its_action_in_the_fields():
    def ball(center, r, k):
        noise = certify.IsotropicGaussian(1.0)
        return certify.certificate_from_bound(noise, np.asarray(center, float), k, 0.9, r, n0=1, n=1, alpha=0.01)

    m = certify.Memory()
    kept = m.add(ball([0.0, 0.0], 1.0, 0), idx=0).certificate
    shrunk = m.add(ball([1.5, 0.0], 1.0, 1), idx=1).certificate
    adopted = m.add(ball([0.2, 0.0], 0.5, 2), idx=2).certificate
    assert kept.memory_action is None
    assert shrunk.memory_action == "shrunk" and shrunk.memory_reason == (0,) and shrunk.radius < 1.0
    assert adopted.memory_action == "adopted" and adopted.memory_source == 0 and adopted.prediction == 0
    abstained = m.add(ball([0.1, 0.0], 0.5, 1), idx=3).certificate  # inside 0's region, of class 1
    assert abstained.abstained or abstained.memory_action == "adopted"
    strict = certify.Memory(policy="abstain")
    strict.add(ball([0.0, 0.0], 1.0, 0), idx=0)
    inside = strict.add(ball([0.1, 0.0], 0.5, 1), idx=1).certificate
    assert inside.abstained and inside.memory_action == "abstained" and inside.memory_why == "inside"
