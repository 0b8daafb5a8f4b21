"""Sampling primitives shared by certification (``certify.Smooth``, ``certify.sequential``) and the
noise choice (``ddrs``): where and in which dtype a model runs, a guard that leaves the model as it
was, the one routine that sends noisy copies of inputs through the network, and the per-class
statistics of Monte Carlo samples that Cohen et al.'s CERTIFY and PREDICT bound.

Numbers: noise is drawn and added to x in ``sampling_dtype`` (float64 for a float64 model, else
float32, never half precision); the noisy sum is then cast to the model's dtype, so a half-precision
model's certificate is a certificate of the base classifier "round to the model's dtype, then the
model". Geometry (noise parameters, certificates) stays in float64.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .bounds import clopper_pearson_lower, soft_lower
from .noise import GaussianNoise

SMOOTHINGS = ("hard", "soft")
#: rows per network call for a float32 model on the CPU: a batch of noisy copies is evaluated in near-equal chunks of
#: at most this many rows, which keeps a small network's activations in cache (1.9x the throughput of one 2,000-row
#: call for the Fashion-MNIST CNN on one thread, `benchmarks/results/README.md`, section "Forward chunks"). The
#: logits stay bit for bit those of one call (`tests/certify/test_forward_chunks.py`: CNNs and MLPs); float64
#: models get one call, because the float64 matrix product rounds differently with the number of rows; so do inputs
#: of fewer than ``CPU_CHUNK_MIN_FEATURES`` numbers (a small vector model's calls cost more than its cache misses).
CPU_FORWARD_ROWS = 256
CPU_CHUNK_MIN_FEATURES = 256


def check_count(value, name: str) -> int:
    """Validate a sample or class count: an int >= 1 (a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def model_device_dtype(model: Callable, x: torch.Tensor) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter or buffer; for a model without
    floating parameters, x's dtype promoted to at least float32 (a plain callable gets no
    half-precision input it did not ask for)."""
    if isinstance(model, torch.nn.Module):
        for t in itertools.chain(model.parameters(), model.buffers()):
            if t.is_floating_point():
                return t.device, t.dtype
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return x.device, sampling_dtype(dtype)


def sampling_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The dtype noise is drawn in and added to x in: float64 for a float64 model, else float32.
    The noisy sum is then cast to the model's dtype, so a half-precision model's certificate is a
    certificate of the base classifier "round to the model's dtype, then the model"."""
    return torch.float64 if model_dtype == torch.float64 else torch.float32


def in_training_mode(model) -> bool:
    """True if ``model`` is an ``nn.Module`` with any submodule in training mode."""
    return isinstance(model, torch.nn.Module) and any(m.training for m in model.modules())


@contextlib.contextmanager
def untouched(model) -> Iterator[None]:
    """Run the model without mutating it: warn if it is in training mode (BatchNorm then uses
    batch statistics, so the noisy samples are not independent and the certificate describes
    a batch-dependent classifier) and restore every buffer afterwards (BatchNorm running stats).
    The model's mode is left as the caller set it (no ``model.eval()`` on the user's module)."""
    if not in_training_mode(model):
        yield
        return
    warnings.warn(
        "the model is in training mode: BatchNorm/Dropout behave as in training (BatchNorm "
        "normalises with batch statistics, so noisy samples are not independent and the "
        "certificate may not hold); call model.eval() before certifying. The model's buffers "
        "are restored after the call.",
        UserWarning,
        stacklevel=3,
    )
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)


class LogitsError(ValueError):
    """The network's output on noisy copies is unusable (wrong type or shape, NaN or infinite)."""


def noisy_forward(
    model: Callable,
    x: torch.Tensor,
    noise: torch.Tensor,
    model_dtype: torch.dtype,
    input_shape: tuple[int, ...],
    num_classes: int | None = None,
    *,
    hint: str = "",
    check_finite: bool = False,
) -> torch.Tensor:
    """The network's logits (N, C) on the noisy copies ``x + noise``.

    ``x`` (flattened inputs, e.g. (d,) or (B, 1, d)) and ``noise`` (e.g. (b, d) or (B, m, d))
    broadcast against each other and are both in ``sampling_dtype(model_dtype)``; their sum is cast
    to ``model_dtype`` and reshaped to (N, *input_shape) for the network. Differentiable (no
    ``no_grad`` here: callers that need none of the graph wrap it). The logits must be a tensor of
    shape (N, num_classes) (num_classes None: any C >= 2; else ``LogitsError``, ``hint`` appended to
    its message); ``check_finite`` refuses NaN or infinite logits (``LogitsError``). Certification
    (``sample_statistics``), the soft-smoothing estimator and the noise selection (``ddrs``) all
    evaluate the network here."""
    noisy = (x + noise).to(model_dtype).reshape((-1,) + tuple(input_shape))
    rows = noisy.shape[0]
    chunk = (
        noisy.device.type == "cpu"
        and noisy.dtype == torch.float32
        and rows > CPU_FORWARD_ROWS
        and noisy[0].numel() >= CPU_CHUNK_MIN_FEATURES
    )
    logits = _chunked(model, noisy) if chunk else model(noisy)
    if (
        not isinstance(logits, torch.Tensor)
        or logits.ndim != 2
        or logits.shape[0] != rows
        or (logits.shape[1] < 2 if num_classes is None else logits.shape[1] != num_classes)
    ):
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        want = "C" if num_classes is None else num_classes
        raise LogitsError(f"model must return logits of shape (batch, num_classes) = ({rows}, {want}); got {got}{hint}")
    if check_finite and not torch.isfinite(logits).all():
        raise LogitsError("model returned NaN or infinite logits; no certificate from bad data")
    return logits


def _chunked(model: Callable, noisy: torch.Tensor) -> Any:
    """``model(noisy)`` on the CPU in near-equal chunks of at most ``CPU_FORWARD_ROWS`` rows (none under half of
    that), concatenated; a model that does not return a tensor gets the whole batch, so that ``noisy_forward``'s
    shape check sees what it returns."""
    rows = noisy.shape[0]
    parts = -(-rows // CPU_FORWARD_ROWS)
    size = -(-rows // parts)
    outputs = []
    for start in range(0, rows, size):
        out = model(noisy[start : start + size])
        if not isinstance(out, torch.Tensor) or out.ndim == 0 or out.shape[0] != min(size, rows - start):
            return model(noisy)
        outputs.append(out)
    return torch.cat(outputs)


@dataclass(frozen=True)
class SampleStatistics:
    """What ``sample_statistics`` counts, per noise component k (K = 1 but for mixtures) and class c:
    ``counts`` (K, C) int64, how often c was the top class (hard smoothing); ``per_component`` (K,)
    int64, the samples of each component; ``sums`` and ``squares`` (K, C) float64, the summed
    softmax probabilities and their squares (soft smoothing; zero for hard). All on the CPU."""

    counts: torch.Tensor
    per_component: torch.Tensor
    sums: torch.Tensor
    squares: torch.Tensor
    smoothing: str = "hard"

    def scores(self) -> torch.Tensor:
        """Per-class score (C,) used to guess the class: total count (hard) or summed probability (soft)."""
        return (self.counts if self.smoothing == "hard" else self.sums).sum(dim=0)

    def pooled(self) -> SampleStatistics:
        """The components merged into one (K = 1)."""
        return SampleStatistics(
            self.counts.sum(dim=0, keepdim=True),
            self.per_component.sum(dim=0, keepdim=True),
            self.sums.sum(dim=0, keepdim=True),
            self.squares.sum(dim=0, keepdim=True),
            self.smoothing,
        )

    def lower_bound(self, component: int, label: int, alpha: float, soft_bound: str = "bernstein") -> float:
        """Lower confidence bound at level alpha on component k's smoothed score of ``label``: one-sided
        Clopper-Pearson on the count (hard), ``soft_bound`` on the mean probability (soft); 0 if the
        component has no samples."""
        m = int(self.per_component[component])
        if m == 0:
            return 0.0
        if self.smoothing == "hard":
            return clopper_pearson_lower(int(self.counts[component, label]), m, alpha)
        mean = float(self.sums[component, label]) / m
        var = (float(self.squares[component, label]) - m * mean * mean) / max(m - 1, 1)
        return soft_lower(mean, var, m, alpha, soft_bound)


def sample_statistics(
    model: Callable,
    noise: GaussianNoise,
    x: torch.Tensor,
    num: int,
    num_classes: int,
    *,
    smoothing: str = "hard",
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    labels: list | None = None,
) -> SampleStatistics:
    """Draw ``num`` noisy copies of ONE input x (any shape) in batches of ``batch_size`` from
    ``generator`` and count them (``SampleStatistics``). The model runs on its own device and dtype
    (``model_device_dtype``), under ``untouched`` and ``torch.no_grad``. ``labels`` (a list, hard
    smoothing) receives each batch's per-sample argmax labels, in draw order. A model that fails on
    the first batch, or returns logits of another shape, is told that x must be one input."""
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"smoothing must be one of {SMOOTHINGS}, got {smoothing!r}")
    device, dtype = model_device_dtype(model, x)
    # noise drawn and added to x in >= float32 (float64 for an ill-conditioned noise, GaussianNoise.draw_dtype);
    # the sum is then cast to the model's dtype, a rounding that belongs to the base classifier
    shape = tuple(x.shape)
    noise.check_shape(shape)
    sdtype = noise.draw_dtype(sampling_dtype(dtype))
    flat = x.detach().reshape(-1).to(device=device, dtype=sdtype)
    d = flat.numel()
    K, C = noise.num_components, num_classes
    counts = torch.zeros(K * C, dtype=torch.int64, device=device)
    per_comp = torch.zeros(K, dtype=torch.int64, device=device)
    sums = torch.zeros(K, C, dtype=torch.float64, device=device)
    squares = torch.zeros(K, C, dtype=torch.float64, device=device)
    hint = f" (x must be ONE input without a batch dimension; got x of shape {shape})"
    remaining = num
    first = True
    with torch.no_grad(), untouched(model):
        while remaining > 0:
            b = min(batch_size, remaining)
            remaining -= b
            eps, comp = noise.sample(b, d, generator, device, sdtype)
            if first:
                first = False
                try:
                    logits = noisy_forward(model, flat, eps, dtype, shape, C, hint=hint, check_finite=True)
                except LogitsError:
                    raise
                except (RuntimeError, ValueError, TypeError, IndexError) as err:
                    raise ValueError(
                        f"the model failed on a batch of noisy copies of x, shape {(b,) + shape}: "
                        f"x must be ONE input without a batch dimension (got x of shape {shape}); "
                        f"certify a batch one input at a time. Model error: {err}"
                    ) from err
            else:
                logits = noisy_forward(model, flat, eps, dtype, shape, C, hint=hint, check_finite=True)
            comp = torch.zeros(b, dtype=torch.int64, device=device) if comp is None else comp
            per_comp += torch.bincount(comp, minlength=K)
            if smoothing == "hard":
                top = logits.argmax(dim=1)
                counts += torch.bincount(comp * C + top, minlength=K * C)
                if labels is not None:
                    labels.append(top.cpu())
            else:
                probs = torch.softmax(logits.to(torch.float64), dim=1)
                sums.index_add_(0, comp, probs)
                squares.index_add_(0, comp, probs * probs)
    return SampleStatistics(counts.reshape(K, C).cpu(), per_comp.cpu(), sums.cpu(), squares.cpu(), smoothing)
