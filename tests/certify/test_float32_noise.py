"""Noise for float32 models: drawn and added to x in float64 where its condition number asks for it
(``GaussianNoise.draw_dtype``), the sum then rounded to the model's dtype as part of the base classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from certify import FullGaussian, IsotropicGaussian, KroneckerGaussian, Smooth, SpikedGaussian
from certify.noise import FLOAT32_CONDITION_LIMIT
from certify.sampling import sample_statistics
from tests.classifiers import HalfSpace


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _kronecker(cond: float) -> KroneckerGaussian:
    R = _rotation(0.3)
    return KroneckerGaussian([R @ np.diag([1.0, 1.0 / cond]) @ R.T, np.eye(3)])


def test_the_draw_dtype_follows_the_condition_number():
    assert IsotropicGaussian(1e-3).draw_dtype(torch.float32) == torch.float32
    assert _kronecker(10.0).draw_dtype(torch.float32) == torch.float32
    assert _kronecker(10 * FLOAT32_CONDITION_LIMIT).draw_dtype(torch.float32) == torch.float64
    assert _kronecker(10 * FLOAT32_CONDITION_LIMIT).draw_dtype(torch.float64) == torch.float64
    R = _rotation(0.7)
    assert FullGaussian(R @ np.diag([1.0, 1e-3]) @ R.T).condition_number() == pytest.approx(1e3)
    U = np.eye(6, 1)
    assert SpikedGaussian(1.0, U, [1e-3]).condition_number() == pytest.approx(1e3, rel=1e-9)


def test_a_well_conditioned_thin_axis_is_drawn_as_stated_in_float32():
    """Condition 1e3 along a rotated axis: the draws (through the certifier's own sampling, float32 model) have the
    stated standard deviation along the thin axis (float32 draws of the rotated factor would miss it by about
    2^-24 sqrt(d) of the large scale, relative 1e-4 here; the statistic is tested to 5 %)."""
    noise = _kronecker(1e3)
    thin = np.kron(_rotation(0.3)[:, 1], np.eye(3)[0])  # the thin axis of factor 1, first column of factor 2
    seen: list[torch.Tensor] = []

    def model(v: torch.Tensor) -> torch.Tensor:
        assert v.dtype == torch.float32
        seen.append(v.reshape(v.shape[0], -1).double())
        return torch.zeros(v.shape[0], 2)

    sample_statistics(
        model, noise, torch.zeros(6), 20_000, 2, batch_size=5000, generator=torch.Generator().manual_seed(0)
    )
    draws = torch.cat(seen).numpy()
    assert np.std(draws @ thin) == pytest.approx(1e-3, rel=0.05)


def test_an_ill_conditioned_noise_is_stated_exactly_before_the_rounding_of_the_input():
    """Condition 1e8 (a float32 factor would be singular): the sum reaches a float32 model in float32, formed in
    float64 (the model sees (x + noise) rounded once); a float64 model gets the closed-form p_A of the stated noise."""
    noise = _kronecker(1e8)  # thinnest scale 1e-8 beside a scale of 1
    w = np.kron(_rotation(0.3)[:, 1], np.eye(3)[0])
    x = torch.full((6,), 0.5)
    seen: list[torch.Tensor] = []

    def model32(v: torch.Tensor) -> torch.Tensor:
        assert v.dtype == torch.float32
        seen.append(v)
        return torch.zeros(v.shape[0], 2)

    sample_statistics(model32, noise, x, 2000, 2, batch_size=1000, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    eps64 = noise.sample(1000, 6, gen, "cpu", torch.float64)[0]  # the same first draws, in float64
    assert torch.equal(seen[0], (x.double() + eps64).float())
    cert = Smooth(HalfSpace(w, -2e-8).eval(), noise, 2).certify(
        torch.zeros(6, dtype=torch.float64), 10, 1000, 0.01, generator=torch.Generator().manual_seed(0)
    )
    # class 1 (w.x > b) with p_A = Phi(2e-8 / ||S w||) = Phi(2) = 0.977, the stated Gaussian's
    assert cert.prediction == 1 and 0.9 < cert.p_lower < 0.977


def test_a_kronecker_noise_refuses_an_input_of_the_wrong_shape():
    """Factors for (2, 3) on an input of shape (3, 2): the same size, another layout; refused naming the factors. The
    flattened input (6,) and the factors' own shape are accepted."""
    noise = _kronecker(10.0)
    model = HalfSpace(np.ones(6), 0.0).eval()
    with pytest.raises(ValueError, match="shape mismatch between x and factors"):
        Smooth(model, noise, 2).certify(torch.zeros(3, 2, dtype=torch.float64), 10, 100, 0.01)
    for shape in ((6,), (2, 3)):
        Smooth(model, noise, 2).certify(torch.zeros(shape, dtype=torch.float64), 10, 100, 0.01)
