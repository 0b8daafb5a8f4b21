"""Keep the previous stage's noise unless the new one is better, judged on FRESH samples.

The score is the certificate each candidate would get from hard votes on ``samples`` fresh noise
draws (common to both candidates, so the comparison is not swamped by Monte Carlo noise): the
Clopper-Pearson lower bound p_A_lower at ``alpha`` and the radius Phi^-1(p_A_lower) times the noise's
smallest axis (``kind="l2"``, DDRS) or its geometric mean (``kind="proxy"``, ANCER / RDDRS; Cohen et
al. Thm 1, ANCER's proxy radius). These draws come from the fitting generator, never from the
certification samples (README, Errata R5), so certification's statistics are untouched.

``keep_ball`` (ANCER and RDDRS by default) adds the containment constraint of ANCER's problem (Eiras
et al., eq. (4): min_i theta_i r(x, Theta) >= r_iso*) and its SPD counterpart lambda_min(C) r(x, C) >=
sigma_x* r_iso(x) (noise C z, inscribed ball lambda_min(C) r; README, Errata R3): the optimised noise
is accepted only if, in addition, its estimated certified l2 radius lambda_min Phi^-1(p_A_lower) is at
least the start's, both from the same fresh draws. The eigenvalue floor of the ascent (lambda_i >=
sigma_x*) does not imply it, since r(x, C) drops as the noise grows. It is enforced here, on fresh
samples, rather than in the objective or the projection: the selection is the only step that judges a
point by a hard-vote Clopper-Pearson bound, the quantity certification reports, and the start always
satisfies the constraint, so the fallback is feasible.

What each stage then guarantees, about estimates on the selection's draws (not a certificate: the
certified radii come from certification's own samples and can differ by their Monte Carlo error):
DDRS (``kind="l2"``) keeps RS's sigma unless a strictly larger l2 radius is shown; ANCER and RDDRS with
``keep_ball`` keep their start (from a DDRS result: sigma_x* I, the DDRS ball) unless the optimised noise
shows both a strictly larger proxy radius and an l2 radius at least the start's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from certify.bounds import clopper_pearson
from manifolds import Manifold, NoiseMap, as_noise_map

from .estimator import NetworkCounter, Normals, noisy_logits, samples_per_chunk

KINDS = ("l2", "proxy")


def hard_vote_radii(
    model: Callable,
    noise: NoiseMap | Manifold,
    x: torch.Tensor,
    point: torch.Tensor,
    z: Normals,
    alpha: float,
    chunk_size: int = 20000,
    targets: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Both radii (B,) of the hard-vote certificate with noise ``point`` on draws z (B, m, d), keyed by
    kind ('l2': smallest axis, 'proxy': geometric mean, times Phi^-1(p_A_lower)), from one set of votes;
    0 where p_A_lower <= 1/2 (the certifier would abstain) and, with ``targets`` (B,) class labels, where the
    top class is not the target (a certificate of a wrong prediction counts nothing). The network runs as in the
    estimator (``ddrs.estimator.noisy_logits``: noise added in float32 or float64, then cast to x's dtype)."""
    noise = as_noise_map(noise)
    B, m = z.shape[:2]
    per_chunk = samples_per_chunk(chunk_size, B, z.shape[2])
    counts = None
    with torch.no_grad():
        for s in range(0, m, per_chunk):
            logits = noisy_logits(model, noise, x, point, z[:, s : s + per_chunk])
            labels = logits.argmax(dim=1).reshape(B, -1)
            c = torch.nn.functional.one_hot(labels, num_classes=logits.shape[1]).sum(1)
            counts = c if counts is None else counts + c
    if counts is None:
        raise ValueError("z must hold at least one noise draw per input")
    top = counts.max(dim=1).values.cpu().double().numpy()
    wrong = torch.zeros(B, dtype=torch.bool)
    if targets is not None:
        wrong = counts.argmax(dim=1).cpu() != torch.as_tensor(targets).reshape(-1).cpu()
    lower = torch.as_tensor(clopper_pearson(top, m, alpha, "lower")[0], dtype=torch.float64)
    margin = torch.special.ndtri(lower.clamp(max=1 - 1e-12))
    point64 = point.detach().to(torch.float64).cpu()
    scales = {"l2": noise.min_eigenvalue(point64), "proxy": torch.exp(noise.log_volume(point64))}
    keep = (lower > 0.5) & ~wrong
    return {k: torch.where(keep, margin * v, torch.zeros_like(margin)) for k, v in scales.items()}


def select(
    model: Callable,
    noise: NoiseMap | Manifold,
    x: torch.Tensor,
    start: torch.Tensor,
    new: torch.Tensor,
    draw: Callable[[], Normals],
    alpha: float,
    kind: str,
    counter: NetworkCounter,
    chunk_size: int = 20000,
    keep_ball: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per input, ``new`` if its fresh-sample radius of ``kind`` beats ``start``'s strictly (and, with
    ``keep_ball``, its l2 radius is at least ``start``'s on the same draws), else ``start``.
    Returns (points, kept_new mask (B,)); the forward passes are added to ``counter``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    z = draw()
    r_start = hard_vote_radii(model, noise, x, start, z, alpha, chunk_size)
    r_new = hard_vote_radii(model, noise, x, new, z, alpha, chunk_size)
    counter.add(forward=2 * z.shape[0] * z.shape[1])
    better = r_new[kind] > r_start[kind]
    if keep_ball:
        better = better & (r_new["l2"] >= r_start["l2"])
    better = better.to(new.device)
    shape = (-1,) + (1,) * (new.ndim - 1)
    return torch.where(better.reshape(shape), new, start.to(new.dtype).to(new.device)), better
