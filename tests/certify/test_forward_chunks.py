"""The CPU evaluates a batch of noisy copies for a float32 model in chunks (``certify.sampling.CPU_FORWARD_ROWS``):
a speed-up that must change no logit, no count and no gradient, bit for bit, against one call on the whole batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import certify
from certify import sampling
from certify.sampling import CPU_FORWARD_ROWS, noisy_forward, sample_statistics


def _cnn(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(1, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 10),
        )
        .to(dtype)
        .eval()
    )


def _mlp(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 10)).to(dtype).eval()


class _Recorder(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.sizes = inner, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        return self.inner(x)


@pytest.mark.parametrize("make", [_cnn, _mlp])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [CPU_FORWARD_ROWS + 1, 1000, 2000, 2001])
def test_chunked_logits_equal_one_call_bit_for_bit(make, dtype, rows):
    model = make(dtype)
    g = torch.Generator().manual_seed(rows)
    x = torch.rand(784, generator=g, dtype=dtype)
    eps = 0.5 * torch.randn(rows, 784, generator=g, dtype=dtype)
    with torch.no_grad():
        whole = model((x + eps).reshape(-1, 1, 28, 28))
        chunked = noisy_forward(model, x, eps, dtype, (1, 28, 28), 10)
    assert torch.equal(whole, chunked)


def test_float64_models_get_one_call():
    # the float64 matrix product rounds by the number of rows (an MLP's logits differ in the last bit), so no chunks
    rec = _Recorder(_mlp(torch.float64))
    with torch.no_grad():
        noisy_forward(rec, torch.zeros(784, dtype=torch.float64), torch.zeros(2000, 784, dtype=torch.float64),
                      torch.float64, (1, 28, 28), 10)  # fmt: skip
    assert rec.sizes == [2000]


def test_small_inputs_get_one_call():
    rec = _Recorder(nn.Sequential(nn.Linear(64, 10)).eval())
    with torch.no_grad():
        noisy_forward(rec, torch.zeros(64), torch.zeros(2000, 64), torch.float32, (64,), 10)
    assert rec.sizes == [2000]


def test_chunks_are_near_equal_and_none_is_small():
    rec = _Recorder(_mlp(torch.float32))
    for rows in (CPU_FORWARD_ROWS, CPU_FORWARD_ROWS + 1, 1000, 2000, 2001):
        rec.sizes.clear()
        with torch.no_grad():
            noisy_forward(rec, torch.zeros(784), torch.zeros(rows, 784), torch.float32, (1, 28, 28), 10)
        assert sum(rec.sizes) == rows
        assert max(rec.sizes) <= CPU_FORWARD_ROWS
        assert min(rec.sizes) >= min(rows, CPU_FORWARD_ROWS // 2)
        assert max(rec.sizes) - min(rec.sizes) < len(rec.sizes)


def test_counts_equal_with_and_without_chunks(monkeypatch):
    model = _cnn(torch.float32)
    x = torch.rand(1, 28, 28, generator=torch.Generator().manual_seed(3))
    runs = []
    for rows in (CPU_FORWARD_ROWS, 10**9):  # chunked, then one call per batch
        monkeypatch.setattr(sampling, "CPU_FORWARD_ROWS", rows)
        for noise in (certify.IsotropicGaussian(0.5), certify.MixtureOfGaussians([0.25, 0.5, 1.0])):
            stats = sample_statistics(
                model, noise, x, 5000, 10, batch_size=2000, generator=torch.Generator().manual_seed(0)
            )
            runs.append((stats.counts, stats.per_component))
    for a, b in zip(runs[:2], runs[2:]):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_gradients_equal_with_and_without_chunks(monkeypatch):
    model = _cnn(torch.float32)
    x = torch.rand(784, generator=torch.Generator().manual_seed(4))
    z = torch.randn(700, 784, generator=torch.Generator().manual_seed(5))
    grads = []
    for rows in (CPU_FORWARD_ROWS, 10**9):
        monkeypatch.setattr(sampling, "CPU_FORWARD_ROWS", rows)
        scale = torch.full((784,), 0.3, requires_grad=True)
        logits = noisy_forward(model, x, z * scale, torch.float32, (1, 28, 28), 10)
        torch.softmax(logits, dim=1)[:, 3].mean().backward()
        grads.append(scale.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_a_model_returning_no_tensor_still_gets_the_shape_error():
    with pytest.raises(certify.sampling.LogitsError, match="logits of shape"):
        noisy_forward(lambda t: [0] * t.shape[0], torch.zeros(4), torch.zeros(600, 4), torch.float32, (4,), 2)
