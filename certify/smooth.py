"""PREDICT and CERTIFY for a base classifier smoothed by any noise of ``certify.noise``.

Cohen et al. 2019 (`core.py`): selection with n0 samples, estimation with n fresh samples, a
one-sided Clopper-Pearson bound at level alpha, abstain below 1/2, PREDICT's binomial test.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from .bounds import binomial_test_pvalue, check_alpha
from .certificate import ABSTAIN, Certificate, certificate_from_bound
from .noise import GaussianNoise, MixtureOfGaussians
from .radius import gaussian_radius, max_sigma_radius, mixture_radius
from .sampling import (
    SMOOTHINGS,
    SampleStatistics,
    check_count,
    model_device_dtype,
    sample_statistics,
)
from .sequential import certify_sequential

__all__ = ["Smooth", "model_device_dtype"]  # model_device_dtype: certify.sampling's, re-exported here


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
        self.num_classes = check_count(num_classes, "num_classes")
        if smoothing not in SMOOTHINGS:
            raise ValueError(f"smoothing must be 'hard' or 'soft', got {smoothing!r}")
        if soft_bound not in ("hoeffding", "bernstein"):
            raise ValueError(f"soft_bound must be 'hoeffding' or 'bernstein', got {soft_bound!r}")
        self.model = model
        self.noise = noise
        self.smoothing = smoothing
        self.soft_bound = soft_bound

    # ------------------------------------------------------------------ sampling
    def sample_statistics(
        self,
        x: torch.Tensor,
        num: int,
        batch_size: int = 1000,
        generator: torch.Generator | None = None,
        labels: list | None = None,
    ) -> SampleStatistics:
        """``certify.sampling.sample_statistics`` with this classifier's model, noise, classes and
        smoothing: ``num`` noisy copies of x, counted per component and class."""
        return sample_statistics(
            self.model,
            self.noise,
            x,
            num,
            self.num_classes,
            smoothing=self.smoothing,
            batch_size=batch_size,
            generator=generator,
            labels=labels,
        )

    def lower_bound(self, stats: SampleStatistics, component: int, label: int, alpha: float) -> float:
        """Lower bound at level alpha on component k's smoothed score of ``label`` (this classifier's
        ``soft_bound`` for soft smoothing)."""
        return stats.lower_bound(component, label, alpha, self.soft_bound)

    # ------------------------------------------------------------------ public API
    def predict(
        self, x: torch.Tensor, n: int, alpha: float, batch_size: int = 1000, generator: torch.Generator | None = None
    ) -> int:
        """Cohen's PREDICT: the top class if a two-sided binomial test of its count against the
        runner-up rejects p = 1/2 at level alpha, else ``ABSTAIN``. Returns g(x) or abstains with
        probability >= 1 - alpha. Soft smoothing: the top class if its mean's lower bound at
        alpha / num_classes exceeds 1/2."""
        n = check_count(n, "n")
        alpha = check_alpha(alpha)
        batch_size = check_count(batch_size, "batch_size")
        x = self._check_x(x)
        stats = self.sample_statistics(x, n, batch_size, generator)
        scores = stats.scores()
        top2 = torch.topk(scores, k=min(2, self.num_classes)).indices.tolist()
        if self.smoothing == "hard":
            n1 = int(scores[top2[0]])
            n2 = int(scores[top2[1]]) if len(top2) > 1 else 0
            return ABSTAIN if binomial_test_pvalue(n1, n1 + n2) > alpha else int(top2[0])
        p = self.lower_bound(stats.pooled(), 0, top2[0], alpha / self.num_classes)
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
        n0 = check_count(n0, "n0")
        n = check_count(n, "n")
        alpha = check_alpha(alpha)
        batch_size = check_count(batch_size, "batch_size")
        x = self._check_x(x)
        if radii is not None:
            return certify_sequential(self, x, n0, n, alpha, batch_size, generator, radii)
        start = time.perf_counter()
        selection = self.sample_statistics(x, n0, batch_size, generator)
        label = int(selection.scores().argmax())
        estimation = self.sample_statistics(x, n, batch_size, generator)
        center = x.detach().reshape(-1).to("cpu", torch.float64).numpy()
        fields: dict = {}
        noise = self.noise
        if isinstance(noise, MixtureOfGaussians) and noise.kind == "mixture":
            K = noise.num_components
            p_lowers = [self.lower_bound(estimation, k, label, alpha / K) for k in range(K)]
            weights, sigmas = noise.weights.tolist(), noise.sigmas.tolist()
            radius = mixture_radius(p_lowers, weights, sigmas)
            p_lower = float(sum(w * p for w, p in zip(weights, p_lowers)))
            pooled = self.lower_bound(estimation.pooled(), 0, label, alpha)
            fields = dict(
                component_p_lowers=tuple(p_lowers),
                paper_radius=max_sigma_radius(pooled, sigmas),
                paper_radius_is_certificate=False,
            )
        else:
            p_lower = self.lower_bound(estimation.pooled(), 0, label, alpha)
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
