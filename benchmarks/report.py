"""``ddrs report``: certified-accuracy tables and a plot for any set of Cohen-format logs.

Like Cohen et al.'s ``analyze.py``: a log is any tab-separated file whose header starts with
``idx label predict radius correct`` (theirs, or ours, which add columns). Certified accuracy at r is
the fraction of rows with ``correct == 1`` and ``radius >= r``. ``write_report`` writes, into ``out_dir``:

* ``report.md``: Cohen's Markdown table (byte for byte what their ``markdown_table_certified_accuracy``
  prints for the same logs, legends and radii), then a summary table (rows, abstention rate, average
  certified radius, certified accuracy at r = 0);
* ``report.csv``: one row per log: label, path, rows, abstention, ACR, accuracy at every radius;
* ``certified_accuracy.png``: certified accuracy against the l2 radius, one line per log.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import certify

#: Cohen et al.'s CIFAR-10 radii (their ImageNet table uses 0.5 .. 3.0).
DEFAULT_RADII = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)


def default_label(path: str | os.PathLike) -> str:
    """``&sigma; = S`` for Cohen's ``sigma_S`` file names (their legends), else the file name."""
    name = Path(path).name
    match = re.fullmatch(r"sigma_([0-9.]+)", name)
    return f"&sigma; = {match.group(1)}" if match else name


def read_logs(paths: Sequence[str | os.PathLike], labels: Sequence[str] | None = None) -> dict[str, certify.Log]:
    """Read every log; labels default to :func:`default_label`, made unique by the parent folders."""
    if not paths:
        raise ValueError("LOG: give at least one log file")
    if labels is not None and len(labels) != len(paths):
        raise ValueError(f"--labels: expected one label per log ({len(paths)}), got {len(labels)}")
    logs: dict[str, certify.Log] = {}
    names = list(labels) if labels is not None else [default_label(p) for p in paths]
    if labels is None and len(set(names)) < len(names):
        names = [f"{Path(p).parent.name}/{n}" for p, n in zip(paths, names)]
    if len(set(names)) < len(names):
        raise ValueError(f"--labels: labels must be unique, got {names}")
    for path, name in zip(paths, names):
        if not Path(path).is_file():
            raise FileNotFoundError(f"LOG: {path} is not a file")
        log = certify.read_log(path)
        if len(log) == 0:
            raise ValueError(f"LOG: {path} has a header but no rows")
        logs[name] = log
    return logs


def summary_rows(logs: dict[str, certify.Log], radii: Sequence[float]) -> list[dict]:
    """One dict per log: label, path, rows, abstention, ACR and certified accuracy at each radius."""
    rows = []
    for label, log in logs.items():
        acc = certify.certified_accuracy(log, radii)
        row = {
            "label": label,
            "path": log.path,
            "rows": len(log),
            "abstention": certify.abstention_rate(log),
            "acr": certify.average_certified_radius(log),
            "accuracy_r0": float(certify.certified_accuracy(log, [0.0])[0]),
        }
        row.update({f"r={r:g}": float(a) for r, a in zip(radii, acc)})
        rows.append(row)
    return rows


def markdown_report(logs: dict[str, certify.Log], radii: Sequence[float]) -> str:
    """Cohen's table, then a summary table."""
    lines = [
        "# Certified accuracy",
        "",
        certify.cohen_markdown_table(logs, radii),
        "",
        "| log | rows | abstention | ACR | accuracy at r = 0 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in summary_rows(logs, radii):
        lines.append(
            f"| {row['label']} | {row['rows']} | {row['abstention']:.3f} | {row['acr']:.3f} "
            f"| {row['accuracy_r0']:.3f} |"
        )
    lines += [
        "",
        "Certified accuracy at r: fraction of rows with correct = 1 and radius >= r "
        "(Cohen et al.'s analyze.py); ACR: mean of radius * correct; * marks the best value per radius.",
    ]
    return "\n".join(lines) + "\n"


def plot_report(logs: dict[str, certify.Log], out: Path) -> Path:
    """Certified accuracy against the l2 radius, one line per log (PNG)."""
    from benchmarks.plots import _save, _style_accuracy_axis, plt

    top = max(float(np.max(log["radius"])) for log in logs.values())
    grid = np.linspace(0, max(top, 1e-3) * 1.05, 300)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, log in logs.items():
        ax.plot(grid, certify.certified_accuracy(log, grid), label=label.replace("&sigma;", "sigma"))
    _style_accuracy_axis(ax, "", "l2 radius", 8)
    return _save(fig, out, "certified accuracy")


def write_report(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike = "runs/report",
    radii: Sequence[float] = DEFAULT_RADII,
    labels: Sequence[str] | None = None,
    plot: bool = True,
) -> dict[str, Path]:
    """Tables (Markdown, CSV) and a plot for the logs ``paths``; returns the files written."""
    radii = [float(r) for r in radii]
    if not radii or any(not np.isfinite(r) or r < 0 for r in radii):
        raise ValueError(f"--radii: expected finite radii >= 0, got {radii}")
    logs = read_logs(paths, labels)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "report.md"
    md.write_text(markdown_report(logs, radii), encoding="utf-8")
    rows = summary_rows(logs, radii)
    csv_path = out_dir / "report.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    files = {"markdown": md, "csv": csv_path}
    if plot:
        files["plot"] = plot_report(logs, out_dir / "certified_accuracy.png")
    return files
