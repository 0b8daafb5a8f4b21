"""The memory's pair test on structured regions against the dense test it replaces, measured in one run.

For each structure (Kronecker C_c (x) C_h (x) C_w; low-rank plus diagonal, rank 8) and dimension, random
pairs are placed near tangency (the dense max of F at 0.7 or 1.4: half overlap, half are disjoint, and the
centre line proves neither, so every pair needs the pencil) and timed through the memory's call,
``max_disjoint_radius`` (the full radius iff the pair is disjoint, else the largest disjoint radius). Where the
dense test fits (d <= 3072) it runs on the same pairs, as ``to_ellipsoid()``, in the same run (at d = 3072 on the
first 3 pairs only); verdicts and radii are compared. Targets (acceptance 4 of the structured-noise work):
structured <= 1/100 of dense at d = 1024; <= 10 ms per pair at d = 3072 and <= 0.5 s at d = 150,528 on these 2
cores.

    python -m benchmarks.studies.pair_test_cost [--quick] [--results | --out-dir DIR]

Writes ``pair_test_cost.csv`` and ``pair_test_cost.png`` to ``runs/pair_test_cost/`` (``--results``:
``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.analysis.outputs import add_output_args, prepare, pyplot, write_csv
from certify.pairs import intersection_value, max_disjoint_radius
from certify.structured import KroneckerEllipsoid, LowRankEllipsoid

#: (dimension, image shape) measured; the dense test runs up to DENSE_UP_TO.
SIZES = [(256, (1, 16, 16)), (1024, (1, 32, 32)), (3072, (3, 32, 32)), (150528, (3, 224, 224))]
QUICK_SIZES = [(64, (1, 8, 8)), (256, (1, 16, 16))]
DENSE_UP_TO = 3072
#: the dense test at d = 3072 takes about half a minute per pair on one thread: it runs on the first 3 pairs only.
DENSE_PAIRS = {3072: 3}
RANK = 8


def _spd(rng: np.random.Generator, n: int, cond: float) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.geomspace(1.0, cond, n) ** 0.5) @ q.T


def _make(structure: str, rng: np.random.Generator, center: np.ndarray, shape: tuple[int, ...]):
    d = center.shape[0]
    if structure == "kronecker":  # condition number 1e4 over the three factors
        return KroneckerEllipsoid(center, [_spd(rng, n, 1e4 ** (1 / 3)) for n in shape], 1.0)
    u = np.linalg.qr(rng.normal(size=(d, RANK)))[0]
    return LowRankEllipsoid(center, np.geomspace(1e-4, 1.0, d)[rng.permutation(d)], u * 3.0, 1.0)


def _pair(structure: str, rng: np.random.Generator, shape: tuple[int, ...], target: float):
    d = int(np.prod(shape))
    c1 = rng.normal(size=d)
    e1, e2 = _make(structure, rng, c1, shape), _make(structure, rng, c1 + rng.normal(size=d), shape)
    f, _ = intersection_value(e1, e2)  # the structured spectrum's F at radius 1 (exact for these pencils)
    r = float(np.sqrt(f / target))
    return e1.with_radius(r), e2.with_radius(r)


def _time_pair(e1, e2) -> tuple[float, bool, float]:
    """Seconds of the memory's call (``max_disjoint_radius``: the full radius iff disjoint, else the largest disjoint
    one), the verdict it implies and the radius."""
    start = time.perf_counter()
    radius = max_disjoint_radius(e1, e2)
    return time.perf_counter() - start, radius < e1.radius, radius


def measure(sizes, pairs: int, seed: int = 0) -> list[dict]:
    rows = []
    for d, shape in sizes:
        for structure in ("kronecker", "lowrank"):
            rng = np.random.default_rng(seed)
            s_times, d_times, agree, compared = [], [], 0, 0
            for i in range(pairs):
                e1, e2 = _pair(structure, rng, shape, 0.7 if i % 2 else 1.4)
                t, verdict, radius = _time_pair(e1, e2)
                s_times.append(t)
                if d <= DENSE_UP_TO and i < DENSE_PAIRS.get(d, pairs):
                    a, b = e1.to_ellipsoid(), e2.to_ellipsoid()
                    td, verdict_d, radius_d = _time_pair(a, b)
                    d_times.append(td)
                    compared += 1
                    agree += verdict == verdict_d and abs(radius - radius_d) <= 1e-6 * max(1.0, radius_d)
            row = {
                "structure": structure,
                "d": d,
                "shape": "x".join(map(str, shape)),
                "pairs": pairs,
                "dense_pairs": len(d_times),
                "structured_ms_median": round(1000 * float(np.median(s_times)), 3),
                "structured_ms_max": round(1000 * float(np.max(s_times)), 3),
                "dense_ms_median": round(1000 * float(np.median(d_times)), 3) if d_times else "",
                "ratio_structured_over_dense": round(float(np.median(s_times[: len(d_times)]) / np.median(d_times)), 5)
                if d_times
                else "",
                "same_verdict_and_radius": f"{agree}/{compared}" if compared else "",
                "threads": 1,
                "load_average": round(os.getloadavg()[0], 2),
                "machine": f"{platform.machine()} x{os.cpu_count()}",
            }
            rows.append(row)
            print(
                f"{structure} d={d}: structured {row['structured_ms_median']} ms (max {row['structured_ms_max']}), "
                f"dense {row['dense_ms_median'] or '-'} ms, ratio {row['ratio_structured_over_dense'] or '-'}, "
                f"agree {row['same_verdict_and_radius'] or '-'}",
                flush=True,
            )
    return rows


def write(rows: list[dict], csv_path: Path, png_path: Path) -> None:
    write_csv(rows, csv_path)
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    for structure, marker in (("kronecker", "o"), ("lowrank", "s")):
        mine = [r for r in rows if r["structure"] == structure]
        ax.plot([r["d"] for r in mine], [r["structured_ms_median"] for r in mine], marker=marker, label=structure)
        dense = [r for r in mine if r["dense_ms_median"] != ""]
        ax.plot(
            [r["d"] for r in dense],
            [r["dense_ms_median"] for r in dense],
            marker=marker,
            ls="--",
            color="grey",
            label=f"dense test, {structure} pairs",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("ms per pair (max_disjoint_radius), median")
    ax.set_title("Memory pair test near tangency, 1 thread (same run)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--quick", action="store_true", help="two small sizes, 4 pairs (a smoke run)")
    p.add_argument("--pairs", type=int, default=20, help="pairs per structure and size (default 20)")
    add_output_args(p, "pair_test_cost")
    args = p.parse_args(argv)
    csv_path, png_path = prepare(
        "pair_test_cost", ["pair_test_cost.csv", "pair_test_cost.png"], args.results, args.out_dir
    )
    with threadpool_limits(1):
        rows = measure(QUICK_SIZES, 4) if args.quick else measure(SIZES, args.pairs)
    write(rows, csv_path, png_path)
    print(f"wrote {csv_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
