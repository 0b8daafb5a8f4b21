"""Sequential certification against fixed-n Cohen and the paper's betting sequence.

For every input of a data set and every method (RS, DDRS), the noise is chosen ONCE (DDRS: fitted
per batch of inputs exactly as ``ddrs compare`` does, logged in ``noise_<method>.tsv``) and the
same noise is then certified three ways, each with n0 = 100 selection samples and alpha = 0.001:

* ``fixed``: Cohen's CERTIFY with n = 100,000 (``Smooth.certify``); certified at r iff l2 radius >= r;
* ``seq``: ``Smooth.certify(radii=...)`` with max n = 100,000 (two-sided Clopper-Pearson intervals on
  a 1.1x geometric grid, alpha / K at each of the K looks; ``certify.sequential``);
* ``bet``: the betting confidence sequence of Voracek (NeurIPS 2024; vvoracek/RS_conf_seq,
  ``thresholds.get_upper_threshold``): the Krichevsky-Trofimov (Beta(1/2, 1/2)) mixture martingale
  M_N(t) = B(A + 1/2, N - A + 1/2) / B(1/2, 1/2) / (t^A (1 - t)^(N - A)) for A successes of N,
  radius r decided when log M_N(t_r) > log(2 / alpha) (the paper's level), checked after every sample,
  max n = 100,000. Its threshold is t_r = Phi(r / sigma) (the paper's code has ``norm.ppf`` there,
  where ``norm.cdf`` is meant). The betting baseline uses the same class guess (n0 samples) and the
  same decision semantics as ``seq`` ("not robust at r" needs both p_label and 1 - p_label below
  t_r, so that it is a statement about the smoothed classifier's top class); its sample count is the
  per-sample stopping time (the paper's accounting), while ``seq`` counts every sample it drew.

Two references for the sample counts (``--report``; computed from each input's fixed-n estimate
p = hits / n, the hits recovered from the logged Clopper-Pearson bound):

* ``floor``: for every input certified by fixed n at radius r (the largest such), ln(1 / alpha) /
  (-ln t_r) samples. Even a perfect record of m hits in m samples cannot make a level-alpha lower bound
  exceed t_r before t_r^m <= alpha (the all-hits path has probability t_r^m when p = t_r), so no sound
  procedure that certifies a perfect record no later than a record with misses can do it with fewer;
  n0 is not included.
* ``oracle``: a procedure told p in advance that looks once, at the full alpha: the smallest m at which
  the one-sided Clopper-Pearson bound of round(p m) hits of m decides every radius fixed n could reach
  the way fixed n decided it, plus n0 (capped at n). Sequential procedures can beat it on a lucky
  stream, so it is a reference, not a bound.

True mixtures (``--mixture``; closed form, one core, about a minute): half-spaces at 100 distances in
[0, 1.25] from x in R^2 (the exact mixture certificate is the distance) under MixtureOfGaussians(kind=
"mixture") with K = 2 and K = 5 constituents over [0.25, 0.5], certified by the sequential mixture mode
(``certify.sequential.run_mixture_looks``), and at fixed n; a one-component mixture and the same Gaussian
through the Gaussian mode as references. Mean samples per input against the mixture's one-look oracle
(``mixture_one_look_oracle``: told each component's p, one look with each component bounded at
alpha / K, the fixed-n certificate's split), in two forms: the Gaussian oracle's (n if some reachable
radius is not decided at n) and a decidable-only one (skipping the radii it cannot decide at n).
Written to ``sequential_certify_mixture.csv`` / ``.md`` and ``sequential_certify_mixture_inputs.csv``.

Resumable: one TSV per (data set, method, mode) under ``benchmarks/results/sequential_certify/``,
a row appended (and flushed) per input; a rerun skips finished inputs. ``--report`` writes
``sequential_certify.csv`` / ``.md`` / ``.png`` from whatever the logs hold (inputs certified by
every mode of a method only).

    python -m benchmarks.studies.sequential_certify --dataset digits fashion-mnist --methods rs ddrs
    python -m benchmarks.studies.sequential_certify --report
    python -m benchmarks.studies.sequential_certify --mixture
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ddrs_app.compare import BUDGETS
from ddrs_app.data import load_dataset, subset
from ddrs_app.runs import MethodConfig, batch_seed, choose_noise, input_seed, plan_batches
from ddrs_app.training import load_or_train
from scipy.special import betaln
from scipy.stats import norm

import certify
from certify import sequential
from certify.bounds import clopper_pearson_lower, clopper_pearson_upper
from certify.radius import mixture_lower_bound_at

OUT = Path(__file__).resolve().parents[1] / "results" / "sequential_certify"
SIGMA = 0.25
RADII = {"digits": (0.25, 0.5, 0.75, 1.0), "fashion-mnist": (0.25, 0.5, 0.75, 1.0)}
SUBSETS = {"digits": (9, 50), "fashion-mnist": (100, 100)}  # (every, max_inputs): compare's inputs
N0, N, ALPHA, SEED = 100, 100_000, 0.001, 0
MODES = ("fixed", "seq", "bet")


# ------------------------------------------------------------------------------------------ logs
class Tsv:
    """Append-only TSV keyed by ``idx``; a partial last line (interrupted write) is dropped."""

    def __init__(self, path: Path, columns: list[str]):
        self.path, self.columns = path, columns
        self.rows: dict[int, dict] = {}
        if path.is_file() and path.stat().st_size > 0:
            lines = path.read_text().split("\n")
            if lines[0].split("\t") != columns:
                raise ValueError(f"{path}: header {lines[0]!r} differs from {columns}")
            complete = [ln for ln in lines[1:-1] if ln]
            path.write_text("\n".join([lines[0]] + complete) + "\n")
            for ln in complete:
                row = dict(zip(columns, ln.split("\t")))
                self.rows[int(row["idx"])] = row
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\t".join(columns) + "\n")

    def write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write("\t".join(str(row[c]) for c in self.columns) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows[int(row["idx"])] = {c: str(row[c]) for c in self.columns}


def decision_text(d: bool | None) -> str:
    return "-" if d is None else str(int(d))


# --------------------------------------------------------------------------------- betting
def betting_decisions(
    labels: np.ndarray, need: np.ndarray, alpha: float, n_max: int
) -> tuple[list[bool | None], int | None, list[int]]:
    """The paper's KT betting test on a 0/1 stream ``labels`` (1 = the guessed class), every radius
    at once: per radius the first N with log M_N(t) > log(2 / alpha); True if then A > t N, False if
    A < t N and also the mirrored test rejects 1 - t (p_label > 1 - t, so no other class reaches t).
    A radius is dropped (None) once even all-hits up to ``n_max`` could not certify it (the same
    out-of-reach rule as ``certify.sequential.run_looks``). Returns the decisions, the sample count
    at which the last radius was decided or dropped (None: some radius is still open) and that count
    per radius (the stream's length for an open one)."""
    A = np.cumsum(labels, dtype=np.float64)
    Nn = np.arange(1, len(labels) + 1, dtype=np.float64)
    log_q = betaln(A + 0.5, Nn - A + 0.5) - betaln(0.5, 0.5)
    A_fin = A + (n_max - Nn)  # all remaining samples hits
    log_q_fin = betaln(A_fin + 0.5, n_max - A_fin + 0.5) - betaln(0.5, 0.5)
    level = math.log(2.0 / alpha)
    firsts: list[tuple[int | None, bool | None]] = []
    for t in np.clip(need, 1e-300, np.nextafter(1.0, 0.0)):  # Phi(r / sigma) rounds to 1 for tiny sigma
        t = float(t)
        log_m = log_q - (A * math.log(t) + (Nn - A) * math.log1p(-t))
        hi = (log_m > level) & (A > t * Nn)
        log_m_mirror = log_q - (A * math.log1p(-t) + (Nn - A) * math.log(t))
        lo_mirror = (log_m_mirror > level) & (A > (1 - t) * Nn)  # p_label > 1 - t
        lo = (log_m > level) & (A < t * Nn)  # p_label < t, jointly with p_label > 1 - t (ever flags)
        both = np.maximum.accumulate(lo) & np.maximum.accumulate(lo_mirror)
        log_m_fin = log_q_fin - (A_fin * math.log(t) + (n_max - A_fin) * math.log1p(-t))
        gone = ~((log_m_fin > level) & (A_fin > t * n_max))
        first = {k: int(np.argmax(v)) + 1 for k, v in (("hi", hi), ("lo", both), ("gone", gone)) if v.any()}
        if not first:
            firsts.append((None, None))
            continue
        kind = min(first, key=lambda k: first[k])
        firsts.append((first[kind], {"hi": True, "lo": False, "gone": None}[kind]))
    at = [len(labels) if f is None else f for f, _ in firsts]
    if any(f is None for f, _ in firsts):
        return [None if f is None else d for f, d in firsts], None, at
    return [d for _, d in firsts], max(at), at


def certify_betting(smooth: certify.Smooth, x, sigma_l2: float, radii, n0, n, alpha, batch_size, gen):
    """Guess the class from n0 samples, then draw the label stream in growing chunks until every
    radius is decided by ``betting_decisions`` (or n). Returns (label, decisions, samples, seconds)."""
    t0 = time.perf_counter()
    sel = smooth.sample_statistics(x, n0, batch_size, gen)
    label = int(sel.scores().argmax())
    need = norm.cdf(np.asarray(radii) / sigma_l2)
    stream: list[torch.Tensor] = []
    drawn, chunk = 0, 100
    while True:
        k = min(chunk, n - drawn)
        got: list[torch.Tensor] = []
        smooth.sample_statistics(x, k, batch_size, gen, labels=got)
        stream += got
        drawn += k
        ones = (torch.cat(stream) == label).numpy().astype(np.float64)
        decided, stop, at = betting_decisions(ones, need, alpha, n)
        if stop is not None or drawn >= n:
            return (
                label,
                decided,
                n0 + (drawn if stop is None else stop),
                [n0 + a for a in at],
                time.perf_counter() - t0,
            )
        chunk = min(batch_size, max(100, int(drawn * 0.1)))


# ---------------------------------------------------------------------------------------- runs
def _isotropic_sigma(noise) -> float:
    return float(noise.sigma)


def run(dataset: str, methods: list[str], modes: list[str], batch_size: int) -> None:
    torch.set_num_threads(1)
    radii = RADII[dataset]
    every, max_inputs = SUBSETS[dataset]
    test = subset(load_dataset(dataset, "test"), every, max_inputs)
    model, _ = load_or_train(dataset, SIGMA, progress=False)
    model.eval()
    budget = BUDGETS[dataset]
    out = OUT / dataset
    cols = ["idx", "label", "predict", "correct", "radius", "p_lower", "samples", "seconds"]
    dec_cols = [f"cert@{r:g}" for r in radii]
    at_cols = [f"at@{r:g}" for r in radii]  # samples after which that radius was decided or dropped
    logs = {
        (m, mode): Tsv(out / f"{m}_{mode}.tsv", cols + (dec_cols + at_cols if mode != "fixed" else []))
        for m in methods
        for mode in modes
    }
    noise_logs = {m: Tsv(out / f"noise_{m}.tsv", ["idx", "sigma", "fit_seconds"]) for m in methods}
    indices = test.indices.tolist()
    for positions in plan_batches(test, budget.opt_batch):
        idxs = [indices[p] for p in positions]
        for m in methods:  # the noise, fitted once per batch (as compare does) and logged
            if all(i in noise_logs[m].rows for i in idxs):
                continue
            config = MethodConfig(m, sigma=SIGMA, ddrs_options=dict(budget.ddrs))
            gen = torch.Generator().manual_seed(batch_seed(SEED, idxs[0]))
            t0 = time.perf_counter()
            noises, _, _ = choose_noise(config, model, test.X[positions], gen)
            per = (time.perf_counter() - t0) / len(positions)
            for i, nz in zip(idxs, noises):
                if i not in noise_logs[m].rows:
                    noise_logs[m].write({"idx": i, "sigma": repr(_isotropic_sigma(nz)), "fit_seconds": f"{per:.3f}"})
        for p, idx in zip(positions, idxs):
            x, label = test.X[p], int(test.y[p])
            for m in methods:
                sigma = float(noise_logs[m].rows[idx]["sigma"])
                smooth = certify.Smooth(model, certify.IsotropicGaussian(sigma), test.num_classes)
                for mode in modes:
                    log = logs[(m, mode)]
                    if idx in log.rows:
                        continue
                    gen = torch.Generator().manual_seed(input_seed(SEED, idx))  # same stream for every mode
                    row = {"idx": idx, "label": label}
                    if mode == "bet":
                        pred, decided, samples, at, secs = certify_betting(
                            smooth, x, sigma, radii, N0, N, ALPHA, batch_size, gen
                        )
                        row.update(predict=pred, radius="", p_lower="", samples=samples, seconds=f"{secs:.3f}")
                    else:
                        cert = smooth.certify(
                            x,
                            N0,
                            N,
                            ALPHA,
                            batch_size=batch_size,
                            generator=gen,
                            radii=radii if mode == "seq" else None,
                        )
                        pred, decided = cert.prediction, cert.decided
                        at = cert.decided_at or ()
                        row.update(
                            predict=pred,
                            radius=repr(cert.l2_radius),
                            p_lower=repr(cert.p_lower),
                            samples=cert.samples,
                            seconds=f"{cert.seconds:.3f}",
                        )
                    row["correct"] = int(pred == label)
                    if mode != "fixed":
                        row.update({c: decision_text(d) for c, d in zip(dec_cols, decided)})
                        row.update({c: v for c, v in zip(at_cols, at)})
                    log.write(row)
                    print(f"{dataset} {m} {mode} idx {idx}: {row}", flush=True)


# -------------------------------------------------------------------------------------- report
def perfect_record_floor(t: float, alpha: float) -> float:
    """Fewest samples whose perfect record lets a level-alpha lower bound exceed t: ln(1/alpha)/(-ln t)."""
    return math.log(1.0 / alpha) / -math.log(t) if t < 1.0 else math.inf


def hits_from_lower(p_lower: float, n: int, alpha: float) -> int:
    """The hit count h whose one-sided Clopper-Pearson bound (``clopper_pearson_lower``) is ``p_lower``
    (the largest h whose bound does not exceed it; the bound increases with h)."""
    if p_lower <= 0.0:
        return 0
    lo, hi = 0, n + 1  # invariant: bound(lo) <= p_lower < bound(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if clopper_pearson_lower(mid, n, alpha) <= p_lower * (1 + 1e-12):
            lo = mid
        else:
            hi = mid
    return lo


def one_look_oracle(p: float, needs: np.ndarray, alpha: float, n: int) -> int:
    """Samples (n0 excluded) a single look at level alpha needs to decide every threshold in ``needs``
    when it is told p and sees round(p m) hits of m: lower bound above t (p > t) or max(upper, 1 - lower)
    below t (p < t); n if some threshold is not decided at n."""

    def decides(m: int) -> bool:
        h = round(p * m)
        lower, upper = clopper_pearson_lower(h, m, alpha), clopper_pearson_upper(h, m, alpha)
        return all(lower > t if p > t else max(upper, 1.0 - lower) < t for t in needs)

    if not decides(n):
        return n
    lo, hi = 0, n  # decides(hi), not decides(lo) (m = 0 decides nothing)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decides(mid) else (mid, hi)
    return hi


def references(fixed_rows: list[dict], sigmas: dict[int, float], radii) -> tuple[np.ndarray, np.ndarray]:
    """Per input: the perfect-record floor and the one-look oracle (n0 included) of the module docstring."""
    floor, oracle = [], []
    for x in fixed_rows:
        needs = norm.cdf(np.asarray(radii) / sigmas[int(x["idx"])])
        reachable = needs[[perfect_record_floor(t, ALPHA) < N for t in needs]]
        certified = [t for t, r in zip(needs, radii) if float(x["radius"]) >= r]
        floor.append(perfect_record_floor(max(certified), ALPHA) if certified else 0.0)
        abstained = int(x["predict"]) < 0
        p = 0.5 if abstained else hits_from_lower(float(x["p_lower"]), N, ALPHA) / N
        oracle.append(N0 + one_look_oracle(p, reachable, ALPHA, N))
    return np.array(floor), np.array(oracle)


def summarise(dataset: str, method: str) -> dict | None:
    out = OUT / dataset
    radii = RADII[dataset]
    logs = {}
    for mode in MODES:
        path = out / f"{method}_{mode}.tsv"
        if not path.is_file():
            return None
        with open(path) as f:
            logs[mode] = {int(r["idx"]): r for r in csv.DictReader(f, delimiter="\t")}
    common = sorted(set.intersection(*(set(v) for v in logs.values())))
    if not common:
        return None
    row: dict = {"dataset": dataset, "method": method, "inputs": len(common), "n_max": N, "alpha": ALPHA}
    for mode in MODES:
        rows = [logs[mode][i] for i in common]
        correct = np.array([r["correct"] == "1" for r in rows])
        for r in radii:
            if mode == "fixed":
                cert = np.array([float(x["radius"]) >= r for x in rows])
            else:
                cert = np.array([x[f"cert@{r:g}"] == "1" for x in rows])
            row[f"{mode}@{r:g}"] = float(np.mean(correct & cert))
        s = np.array([float(x["samples"]) for x in rows])
        row[f"{mode}_samples_mean"] = float(s.mean())
        row[f"{mode}_samples_median"] = float(np.median(s))
        row[f"{mode}_samples_p90"] = float(np.percentile(s, 90))
        row[f"{mode}_seconds"] = float(np.mean([float(x["seconds"]) for x in rows]))
        if mode != "fixed":
            und = np.array([any(x[f"cert@{r:g}"] == "-" for r in radii) for x in rows])
            row[f"{mode}_undecided"] = float(np.mean(und))
            for r in radii:  # one radius per run, the paper's measure: samples until r is decided or dropped
                row[f"{mode}_at@{r:g}_mean"] = float(np.mean([float(x[f"at@{r:g}"]) for x in rows]))
    with open(out / f"noise_{method}.tsv") as f:
        sigmas = {int(r["idx"]): float(r["sigma"]) for r in csv.DictReader(f, delimiter="\t")}
    floor, oracle = references([logs["fixed"][i] for i in common], sigmas, radii)
    row["floor_samples_mean"] = float(floor.mean())
    row["oracle_samples_mean"] = float(oracle.mean())
    row["oracle_samples_median"] = float(np.median(oracle))
    return row


def report() -> list[dict]:
    rows = [r for d in RADII for m in ("rs", "ddrs") if (r := summarise(d, m)) is not None]
    if not rows:
        print("no logs yet", file=sys.stderr)
        return rows
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    csv_path = OUT.parent / "sequential_certify.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    lines = [
        "| data | method | inputs | "
        + " | ".join("fixed / seq / bet @" + f"{r:g}" for r in RADII["digits"])
        + " | samples mean (seq / bet) | median | p90 | mean: one-look oracle / floor |",
        "|" + "---|" * (7 + len(RADII["digits"])),
    ]
    for r in rows:
        accs = " | ".join(
            f"{100 * r[f'fixed@{x:g}']:.0f} / {100 * r[f'seq@{x:g}']:.0f} / {100 * r[f'bet@{x:g}']:.0f}"
            for x in RADII[r["dataset"]]
        )
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['inputs']} | {accs} | "
            f"{r['seq_samples_mean']:.0f} / {r['bet_samples_mean']:.0f} | "
            f"{r['seq_samples_median']:.0f} / {r['bet_samples_median']:.0f} | "
            f"{r['seq_samples_p90']:.0f} / {r['bet_samples_p90']:.0f} | "
            f"{r['oracle_samples_mean']:.0f} / {r['floor_samples_mean']:.0f} |"
        )
    lines += [
        "",
        "Oracle: told p (the fixed-n estimate), one look at the full alpha, n0 included; floor: the fewest "
        "samples with which even a perfect record certifies the largest radius fixed n certified, "
        "ln(1/alpha) / -ln Phi(r / sigma), n0 excluded (module docstring).",
        "",
        "Mean samples per input asking one radius at a time (Voracek's measure; the samples after which "
        "that radius was decided or dropped, n0 included), seq / bet:",
        "",
        "| data | method | " + " | ".join(f"r = {r:g}" for r in RADII["digits"]) + " |",
        "|" + "---|" * (2 + len(RADII["digits"])),
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['method']} | "
            + " | ".join(f"{r[f'seq_at@{x:g}_mean']:.0f} / {r[f'bet_at@{x:g}_mean']:.0f}" for x in RADII[r["dataset"]])
            + " |"
        )
    (OUT.parent / "sequential_certify.md").write_text("\n".join(lines) + "\n")
    _plot(rows, OUT.parent / "sequential_certify.png")
    print("\n".join(lines))
    return rows


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(rows)
    fig, axes = plt.subplots(2, max(k, 2), figsize=(3.6 * max(k, 2), 6.4), squeeze=False)
    styles = {"fixed": ("-o", "fixed n"), "seq": ("--s", "sequential"), "bet": (":^", "betting")}
    for j, r in enumerate(rows):
        radii = RADII[r["dataset"]]
        ax = axes[0][j]
        for mode in MODES:
            style, name = styles[mode]
            ax.plot(radii, [r[f"{mode}@{x:g}"] for x in radii], style, label=name)
        ax.set_title(f"{r['dataset']} {r['method']} ({r['inputs']} inputs)", fontsize=9)
        ax.set_xlabel("l2 radius")
        ax.set_ylim(-0.02, 1.02)
        if j == 0:
            ax.set_ylabel("certified accuracy")
            ax.legend(fontsize=7)
        ax = axes[1][j]
        xs = np.arange(len(radii) + 1)
        for q, mode in enumerate(("seq", "bet")):
            vals = [r[f"{mode}_at@{x:g}_mean"] for x in radii] + [r[f"{mode}_samples_mean"]]
            ax.bar(xs + (q - 0.5) * 0.4, vals, 0.4, label=styles[mode][1])
        ax.set_xticks(xs, [f"r={x:g}" for x in radii] + ["all"], fontsize=7)
        ax.set_yscale("log")
        if j == 0:
            ax.set_ylabel("mean samples per input (n0 incl.)")
            ax.legend(fontsize=7)
    for j in range(k, axes.shape[1]):
        axes[0][j].axis("off")
        axes[1][j].axis("off")
    fig.suptitle(f"sequential vs fixed n = {N:,} vs betting (alpha = {ALPHA:g}; fixed n draws {N + N0:,} per input)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ---------------------------------------------------------------------------- true mixtures
#: closed-form settings: name -> (weights, sigmas): true mixtures (the MoG paper's constituents over
#: [0.25, 0.5]), a one-component mixture, and the same Gaussian through the Gaussian mode (``run_looks``)
#: as the reference of what the sequential rule costs against these oracles
MIXTURES = {
    "K2 [0.25, 0.5]": ((0.5, 0.5), (0.25, 0.5)),
    "K5 [0.25, 0.5]": ((0.2,) * 5, (0.25, 0.3125, 0.375, 0.4375, 0.5)),
    "K1 [0.25]": ((1.0,), (0.25,)),
    "isotropic 0.25 (Gaussian mode)": ((1.0,), (0.25,)),
}
MIX_RADII = (0.25, 0.5, 0.75, 1.0)
#: the inputs: half-space distances on a grid that never meets a radius (a radius exactly at the
#: distance is undecidable by any procedure; the nearest grid point is 0.00625 away)
MIX_DISTANCES = tuple(0.00625 + 0.0125 * i for i in range(100))


class HalfSpace(torch.nn.Module):
    """Class 0 iff x_0 <= d (logits (-z, z) * 1e6, z = x_0 - d, float64): at x = 0, a half-space at
    distance d, whose class-0 probability under N(0, sigma^2 I) is Phi(d / sigma) exactly."""

    def __init__(self, d: float):
        super().__init__()
        self.d = float(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.reshape(x.shape[0], -1)[:, 0].to(torch.float64) - self.d
        return torch.stack([-z, z], dim=1) * 1e6


def halfspace_mixture_p(d: float, sigmas) -> np.ndarray:
    """Component probabilities of the class on x's side of a half-space at distance d: Phi(d / sigma_k)."""
    return norm.cdf(d / np.asarray(sigmas, dtype=np.float64))


def mixture_one_look_oracle(p, weights, sigmas, radii, alpha: float, n: int, decidable_only: bool = False) -> int:
    """Samples (n0 excluded) a single look needs to decide every reachable radius of a true mixture
    when it is told the component probabilities ``p`` and sees round(p_k m_k) hits of the
    m_k = floor(w_k m) samples of component k (the sequential mode's allocation), each component bounded
    at alpha / K (the fixed-n certificate's split; one-sided, so both kinds of decision get alpha / K
    per component, as the Gaussian oracle gets alpha per side). Radius r is decided once the fixed-n
    certificate ``mixture_radius`` of the lower bounds exceeds r (when the exact certificate, ``p``'s,
    does) or once the bounds refute it as ``certify.sequential.run_mixture_looks`` does (upper bounds
    and one minus the lower bounds). Reachable: a perfect record of n samples certifies r.

    As the Gaussian ``one_look_oracle``: n if some reachable radius is not decided at n.
    ``decidable_only``: a stronger oracle that also knows which radii it cannot decide at n and only
    asks the others (0 if none)."""
    w, s = (np.asarray(v, dtype=np.float64) for v in (weights, sigmas))
    p = np.asarray(p, dtype=np.float64)
    K = w.size
    a = alpha / K
    wl, sl = w.tolist(), s.tolist()
    exact = certify.mixture_radius(p.tolist(), wl, sl)
    full = sequential.component_counts(n, w)
    perfect = certify.mixture_radius([clopper_pearson_lower(int(m), int(m), a) for m in full], wl, sl)
    reachable = [r for r in radii if perfect > r]

    def decides(m: int, asked: list[float]) -> bool:
        counts = sequential.component_counts(m, w)
        hits = [round(pk * int(mk)) for pk, mk in zip(p, counts)]
        lower = [clopper_pearson_lower(h, int(mk), a) for h, mk in zip(hits, counts)]
        upper = [clopper_pearson_upper(h, int(mk), a) for h, mk in zip(hits, counts)]
        other = [1.0 - v for v in lower]
        radius = certify.mixture_radius(lower, wl, sl) if any(exact > r for r in asked) else 0.0
        for r in asked:
            if exact > r and not radius > r:
                return False
            if exact <= r and not (
                mixture_lower_bound_at(r, upper, wl, sl) < 0.5 and mixture_lower_bound_at(r, other, wl, sl) < 0.5
            ):
                return False
        return True

    if decidable_only:
        reachable = [r for r in reachable if decides(n, [r])]
        if not reachable:
            return 0
    elif not decides(n, reachable):
        return n
    lo, hi = 0, n  # decides(hi), not decides(lo) (m = 0 decides nothing)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decides(mid, reachable) else (mid, hi)
    return hi


def run_mixture(out_dir: Path, n: int, inputs: int | None, batch_size: int, fixed: bool = True) -> list[dict]:
    """The closed-form mixture study: for every setting of ``MIXTURES`` and every distance of
    ``MIX_DISTANCES`` (the first ``inputs``), a half-space at that distance from x = 0 in R^2 certified
    by ``Smooth.certify(radii=MIX_RADII)`` (the sequential mixture mode, max n; the Gaussian mode for the
    isotropic reference row) and, with ``fixed``, at fixed n; the one-look oracles of
    ``mixture_one_look_oracle`` from the exact p_k. Writes ``sequential_certify_mixture.csv`` / ``.md``
    (one row per setting) and ``sequential_certify_mixture_inputs.csv`` (one row per input) under
    ``out_dir``; one torch thread."""
    torch.set_num_threads(1)
    distances = MIX_DISTANCES[:inputs] if inputs is not None else MIX_DISTANCES
    x = torch.zeros(2, dtype=torch.float64)
    rows, per_input = [], []
    for name, (weights, sigmas) in MIXTURES.items():
        noise: certify.GaussianNoise = (
            certify.IsotropicGaussian(sigmas[0])
            if name.startswith("isotropic")
            else certify.MixtureOfGaussians(sigmas, weights, kind="mixture")
        )
        seq_samples, oracle_samples, strict_samples, seconds = [], [], [], []
        acc = {f"{mode}@{r:g}": 0 for mode in ("fixed", "seq") for r in MIX_RADII}
        undecided = 0
        for i, d in enumerate(distances):
            smooth = certify.Smooth(HalfSpace(d).eval(), noise, 2)
            gen = torch.Generator().manual_seed(SEED + i)
            cert = smooth.certify(x, N0, n, ALPHA, batch_size=batch_size, generator=gen, radii=MIX_RADII)
            p = halfspace_mixture_p(d, sigmas)
            oracle = N0 + mixture_one_look_oracle(p, weights, sigmas, MIX_RADII, ALPHA, n)
            strict = N0 + mixture_one_look_oracle(p, weights, sigmas, MIX_RADII, ALPHA, n, decidable_only=True)
            row = {
                "mixture": name,
                "distance": d,
                "seq_samples": cert.samples,
                "oracle_samples": oracle,
                "decidable_oracle_samples": strict,
                "seq_radius": cert.l2_radius,
                "seq_seconds": cert.seconds,
            }
            assert cert.decided is not None
            for r, dec in zip(MIX_RADII, cert.decided):
                row[f"seq@{r:g}"] = decision_text(dec)
                acc[f"seq@{r:g}"] += dec is True and cert.prediction == 0
                # every decision against the exact certificate (the distance): a wrong one is a failure
                if (dec is True and d <= r) or (dec is False and d >= r):
                    raise AssertionError(f"{name}, distance {d}: wrong decision at r = {r}")
            undecided += any(dec is None for dec in cert.decided)
            if fixed:
                f = smooth.certify(
                    x, N0, n, ALPHA, batch_size=batch_size, generator=torch.Generator().manual_seed(SEED + i)
                )
                row["fixed_radius"] = f.l2_radius
                for r in MIX_RADII:
                    acc[f"fixed@{r:g}"] += f.prediction == 0 and f.l2_radius >= r
            per_input.append(row)
            seq_samples.append(cert.samples)
            oracle_samples.append(oracle)
            strict_samples.append(strict)
            seconds.append(cert.seconds)
            print(f"{name} d={d:.4f}: seq {cert.samples} ({cert.decided}), oracle {oracle} / {strict}", flush=True)
        s, o = np.asarray(seq_samples, dtype=np.float64), np.asarray(oracle_samples, dtype=np.float64)
        o2 = np.asarray(strict_samples, dtype=np.float64)
        summary = {
            "mixture": name,
            "K": len(weights),
            "inputs": len(distances),
            "n_max": n,
            "alpha": ALPHA,
            **({k: v / len(distances) for k, v in acc.items() if fixed or k.startswith("seq")}),
            "seq_samples_mean": float(s.mean()),
            "seq_samples_median": float(np.median(s)),
            "seq_samples_p90": float(np.percentile(s, 90)),
            "seq_undecided": undecided / len(distances),
            "seq_seconds": float(np.mean(seconds)),
            "oracle_samples_mean": float(o.mean()),
            "oracle_samples_median": float(np.median(o)),
            "seq_over_oracle": float(s.mean() / o.mean()),
            "decidable_oracle_samples_mean": float(o2.mean()),
            "decidable_oracle_samples_median": float(np.median(o2)),
            "seq_over_decidable_oracle": float(s.mean() / o2.mean()),
        }
        rows.append(summary)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, table in (
        (out_dir / "sequential_certify_mixture.csv", rows),
        (out_dir / "sequential_certify_mixture_inputs.csv", per_input),
    ):
        keys: list[str] = []
        for r in table:
            keys += [k for k in r if k not in keys]
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(table)
    lines = [
        f"True mixtures, closed form: half-spaces at {len(distances)} distances in "
        f"[{min(distances):g}, {max(distances):g}] from x in R^2, n0 = {N0}, max n = {n:,}, alpha = {ALPHA:g}, "
        f"radii {', '.join(f'{r:g}' for r in MIX_RADII)} (l2; the exact certificate is the distance).",
        "",
        "| mixture | inputs | "
        + " | ".join(f"fixed / seq @{r:g}" if fixed else f"seq @{r:g}" for r in MIX_RADII)
        + " | samples mean: seq / oracle (ratio) | seq / decidable-only oracle (ratio) | median: seq / oracle "
        "/ decidable-only | seq p90 | undecided |",
        "|" + "---|" * (7 + len(MIX_RADII)),
    ]
    for r in rows:
        accs = " | ".join(
            (f"{100 * r[f'fixed@{x:g}']:.0f} / " if fixed else "") + f"{100 * r[f'seq@{x:g}']:.0f}" for x in MIX_RADII
        )
        lines.append(
            f"| {r['mixture']} | {r['inputs']} | {accs} | "
            f"{r['seq_samples_mean']:.0f} / {r['oracle_samples_mean']:.0f} ({r['seq_over_oracle']:.2f}) | "
            f"{r['seq_samples_mean']:.0f} / {r['decidable_oracle_samples_mean']:.0f} "
            f"({r['seq_over_decidable_oracle']:.2f}) | {r['seq_samples_median']:.0f} / "
            f"{r['oracle_samples_median']:.0f} / {r['decidable_oracle_samples_median']:.0f} | "
            f"{r['seq_samples_p90']:.0f} | {100 * r['seq_undecided']:.0f} % |"
        )
    lines += [
        "",
        "Oracle: told the component probabilities, one look with each component bounded at alpha / K "
        "(the fixed-n certificate's split), the smallest n at which the fixed-n mixture certificate decides "
        "every reachable radius, n if it cannot decide one at n (the Gaussian study's oracle); decidable-only: "
        "the same oracle asking only the radii it can decide at n (``mixture_one_look_oracle``). n0 included. "
        "Accuracies: fraction of inputs certified (fixed n: l2 radius >= r; seq: decided certified).",
    ]
    (out_dir / "sequential_certify_mixture.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


def main(argv=None) -> int:
    global OUT, N
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--dataset", nargs="+", default=["digits", "fashion-mnist"], choices=sorted(RADII))
    p.add_argument("--methods", nargs="+", default=["rs", "ddrs"], choices=["rs", "ddrs"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--batch-size", type=int, default=2_000)
    p.add_argument("--report", action="store_true", help="only write the CSV / table / plot from the logs")
    p.add_argument("--out", type=Path, default=OUT, help="log directory (smoke tests: a temporary one)")
    p.add_argument("--max-inputs", type=int, default=None, help="smoke tests: only the first inputs")
    p.add_argument("--n", type=int, default=N, help="smoke tests: a smaller maximum n")
    p.add_argument(
        "--mixture",
        action="store_true",
        help="only the closed-form true-mixture study (half-spaces; sequential vs the one-look oracle), "
        "written beside the log directory as sequential_certify_mixture.csv / .md",
    )
    p.add_argument("--no-fixed", action="store_true", help="--mixture: skip the fixed-n certificates")
    args = p.parse_args(argv)
    OUT, N = args.out, args.n
    if args.mixture:
        run_mixture(OUT.parent, N, args.max_inputs, args.batch_size, fixed=not args.no_fixed)
        return 0
    if args.max_inputs is not None:
        for d in list(SUBSETS):
            SUBSETS[d] = (SUBSETS[d][0], args.max_inputs)
    if not args.report:
        for d in args.dataset:
            run(d, args.methods, args.modes, args.batch_size)
    report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
