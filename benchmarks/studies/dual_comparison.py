"""The dual certifier against RS at each single sigma, their per-radius best, and memory-based DDRS.

Reads one comparison's logs (``ddrs compare --methods rs ddrs dual ...`` writes them into
``<out-dir>/<data set>/logs``): ``rs_sigma<s>.tsv`` and ``ddrs_sigma<s>.tsv`` for every sigma of the dual's
dictionary and the dual's ``dual-K<K>-[lo,hi]_sigma<hi>.tsv``. At each l2 radius of the table, certified
accuracy (correct and l2 radius >= r, the ``radius`` column; inscribed ball) of:

* the dual (one memory-free certifier, sound for the deployed classifier: ``certify.dual``);
* RS at each sigma, and the per-radius best RS (the sigma that certifies most at that radius, chosen on these
  very test inputs: an oracle no single certifier is, so "within its interval" is the target);
* DDRS at each sigma (memory-based: sound only for a classifier that keeps the memory of its queries) and its
  per-radius best;

with paired 95 % intervals (``benchmarks.analysis.paired``) of dual - best RS and dual - best DDRS, and the
cost per image: mean samples (selector + classifier for the dual) and the dual's one-off cost (labelling and
training the selector, from its cache).

    python -m benchmarks.studies.dual_comparison benchmarks/results/compare/digits --results
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np

import certify
from benchmarks.analysis.outputs import add_output_args, check_writable, output_dir
from benchmarks.analysis.paired import paired_difference

RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
#: the isotropic dual at its default selector noise (the largest sigma): the reference every other dual is held to
REFERENCE = re.compile(r"dual-K\d+-\[[^\]]*\]_sigma[^_]*\.tsv")


def find_logs(folder: Path) -> tuple[Path, dict[float, Path], dict[float, Path]]:
    """(dual log, RS logs by sigma, DDRS logs by sigma) of the dual's dictionary in ``folder``/logs."""
    logs = Path(folder) / "logs"
    duals = sorted(p for p in logs.glob("dual-K*_sigma*.tsv") if REFERENCE.fullmatch(p.name))
    if len(duals) != 1:
        raise SystemExit(f"error: {logs} must hold exactly one dual log, found {[p.name for p in duals]}")
    dual = duals[0]
    fp = json.loads(Path(str(dual) + ".fingerprint.json").read_text())
    sigmas = [float(s) for s in fp["sigmas"]]
    rs = {s: logs / f"rs_sigma{s:g}.tsv" for s in sigmas}
    dd = {s: logs / f"ddrs_sigma{s:g}.tsv" for s in sigmas}
    missing = [p.name for p in [*rs.values(), *dd.values()] if not p.is_file()]
    if missing:
        raise SystemExit(f"error: {logs} lacks {missing} (run ddrs compare --methods rs ddrs dual)")
    return dual, rs, dd


def variant_logs(folder: Path) -> list[Path]:
    """The other duals in ``folder``/logs, each held against the isotropic one: anisotropic dictionaries (``ddrs
    compare --dual-dictionary ancer / rddrs``) and other selector noises (``--dual-sigma-e``, labels ``...-e<s>``)."""
    logs = Path(folder) / "logs"
    return sorted(p for p in logs.glob("dual-*_sigma*.tsv") if not REFERENCE.fullmatch(p.name))


def compare_dictionaries(iso: certify.Log, aniso: certify.Log, radii=RADII) -> list[dict]:
    """Per radius: certified accuracy of the anisotropic and the isotropic dual at l2 radius (``radius``) and at
    proxy radius (``proxy_radius``, the capped ellipsoid's; the isotropic dual's equals its l2 radius), with paired
    95 % intervals of anisotropic - isotropic; then one row of proxy ACR (radius None)."""
    rows = []
    for r in [*radii, None]:
        row: dict = {"radius": "ACR" if r is None else r}
        for column in ("radius", "proxy_radius"):
            d = paired_difference(aniso, iso, column=column, radius=r)
            key = "l2" if column == "radius" else "proxy"
            row |= {f"{key}_aniso": d.a, f"{key}_iso": d.b, f"{key}_diff": d.difference}
            row |= {f"{key}_low": d.low, f"{key}_high": d.high}
        rows.append(row)
    return rows


def dictionaries_markdown(rows: list[dict], aniso: certify.Log, name: str) -> str:
    selected = np.asarray(aniso["selected"])
    counts = {int(k): int(np.sum(selected == k)) for k in sorted(set(selected.tolist()))}
    binds = float(
        np.mean((aniso["predict"] >= 0) & (np.asarray(aniso["radius"]) >= np.asarray(aniso["selector_radius"])))
    )
    out = [
        f"{name} against the isotropic dual (its selector's noise at the largest sigma), the same inputs: certified "
        "accuracy at l2 radius (inscribed ball) and at proxy radius (the capped ellipsoid's volume radius), this dual "
        "('aniso') - the isotropic one ('iso') with paired 95 % intervals; last row: ACR.",
        "",
        "| radius | l2: aniso | l2: iso | l2: diff [95 % CI] | proxy: aniso | proxy: iso | proxy: diff [95 % CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        label = row["radius"] if isinstance(row["radius"], str) else f"{row['radius']:g}"
        cells = [label]
        for key in ("l2", "proxy"):
            cells += [f"{row[f'{key}_aniso']:.3f}", f"{row[f'{key}_iso']:.3f}"]
            cells.append(f"{row[f'{key}_diff']:+.3f} [{row[f'{key}_low']:+.3f}, {row[f'{key}_high']:+.3f}]")
        out.append("| " + " | ".join(cells) + " |")
    out += ["", f"Entries selected: {counts}; the selector's ball bounds the l2 radius on {binds:.0%} of inputs."]
    return "\n".join(out) + "\n"


def accuracy(log: certify.Log, r: float) -> float:
    return float(np.mean((log["correct"] == 1) & (log["radius"] >= r)))


def samples(log: certify.Log, path: Path) -> float:
    """Mean draws per input: the sequential log's ``samples``, else n0 + n per stage (the dual's selector stage
    from its own column)."""
    if "samples" in log.columns:
        return float(np.mean(log["samples"]))
    fp = json.loads(Path(str(path) + ".fingerprint.json").read_text())
    stage = fp["n0"] + fp["n"]
    if "selector_samples" in log.columns:
        return float(np.mean(np.asarray(log["selector_samples"]) + stage * (np.asarray(log["selected"]) >= 0)))
    return float(stage)


def one_off_cost(dual_path: Path, model_dir=None) -> dict:
    """The selector's one-off cost (labelling and training seconds, labels per entry) from its cache
    (``ddrs_app.dual.load_or_train_dual``, which trains it again if the cache lacks it)."""
    import torch
    from ddrs_app.dual import SelectorRecipe, load_or_train_dual

    fp = json.loads(Path(str(dual_path) + ".fingerprint.json").read_text())
    torch.set_num_threads(int(fp["threads"]))  # the models' cache key holds the thread count they were trained at
    _, info = load_or_train_dual(
        fp["dataset"], tuple(fp["sigmas"]), SelectorRecipe.from_options(fp["options"]), seed=fp["seed"],
        model_dir=model_dir,
        progress=False,
    )  # fmt: skip
    return {
        "selector_label_seconds": info["label_seconds"],
        "selector_train_seconds": info["train_seconds"],
        "selector_label_counts": info["label_counts"],
        "selector_accuracy_on_labels": info["selector_accuracy"],
    }


def compare(folder: Path, radii=RADII, model_dir=None) -> tuple[list[dict], dict]:
    """The table's rows (one per radius) and the cost summary."""
    dual_path, rs_paths, dd_paths = find_logs(folder)
    dual = certify.read_log(dual_path)
    rs = {s: certify.read_log(p) for s, p in rs_paths.items()}
    dd = {s: certify.read_log(p) for s, p in dd_paths.items()}
    rows = []
    for r in radii:
        best_rs = max(rs, key=lambda s: (accuracy(rs[s], r), -s))
        best_dd = max(dd, key=lambda s: (accuracy(dd[s], r), -s))
        vs_rs = paired_difference(dual, rs[best_rs], radius=r)
        vs_dd = paired_difference(dual, dd[best_dd], radius=r)
        row = {"radius": r, "dual": accuracy(dual, r)}
        row |= {f"rs@{s:g}": accuracy(log, r) for s, log in rs.items()}
        row |= {f"ddrs@{s:g}": accuracy(log, r) for s, log in dd.items()}
        row |= {
            "best_rs_sigma": best_rs,
            "dual-best_rs": vs_rs.difference,
            "dual-best_rs_low": vs_rs.low,
            "dual-best_rs_high": vs_rs.high,
            "dual-best_rs_p": vs_rs.p_value,
            "best_ddrs_sigma": best_dd,
            "dual-best_ddrs": vs_dd.difference,
            "dual-best_ddrs_low": vs_dd.low,
            "dual-best_ddrs_high": vs_dd.high,
            "dual-best_ddrs_p": vs_dd.p_value,
        }
        rows.append(row)
    selected = np.asarray(dual["selected"])
    cost = {
        "inputs": len(dual),
        "dual_samples_mean": samples(dual, dual_path),
        "dual_selector_samples_mean": float(np.mean(dual["selector_samples"])),
        "selected_counts": {int(k): int(np.sum(selected == k)) for k in sorted(set(selected.tolist()))},
        "binding_selector": float(
            np.mean((dual["predict"] >= 0) & (np.asarray(dual["radius"]) >= np.asarray(dual["selector_radius"])))
        ),
        "dual_seconds_mean": float(np.mean(dual["time"])),
    }
    cost |= {f"rs@{s:g}_samples_mean": samples(log, rs_paths[s]) for s, log in rs.items()}
    cost |= one_off_cost(dual_path, model_dir)
    return rows, cost


def markdown(rows: list[dict], cost: dict, subset: str) -> str:
    sig = [k for k in rows[0] if k.startswith("rs@")]
    dds = [k for k in rows[0] if k.startswith("ddrs@")]
    head = ["l2 radius", "Dual", *[f"RS {k[3:]}" for k in sig], *[f"DDRS {k[5:]}" for k in dds]]
    head += ["Dual - best RS [95 % CI]", "Dual - best DDRS [95 % CI]"]
    out = [f"Inputs: {subset}. Certified accuracy at l2 radius (inscribed ball, the headline).", ""]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row['radius']:g}", f"{row['dual']:.2f}"]
        cells += [f"{row[k]:.2f}" for k in sig] + [f"{row[k]:.2f}" for k in dds]
        cells.append(
            f"{row['dual-best_rs']:+.2f} [{row['dual-best_rs_low']:+.2f}, {row['dual-best_rs_high']:+.2f}]"
            f" (vs {row['best_rs_sigma']:g})"
        )
        cells.append(
            f"{row['dual-best_ddrs']:+.2f} [{row['dual-best_ddrs_low']:+.2f}, {row['dual-best_ddrs_high']:+.2f}]"
            f" (vs {row['best_ddrs_sigma']:g})"
        )
        out.append("| " + " | ".join(cells) + " |")
    out += [
        "",
        f"Cost per image: dual {cost['dual_samples_mean']:.0f} samples (selector "
        f"{cost['dual_selector_samples_mean']:.0f}), RS "
        + ", ".join(f"{k.split('_')[0][3:]}: {v:.0f}" for k, v in cost.items() if k.startswith("rs@"))
        + f"; entries selected {cost['selected_counts']}; the selector's ball bounds the radius on "
        f"{cost['binding_selector']:.0%} of inputs. One-off: labelling {cost['selector_label_seconds']:.0f} s "
        f"(labels per entry {cost['selector_label_counts']}), training {cost['selector_train_seconds']:.0f} s.",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.dual_comparison", allow_abbrev=False)
    p.add_argument("folder", type=Path, help="a comparison's data-set folder (holds logs/ and summary.csv)")
    p.add_argument("--subset", default=None, help="how the inputs were chosen (default: from the summary)")
    p.add_argument("--model-dir", default=None, help="where the models and the selector are cached")
    add_output_args(p, "dual_comparison")
    args = p.parse_args(argv)
    name = args.folder.name
    out = output_dir("dual_comparison", args.results, args.out_dir)
    paths = [out / f"dual_comparison_{name}.csv", out / f"dual_comparison_{name}.md"]
    check_writable(paths, args.results)
    rows, cost = compare(args.folder, model_dir=args.model_dir)
    subset = args.subset
    summary = args.folder / "summary.csv"
    if subset is None and summary.is_file():
        with open(summary, newline="") as f:
            first = next(csv.DictReader(f))
        subset = f"{first['subset']}, {cost['inputs']} inputs"
    subset = subset or f"{cost['inputs']} test inputs"
    out.mkdir(parents=True, exist_ok=True)
    with open(paths[0], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = markdown(rows, cost, subset) + "\n```\n" + json.dumps(cost, indent=1) + "\n```\n"
    iso = certify.read_log(find_logs(args.folder)[0])
    for path in variant_logs(args.folder):
        aniso = certify.read_log(path)
        label = path.name.split("_sigma")[0]
        table = compare_dictionaries(iso, aniso)
        with open(out / f"dual_dictionaries_{name}_{label}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
        text += "\n" + dictionaries_markdown(table, aniso, label)
    paths[1].write_text(text)
    print(paths[1].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
