"""PNG figures of a comparison (matplotlib, Agg backend: headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import certify  # noqa: E402

from .methods import REGISTRY, compare_names  # noqa: E402

#: colours of the labels that are not a registered method's name (a method's colour is its spec's)
LABEL_COLORS = {"rddrs-log-euclidean": "tab:olive"}
#: colours of RDDRS's structured noises (label prefixes, ``MethodConfig.label``: rddrs[-metric]-structure[-kK])
STRUCTURE_COLORS = {
    "kronecker": "tab:cyan",
    "low-rank": "tab:brown",
    "signed-spiked": "tab:red",
    "spiked": "tab:purple",
}


def color_of(label: str) -> str | None:
    """A log label's colour: its own, else its structure's (RDDRS), else its registered method's
    (``ddrs_app.methods``), else None."""
    if label in LABEL_COLORS:
        return LABEL_COLORS[label]
    if label.startswith("rddrs-"):
        for structure, color in STRUCTURE_COLORS.items():
            if f"-{structure}" in label:
                return color
    spec = REGISTRY.get(label) or REGISTRY.get(label.split("-")[0])
    return spec.color if spec is not None else None


def accuracy_curve(log_path: Path, column: str, grid: np.ndarray) -> np.ndarray:
    return certify.certified_accuracy(certify.read_log(log_path), grid, column=column)


def curves_by_sigma(logs: dict, out: Path, column: str, title: str, sigmas) -> Path:
    """One panel per sigma, one line per data-dependent method; the dual certifier (all sigmas at once) in every
    panel."""
    sigmas = [s for s in sigmas if any(k[1] == s and not k[0].startswith(("mog", "dual")) for k in logs)]
    fig, axes = plt.subplots(1, max(len(sigmas), 1), figsize=(4.2 * max(len(sigmas), 1), 3.6), squeeze=False)
    for ax, s in zip(axes[0], sigmas):
        entries = {
            k[0]: v for k, v in logs.items() if (k[1] == s or k[0].startswith("dual")) and not k[0].startswith("mog")
        }
        top = max(float(np.max(certify.read_log(p)[column])) for p in entries.values()) if entries else 1.0
        grid = np.linspace(0, max(top, 1e-3) * 1.05, 200)
        for label, path in entries.items():
            ax.plot(grid, accuracy_curve(path, column, grid), label=label, color=color_of(label))
        style_accuracy_axis(ax, f"sigma = {s:g}", "l2 radius" if column == "radius" else "proxy radius", 8)
    return save_figure(fig, out, title)


def sequential_panels(rows, out: Path, radii, title: str) -> Path:
    """Sequential runs: certified accuracy at the asked radii (``seq@r``) and samples per input."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    labels = []
    rows = [row for row in rows if "samples_mean" in row]  # fixed-n rows (true mixtures) have none
    for i, row in enumerate(rows):
        label = f"{row['method']} sigma={row['sigma']:g}"
        color = color_of(row["method"])
        left.plot(radii, [row[f"seq@{r:g}"] for r in radii], marker="o", label=label, color=color)
        right.bar(i, row["samples_mean"], color=color or "tab:purple", alpha=0.7)
        right.plot([i - 0.3, i + 0.3], [row["samples_median"]] * 2, color="black")
        right.plot([i - 0.3, i + 0.3], [row["samples_p90"]] * 2, color="black", linestyle="--")
        labels.append(label)
    style_accuracy_axis(left, "certified accuracy (sequential decisions)", "radius", 7)
    right.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
    right.set_yscale("log")
    right.set_ylabel("samples per input (bar mean, - median, -- p90)")
    right.grid(alpha=0.3, axis="y")
    return save_figure(fig, out, title)


def style_accuracy_axis(ax, title: str, xlabel: str, legend_size: int) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)


def _wrap(text, width: float, renderer) -> None:
    """Break the words of a matplotlib Text onto lines no wider than ``width`` pixels (as drawn)."""
    lines: list[str] = []
    for paragraph in text.get_text().split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            text.set_text(candidate)
            if line and text.get_window_extent(renderer).width > width:
                lines.append(line)
                candidate = word
            line = candidate
        lines.append(line)
    text.set_text("\n".join(lines))


def fit_titles(fig) -> None:
    """Wrap the figure's title to its width and each panel's title to the panel's, then lay the figure
    out so that every title lies inside it (a one-panel figure used to cut a long title off)."""
    renderer = fig.canvas.get_renderer()
    suptitle = fig._suptitle  # the Text that fig.suptitle made (None without one)
    if suptitle is not None and suptitle.get_text():
        _wrap(suptitle, 0.96 * fig.bbox.width, renderer)
    for ax in fig.axes:
        if ax.title.get_text():
            _wrap(ax.title, max(ax.get_window_extent(renderer).width, 0.5 * fig.bbox.width), renderer)
    fig.tight_layout()


def save_figure(fig, out: Path, title: str) -> Path:
    fig.suptitle(title)
    fit_titles(fig)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def mog_panels(logs: dict, out: Path, title: str) -> Path:
    """Mixture runs: sound certificate (solid) and the paper's max-sigma claim (dashed, NOT a certificate)."""
    ranges = sorted(
        {tuple(map(float, k[0].split("[")[1].rstrip("]").split(","))) for k in logs if k[0].startswith("mog")}
    )
    fig, axes = plt.subplots(1, max(len(ranges), 1), figsize=(5 * max(len(ranges), 1), 3.8), squeeze=False)
    for ax, (lo, hi) in zip(axes[0], ranges):
        entries = sorted(
            ((k, v) for k, v in logs.items() if k[0].startswith("mog") and k[0].endswith(f"[{lo:g},{hi:g}]")),
            key=lambda kv: int(kv[0][0].split("-K")[1].split("-")[0]),
        )
        read = {key: certify.read_log(path) for key, path in entries}  # each log read once
        top = max(
            [
                float(
                    np.nanmax(
                        np.concatenate([log["radius"], np.nan_to_num(log.columns.get("paper_radius", np.zeros(1)))])
                    )
                )
                for log in read.values()
            ]
            + [1e-3]
        )
        grid = np.linspace(0, 1.05 * top, 200)
        for i, ((label, _), log) in enumerate(read.items()):
            K = label.split("-K")[1].split("-")[0]
            color = plt.cm.viridis(i / max(len(entries) - 1, 1))
            ax.plot(grid, certify.certified_accuracy(log, grid), color=color, label=f"K={K} sound")
            if "paper_radius" in log.columns and int(K) > 1:
                claim = {"correct": log["correct"], "radius": np.nan_to_num(log["paper_radius"])}
                ax.plot(
                    grid,
                    certify.certified_accuracy(certify.Log(claim), grid),
                    color=color,
                    ls="--",
                    label=f"K={K} max-sigma claim (not a certificate)",
                )
        style_accuracy_axis(ax, f"mixture over [{lo:g}, {hi:g}]", "l2 radius", 6)
    return save_figure(fig, out, title)


def _ellipse_outline(center, scale, radius, num=200):
    t = np.linspace(0, 2 * np.pi, num)
    circle = np.stack([np.cos(t), np.sin(t)], 1) * radius
    if np.ndim(scale) == 0:
        pts = circle * scale
    elif np.ndim(scale) == 1:
        pts = circle * np.asarray(scale)
    else:
        pts = circle @ np.asarray(scale).T
    return pts + center


CLASS_COLORS = ("#d62728", "#9467bd", "#17becf")  # toy2d classes 0, 1, 2 (not the methods' colours)


def run_suffix(budget, inputs: int | None) -> str:
    """What a figure's numbers rest on: n, alpha and the number of inputs."""
    if budget is None:
        return ""
    return f"n = {budget.n}, alpha = {budget.alpha:g}" + (f", {inputs} inputs" if inputs is not None else "")


def toy2d_regions(
    logs: dict, test, out: Path, sigma: float, model_dir=None, seed: int = 0, num_points: int = 6, suffix: str = ""
) -> Path:
    """Decision regions of the base model with each method's certified region around a few test
    points (the RDDRS paper's Figure 1)."""
    from .training import load_or_train

    model, _ = load_or_train("toy2d", sigma, model_dir=model_dir, progress=False, seed=seed)
    xs = np.linspace(0, 1, 300)
    grid = torch.tensor(np.stack(np.meshgrid(xs, xs), -1).reshape(-1, 2), dtype=torch.float32)
    with torch.no_grad():
        pred = model(grid).argmax(1).numpy().reshape(300, 300)
    fig, ax = plt.subplots(figsize=(6, 6))
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    # one colour per class, shared by the test points (solid) and the base classifier's regions (light)
    ax.contourf(xs, xs, pred, levels=[-0.5, 0.5, 1.5, 2.5], colors=[to_rgba(c, 0.18) for c in CLASS_COLORS])
    X = test.X.numpy()
    y = test.y.numpy()
    for k, c in enumerate(CLASS_COLORS):
        ax.scatter(X[y == k, 0], X[y == k, 1], color=c, s=6, alpha=0.6)
    class_handles = [
        Patch(facecolor=to_rgba(c, 0.35), edgecolor=c, label=f"class {k}") for k, c in enumerate(CLASS_COLORS)
    ]
    for label in compare_names():
        path = logs.get((label, sigma))
        if path is None:
            continue
        log = certify.read_log(path)
        regions_dir = Path(str(path) + ".regions")
        for i in range(min(num_points, len(log))):
            idx = int(log["idx"][i])
            pos = int((test.indices == idx).nonzero()[0])
            center = X[pos]
            if log["predict"][i] < 0:
                continue
            rec_path = regions_dir / f"{idx}.pt"
            if rec_path.is_file():
                rec = torch.load(rec_path, weights_only=False)
                if rec["scale"] is None:
                    continue
                scale = rec["scale"] if np.ndim(rec["scale"]) == 0 else np.asarray(rec["scale"], dtype=np.float64)
                pts = _ellipse_outline(center, scale, rec["radius"])
            else:
                pts = _ellipse_outline(center, 1.0, float(log["l2_radius"][i]))
            ax.plot(pts[:, 0], pts[:, 1], color=color_of(label), lw=1.2, label=label if i == 0 else None)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=class_handles + handles, loc="upper right", fontsize=8)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.set_title(
        f"toy2d: certified regions (sigma = {sigma:g}) over the base classifier's regions"
        + (f"\n{suffix}" if suffix else ""),
        fontsize=10,
    )
    fit_titles(fig)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_all(
    dataset: str,
    rows,
    logs: dict,
    out_dir: Path,
    radii,
    test=None,
    sigmas=(),
    model_dir=None,
    seed: int = 0,
    budget=None,
) -> list[Path]:
    figures = []
    inputs = max((int(r["inputs"]) for r in rows if "inputs" in r), default=None)
    suffix = run_suffix(budget, inputs)
    tail = f" ({suffix})" if suffix else ""
    if any(not k[0].startswith("mog") for k in logs):
        figures.append(
            curves_by_sigma(
                logs,
                out_dir / "certified_accuracy_l2.png",
                "radius",
                f"{dataset}: certified accuracy vs l2 radius{tail}",
                sigmas,
            )
        )
        figures.append(
            curves_by_sigma(
                logs,
                out_dir / "certified_accuracy_proxy.png",
                "proxy_radius",
                f"{dataset}: certified accuracy vs proxy radius{tail}",
                sigmas,
            )
        )
    if any(k[0].startswith("mog") for k in logs):
        figures.append(mog_panels(logs, out_dir / "mixture.png", f"{dataset}: mixture-of-Gaussians smoothing{tail}"))
    if dataset == "toy2d" and test is not None:
        mid = sorted(sigmas)[len(sigmas) // 2] if sigmas else 0.25
        figures.append(toy2d_regions(logs, test, out_dir / "toy2d_regions.png", mid, model_dir, seed, suffix=suffix))
    return figures
