"""PREDICT and CERTIFY for a base classifier smoothed by any noise of ``certify.noise``.

Cohen et al. 2019 (`core.py`): selection with n0 samples, estimation with n fresh samples, a
one-sided Clopper-Pearson bound at level alpha, abstain below 1/2, PREDICT's binomial test.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .bounds import binomial_test_pvalue, check_alpha, clopper_pearson_lower, soft_lower
from .certificate import ABSTAIN, Certificate, certificate_from_bound
from .noise import GaussianNoise, MixtureOfGaussians
from .radius import gaussian_radius, max_sigma_radius, mixture_radius


def _check_count(value, name: str) -> int:
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


def _training_modules(model) -> bool:
    return isinstance(model, torch.nn.Module) and any(m.training for m in model.modules())


@contextlib.contextmanager
def _untouched(model):
    """Run the model without mutating it: warn if it is in training mode (BatchNorm then uses
    batch statistics, so the noisy samples are not independent and the certificate describes
    a batch-dependent classifier) and restore every buffer afterwards (BatchNorm running stats).
    The model's mode is left as the caller set it (no ``model.eval()`` on the user's module)."""
    if not _training_modules(model):
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


class Smooth:
    """The classifier ``g(x) = argmax_c P(F(x + eps) = c)`` for ``eps ~ noise``.

    ``smoothing="hard"`` counts argmax labels (Cohen); ``"soft"`` averages softmax probabilities
    and bounds the mean with ``soft_bound`` ('bernstein': empirical Bernstein, Maurer-Pontil 2009;
    'hoeffding'), which is valid for [0, 1]-valued means (Salman et al. 2019 for the radius).
    """

    def __init__(
        self,
        model: Callable,
        noise: GaussianNoise,
        num_classes: int,
        *,
        smoothing: str = "hard",
        soft_bound: str = "bernstein",
    ):
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        if not isinstance(noise, GaussianNoise):
            raise TypeError(f"noise must be a certify noise object, got {type(noise).__name__}")
        self.num_classes = _check_count(num_classes, "num_classes")
        if smoothing not in ("hard", "soft"):
            raise ValueError(f"smoothing must be 'hard' or 'soft', got {smoothing!r}")
        if soft_bound not in ("hoeffding", "bernstein"):
            raise ValueError(f"soft_bound must be 'hoeffding' or 'bernstein', got {soft_bound!r}")
        self.model = model
        self.noise = noise
        self.smoothing = smoothing
        self.soft_bound = soft_bound

    # ------------------------------------------------------------------ sampling
    def _statistics(
        self, x: torch.Tensor, num: int, batch_size: int, generator, labels: list | None = None
    ) -> dict[str, torch.Tensor]:
        """Draw ``num`` noisy copies of x; per component: label counts (hard) or summed
        probabilities and squares (soft), and the number of samples per component. ``labels`` (a
        list, hard smoothing) receives each batch's per-sample argmax labels, in draw order."""
        device, dtype = model_device_dtype(self.model, x)
        sdtype = sampling_dtype(dtype)  # noise drawn and added in >= float32, then cast to dtype
        shape = tuple(x.shape)
        flat = x.detach().reshape(-1).to(device=device, dtype=sdtype)
        d = flat.numel()
        self.noise.check_dim(d)
        K, C = self.noise.num_components, self.num_classes
        counts = torch.zeros(K * C, dtype=torch.int64, device=device)
        per_comp = torch.zeros(K, dtype=torch.int64, device=device)
        sums = torch.zeros(K, C, dtype=torch.float64, device=device)
        squares = torch.zeros(K, C, dtype=torch.float64, device=device)
        remaining = num
        first = True
        with torch.no_grad(), _untouched(self.model):
            while remaining > 0:
                b = min(batch_size, remaining)
                remaining -= b
                eps, comp = self.noise.sample(b, d, generator, device, sdtype)
                noisy = (eps + flat).to(dtype).reshape((b,) + shape)
                if first:
                    first = False
                    try:
                        logits = self.model(noisy)
                    except (RuntimeError, ValueError, TypeError, IndexError) as err:
                        raise ValueError(
                            f"the model failed on a batch of noisy copies of x, shape {tuple(noisy.shape)}: "
                            f"x must be ONE input without a batch dimension (got x of shape {shape}); "
                            f"certify a batch one input at a time. Model error: {err}"
                        ) from err
                else:
                    logits = self.model(noisy)
                if not isinstance(logits, torch.Tensor) or logits.shape != (b, C):
                    got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
                    raise ValueError(
                        f"model must return logits of shape ({b}, {C}) = (batch, num_classes); got {got} "
                        f"(x must be ONE input without a batch dimension; got x of shape {shape})"
                    )
                if not torch.isfinite(logits).all():
                    raise ValueError("model returned NaN or infinite logits; no certificate from bad data")
                comp = torch.zeros(b, dtype=torch.int64, device=device) if comp is None else comp
                per_comp += torch.bincount(comp, minlength=K)
                if self.smoothing == "hard":
                    top = logits.argmax(dim=1)
                    counts += torch.bincount(comp * C + top, minlength=K * C)
                    if labels is not None:
                        labels.append(top.cpu())
                else:
                    probs = torch.softmax(logits.to(torch.float64), dim=1)
                    sums.index_add_(0, comp, probs)
                    squares.index_add_(0, comp, probs * probs)
        return {
            "counts": counts.reshape(K, C).cpu(),
            "per_comp": per_comp.cpu(),
            "sums": sums.cpu(),
            "squares": squares.cpu(),
        }

    def _scores(self, stats) -> torch.Tensor:
        """Per-class score used for selection: total count (hard) or summed probability (soft)."""
        return (stats["counts"] if self.smoothing == "hard" else stats["sums"]).sum(dim=0)

    def _component_lower(self, stats, k: int, label: int, alpha: float) -> float:
        """Lower bound on component k's smoothed score of ``label`` at level alpha."""
        m = int(stats["per_comp"][k])
        if m == 0:
            return 0.0
        if self.smoothing == "hard":
            return clopper_pearson_lower(int(stats["counts"][k, label]), m, alpha)
        mean = float(stats["sums"][k, label]) / m
        var = (float(stats["squares"][k, label]) - m * mean * mean) / max(m - 1, 1)
        return soft_lower(mean, var, m, alpha, self.soft_bound)

    # ------------------------------------------------------------------ public API
    def predict(
        self, x: torch.Tensor, n: int, alpha: float, batch_size: int = 1000, generator: torch.Generator | None = None
    ) -> int:
        """Cohen's PREDICT: the top class if a two-sided binomial test of its count against the
        runner-up rejects p = 1/2 at level alpha, else ``ABSTAIN``. Returns g(x) or abstains with
        probability >= 1 - alpha. Soft smoothing: the top class if its mean's lower bound at
        alpha / num_classes exceeds 1/2."""
        n = _check_count(n, "n")
        alpha = check_alpha(alpha)
        batch_size = _check_count(batch_size, "batch_size")
        x = self._check_x(x)
        stats = self._statistics(x, n, batch_size, generator)
        scores = self._scores(stats)
        top2 = torch.topk(scores, k=min(2, self.num_classes)).indices.tolist()
        if self.smoothing == "hard":
            n1 = int(scores[top2[0]])
            n2 = int(scores[top2[1]]) if len(top2) > 1 else 0
            return ABSTAIN if binomial_test_pvalue(n1, n1 + n2) > alpha else int(top2[0])
        merged = {k: v.sum(dim=0, keepdim=True) for k, v in stats.items()}
        p = self._component_lower(merged, 0, top2[0], alpha / self.num_classes)
        return int(top2[0]) if p > 0.5 else ABSTAIN

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int = 1000,
        generator: torch.Generator | None = None,
        radii: Sequence[float] | None = None,
    ) -> Certificate:
        """Cohen's CERTIFY with this noise: guess the class from n0 samples, bound its probability
        from n fresh samples, abstain if the bound is <= 1/2, else certify the region of
        ``certify.region.Ellipsoid`` given by the noise. Wrong with probability <= alpha.

        With ``radii`` (l2 for isotropic noise, the noise's own norm otherwise) the mode is sequential
        (``certify.sequential``): n is the maximum sample count, sampling stops once every radius is
        decided, and ``cert.samples`` / ``cert.decided`` report it; still wrong with probability <= alpha."""
        n0 = _check_count(n0, "n0")
        n = _check_count(n, "n")
        alpha = check_alpha(alpha)
        batch_size = _check_count(batch_size, "batch_size")
        x = self._check_x(x)
        if radii is not None:
            from .sequential import certify_sequential

            return certify_sequential(self, x, n0, n, alpha, batch_size, generator, radii)
        start = time.perf_counter()
        selection = self._statistics(x, n0, batch_size, generator)
        label = int(self._scores(selection).argmax())
        estimation = self._statistics(x, n, batch_size, generator)
        center = x.detach().reshape(-1).to("cpu", torch.float64).numpy()
        fields: dict = {}
        noise = self.noise
        if isinstance(noise, MixtureOfGaussians) and noise.kind == "mixture":
            K = noise.num_components
            p_lowers = [self._component_lower(estimation, k, label, alpha / K) for k in range(K)]
            weights, sigmas = noise.weights.tolist(), noise.sigmas.tolist()
            radius = mixture_radius(p_lowers, weights, sigmas)
            p_lower = float(sum(w * p for w, p in zip(weights, p_lowers)))
            merged = {k: v.sum(dim=0, keepdim=True) for k, v in estimation.items()}
            pooled = self._component_lower(merged, 0, label, alpha)
            fields = dict(
                component_p_lowers=tuple(p_lowers),
                paper_radius=max_sigma_radius(pooled, sigmas),
                paper_radius_is_certificate=False,
            )
        else:
            merged = {k: v.sum(dim=0, keepdim=True) for k, v in estimation.items()}
            p_lower = self._component_lower(merged, 0, label, alpha)
            radius = gaussian_radius(p_lower)
            if isinstance(noise, MixtureOfGaussians):  # convolution: Cohen at sqrt(sum sigma^2) and Thm 2
                fields = dict(
                    paper_radius=max_sigma_radius(p_lower, noise.sigmas.tolist()),
                    paper_radius_is_certificate=True,
                )
        seconds = time.perf_counter() - start
        return certificate_from_bound(
            noise, center, label, p_lower, radius, n0=n0, n=n, alpha=alpha, seconds=seconds, **fields
        )

    def _check_x(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor (one input, any shape), got {type(x).__name__}")
        if x.numel() == 0:
            raise ValueError("x must not be empty")
        if not torch.isfinite(x).all():
            raise ValueError("x contains NaN or infinite entries")
        return x
