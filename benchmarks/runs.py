"""One certification run: a data set, a base model, a method; a per-input log written line by line.

Noise is chosen per batch of inputs (fixed batch boundaries, seeded from the batch's first index) and
certified per input with fresh samples (seeded from the input's index), so an interrupted run that is
resumed writes exactly the rows an uninterrupted run would (except the ``time`` column).
Data-dependent methods (ddrs, ancer, rddrs) go through the memory-based certifier (``certify.Memory``)
in query order; the region each input finally holds is saved beside the log
(``<log>.regions/<idx>.pt``) so that a resumed run rebuilds the memory exactly.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import certify
import ddrs

from .data import Dataset

METHODS = ("rs", "ddrs", "ancer", "rddrs", "mog")
DATA_DEPENDENT = ("ddrs", "ancer", "rddrs")
LOG_COLUMNS = list(certify.COHEN_COLUMNS) + [
    "l2_radius", "proxy_radius", "p_lower", "noise", "min_sigma", "gm_sigma", "paper_radius",
    "memory_action", "memory_reason", "choose_seconds", "forward_evals", "backward_evals"]


@dataclass
class MethodConfig:
    """A method and its parameters. ``sigma`` is RS's sigma and the data-dependent methods' start;
    ``sigmas``/``kind`` are the mixture's; ``options`` go to the preset (e.g. iterations, samples)."""

    method: str
    sigma: float = 0.25
    sigmas: tuple = ()
    kind: str = "mixture"
    metric: str = "affine-invariant"
    backend: str = "rgd"
    ddrs_options: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    mog_range: tuple | None = None  # the [lo, hi] a mixture's constituents were spread over (for labels)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not (self.sigma > 0):
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.method == "mog":
            if not self.sigmas:
                raise ValueError("sigmas: the mixture method needs at least one sigma (--sigmas)")
            certify.MixtureOfGaussians(self.sigmas, kind=self.kind)  # validates

    @property
    def label(self) -> str:
        if self.method == "mog":
            lo, hi = self.mog_range or (min(self.sigmas), max(self.sigmas))
            return f"mog-{self.kind}-K{len(self.sigmas)}-[{lo:g},{hi:g}]"
        if self.method == "rddrs" and self.metric != "affine-invariant":
            return f"rddrs-{self.metric}"
        return self.method


def choose_noise(config: MethodConfig, model, x: torch.Tensor, generator: torch.Generator,
                 sigma_star: torch.Tensor | None = None, cache: dict | None = None
                 ) -> tuple[list, ddrs.NetworkCounter, torch.Tensor | None]:
    """Noise objects for a batch of inputs, the network work spent, and the DDRS sigma_x* (if any).

    ``sigma_star`` (from a DDRS run on the same inputs) skips the DDRS stage of ANCER/RDDRS. RDDRS with
    ``options["warm_start"] == "ancer"`` starts from ANCER's Theta (the chain RS -> DDRS -> ANCER ->
    RDDRS); ``cache`` (idx-aligned list under key "ancer": (theta, forward, backward) per input) reuses
    an ANCER run of the same comparison, and its network work is counted in RDDRS's."""
    counter = ddrs.NetworkCounter()
    if config.method == "rs":
        return [certify.IsotropicGaussian(config.sigma)] * len(x), counter, None
    if config.method == "mog":
        return [certify.MixtureOfGaussians(config.sigmas, kind=config.kind)] * len(x), counter, None
    if sigma_star is None or config.method == "ddrs":
        dd = ddrs.DDRS(sigma0=config.sigma, **config.ddrs_options).fit(model, x, generator=generator)
        counter.add(dd.network.forward, dd.network.backward)
        sigma_star = dd.points
        if config.method == "ddrs":
            return dd.noises(), counter, sigma_star
    options = dict(config.options)
    warm = options.pop("warm_start", None)
    ancer_options = options.pop("ancer_options", {})
    if config.method == "ancer":
        res = ddrs.ANCER(**options).fit(model, x, init=sigma_star, generator=generator)
        if cache is not None:
            cache["ancer"] = [(theta, res.network.forward / len(x), res.network.backward / len(x))
                              for theta in res.points]
        counter.add(res.network.forward, res.network.backward)
        return res.noises(), counter, sigma_star
    init = sigma_star
    if warm == "ancer":
        cached = (cache or {}).get("ancer")
        if cached is not None and len(cached) == len(x):
            thetas = torch.stack([c[0] for c in cached])
            counter.add(sum(c[1] for c in cached), sum(c[2] for c in cached))
            init = ddrs.SmoothingResult("ancer", None, thetas, sigma_star)
        else:
            init = ddrs.ANCER(**ancer_options).fit(model, x, init=sigma_star, generator=generator)
            counter.add(init.network.forward, init.network.backward)
    res = ddrs.RDDRS(metric=config.metric, backend=config.backend, **options).fit(
        model, x, init=init, generator=generator)
    counter.add(res.network.forward, res.network.backward)
    return res.noises(), counter, sigma_star


def _region_record(prediction: int, region: certify.Ellipsoid | None) -> dict:
    if region is None:
        return {"prediction": prediction, "scale": None, "radius": 0.0}
    scale = region.scale if np.ndim(region.scale) == 0 else torch.as_tensor(region.scale, dtype=torch.float64)
    return {"prediction": prediction, "scale": scale, "radius": region.radius}


def run_certification(config: MethodConfig, model, data: Dataset, out: str | os.PathLike, *,
                      n0: int = 100, n: int = 100_000, alpha: float = 0.001, batch_size: int = 1000,
                      opt_batch: int = 64, seed: int = 0, memory: bool = True, progress: bool = True,
                      sigma_star_cache: dict | None = None, stage_cache: dict | None = None) -> Path:
    """Certify every input of ``data`` with ``config``, appending to the log ``out`` (resumable).

    ``sigma_star_cache`` (idx -> sigma_x*) shares the DDRS stage between methods of one comparison;
    ``stage_cache`` (idx -> ANCER (theta, forward, backward)) shares the ANCER stage with RDDRS.
    Returns the log path."""
    out = Path(out)
    writer = certify.LogWriter(out, LOG_COLUMNS, resume=True)
    regions_dir = Path(str(out) + ".regions")
    use_memory = memory and config.method in DATA_DEPENDENT
    mem = certify.Memory() if use_memory else None
    if use_memory:
        regions_dir.mkdir(parents=True, exist_ok=True)
        for pos, idx in enumerate(data.indices.tolist()):  # rebuild memory from finished rows, in order
            path = regions_dir / f"{idx}.pt"
            if idx in writer.done and path.is_file():
                rec = torch.load(path, weights_only=False)
                region = None if rec["scale"] is None else certify.Ellipsoid(
                    data.X[pos].reshape(-1).double().numpy(), np.asarray(rec["scale"], dtype=np.float64)
                    if np.ndim(rec["scale"]) else rec["scale"], rec["radius"])
                stored = certify.Certificate(prediction=rec["prediction"], p_lower=0.0,
                                             radius=0.0 if region is None else region.radius,
                                             l2_radius=0.0 if region is None else region.l2_radius,
                                             proxy_radius=0.0 if region is None else region.proxy_radius,
                                             region=region)
                mem.add(stored, x=data.X[pos].reshape(-1).double().numpy(), idx=idx)
    if sigma_star_cache is None:
        sigma_star_cache = {}
    if stage_cache is None:
        stage_cache = {}
    indices = data.indices.tolist()
    bar = tqdm(total=len(indices), initial=sum(i in writer.done for i in indices), disable=not progress,
               desc=f"certify {data.name} {config.label} sigma={config.sigma:g}", unit="input", leave=False)
    try:
        for start in range(0, len(indices), opt_batch):
            batch_pos = list(range(start, min(start + opt_batch, len(indices))))
            todo = [p for p in batch_pos if indices[p] not in writer.done]
            if not todo:
                continue
            xb = data.X[batch_pos]
            gen = torch.Generator().manual_seed(seed * 1_000_003 + indices[batch_pos[0]])
            cached = [sigma_star_cache.get(indices[p]) for p in batch_pos]
            star = torch.tensor(cached, dtype=torch.float64) if all(c is not None for c in cached) else None
            thetas = [stage_cache.get(indices[p]) for p in batch_pos]
            cache = {"ancer": thetas} if all(t is not None for t in thetas) else {}
            t0 = time.perf_counter()
            noises, counter, sigma_star = choose_noise(config, model, xb, gen, star, cache)
            if config.method == "ancer" and "ancer" in cache:
                for p, entry in zip(batch_pos, cache["ancer"]):
                    stage_cache[indices[p]] = entry
            choose_seconds = (time.perf_counter() - t0) / len(batch_pos)
            if sigma_star is not None:
                for p, s in zip(batch_pos, sigma_star.tolist()):
                    sigma_star_cache[indices[p]] = s
            for j, p in enumerate(batch_pos):
                idx = indices[p]
                if idx in writer.done:
                    continue
                x, label = data.X[p], int(data.y[p])
                cgen = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * idx + 1)
                cert = certify.Smooth(model, noises[j], data.num_classes).certify(
                    x, n0, n, alpha, batch_size=batch_size, generator=cgen)
                action, reason = "", ""
                if mem is not None:
                    answer = mem.add(cert, x=x.reshape(-1).double().numpy(), idx=idx)
                    cert, action = answer.certificate, answer.action
                    reason = ",".join(str(r) for r in answer.reason)
                    torch.save(_region_record(cert.prediction, cert.region), regions_dir / f"{idx}.pt")
                writer.write({
                    "idx": idx, "label": label, "predict": cert.prediction, "radius": cert.l2_radius,
                    "correct": int(cert.prediction == label), "time": cert.seconds + choose_seconds,
                    "l2_radius": cert.l2_radius, "proxy_radius": cert.proxy_radius, "p_lower": cert.p_lower,
                    "noise": cert.noise or noises[j].kind, "min_sigma": cert.min_sigma, "gm_sigma": cert.gm_sigma,
                    "paper_radius": cert.extras.get("paper_radius", math.nan),
                    "memory_action": action or "-", "memory_reason": reason or "-",
                    "choose_seconds": choose_seconds,
                    "forward_evals": counter.forward // len(batch_pos),
                    "backward_evals": counter.backward // len(batch_pos)})
                bar.update(1)
    finally:
        bar.close()
        writer.close()
    return out
