"""The seed papers' claims re-checked on committed comparison logs, with paired 95 % intervals.

Every claim is a statement about per-input statistics on the same test inputs (aligned on ``idx``):
certified accuracy at a radius (0/1 per input) or average certified radius (radius x correct per
input). For each claim this module computes the difference, a 95 % paired-bootstrap interval over the
test inputs (``benchmarks.analysis.paired``; exact McNemar p for accuracies) and a verdict:

- ``reproduced`` / ``not reproduced`` / ``not significant at this size`` for "a > b" claims (the
  interval excludes 0 upwards / downwards / contains 0);
- for "unchanged" claims (equivalence within a stated margin): ``reproduced`` when the interval lies
  inside (-margin, margin), ``not reproduced`` when it lies wholly outside, otherwise not significant;
- for rates (memory): a Clopper-Pearson 95 % interval against the stated threshold;
- ``not comparable`` when the logs' fingerprints show different budgets, seeds or inputs.

Families: ``chain`` (RDDRS > ANCER > DDRS > RS at proxy radius, RDDRS paper Fig. 2), ``l2``
(isotropic methods ahead in l2 radius), ``rotation`` (digits vs digits-rot7: ANCER loses, RDDRS does
not), ``mixture`` (mixtures vs the single Gaussian on the same model, MoG paper Figs. 1-2), ``memory``.
The intervals cover the variability over test inputs of one data set and base model, not the Monte
Carlo error of each certificate (Clopper-Pearson already bounds that conservatively). They are per
claim; ``p_holm`` adjusts the p-values for the number of claims in the table (Holm).

    python -m benchmarks.analysis.claims                 # tables into runs/claims/
    python -m benchmarks.analysis.claims --results       # regenerate the committed benchmarks/results/compare/claims.*
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ddrs_app.methods import REGISTRY, data_dependent_names, method_names
from scipy import stats

import certify

from .outputs import WouldOverwrite, check_writable
from .paired import VERDICTS, bootstrap, interval_verdict, paired_difference, per_input

NOT_COMPARABLE = "not comparable"
L2_LEADS = (("ddrs", "ancer"), ("ddrs", "rddrs"))  # the seed papers: isotropic noise ahead in l2 radius


def chain() -> tuple[tuple[str, str], ...]:
    """(a, b) pairs of the claims "a > b in proxy ACR": every registered method's ``beats``, the last
    registered first (the seed papers' chain RDDRS > ANCER > DDRS > RS, and any method added since)."""
    return tuple((name, other) for name, spec in reversed(REGISTRY.items()) for other in spec.beats)


def name_of(method: str) -> str:
    spec = REGISTRY.get(method)
    return spec.title if spec is not None else method


ROTATION_MARGIN = 0.10  # "unchanged": |change| < 10 % of the unrotated value
MEMORY_RARE = 0.10  # "rarely": fewer than 10 % of certificates changed
LOW_DIMENSIONAL = ("toy2d",)
# fingerprint fields two logs of one claim must share (inputs and model are checked per family)
SHARED_FIELDS = ("n0", "n", "alpha", "seed", "version", "sequential", "radii", "growth")
SAME_INPUTS_AND_MODEL = ("inputs_hash", "model_hash")
_NAME = re.compile(r"^(?P<label>.+)_sigma(?P<sigma>[0-9.eE+-]+)\.tsv$")
_MIXTURE = re.compile(r"^mog-mixture-K(?P<K>\d+)-\[(?P<lo>[0-9.eE+-]+),(?P<hi>[0-9.eE+-]+)\]$")


@dataclass(frozen=True)
class RunLog:
    """One committed log with its fingerprint sidecar (None for logs made before sidecars existed)."""

    label: str
    sigma: float
    path: Path
    log: certify.Log
    fingerprint: dict | None

    @property
    def planned(self) -> int | None:
        return None if self.fingerprint is None else self.fingerprint.get("inputs")


@dataclass(frozen=True)
class ClaimResult:
    """One claim's numbers: a - b with its interval, the p-value and the verdict."""

    family: str
    dataset: str
    claim: str
    statistic: str
    n: int
    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str
    note: str = ""
    p_holm: float = math.nan


def load_runs(directory: str | Path) -> dict[tuple[str, float], RunLog]:
    """(label, sigma) -> RunLog for every ``<label>_sigma<s>.tsv`` in ``directory/logs``."""
    logs = Path(directory) / "logs"
    if not logs.is_dir():
        raise ValueError(f"directory must hold a logs/ folder of a compare run, got {directory!s}")
    out = {}
    for path in sorted(logs.glob("*.tsv")):
        m = _NAME.match(path.name)
        if m is None:
            continue
        if path.stat().st_size == 0:  # a run that has not written its header yet
            continue
        side = Path(str(path) + ".fingerprint.json")
        fp = json.loads(side.read_text()) if side.is_file() else None
        log = certify.read_log(path)
        if len(log) == 0:
            continue
        key = (m["label"], float(m["sigma"]))
        out[key] = RunLog(key[0], key[1], path, log, fp)
    return out


def aligned(runs: Sequence[RunLog]) -> list[np.ndarray]:
    """Row positions of the inputs every log holds, in increasing idx; refuses duplicated idx."""
    common = None
    for r in runs:
        idx = r.log["idx"]
        if len(np.unique(idx)) != len(idx):
            raise ValueError(f"{r.path} holds some idx more than once")
        common = idx if common is None else np.intersect1d(common, idx)
    if common is None or len(common) == 0:
        raise ValueError(f"{', '.join(str(r.path) for r in runs)} share no idx")
    out = []
    for r in runs:
        pos = {int(v): i for i, v in enumerate(r.log["idx"])}
        out.append(np.array([pos[int(v)] for v in np.unique(common)]))
    return out


def comparability(runs: Sequence[RunLog], also: Sequence[str] = (), require: bool = False) -> tuple[bool, str]:
    """(comparable, note): fingerprints must agree on SHARED_FIELDS and ``also``; a missing fingerprint
    is noted (refused if ``require``: logs from two out-dirs need them), and so are partial logs."""
    notes = []
    fps = [r.fingerprint for r in runs]
    if any(fp is None for fp in fps):
        stale = ", ".join(f"{r.path.parent.parent.name}/{r.path.name}" for r in runs if r.fingerprint is None)
        notes.append(f"no fingerprint (older run): {stale}")
        if require:
            return False, "; ".join(notes)
    present = [fp for fp in fps if fp is not None]
    differ = [k for k in (*SHARED_FIELDS, *also) if len({json.dumps(fp.get(k), sort_keys=True) for fp in present}) > 1]
    for r in runs:
        if r.planned is not None and len(r.log) < r.planned:
            notes.append(f"partial: {r.path.parent.parent.name}/{r.label} {len(r.log)} of {r.planned} inputs")
    if differ:
        return False, f"fingerprints differ in {', '.join(differ)}" + ("; " + "; ".join(notes) if notes else "")
    return True, "; ".join(notes)


def _statistic(column: str, radius: float | None) -> str:
    kind = {"proxy_radius": "proxy", "radius": "l2"}.get(column, column)
    return f"ACR ({kind})" if radius is None else f"cert. acc. @ {kind} {radius:g}"


def greater(
    family: str,
    dataset: str,
    claim: str,
    a: RunLog,
    b: RunLog,
    column: str,
    radius: float | None,
    also: Sequence[str] = (),
    require: bool = False,
) -> ClaimResult:
    """The claim "a > b" in certified accuracy at ``radius`` (McNemar p) or in ACR (``radius`` None)."""
    ok, note = comparability((a, b), also, require)
    d = paired_difference(a.log, b.log, column=column, radius=radius)
    return ClaimResult(
        family,
        dataset,
        claim,
        _statistic(column, radius),
        d.n_inputs,
        d.a,
        d.b,
        d.difference,
        d.low,
        d.high,
        d.p_value,
        d.verdict if ok else NOT_COMPARABLE,
        note,
    )


def equivalence_verdict(low: float, high: float, margin: float) -> str:
    """ "unchanged within margin": the interval inside (-margin, margin) / wholly outside it / neither."""
    if -margin < low and high < margin:
        return VERDICTS[0]
    if low >= margin or high <= -margin:
        return VERDICTS[1]
    return VERDICTS[2]


def unchanged(
    family: str, dataset: str, claim: str, a: RunLog, b: RunLog, column: str, margin: float, also: Sequence[str] = ()
) -> ClaimResult:
    """The claim "ACR of b equals that of a within ``margin`` x ACR(a)" (a = reference; two out-dirs,
    so both fingerprints are required)."""
    ok, note = comparability((a, b), also, require=True)
    ia, ib = aligned((a, b))
    sa, sb = per_input(a.log, column, None)[ia], per_input(b.log, column, None)[ib]
    width = margin * float(sa.mean())
    low, high, p = bootstrap(sb - sa)
    verdict = equivalence_verdict(low, high, width) if ok else NOT_COMPARABLE
    note = f"margin +-{width:.3f}" + (f"; {note}" if note else "")
    return ClaimResult(
        family,
        dataset,
        claim,
        _statistic(column, None),
        len(sa),
        float(sb.mean()),
        float(sa.mean()),
        float((sb - sa).mean()),
        low,
        high,
        p,
        verdict,
        note,
    )


def loses_more(
    family: str,
    dataset: str,
    claim: str,
    x: RunLog,
    x_rot: RunLog,
    y: RunLog,
    y_rot: RunLog,
    column: str,
    also: Sequence[str] = (),
) -> ClaimResult:
    """The claim "x loses more than y": (x - x_rot) - (y - y_rot) > 0 in ACR (difference in differences)."""
    checks = [comparability((x, x_rot), also, True), comparability((y, y_rot), also, True), comparability((x, y))]
    ok = all(c[0] for c in checks)
    note = "; ".join(dict.fromkeys(part for c in checks for part in c[1].split("; ") if part))
    pos = aligned((x, x_rot, y, y_rot))
    vals = [per_input(r.log, column, None)[i] for r, i in zip((x, x_rot, y, y_rot), pos)]
    loss_x, loss_y = vals[0] - vals[1], vals[2] - vals[3]
    low, high, p = bootstrap(loss_x - loss_y)
    verdict = interval_verdict(low, high) if ok else NOT_COMPARABLE
    return ClaimResult(
        family,
        dataset,
        claim,
        "loss of " + _statistic(column, None),
        len(loss_x),
        float(loss_x.mean()),
        float(loss_y.mean()),
        float((loss_x - loss_y).mean()),
        low,
        high,
        p,
        verdict,
        note,
    )


def rate_claim(family: str, dataset: str, claim: str, run: RunLog, threshold: float, below: bool) -> ClaimResult:
    """Fraction of inputs whose certificate the memory changed, with a Clopper-Pearson 95 % interval,
    against ``threshold`` (claim "rate < threshold" if ``below``, else "rate > threshold")."""
    _, note = comparability((run,))
    actions = run.log["memory_action"] if "memory_action" in run.log.columns else None
    if actions is None:
        raise ValueError(f"{run.path} has no memory_action column")
    k, m = int(sum(a not in ("-", "kept") for a in actions)), len(actions)
    ci = stats.binomtest(k, m).proportion_ci(0.95, method="exact")
    low, high = float(ci.low), float(ci.high)
    if below:
        verdict = VERDICTS[0] if high < threshold else VERDICTS[1] if low >= threshold else VERDICTS[2]
    else:
        verdict = VERDICTS[0] if low > threshold else VERDICTS[1] if high <= threshold else VERDICTS[2]
    return ClaimResult(
        family,
        dataset,
        claim,
        "fraction of certificates changed",
        m,
        k / m,
        threshold,
        k / m - threshold,
        low - threshold,
        high - threshold,
        float(stats.binomtest(k, m, threshold).pvalue),
        verdict,
        note,
    )


def table_radii(dataset: str) -> tuple[float, ...]:
    """The radii > 0 of the dataset's compare table (``compare.L2_RADII``)."""
    from ddrs_app.compare import L2_RADII

    base = dataset.split("-rot")[0]
    return tuple(r for r in L2_RADII.get(base, L2_RADII["digits"]) if r > 0)


def sigmas_of(runs: dict, methods: Sequence[str]) -> list[float]:
    return sorted({s for (label, s) in runs if label in methods})


def chain_claims(dataset: str, runs: dict) -> Iterator[ClaimResult]:
    """RDDRS > ANCER > DDRS > RS at proxy radius (ACR and certified accuracy at the table's radii), and every
    other registered method's ``beats``; the isotropic methods ahead in l2 radius."""
    for s in sigmas_of(runs, method_names()):
        for hi, lo in chain():
            if (hi, s) in runs and (lo, s) in runs:
                claim = f"{name_of(hi)} > {name_of(lo)}, sigma {s:g}"
                a, b = runs[(hi, s)], runs[(lo, s)]
                for r in (None, *table_radii(dataset)):
                    yield greater("chain", dataset, claim, a, b, "proxy_radius", r, also=SAME_INPUTS_AND_MODEL)
        for hi, lo in L2_LEADS:
            if (hi, s) in runs and (lo, s) in runs:
                claim = f"{name_of(hi)} > {name_of(lo)} in l2, sigma {s:g}"
                yield greater("l2", dataset, claim, runs[(hi, s)], runs[(lo, s)], "radius", None, SAME_INPUTS_AND_MODEL)


def rotation_claims(dataset: str, runs: dict, rotated: str, runs_rot: dict) -> Iterator[ClaimResult]:
    """ANCER loses proxy ACR under rotation; RDDRS loses less; RDDRS, RS, DDRS unchanged within 10 %."""
    name = f"{dataset} vs {rotated}"
    same = ("method", "options", "ddrs_options", "sigma", "inputs")
    for s in sigmas_of(runs, method_names()):
        have = {m for m in method_names() if (m, s) in runs and (m, s) in runs_rot}
        col = "proxy_radius"
        if "ancer" in have:
            a, ar = runs[("ancer", s)], runs_rot[("ancer", s)]
            yield greater("rotation", name, f"ANCER loses under rotation, sigma {s:g}", a, ar, col, None, same, True)
            if "rddrs" in have:
                r, rr = runs[("rddrs", s)], runs_rot[("rddrs", s)]
                claim = f"RDDRS loses less than ANCER under rotation, sigma {s:g}"
                yield loses_more("rotation", name, claim, a, ar, r, rr, col, same)
        for m in ("rddrs", "rs", "ddrs"):
            if m in have:
                what = "" if m == "rddrs" else " (control)"
                claim = f"{name_of(m)} unchanged under rotation (within 10 %){what}, sigma {s:g}"
                yield unchanged("rotation", name, claim, runs[(m, s)], runs_rot[(m, s)], col, ROTATION_MARGIN, same)


def mixture_claims(dataset: str, runs: dict) -> Iterator[ClaimResult]:
    """Mixtures (K > 1) beat the single Gaussian at the range's top sigma (K = 1, same model) at l2
    radii up to that sigma, and lose to it at the table's largest radius."""
    groups: dict[tuple[float, float], dict[int, RunLog]] = {}
    for (label, _), run in runs.items():
        m = _MIXTURE.match(label)
        if m is not None:
            groups.setdefault((float(m["lo"]), float(m["hi"])), {})[int(m["K"])] = run
    radii = table_radii(dataset)
    for (lo, hi), by_k in sorted(groups.items()):
        if 1 not in by_k:
            continue
        single = by_k[1]
        for K in sorted(k for k in by_k if k > 1):
            mix = by_k[K]
            rng = f"[{lo:g}, {hi:g}]"
            for r in (r for r in radii if r <= hi):
                claim = f"mixture K={K} {rng} > single sigma {hi:g}"
                yield greater("mixture", dataset, claim, mix, single, "radius", r, SAME_INPUTS_AND_MODEL)
            claim = f"single sigma {hi:g} > mixture K={K} {rng} (cost at the largest radius)"
            yield greater("mixture", dataset, claim, single, mix, "radius", radii[-1], SAME_INPUTS_AND_MODEL)


def memory_claims(dataset: str, runs: dict) -> Iterator[ClaimResult]:
    """High dimension: the memory changes fewer than 10 % of certificates; d = 2: it changes some."""
    low_dim = dataset.split("-rot")[0] in LOW_DIMENSIONAL
    for s in sigmas_of(runs, method_names()):
        for m in data_dependent_names():
            run = runs.get((m, s))
            if run is None or "memory_action" not in run.log.columns:
                continue
            if low_dim:
                claim = f"memory changes some {name_of(m)} certificates in d = 2, sigma {s:g}"
                yield rate_claim("memory", dataset, claim, run, 0.0, below=False)
            else:
                claim = f"memory changes < 10 % of {name_of(m)} certificates, sigma {s:g}"
                yield rate_claim("memory", dataset, claim, run, MEMORY_RARE, below=True)


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def evaluate(root: str | Path, datasets: Sequence[str] | None = None) -> list[ClaimResult]:
    """Every claim on the compare out-dirs under ``root`` (default: all of them)."""
    root = Path(root)
    found = sorted(p.parent.name for p in root.glob("*/logs"))
    if datasets is not None:
        missing = [d for d in datasets if d not in found]
        if missing:
            raise ValueError(f"datasets {missing} have no logs/ under {root} (found {found})")
        found = list(datasets)
    runs = {d: load_runs(root / d) for d in found}
    results: list[ClaimResult] = []
    for d in found:
        results += chain_claims(d, runs[d])
    for d in found:
        for rot in (x for x in found if x.startswith(d + "-rot")):
            results += rotation_claims(d, runs[d], rot, runs[rot])
    for d in found:
        results += mixture_claims(d, runs[d])
    for d in found:
        results += memory_claims(d, runs[d])
    adjusted = holm([r.p_value for r in results])
    return [ClaimResult(**{**asdict(r), "p_holm": float(p)}) for r, p in zip(results, adjusted)]


def provenance(root: Path, datasets: Sequence[str]) -> list[str]:
    """One line per data set: inputs, sample budget and RDDRS options, from its fingerprints."""
    lines = []
    for d in datasets:
        runs = load_runs(root / d)
        fps = [r.fingerprint for r in runs.values() if r.fingerprint is not None]
        counts = sorted({len(r.log) for r in runs.values()})
        if not fps:
            lines.append(f"- `{d}`: {counts} inputs per log; no fingerprints (logs made by an older run)")
            continue
        budget = {k: fps[0].get(k) for k in ("n0", "n", "alpha", "seed") if k in fps[0]}
        seq = {k: fps[0][k] for k in ("sequential", "radii") if k in fps[0]}
        rddrs_fps = [r.fingerprint for r in runs.values() if r.label == "rddrs" and r.fingerprint is not None]
        rddrs = rddrs_fps[0].get("options") if rddrs_fps else None
        lines.append(
            f"- `{d}`: {'/'.join(map(str, counts))} inputs per log, {json.dumps(budget)}"
            + (f", sequential {json.dumps(seq)}" if seq else "")
            + (f", RDDRS options {json.dumps(rddrs, sort_keys=True)}" if rddrs is not None else "")
            + (f"; {len(runs) - len(fps)} logs without fingerprint" if len(fps) < len(runs) else "")
        )
    return lines


def _fmt(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v:.3g}"


def write_tables(results: Sequence[ClaimResult], out_dir: str | Path, head: str) -> tuple[Path, Path]:
    """claims.csv (one row per claim and statistic) and claims.md (counts, then one table per family)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out_dir / "claims.csv", out_dir / "claims.md"
    fields = list(ClaimResult.__dataclass_fields__)
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in results:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in asdict(r).items()})
    verdicts = (*VERDICTS, NOT_COMPARABLE)
    lines = ["```", head.rstrip("\n"), "```", "", "## Verdicts", ""]
    lines += ["| family | data | " + " | ".join(verdicts) + " |", "|---|---|" + "---|" * len(verdicts)]
    keys = list(dict.fromkeys((r.family, r.dataset) for r in results))
    for fam, d in keys:
        counts = [sum(r.verdict == v for r in results if (r.family, r.dataset) == (fam, d)) for v in verdicts]
        lines.append(f"| {fam} | {d} | " + " | ".join(map(str, counts)) + " |")
    for fam in dict.fromkeys(r.family for r in results):
        lines += ["", f"## {fam}", ""]
        lines += [
            "| data | claim (a > b) | statistic | n | a | b | a - b [95 % CI] | p | p (Holm) | verdict | note |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in results if r.family == fam):
            lines.append(
                f"| {r.dataset} | {r.claim} | {r.statistic} | {r.n} | {r.a:.3f} | {r.b:.3f} | "
                f"{r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}] | {_fmt(r.p_value)} | "
                f"{_fmt(r.p_holm)} | {r.verdict} | {r.note} |"
            )
    lines += ["", LEGEND]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


LEGEND = (
    "Each row: the claim a > b on the inputs both logs hold (aligned on idx), a and b the two per-input means "
    "(certified accuracy, or ACR = radius x correct), a - b with its 95 % paired-bootstrap percentile interval "
    "(10,000 resamples, seed 0), p the exact McNemar p (accuracies) or the two-sided bootstrap p (ACR), "
    "p (Holm) adjusted for every claim in this file. Verdict from the interval: reproduced (above 0), not "
    "reproduced (below 0), not significant at this size (contains 0); 'unchanged' claims: a = rotated, "
    "b = unrotated, reproduced when the interval lies inside +-10 % of the unrotated ACR (the note gives the "
    "margin; RS and DDRS are controls: their noise is isotropic, so only the model retrained on rotated data "
    "differs); 'loses less' claims: a and b are the two methods' losses; memory: a = fraction changed, b = "
    "the threshold, interval Clopper-Pearson. The interval covers the variability over test inputs (one "
    "data set, one base model per sigma), not the Monte Carlo error of each certificate."
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.analysis.claims",
        allow_abbrev=False,
        description="the seed papers' claims on committed compare logs: paired 95 % intervals and verdicts",
    )
    p.add_argument("--root", default="benchmarks/results/compare", help="folder of compare out-dirs")
    p.add_argument("--datasets", nargs="+", default=None, help="out-dir names under --root (default: all)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out-dir", default=None, help="where claims.csv / claims.md go (default runs/claims/)")
    where.add_argument(
        "--results", action="store_true", help="write into --root (overwrites the committed claims tables)"
    )
    args = p.parse_args(argv)
    root = Path(args.root)
    if not root.is_dir():
        p.error(f"--root: no such directory {args.root!r}")
    out_dir = root if args.results else Path(args.out_dir or "runs/claims")
    try:  # a committed table is rewritten only with --results
        check_writable([out_dir / "claims.csv", out_dir / "claims.md"], args.results)
    except WouldOverwrite as err:
        print(f"python -m benchmarks.analysis.claims: {err.args[0]}", file=sys.stderr)
        return 2
    try:
        results = evaluate(root, args.datasets)
    except ValueError as err:
        p.error(str(err))
    datasets = list(dict.fromkeys(args.datasets or sorted(q.parent.name for q in root.glob("*/logs"))))
    head = (
        f"command: python -m benchmarks.analysis.claims {' '.join(argv if argv is not None else sys.argv[1:])}\n"
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S')}\nlogs:\n" + "\n".join(provenance(root, datasets)) + "\n"
    )
    csv_path, md_path = write_tables(results, out_dir, head)
    counts = {v: sum(r.verdict == v for r in results) for v in (*VERDICTS, NOT_COMPARABLE)}
    print(f"{len(results)} claims: {counts}; wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
