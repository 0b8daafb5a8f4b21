"""Soft-smoothing Monte Carlo estimates of the top-two class probabilities and their gradients.

G_c(theta) = E_z[softmax(F(x + noise(theta, z)))_c], estimated with the reparameterisation
x + noise(theta, z) (z standard normal) so that gradients flow to sigma, Theta or C through the
network (DDRS; RDDRS eq. (3), README, Errata R4: the Euclidean gradient in C is E[sym(grad F z^T)],
which is what autograd through ``z @ C`` computes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch

from certify.sampling import noisy_forward, sampling_dtype
from manifolds import Manifold, NoiseMap, as_noise_map
from manifolds.eigenframe import EigenFrame

#: Probabilities are clamped to [PROBABILITY_CLAMP, 1 - PROBABILITY_CLAMP] before Phi^-1
#: (the DDRS/ANCER package value; the DDRS paper code used 0.02). It bounds the gap by
#: 2 Phi^-1(0.999) = 6.18 and keeps gradients finite when a class is (almost) never predicted.
PROBABILITY_CLAMP = 1e-3


@dataclass
class Terms:
    """What an objective sees, one entry per input: the papers' gap R = Phi^-1(G_A) - Phi^-1(G_B),
    the certificate's margin Phi^-1(G_A) (p_B = 1 - p_A), the mean log eigenvalue of the noise scale
    (log of the geometric mean P) and its smallest eigenvalue K; plus the raw estimates.

    Attributes
    ----------
    gap : torch.Tensor
        (B,) the papers' gap R = Phi^-1(p_A) - Phi^-1(p_B) of the clamped soft probabilities.
    log_volume : torch.Tensor
        (B,) mean log eigenvalue of the noise scale, log P.
    min_eigenvalue : torch.Tensor
        (B,) smallest eigenvalue of the noise scale, K (sigma for scalar noise).
    p_top : torch.Tensor
        (B,) clamped soft probability p_A of the top class.
    p_second : torch.Tensor
        (B,) clamped soft probability p_B of the runner-up.
    point : torch.Tensor
        The noise points (B, ...) the terms were computed at.
    l2_target : torch.Tensor or None, default None
        (B,) the l2 radius each input's noise must keep (the containment constraint; ``ddrs.KeepBall``), set by the
        driver of a problem with ``keep_ball``; None: no constraint.
    """

    gap: torch.Tensor
    log_volume: torch.Tensor
    min_eigenvalue: torch.Tensor
    p_top: torch.Tensor
    p_second: torch.Tensor
    point: torch.Tensor
    l2_target: torch.Tensor | None = None

    @property
    def margin(self) -> torch.Tensor:
        """Phi^-1(p_A) (clamped p_A): the certificate's radius per unit noise scale."""
        return torch.special.ndtri(self.p_top)

    @property
    def l2_radius(self) -> torch.Tensor:
        """K Phi^-1(p_A): the estimated certified l2 radius (inscribed ball; Cohen et al. Thm 1 at the smallest
        scale K of the noise)."""
        return self.min_eigenvalue * self.margin


@dataclass
class NetworkCounter:
    """Network evaluations (per sample) spent choosing the noise: forward and backward separately.

    Attributes
    ----------
    forward : int, default 0
        Noisy copies passed forward through the network.
    backward : int, default 0
        Noisy copies back-propagated through the network.
    """

    forward: int = 0
    backward: int = 0

    def add(self, forward: int = 0, backward: int = 0) -> None:
        self.forward += int(forward)
        self.backward += int(backward)


def gap_from_probabilities(
    probs: torch.Tensor, clamp: float = PROBABILITY_CLAMP
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R = Phi^-1(G_A) - Phi^-1(G_B) for the top two classes of averaged probabilities (B, C)."""
    top2 = torch.topk(probs.detach(), k=2, dim=1).indices
    p_a = probs.gather(1, top2[:, :1]).squeeze(1).clamp(clamp, 1 - clamp)
    p_b = probs.gather(1, top2[:, 1:2]).squeeze(1).clamp(clamp, 1 - clamp)
    return torch.special.ndtri(p_a) - torch.special.ndtri(p_b), p_a, p_b


#: draws of more numbers than this ((inputs x samples x normals)) are made block by block on demand
#: (``LazyNormals``), and no network call sees more noisy input entries than this (``samples_per_chunk``):
#: 2^26 = 67 million (268 MB in float32). Below it (every input up to d = 3072 at the default budgets) the
#: draws and chunks are what they always were.
DRAW_ELEMENTS = 2**26


def samples_per_chunk(chunk_size: int, batch: int, dim: int) -> int:
    """Samples per input in one network call: ``chunk_size`` noisy copies in all, and at most ``DRAW_ELEMENTS``
    noisy input entries."""
    return max(1, min(chunk_size // max(batch, 1), DRAW_ELEMENTS // max(batch * dim, 1)))


class LazyNormals:
    """Standard normal draws of shape (batch, samples, dim) that are never held whole: each input's samples come in
    blocks of ``block``, block k of input i drawn from its own ``torch.Generator`` seeded by ``seeds[i, k]``, and
    the seeds are drawn from the caller's generator when the object is made (so the draws are a function of that
    generator's state, as a plain draw is). Indexing ``z[a:b]`` gives the draws of inputs a..b (lazily);
    ``z[:, s:e]`` gives a tensor (batch, e - s, dim) (the same numbers every time). The estimator and the selection
    read them chunk by chunk; ``SoftSmoothingEstimator.draw`` returns one when a plain draw would exceed
    ``DRAW_ELEMENTS``."""

    def __init__(
        self, seeds: torch.Tensor, samples: int, dim: int, block: int, device: Any, dtype: torch.dtype
    ) -> None:
        self.seeds, self.block = seeds, int(block)
        self.shape = (int(seeds.shape[0]), int(samples), int(dim))
        self.device, self.dtype = torch.device(device), dtype

    @classmethod
    def draw(
        cls, batch: int, samples: int, dim: int, block: int, generator: torch.Generator | None, device: Any, dtype
    ) -> LazyNormals:
        blocks = -(-samples // block)
        gen_device = generator.device if generator is not None else "cpu"
        seeds = torch.randint(0, 2**62, (batch, blocks), generator=generator, device=gen_device).cpu()
        return cls(seeds, samples, dim, block, device, dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def _block(self, i: int, k: int) -> torch.Tensor:
        length = min(self.block, self.shape[1] - k * self.block)
        gen = torch.Generator(device="cpu").manual_seed(int(self.seeds[i, k]))
        return torch.randn((length, self.shape[2]), generator=gen, dtype=self.dtype)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):  # a sub-batch of inputs
            return LazyNormals(self.seeds[key], self.shape[1], self.shape[2], self.block, self.device, self.dtype)
        if not (isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None) and isinstance(key[1], slice)):
            raise TypeError("LazyNormals supports z[a:b] (inputs) and z[:, s:e] (samples)")
        start, stop, step = key[1].indices(self.shape[1])
        if step != 1:
            raise TypeError("LazyNormals supports contiguous sample ranges only")
        out = torch.empty((self.shape[0], max(stop - start, 0), self.shape[2]), dtype=self.dtype)
        for k in range(start // self.block, -(-stop // self.block) if stop > start else 0):
            lo, hi = max(start, k * self.block), min(stop, (k + 1) * self.block)
            for i in range(self.shape[0]):
                out[i, lo - start : hi - start] = self._block(i, k)[lo - k * self.block : hi - k * self.block]
        return out.to(self.device)


#: a draw of standard normals as the estimator and the selection read it: a tensor, or ``LazyNormals`` when too large
Normals: TypeAlias = "torch.Tensor | LazyNormals"


def noisy_logits(
    model: Callable,
    noise: NoiseMap | Manifold,
    x: torch.Tensor,
    point: torch.Tensor,
    z: Normals,
    num_classes: int | None = None,
) -> torch.Tensor:
    """The network's logits (B * m, C) on x + noise(point, z) for a batch x (B, *shape) in the model's
    dtype, noise points (B, ...) and standard normal draws z (B, m, normals): ``certify.noisy_forward`` with
    the noise ``noise.apply(point, z)`` (``noise``: a ``manifolds.NoiseMap``, or a manifold whose points are the
    noise scale, ``manifolds.as_noise_map``). The point (float64 geometry), z and x are
    taken to ``certify.sampling_dtype`` of x's dtype (float32 or float64, never half precision) for
    the sum, which is then cast to x's dtype. Differentiable w.r.t. ``point``; the estimator and the
    selection (``ddrs.selection``) evaluate the network here."""
    B, m = z.shape[:2]
    draws: torch.Tensor = z[:, 0:m] if isinstance(z, LazyNormals) else z
    d = x[0].numel()
    dtype = sampling_dtype(x.dtype)  # noise drawn and added in >= float32, cast to x's (model) dtype
    eps = as_noise_map(noise).apply(point.to(dtype), draws.to(dtype))
    return noisy_forward(model, x.to(dtype).reshape(B, 1, d), eps, x.dtype, tuple(x.shape[1:]), num_classes)


@dataclass
class SoftSmoothingEstimator:
    """Monte Carlo estimate of averaged softmax probabilities under a ``manifolds.NoiseMap``.

    ``samples`` noisy copies per input and step, evaluated in chunks of at most ``chunk_size``
    copies per network call (over all inputs of the batch). When one chunk holds everything, one
    forward and one backward pass give the gradient; otherwise a first no-grad pass estimates the
    probabilities and a second pass back-propagates dObjective/dG chunk by chunk (exact, two forwards).

    Parameters
    ----------
    samples : int, default 100
        Noise draws per input and step (``draw``'s default count).
    chunk_size : int, default 20000
        Most noisy copies per network call; memory only, the estimate is the same up to rounding.
    clamp : float, default 1e-3
        Soft probabilities are clamped to [clamp, 1 - clamp] before Phi^-1 (``PROBABILITY_CLAMP``); in [0, 0.5).
    antithetic : bool, default False
        ``draw`` returns antithetic pairs (z, -z).
    counter : NetworkCounter, default NetworkCounter()
        Receives the network evaluations of every ``evaluate``.
    """

    samples: int = 100
    chunk_size: int = 20000
    clamp: float = PROBABILITY_CLAMP
    antithetic: bool = False
    counter: NetworkCounter = field(default_factory=NetworkCounter)

    def __post_init__(self) -> None:
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be an int >= 1, got {self.samples!r}")
        if not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise ValueError(f"chunk_size must be an int >= 1, got {self.chunk_size!r}")
        if not (0.0 <= self.clamp < 0.5):
            raise ValueError(f"clamp must lie in [0, 0.5), got {self.clamp}")

    def _probs(
        self,
        model: Callable,
        noise: NoiseMap,
        x: torch.Tensor,
        point: torch.Tensor,
        z: Normals,
        num_classes: int | None,
    ) -> torch.Tensor:
        """Summed softmax probabilities (B, C) over the noise draws z (B, m, normals)."""
        B, m, _ = z.shape
        logits = noisy_logits(model, noise, x, point, z, num_classes)
        probs = torch.softmax(logits.to(torch.float64), dim=1)
        return probs.reshape(B, m, -1).sum(dim=1)

    def draw(
        self,
        batch: int,
        dim: int,
        generator: torch.Generator | None,
        device,
        dtype,
        samples: int | None = None,
    ) -> Normals:
        """Standard normal draws (batch, samples, dim) from the explicit generator (``samples``: this
        draw's count, default ``self.samples``); a ``LazyNormals`` (the same interface for slicing, drawn block by
        block on demand) where the draws would not fit in memory. ``antithetic``: the second half is the negated first
        half (each draw is still N(0, I): unbiased estimates, lower variance for the odd part of the
        integrand)."""
        n = self.samples if samples is None else samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"samples must be an int >= 1, got {n!r}")
        gen_device = generator.device if generator is not None else device
        dtype = sampling_dtype(dtype)  # never draw noise in half precision
        if not self.antithetic and batch * n * dim > DRAW_ELEMENTS:  # too many numbers to hold: on demand
            block = samples_per_chunk(self.chunk_size, batch, dim)
            return LazyNormals.draw(batch, n, dim, block, generator, device, dtype)
        if self.antithetic:
            half = (n + 1) // 2
            z = torch.randn((batch, half, dim), generator=generator, device=gen_device, dtype=dtype)
            z = torch.cat([z, -z], dim=1)[:, :n]
        else:
            z = torch.randn((batch, n, dim), generator=generator, device=gen_device, dtype=dtype)
        return z.to(device)

    def evaluate(
        self,
        model: Callable,
        noise: NoiseMap | Manifold,
        x: torch.Tensor,
        point: torch.Tensor,
        objective: Callable[[Terms], torch.Tensor],
        z: Normals,
        num_classes: int | None = None,
        with_grad: bool = True,
        frame: EigenFrame | None = None,
        l2_target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Terms]:
        """Objective values (B,), the Euclidean gradient w.r.t. ``point`` (or None) and the terms.

        The objective must act input by input (every built-in one does): the batch is split into
        groups of inputs whose samples fit in one ``chunk_size`` network call, each group with ONE
        forward and one backward pass per sample; only an input whose own samples exceed
        ``chunk_size`` takes the exact two-pass route (a no-grad forward for the probabilities, then
        forward and backward chunk by chunk). ``noise``: the ``manifolds.NoiseMap`` of the points (or a manifold
        whose points are the noise scale). ``frame``: the points' ``EigenFrame`` (the volume and
        smallest-eigenvalue terms are then read from it when the noise map allows, ``NoiseMap.terms``).
        ``l2_target``: (B,) handed to the objective as ``Terms.l2_target``."""
        noise = as_noise_map(noise)
        B, n, d = z.shape
        group = max(1, self.chunk_size // max(n, 1))
        if B <= group:
            return self._evaluate_group(model, noise, x, point, objective, z, num_classes, with_grad, frame, l2_target)
        parts = [
            self._evaluate_group(
                model,
                noise,
                x[s : s + group],
                point[s : s + group],
                objective,
                z[s : s + group],
                num_classes,
                with_grad,
                None if frame is None else frame[s : s + group],
                None if l2_target is None else l2_target[s : s + group],
            )
            for s in range(0, B, group)
        ]
        value = torch.cat([p[0] for p in parts])
        egrads = [p[1] for p in parts]
        egrad = None if any(g is None for g in egrads) else torch.cat([g for g in egrads if g is not None])
        terms = _map_terms(lambda k: _cat([getattr(p[2], k) for p in parts]))
        return value, egrad, terms

    def _evaluate_group(
        self,
        model: Callable,
        noise: NoiseMap,
        x: torch.Tensor,
        point: torch.Tensor,
        objective: Callable[[Terms], torch.Tensor],
        z: Normals,
        num_classes: int | None,
        with_grad: bool,
        frame: EigenFrame | None,
        l2_target: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Terms]:
        B, n, d = z.shape
        per_chunk = samples_per_chunk(self.chunk_size, B, d)
        point = point.detach().requires_grad_(with_grad)

        def terms_from(probs_mean: torch.Tensor) -> Terms:
            gap, p_a, p_b = gap_from_probabilities(probs_mean, self.clamp)
            log_volume, min_eigenvalue = noise.terms(point, frame)
            return Terms(
                gap=gap,
                log_volume=log_volume,
                min_eigenvalue=min_eigenvalue,
                p_top=p_a,
                p_second=p_b,
                point=point,
                l2_target=l2_target,
            )

        def summed_probs() -> torch.Tensor:
            total = torch.zeros((), dtype=torch.float64)
            for s in range(0, n, per_chunk):
                total = total + self._probs(model, noise, x, point, z[:, s : s + per_chunk], num_classes)
            return total

        if not with_grad:
            with torch.no_grad():
                total = summed_probs()
                self.counter.add(forward=B * n)
                terms = terms_from(total / n)
                return objective(terms).detach(), None, _detach_terms(terms)

        if n <= per_chunk and not isinstance(z, LazyNormals):  # one forward, one backward
            with torch.enable_grad():
                probs = self._probs(model, noise, x, point, z, num_classes) / n
                terms = terms_from(probs)
                value = objective(terms)
                (egrad,) = torch.autograd.grad(value.sum(), point)
            self.counter.add(forward=B * n, backward=B * n)
            return value.detach(), egrad, _detach_terms(terms)

        with torch.no_grad():  # pass 1: the probabilities
            total = summed_probs()
        probs = (total / n).requires_grad_(True)
        with torch.enable_grad():
            terms = terms_from(probs)
            value = objective(terms)
            dprobs, direct = torch.autograd.grad(value.sum(), [probs, point], allow_unused=True)
            egrad = torch.zeros_like(point) if direct is None else direct.clone()
            for s in range(0, n, per_chunk):  # pass 2: back-propagate dObjective/dG chunk by chunk
                chunk = self._probs(model, noise, x, point, z[:, s : s + per_chunk], num_classes)
                (g,) = torch.autograd.grad((chunk * dprobs).sum() / n, point)
                egrad += g
        self.counter.add(forward=2 * B * n, backward=B * n)
        return value.detach(), egrad, _detach_terms(terms)


def _detach_terms(terms: Terms) -> Terms:
    return _map_terms(lambda k: None if getattr(terms, k) is None else getattr(terms, k).detach())


def _map_terms(field_value: Callable[[str], Any]) -> Terms:
    """Terms whose every field is ``field_value(name)``."""
    return Terms(**{k: field_value(k) for k in Terms.__dataclass_fields__})


def _cat(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if any(p is None for p in parts) else torch.cat([p for p in parts if p is not None])
