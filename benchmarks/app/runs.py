"""One certification run: a data set, a base model, a method; a per-input log written line by line.

Noise is chosen per batch of inputs (fixed batch boundaries, seeded from the batch's first index) and
certified per input with fresh samples (seeded from the input's index), so an interrupted run that is
resumed writes exactly the rows an uninterrupted run would (except the ``time`` column).
Data-dependent methods (ddrs, ancer, rddrs) go through the memory-based certifier (``certify.Memory``)
in query order; the region each input finally holds is saved beside the log
(``<log>.regions/<idx>.pt``) so that a resumed run rebuilds the memory exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import certify
import ddrs
from certify.log import parse_time
from certify.sequential import check_radii
from certify.smooth import model_device_dtype
from ddrs.progress import Span

from .data import Dataset
from .methods import MethodConfig, spec_of
from .training import dataset_hash, model_hash

LOG_COLUMNS = list(certify.COHEN_COLUMNS) + [
    "l2_radius",
    "proxy_radius",
    "p_lower",
    "noise",
    "min_sigma",
    "gm_sigma",
    "paper_radius",
    "memory_action",
    "memory_reason",
    "choose_seconds",
    "forward_evals",
    "backward_evals",
]


def log_columns(radii: tuple | None = None) -> list[str]:
    """The log's columns: ``LOG_COLUMNS``, and for a sequential run (``radii``) ``samples`` (drawn, n0
    included) and one decision column ``cert@r`` per radius (1 certified, 0 not robust, - undecided)."""
    if radii is None:
        return list(LOG_COLUMNS)
    return list(LOG_COLUMNS) + ["samples"] + [decision_column(r) for r in radii]


def decision_column(r: float) -> str:
    return f"cert@{r:g}"


#: noise kinds whose sequential radii are l2 radii (certified regions are l2 balls)
L2_NOISES = ("isotropic", "convolution", "mixture")


def decisions_after_memory(cert, raw, radii: tuple, action: str) -> list[str]:
    """The log values of ``raw``'s per-radius decisions after the memory-based certifier turned it
    into ``cert``: a True decision the memory did not keep (shrunk below that radius, abstained, or
    replaced by another input's region of another shape) is logged undecided. Radii are the table's
    (``table_radii_in_own_norm``): l2 for isotropic noise, ANCER's proxy radius otherwise."""
    if action in ("", "-", "kept"):
        held = math.inf
    elif cert.prediction < 0:
        held = -math.inf
    elif raw.noise in L2_NOISES:
        held = cert.l2_radius
    else:  # proxy radius: comparable only if the region kept the noise's shape
        held = cert.proxy_radius if action == "shrunk" else -math.inf
    return ["-" if d is None or (d and held < r) else str(int(d)) for d, r in zip(raw.decided, radii)]


def table_radii_in_own_norm(noise, radii: tuple) -> tuple:
    """A run's ``--radii`` are the table's columns: l2 radii for isotropic noise (RS, DDRS, a
    mixture of either kind) and ANCER's proxy radius (the l2 ball of the certified region's volume) for
    anisotropic noise (ANCER, RDDRS). ``Smooth.certify(radii=)`` takes the noise's own norm
    ||S^-1 delta||: a region of own-norm radius rho has proxy radius rho * gm_sigma, gm_sigma the
    geometric mean of S's eigenvalues (``certify.region.Ellipsoid.proxy_radius``), so the own-norm
    radius of proxy radius r is r / gm_sigma, per input."""
    if noise.kind in L2_NOISES:
        return tuple(radii)
    gm = float(noise.scale_summary()["gm_sigma"])
    return tuple(float(r) / gm for r in radii)


def choose_noise(
    config: MethodConfig,
    model,
    x: torch.Tensor,
    generator: torch.Generator,
    sigma_star: torch.Tensor | None = None,
    cache: dict | None = None,
    progress: Any = None,
) -> tuple[list, ddrs.NetworkCounter, torch.Tensor | None]:
    """Noise objects for a batch of inputs, the network work spent, and the DDRS sigma_x* (if any).
    ``progress`` goes to every ``fit`` (``ddrs.progress``: e.g. a bar updated once per ascent step).

    ``sigma_star`` (from a DDRS run on the same inputs) skips the DDRS stage of ANCER/RDDRS. RDDRS with
    ``options["warm_start"] == "ancer"`` starts from ANCER's Theta (the chain RS -> DDRS -> ANCER ->
    RDDRS); ``cache`` (idx-aligned list under key "ancer": (theta, forward, backward) per input) reuses
    an ANCER run of the same comparison, and its network work is counted in RDDRS's."""
    return spec_of(config.method).choose(config, model, x, generator, sigma_star, cache, progress)


def noise_steps(config: MethodConfig, sigma_star_known: bool = False, ancer_known: bool = False) -> int:
    """How many ascent steps :func:`choose_noise` reports to ``progress`` for one batch (every ``fit`` it
    runs, as it decides; ``early_stop`` may end a fit sooner): the total of the runner's bar."""
    return spec_of(config.method).steps(config, sigma_star_known, ancer_known)


def step_rules(config: MethodConfig, dim: int) -> dict:
    """The step rule each stage of :func:`choose_noise` runs on inputs of ``dim`` entries, and how (e.g. in which
    eigenframe): ``SmoothingResult.step_rule`` before the fit (``MethodSpec.step_rules``); in the fingerprint."""
    return spec_of(config.method).step_rules(config, dim)


def _region_record(prediction: int, region) -> dict:
    """What the memory needs to rebuild a stored region on resume: the scale of a dense ``certify.Ellipsoid``, or the
    structured region itself (``certify.structured``: its factors, never a d x d matrix)."""
    if region is None:
        return {"prediction": prediction, "scale": None, "radius": 0.0}
    if not isinstance(region, certify.Ellipsoid):
        return {"prediction": prediction, "scale": None, "structured": region, "radius": region.radius}
    scale = region.scale if np.ndim(region.scale) == 0 else torch.tensor(np.array(region.scale, dtype=np.float64))
    return {"prediction": prediction, "scale": scale, "radius": region.radius}


@dataclass
class BatchResult:
    """What :func:`compute_batch` returns for one batch of positions (picklable; no file I/O).

    ``certificates[j]`` is the raw certificate of ``positions[j]`` BEFORE the memory (``None`` for a
    position that was asked to be skipped); ``noise_kinds[j]`` its noise's name; ``choose_seconds``,
    ``forward_evals`` and ``backward_evals`` are per input (the batch's totals shared evenly);
    ``sigma_star`` (DDRS's sigma_x*, position-aligned) and ``ancer`` (ANCER's (theta, forward, backward)
    per position) are the stage outputs a comparison shares between methods (``None`` if not made)."""

    positions: list[int]
    indices: list[int]
    certificates: list[Any]
    noise_kinds: list[str]
    choose_seconds: float
    forward_evals: int
    backward_evals: int
    sigma_star: list[float] | None = None
    ancer: list[tuple] | None = None


def plan_batches(data: Dataset, opt_batch: int) -> list[list[int]]:
    """Fixed batch boundaries over the positions of ``data``: ``range(0, N, opt_batch)`` chunks.

    Noise is chosen per batch (seeded from its first index), so the plan must not depend on what is
    already done: a resumed run recomputes a batch exactly as the uninterrupted run did."""
    if not (isinstance(opt_batch, int) and opt_batch >= 1):
        raise ValueError(f"opt_batch must be a positive integer, got {opt_batch!r}")
    N = len(data.indices)
    return [list(range(start, min(start + opt_batch, N))) for start in range(0, N, opt_batch)]


def generator_device(model, x: torch.Tensor) -> torch.device:
    """Where a run's generators live: the model's device when torch has generators there (CUDA, MPS: the
    noise is then drawn where it is used), else the CPU. CPU and GPU draw different noise from the same
    seed, so a log is reproducible on its own device type (the fingerprint records it)."""
    device = model_device_dtype(model, x)[0]
    return device if device.type in ("cuda", "mps") else torch.device("cpu")


def batch_seed(seed: int, first_idx: int) -> int:
    """Seed of the noise choice of the batch whose first input has index ``first_idx``."""
    return seed * 1_000_003 + first_idx


def input_seed(seed: int, idx: int) -> int:
    """Seed of the certification samples of input ``idx``."""
    return seed * 1_000_003 + 7919 * idx + 1


def compute_batch(
    config: MethodConfig,
    model,
    data: Dataset,
    positions: list[int],
    *,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    seed: int,
    sigma_star: list[float] | None = None,
    ancer_cache: list[tuple] | None = None,
    skip: set[int] | frozenset = frozenset(),
    on_input: Callable[[BatchResult, int], None] | None = None,
    radii: tuple | None = None,
    fit_progress: Any = None,
) -> BatchResult:
    """Choose noise for the batch ``positions`` of ``data`` and certify each of its inputs.

    A pure, deterministic function of (positions, config, seed, the model and data): no file I/O, no
    memory. ``sigma_star`` (position-aligned DDRS sigma_x*) and ``ancer_cache`` (position-aligned
    ANCER (theta, forward, backward)) reuse stages computed by another method on the same inputs;
    positions in ``skip`` get noise (the batch's choice needs all of them) but no certificate.
    ``on_input(result, j)`` (optional) is called as soon as certificate j is made (the single-process
    driver writes its row then, so that a SIGKILL loses at most the input in flight); the stage
    outputs are set before the first call. ``radii`` (a tuple of table radii: l2 for isotropic noise,
    proxy for anisotropic, see ``table_radii_in_own_norm``) certifies sequentially at those radii
    (``Smooth.certify(radii=...)``; n is then the maximum sample count). ``fit_progress`` goes to every
    ``fit`` of the noise choice (``ddrs.progress``)."""
    indices = data.indices.tolist()
    idxs = [indices[p] for p in positions]
    xb = data.X[positions]
    gdev = generator_device(model, xb)
    gen = torch.Generator(device=gdev).manual_seed(batch_seed(seed, idxs[0]))
    star = torch.tensor(sigma_star, dtype=torch.float64) if sigma_star is not None else None
    cache = {"ancer": list(ancer_cache)} if ancer_cache is not None else {}
    t0 = time.perf_counter()
    noises, counter, star_out = choose_noise(config, model, xb, gen, star, cache, fit_progress)
    choose_seconds = (time.perf_counter() - t0) / len(positions)
    result = BatchResult(
        positions=list(positions),
        indices=idxs,
        certificates=[None] * len(positions),
        noise_kinds=[nz.kind for nz in noises],
        choose_seconds=choose_seconds,
        forward_evals=counter.forward // len(positions),
        backward_evals=counter.backward // len(positions),
        sigma_star=None if star_out is None else star_out.tolist(),
        ancer=cache.get("ancer") if config.method == "ancer" else None,
    )
    certify_one = spec_of(config.method).certify_one or certify_smooth
    for j, p in enumerate(positions):
        if p in skip:
            continue
        cgen = torch.Generator(device=gdev).manual_seed(input_seed(seed, idxs[j]))
        result.certificates[j] = certify_one(
            config, model, noises[j], data.X[p], data.num_classes, n0, n, alpha, batch_size, cgen, radii
        )
        if on_input is not None:
            on_input(result, j)
    return result


def certify_smooth(config, model, noise, x, num_classes, n0, n, alpha, batch_size, generator, radii):
    """The default ``MethodSpec.certify_one``: Cohen's CERTIFY with the chosen noise (sequential at the table
    ``radii`` in the noise's own norm, ``table_radii_in_own_norm``). For anisotropic noise the run also decides the
    own-norm radii whose inscribed balls are the table's l2 radii (``certify.own_norm_radii``): sampling stops only
    when both the proxy and the l2 columns are decided, so the l2 headline is not cut short by the proxy radii
    (stopping once the proxy radii were decided left a bound too loose for the l2 ball DDRS kept); the certificate
    reports the table's (proxy) decisions."""
    smooth = certify.Smooth(model, noise, num_classes)
    if radii is None:
        return smooth.certify(x, n0, n, alpha, batch_size=batch_size, generator=generator)
    table = table_radii_in_own_norm(noise, radii)
    if noise.kind in L2_NOISES:
        return smooth.certify(x, n0, n, alpha, batch_size=batch_size, generator=generator, radii=table)
    asked = tuple(sorted(set(table) | set(certify.own_norm_radii(noise, radii))))
    cert = smooth.certify(x, n0, n, alpha, batch_size=batch_size, generator=generator, radii=asked)
    pick = [asked.index(r) for r in table]
    return replace(
        cert,
        decided=tuple(cert.decided[i] for i in pick),
        radii=tuple(table),
        decided_at=tuple(cert.decided_at[i] for i in pick),
    )


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``done`` of ``total`` inputs have rows (the log is resumable)."""

    def __init__(self, done: int, total: int, out: Path):
        super().__init__(f"interrupted after {done} of {total} inputs; rerun the same command to resume")
        self.done, self.total, self.out = done, total, out


class FingerprintMismatch(ValueError):
    """A log (or out-dir) was made by another run than the one asked for."""


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ddrs")
    except PackageNotFoundError:
        return "unknown"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def fingerprint(
    config: MethodConfig,
    model,
    data: Dataset,
    *,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    opt_batch: int,
    seed: int,
    memory: bool,
    radii: tuple | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> dict:
    """Everything that determines a run's rows: method and all its options, noise parameters, sample
    budget, batch sizes, seed, the step rule of each optimisation stage (:func:`step_rules`; the same options give
    another rule on another metric) and every field of its preset (``MethodSpec.stages``: a changed default is a
    changed run), data set with a hash of the inputs certified, model hash, version, the
    torch thread count of the processes that compute the rows (``threads``, default this process's: the
    gradients of the noise choice and the eigendecompositions of the geometry are summed in another order
    with more threads, so their last bits, and hence the rows, depend on it), and (only when they apply,
    so that older fingerprints stay valid) the radii of a sequential run and the device type the model
    runs on when it is not the CPU (``device``, default the model's: GPUs draw and round differently, so a
    CPU resume of a GPU log is refused)."""
    spec = spec_of(config.method)
    radii_are = "proxy, l2 decided too" if spec.anisotropic else "l2 / proxy"  # see certify_smooth
    sequential = {} if radii is None else {"radii": [float(r) for r in radii], "radii_are": radii_are}
    rules = {}
    if spec.data_dependent:
        presets = {name: repr(preset) for name, preset in spec.stages(config).items()}
        rules = {"step_rule": step_rules(config, data.X[0].numel()), "presets": presets}
    kind = device or model_device_dtype(model, data.X[:1])[0].type
    on_device = {} if kind == "cpu" else {"device": kind}
    structure = config.structure_options  # only when not the full structure (older fingerprints stay valid)
    return _jsonable(
        sequential
        | on_device
        | rules
        | structure
        | {
            "method": config.method,
            "label": config.label,
            "sigma": float(config.sigma),
            "sigmas": [float(x) for x in config.sigmas],
            "kind": config.kind,
            "metric": config.metric,
            "backend": config.backend,
            "ddrs_options": config.ddrs_options,
            "options": config.options,
            "memory": bool(memory and spec_of(config.method).data_dependent),
            "n0": int(n0),
            "n": int(n),
            "alpha": float(alpha),
            "batch_size": int(batch_size),
            "opt_batch": int(opt_batch),
            "seed": int(seed),
            "threads": int(torch.get_num_threads() if threads is None else threads),
            "dataset": data.name,
            "inputs": len(data.indices),
            "inputs_hash": dataset_hash(data),
            "model_hash": model_hash(model),
            "version": library_version(),
        }
    )


def fingerprint_path(out: str | os.PathLike) -> Path:
    """The sidecar beside a log (a separate file, so Cohen-format readers see an unchanged log)."""
    return Path(str(out) + ".fingerprint.json")


def differing_fields(old: dict, new: dict) -> list[str]:
    return [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def check_fingerprint(out: Path, expected: dict) -> None:
    """Refuse (one line) to resume ``out`` if it was made by another run; write the sidecar if new."""
    side = fingerprint_path(out)
    has_rows = out.is_file() and out.stat().st_size > 0 and b"\n" in out.read_bytes()[: 1 << 16]
    if has_rows and side.is_file():
        try:
            old = json.loads(side.read_text())
        except (ValueError, UnicodeDecodeError):
            raise FingerprintMismatch(
                f"cannot resume {out}: its fingerprint {side} is not valid JSON; start a new --out (or delete the log)"
            ) from None
        diff = differing_fields(old, expected)
        if diff:
            shown = ", ".join(
                f"{k} ({old.get(k)!r} -> {expected.get(k)!r})" if k not in ("inputs_hash", "model_hash") else k
                for k in diff
            )
            raise FingerprintMismatch(
                f"cannot resume {out}: it was made by another run (differs in {shown}); "
                "give a new --out to start a new run, or delete the log to redo it"
            )
        return
    if has_rows:
        raise FingerprintMismatch(
            f"cannot resume {out}: it has no fingerprint {side.name} (another or an older "
            "run made it); give a new --out to start a new run, or delete the log"
        )
    side.parent.mkdir(parents=True, exist_ok=True)
    side.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


_INT_COLUMNS = ("idx", "label", "predict", "correct", "forward_evals", "backward_evals")
_FINITE_COLUMNS = ("radius", "l2_radius", "proxy_radius", "p_lower", "min_sigma", "gm_sigma", "choose_seconds")
_ACTIONS = ("-", "kept", "shrunk", "adopted", "abstained")


def _row_problem(
    fields: list[str], positions: dict[int, int], last_pos: int, columns: list[str] = LOG_COLUMNS
) -> str | None:
    """Why a log row cannot be kept (None if it can)."""
    if len(fields) != len(columns):
        return f"{len(fields)} columns instead of {len(columns)}"
    row = dict(zip(columns, fields))
    try:
        for c in _INT_COLUMNS:
            int(row[c])
        for c in _FINITE_COLUMNS:
            if not math.isfinite(float(row[c])):
                return f"{c} is not finite ({row[c]})"
        float(row["paper_radius"])
        if not math.isfinite(parse_time(row["time"])):
            return "time is not finite"
    except ValueError as err:
        return f"unreadable value ({err})"
    idx = int(row["idx"])
    if idx not in positions:
        return f"idx {idx} is not one of this run's inputs"
    if positions[idx] <= last_pos:
        return f"idx {idx} is out of order or repeated"
    if row["memory_action"] not in _ACTIONS:
        return f"memory_action {row['memory_action']!r} unknown"
    if int(row["correct"]) != int(int(row["predict"]) == int(row["label"])):
        return "correct does not match predict and label"
    if "samples" in row and not row["samples"].isdigit():
        return f"samples is not a count ({row['samples']})"
    bad = [c for c in columns if c.startswith("cert@") and row[c] not in ("1", "0", "-")]
    if bad:
        return f"{bad[0]} is not 1, 0 or - ({row[bad[0]]})"
    return None


def validate_log(out: Path, data: Dataset, regions_dir: Path | None, columns: list[str] = LOG_COLUMNS) -> list[str]:
    """Keep the longest prefix of valid rows of ``out`` (with their region files, if ``regions_dir``),
    truncating the log after it so that the rest is recomputed from its seeds (exactly: rows are
    written in input order). Returns the notes on what was dropped. Raises ValueError naming the
    file for a binary or garbled log."""
    if not out.is_file():
        return []
    raw = out.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(
            f"{out} is not a text certification log (binary or garbled bytes); give a new --out or delete it"
        ) from None
    if "\n" not in text:
        return []  # a header cut short: LogWriter starts over
    lines = text.split("\n")
    if lines[0].split("\t") != columns:
        raise ValueError(
            f"{out} line 1: not a log of this runner (header {lines[0][:80]!r}); give a new --out or delete it"
        )
    positions = {idx: pos for pos, idx in enumerate(data.indices.tolist())}
    keep, last, notes = [lines[0]], -1, []
    body = lines[1:-1] if lines[-1] == "" else lines[1:]  # a trailing partial line is dropped below
    for lineno, ln in enumerate(body, start=2):
        problem = _row_problem(ln.split("\t"), positions, last, columns)
        if problem is None and regions_dir is not None:
            idx = int(ln.split("\t", 1)[0])
            region = regions_dir / f"{idx}.pt"
            try:
                rec = torch.load(region, weights_only=False)
                if not (isinstance(rec, dict) and {"prediction", "scale", "radius"} <= set(rec)):
                    problem = f"region file {region} is not a region record"
            except FileNotFoundError:
                problem = f"region file {region} is missing"
            except Exception as err:  # noqa: BLE001  (any unreadable file)
                problem = f"region file {region} is unreadable ({type(err).__name__})"
        if problem is not None:
            notes.append(f"{out} line {lineno}: {problem}; recomputing from this input on")
            break
        keep.append(ln)
        last = positions[int(ln.split("\t", 1)[0])]
    if len(keep) - 1 < len([b for b in body if b]) or lines[-1] != "":
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(keep) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    return notes


class Driver:
    """The stateful half of a run: the log, the memory (in idx order) and the region files.

    ``finish_input`` turns one raw certificate into its log row, after the memory-based certifier
    (data-dependent methods) and saving the region the input finally holds."""

    def __init__(
        self,
        config: MethodConfig,
        data: Dataset,
        out: str | os.PathLike,
        *,
        memory: bool = True,
        fingerprint: dict | None = None,
        radii: tuple | None = None,
    ):
        self.config, self.data, self.out = config, data, Path(out)
        self.spec = spec_of(config.method)
        self.radii, self.columns = radii, log_columns(radii) + list(self.spec.columns)
        self.regions_dir = Path(str(self.out) + ".regions")
        use_memory = memory and spec_of(config.method).data_dependent
        if fingerprint is not None:
            check_fingerprint(self.out, fingerprint)
        for note in validate_log(self.out, data, self.regions_dir if use_memory else None, self.columns):
            print(note, file=sys.stderr)
        self.writer = certify.LogWriter(self.out, self.columns, resume=True)
        self.mem = certify.Memory() if use_memory else None
        self.indices = data.indices.tolist()
        if self.mem is not None:
            self.regions_dir.mkdir(parents=True, exist_ok=True)
            self._rebuild_memory()

    @property
    def done(self) -> set[int]:
        return self.writer.done

    def _rebuild_memory(self) -> None:
        for pos, idx in enumerate(self.indices):  # rebuild memory from finished rows, in order
            path = self.regions_dir / f"{idx}.pt"
            if idx in self.writer.done and path.is_file():
                rec = torch.load(path, weights_only=False)
                x = self.data.X[pos].reshape(-1).double().numpy()
                structured = rec.get("structured")
                region = (
                    structured.recentred(x, rec["radius"])
                    if structured is not None
                    else None
                    if rec["scale"] is None
                    else certify.Ellipsoid(
                        x,
                        np.asarray(rec["scale"], dtype=np.float64) if np.ndim(rec["scale"]) else rec["scale"],
                        rec["radius"],
                    )
                )
                stored = certify.Certificate(
                    prediction=rec["prediction"],
                    p_lower=0.0,
                    radius=0.0 if region is None else region.radius,
                    l2_radius=0.0 if region is None else region.l2_radius,
                    proxy_radius=0.0 if region is None else region.proxy_radius,
                    region=region,
                )
                self.mem.add(stored, x=x, idx=idx)

    def todo(self, positions: list[int]) -> list[int]:
        """The positions of a batch that have no row yet."""
        return [p for p in positions if self.indices[p] not in self.writer.done]

    def finish_input(self, result: BatchResult, j: int) -> None:
        """Apply the memory to ``result``'s j-th certificate and write its row (and region file)."""
        p, idx, cert = result.positions[j], result.indices[j], result.certificates[j]
        x, label = self.data.X[p], int(self.data.y[p])
        action, reason = "", ""
        raw = cert
        if self.mem is not None:
            answer = self.mem.add(cert, x=x.reshape(-1).double().numpy(), idx=idx)
            cert, action = answer.certificate, answer.action
            reason = ",".join(str(r) for r in answer.reason)
            torch.save(_region_record(cert.prediction, cert.region), self.regions_dir / f"{idx}.pt")
        sequential = {}
        if self.radii is not None:
            decisions = decisions_after_memory(cert, raw, self.radii, action)
            sequential = {"samples": raw.samples} | dict(zip(map(decision_column, self.radii), decisions))
        self.writer.write(
            sequential
            | self.spec.row(cert)
            | {
                "idx": idx,
                "label": label,
                "predict": cert.prediction,
                "radius": cert.l2_radius,
                "correct": int(cert.prediction == label),
                "time": cert.seconds + result.choose_seconds,
                "l2_radius": cert.l2_radius,
                "proxy_radius": cert.proxy_radius,
                "p_lower": cert.p_lower,
                "noise": cert.noise or result.noise_kinds[j],
                "min_sigma": cert.min_sigma,
                "gm_sigma": cert.gm_sigma,
                "paper_radius": math.nan if cert.paper_radius is None else cert.paper_radius,
                "memory_action": action or "-",
                "memory_reason": reason or "-",
                "choose_seconds": result.choose_seconds,
                "forward_evals": result.forward_evals,
                "backward_evals": result.backward_evals,
            }
        )

    def finish_batch(self, result: BatchResult) -> int:
        """Finish every certified input of a batch in idx order; returns how many rows were written."""
        k = 0
        for j in range(len(result.positions)):
            if result.certificates[j] is not None and result.indices[j] not in self.writer.done:
                self.finish_input(result, j)
                k += 1
        return k

    def close(self) -> None:
        self.writer.close()


def shared_stages(
    positions: list[int], indices: list[int], sigma_star_cache: dict, stage_cache: dict
) -> tuple[list | None, list | None]:
    """The position-aligned sigma_x* and ANCER entries of a batch, if every input has one."""
    star = [sigma_star_cache.get(indices[p]) for p in positions]
    thetas = [stage_cache.get(indices[p]) for p in positions]
    return (star if all(s is not None for s in star) else None, thetas if all(t is not None for t in thetas) else None)


def record_stages(result: BatchResult, sigma_star_cache: dict, stage_cache: dict) -> None:
    """Store a batch's stage outputs for the next methods of a comparison."""
    if result.ancer is not None:
        for idx, entry in zip(result.indices, result.ancer):
            stage_cache[idx] = entry
    if result.sigma_star is not None:
        for idx, s in zip(result.indices, result.sigma_star):
            sigma_star_cache[idx] = s


def certify_on(
    cluster: Any, loader: Any, config: MethodConfig, model: Any, data: Dataset, out: Any, **run: Any
) -> Path:
    """``run_certification(config, model, data, out, **run)`` on ``cluster`` (a ``ddrs_app.cluster.Cluster``, started
    and stopped here; None: this process), whose workers load ``model`` with ``loader`` when one is given."""
    with cluster or contextlib.nullcontext() as started:
        if started is not None and loader is not None:
            started.register(model, loader)
        return run_certification(config, model, data, out, cluster=started, **run)


def run_certification(
    config: MethodConfig,
    model,
    data: Dataset,
    out: str | os.PathLike,
    *,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    opt_batch: int = 64,
    seed: int = 0,
    memory: bool = True,
    progress: bool = True,
    sigma_star_cache: dict | None = None,
    stage_cache: dict | None = None,
    restart_on_mismatch: bool = False,
    radii: tuple | None = None,
    cluster=None,
) -> Path:
    """Certify every input of ``data`` with ``config``, appending to the log ``out`` (resumable).

    The log's fingerprint (:func:`fingerprint`, in ``<out>.fingerprint.json``) must match this run's,
    else :class:`FingerprintMismatch` (or, with ``restart_on_mismatch``, the old log is deleted and the
    run starts over). Kept rows are validated (:func:`validate_log`); Ctrl-C raises :class:`Interrupted`.

    The single-process driver: for each batch of :func:`plan_batches`, :func:`compute_batch`, then
    :meth:`Driver.finish_batch` in order. ``sigma_star_cache`` (idx -> sigma_x*) shares the DDRS stage
    between methods of one comparison; ``stage_cache`` (idx -> ANCER (theta, forward, backward)) shares
    the ANCER stage with RDDRS. ``radii`` makes the run sequential (``Smooth.certify(radii=...)``, n
    the maximum sample count; the log gains :func:`log_columns`). ``cluster`` (a started
    :class:`ddrs_app.cluster.Cluster`) computes the same batches on Ray actors; this driver still
    finishes them in order. Returns the log path."""
    radii = None if radii is None else tuple(float(r) for r in check_radii(radii))
    out = Path(out)
    workers_device = None if cluster is None else ("cuda" if getattr(cluster, "num_gpus", 0) else "cpu")
    fp = fingerprint(
        config,
        model,
        data,
        n0=n0,
        n=n,
        alpha=alpha,
        batch_size=batch_size,
        opt_batch=opt_batch,
        seed=seed,
        memory=memory,
        radii=radii,
        device=workers_device,
        threads=None if cluster is None else cluster.threads,
    )
    try:
        driver = Driver(config, data, out, memory=memory, fingerprint=fp, radii=radii)
    except FingerprintMismatch:
        if not restart_on_mismatch:
            raise
        remove_run(out)
        driver = Driver(config, data, out, memory=memory, fingerprint=fp, radii=radii)
    sigma_star_cache = {} if sigma_star_cache is None else sigma_star_cache
    stage_cache = {} if stage_cache is None else stage_cache
    indices = driver.indices
    bar = tqdm(
        total=len(indices),
        initial=sum(i in driver.done for i in indices),
        disable=not progress,
        desc=f"certify {data.name} {config.label} sigma={config.sigma:g}",
        unit="input",
        leave=False,
    )
    steps = tqdm(  # the noise choice of a batch can take minutes (RDDRS at CIFAR size): show its steps
        desc="  choosing noise",
        unit="step",
        disable=not progress or not spec_of(config.method).data_dependent or cluster is not None,
        leave=False,
    )
    try:
        planned = {}  # the ascent steps of each batch left to do: the bar's total, for its ETA
        for positions in plan_batches(data, opt_batch):
            if driver.todo(positions):
                star, thetas = shared_stages(positions, indices, sigma_star_cache, stage_cache)
                planned[positions[0]] = noise_steps(config, star is not None, thetas is not None)
        steps.reset(total=sum(planned.values()))
        if cluster is not None:

            def finish_result(result: BatchResult) -> None:
                record_stages(result, sigma_star_cache, stage_cache)
                bar.update(driver.finish_batch(result))

            cluster.run(
                config,
                model,
                data,
                [(positions, driver.todo(positions)) for positions in plan_batches(data, opt_batch)],
                fingerprint=fp,
                finish=finish_result,
                stages=lambda positions: shared_stages(positions, indices, sigma_star_cache, stage_cache),
                n0=n0,
                n=n,
                alpha=alpha,
                batch_size=batch_size,
                seed=seed,
                radii=radii,
            )
        for positions in plan_batches(data, opt_batch) if cluster is None else []:  # the single process
            todo = driver.todo(positions)
            if not todo:
                continue
            star, thetas = shared_stages(positions, indices, sigma_star_cache, stage_cache)

            def finish(result: BatchResult, j: int) -> None:
                if j == todo_first[0]:
                    record_stages(result, sigma_star_cache, stage_cache)
                driver.finish_input(result, j)
                bar.update(1)

            todo_first = [positions.index(todo[0])]
            span = Span(steps, planned[positions[0]])
            result = compute_batch(
                config,
                model,
                data,
                positions,
                n0=n0,
                n=n,
                alpha=alpha,
                batch_size=batch_size,
                seed=seed,
                sigma_star=star,
                ancer_cache=thetas,
                skip=set(positions) - set(todo),
                on_input=finish,
                radii=radii,
                fit_progress=None if steps.disable else span,
            )
            span.finish()
            record_stages(result, sigma_star_cache, stage_cache)
    except KeyboardInterrupt:
        raise Interrupted(sum(i in driver.done for i in indices), len(indices), driver.out) from None
    finally:
        steps.close()
        bar.close()
        driver.close()
    return driver.out


def remove_run(out: str | os.PathLike) -> None:
    """Delete a log, its fingerprint and its region files."""
    import shutil

    out = Path(out)
    for f in (out, fingerprint_path(out)):
        if f.is_file():
            f.unlink()
    shutil.rmtree(str(out) + ".regions", ignore_errors=True)
