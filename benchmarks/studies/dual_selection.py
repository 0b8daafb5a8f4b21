"""What a smoothed noise selector can and cannot choose: the dual certifier's selection, isolated from its classifier.

``certify.DualSmooth`` certifies min(R_sel, R_cls) with the entry its smoothed selector picks; the isotropic dual on
Fashion-MNIST picks sigma 0.5 for every test input and so loses RS sigma 0.12's clean accuracy (results README). This
study asks whether any selector could do better, holding the classifier stage fixed: for each selector it

1. labels ``--train-inputs`` training inputs (``ddrs.label_inputs``: per entry the hard-vote radius of the true class
   on 100 common draws, alpha 0.001; cached in the output folder) and trains the selector there;
2. smooths it on the test inputs of the RS logs (``--logs``: ``rs_sigma<s>.tsv`` for every sigma of the dictionary;
   ``--selector-samples`` draws of N(0, sigma_e^2 I) per input, after 100 for the choice, like ``DualSmooth``): the
   entry k it selects and its ball R_sel = sigma_e Phi^-1(p_lower), Clopper-Pearson at alpha / 2;
3. ESTIMATES the dual's l2 radius as min(R_sel, RS_k's logged radius) where RS at sigma_k certified the right class
   (0 where the selector abstains). This is not a certificate: the dual's classifier stage runs at alpha / 2 on its own
   draws, so its radii are a little smaller than the RS log's; the comparison is between selectors, on equal terms.

Selectors: the app's (``ddrs_app.dual.SelectorRecipe()``: an MLP on pixels, cross-entropy on labels with its tie rule);
``ddrs.ModelFeatureSelector`` heads on the sigma_e-matched classifier's confidence profile, trained on utilities
(expected regret on the labels' radii) with and without a bonus for the most common entry; a hand-made one (entry 0
where that classifier's top probability is below 0.45, else the largest); and the oracle, each input's best entry
read off the RS logs themselves, with no ball (an upper bound on any selector). Certified accuracy at the l2 radii with
paired 95 % intervals against the per-radius best single sigma.

    python -m benchmarks.studies.dual_selection --logs benchmarks/results/compare/fashion-mnist/logs \
        --model-dir benchmarks/results/compare/fashion-mnist/models --results
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import beta, norm

import certify
import ddrs
import manifolds
from benchmarks.analysis.outputs import add_output_args, check_writable, output_dir
from benchmarks.analysis.paired import bootstrap, mcnemar_exact

RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
ALPHA = 0.001
CHOICE_SAMPLES = 100


def per_input_radius(log: certify.Log) -> np.ndarray:
    """The logged l2 radius where the right class is certified, else -1."""
    return np.where(np.asarray(log["correct"]) == 1, np.asarray(log["radius"], dtype=float), -1.0)


def certified(radius: np.ndarray, r: float) -> np.ndarray:
    return (radius >= r) & (radius >= 0) if r > 0 else radius >= 0


class ConfidenceThreshold(torch.nn.Module):
    """Entry 0 where ``model``'s top class probability is below ``tau``, else entry ``entries - 1``."""

    def __init__(self, model: torch.nn.Module, tau: float, entries: int):
        super().__init__()
        self.model, self.tau, self.entries = model, float(tau), int(entries)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = torch.softmax(self.model(x), dim=1).max(dim=1).values
        return torch.nn.functional.one_hot(torch.where(top < self.tau, 0, self.entries - 1), self.entries).float()


def smoothed_choice(selectors: dict, x: torch.Tensor, sigma_e: float, n: int, generator: torch.Generator, batch=2000):
    """Per selector: (selected entry, R_sel) on input x (1, ...) as ``certify.DualSmooth`` makes them: the top index of
    CHOICE_SAMPLES votes, then its Clopper-Pearson lower bound on n fresh votes at ALPHA / 2 (R_sel = 0: abstain).
    Selectors that read the same classifier share its forward pass (``ModelFeatureSelector.profile``)."""
    votes = {name: [] for name in selectors}
    for total in (CHOICE_SAMPLES, n):
        counts = {name: 0 for name in selectors}
        for start in range(0, total, batch):
            m = min(batch, total - start)
            e = torch.randn((m,) + tuple(x.shape[1:]), generator=generator, dtype=x.dtype)
            xs = x + sigma_e * e
            profiles = {}
            for name, s in selectors.items():
                if isinstance(s, ddrs.ModelFeatureSelector):
                    key = id(s.features)
                    if key not in profiles:
                        profiles[key] = s.profile(xs)
                    scores = s.head(profiles[key])
                else:
                    scores = s(xs)
                counts[name] = counts[name] + torch.bincount(scores.argmax(dim=1), minlength=scores.shape[1])
        for name in selectors:
            votes[name].append(counts[name])
    out = {}
    for name, (first, second) in votes.items():
        k = int(first.argmax())
        top = int(second[k])
        p_lower = float(beta.ppf(ALPHA / 2, top, n - top + 1)) if top > 0 else 0.0
        out[name] = (k, sigma_e * float(norm.ppf(p_lower)) if p_lower > 0.5 else 0.0)
    return out


def main(argv: list[str] | None = None) -> int:
    from ddrs_app.data import load_dataset, subset
    from ddrs_app.dual import SelectorRecipe, prefer_common
    from ddrs_app.training import load_or_train

    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.dual_selection", allow_abbrev=False)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--logs", type=Path, required=True, help="folder with rs_sigma<s>.tsv for every sigma")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.12, 0.25, 0.5])
    p.add_argument("--sigma-e", type=float, default=None, help="the selector's noise (default the largest sigma)")
    p.add_argument("--train-inputs", type=int, default=2000)
    p.add_argument("--selector-samples", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p, "dual_selection")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    sigmas = tuple(sorted(args.sigmas))
    sigma_e = float(max(sigmas) if args.sigma_e is None else args.sigma_e)
    out = output_dir("dual_selection", args.results, args.out_dir)
    stem = f"dual_selection_{args.dataset}"
    paths = [out / f"{stem}.csv", out / f"{stem}.md"]
    check_writable(paths, args.results)
    out.mkdir(parents=True, exist_ok=True)

    logs = {s: certify.read_log(args.logs / f"rs_sigma{s:g}.tsv") for s in sigmas}
    idx = np.asarray(logs[sigmas[0]]["idx"])
    for s, log in logs.items():
        if not np.array_equal(np.asarray(log["idx"]), idx):
            raise SystemExit(f"error: rs_sigma{s:g}.tsv holds other inputs than rs_sigma{sigmas[0]:g}.tsv")
    rs = np.stack([per_input_radius(logs[s]) for s in sigmas], axis=1)  # (inputs, K)

    models = [
        load_or_train(args.dataset, s, seed=args.seed, model_dir=args.model_dir, progress=False)[0] for s in sigmas
    ]
    matched = models[int(np.argmin([abs(np.log(s / sigma_e)) for s in sigmas]))]  # the classifier trained at sigma_e
    train = load_dataset(args.dataset, "train")
    inputs = subset(train, max(1, len(train) // args.train_inputs), args.train_inputs)
    cache = out / f"{stem}_labels.pt"
    t0 = time.perf_counter()
    if cache.is_file():
        labels = torch.load(cache, weights_only=True)
        label_seconds = float(labels.pop("seconds"))
    else:
        dictionary = ddrs.NoiseDictionary.from_points(
            torch.tensor(sigmas, dtype=torch.float64), manifolds.PositiveScalar(inputs.X[0].numel())
        )
        with torch.no_grad():
            lab = ddrs.label_inputs(
                models,
                inputs.X,
                dictionary,
                100,
                ALPHA,
                torch.Generator().manual_seed(args.seed + 11),
                targets=inputs.y,
            )
        label_seconds = time.perf_counter() - t0
        labels = {"labels": lab.labels, "radii": lab.radii}
        torch.save(labels | {"seconds": label_seconds}, cache)
    radii = labels["radii"]
    common = int(torch.bincount(labels["labels"], minlength=len(sigmas)).argmax())
    recipe = SelectorRecipe()
    K = len(sigmas)

    def gen(offset):
        return torch.Generator().manual_seed(args.seed + offset)

    selectors, seconds = {}, {}
    t0 = time.perf_counter()
    selectors["pixels MLP, labels (app default)"] = ddrs.train_selector(
        inputs.X, prefer_common(labels["labels"], radii, recipe.tie), K, sigma_e, recipe.epochs, gen(12),
        hidden=recipe.hidden, lr=recipe.lr,
    )  # fmt: skip
    seconds["pixels MLP, labels (app default)"] = time.perf_counter() - t0
    for name, bonus in (("confidence head, regret", 0.0), ("confidence head, regret + 0.1 common", 0.1)):
        utilities = radii.clone()
        utilities[:, common] += bonus
        t0 = time.perf_counter()
        head = ddrs.ModelFeatureSelector(matched, int(inputs.y.max()) + 1, K, gen(13))
        selectors[name] = ddrs.train_selector(inputs.X, utilities, K, sigma_e, 30, gen(12), module=head)
        seconds[name] = time.perf_counter() - t0
    selectors["confidence < 0.45: smallest sigma"] = ConfidenceThreshold(matched, 0.45, K)
    seconds["confidence < 0.45: smallest sigma"] = 0.0

    test = load_dataset(args.dataset, "test")
    x_test = test.X[torch.as_tensor(idx, dtype=torch.long)]
    chosen = {name: np.zeros(len(idx), dtype=int) for name in selectors}
    balls = {name: np.zeros(len(idx)) for name in selectors}
    g = gen(21)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(len(idx)):
            for name, (k, r_sel) in smoothed_choice(
                selectors, x_test[i : i + 1], sigma_e, args.selector_samples, g
            ).items():
                chosen[name][i], balls[name][i] = k, r_sel
            if (i + 1) % 10 == 0:
                print(f"{i + 1}/{len(idx)} inputs, {time.perf_counter() - t0:.0f} s", flush=True)
    estimates = {}
    for name in selectors:
        r_cls = rs[np.arange(len(idx)), chosen[name]]
        estimates[name] = np.where((r_cls >= 0) & (balls[name] > 0), np.minimum(r_cls, balls[name]), -1.0)
    oracle_k = rs.argmax(axis=1)
    estimates["oracle (best entry per input, no ball)"] = rs.max(axis=1)
    chosen["oracle (best entry per input, no ball)"] = oracle_k

    rows = []
    for r in RADII:
        per_sigma = [float(certified(rs[:, k], r).mean()) for k in range(K)]
        best = int(np.argmax(per_sigma))
        base = certified(rs[:, best], r).astype(float)
        for name, est in estimates.items():
            a = certified(est, r).astype(float)
            low, high, _ = bootstrap(a - base, level=0.95, resamples=10_000, seed=0)
            rows.append(
                {
                    "selector": name,
                    "radius": r,
                    "accuracy": float(a.mean()),
                    "best_rs_sigma": sigmas[best],
                    "best_rs": per_sigma[best],
                    "difference": float((a - base).mean()),
                    "low": low,
                    "high": high,
                    "mcnemar_p": mcnemar_exact(a, base),
                    "selected": json.dumps(np.bincount(chosen[name], minlength=K).tolist()),
                    "ball_binds": float(
                        np.mean((balls[name] > 0) & (rs[np.arange(len(idx)), chosen[name]] > balls[name]))
                    )
                    if name in balls
                    else 0.0,
                    "train_seconds": seconds.get(name, 0.0),
                }
            )
    with open(paths[0], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    names = list(estimates)
    lines = [
        f"{args.dataset}: the RS logs' {len(idx)} test inputs; dictionary sigmas {list(sigmas)}, selector noise "
        f"sigma_e = {sigma_e:g}, {args.selector_samples} selector draws, alpha / 2; labels on {args.train_inputs} "
        f"training inputs ({label_seconds:.0f} s; per entry "
        f"{torch.bincount(labels['labels'], minlength=K).tolist()}). ESTIMATED dual certified accuracy at l2 radius "
        "(min of the selector's ball and the RS log's radius at the selected sigma; not a certificate), minus the "
        "per-radius best single sigma, paired 95 % interval:",
        "",
        "| selector | selected per entry | ball binds | " + " | ".join(f"r = {r:g}" for r in RADII) + " |",
        "|---|---|---|" + "---|" * len(RADII),
    ]
    best_row = [f"{row['best_rs']:.2f} (sigma {row['best_rs_sigma']:g})" for row in rows if row["selector"] == names[0]]
    lines.append("| best single sigma (per radius) | | | " + " | ".join(best_row) + " |")
    for name in names:
        mine = [row for row in rows if row["selector"] == name]
        cells = [
            f"{row['accuracy']:.2f} ({row['difference']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}])" for row in mine
        ]
        lines.append(f"| {name} | {mine[0]['selected']} | {mine[0]['ball_binds']:.0%} | " + " | ".join(cells) + " |")
    paths[1].write_text("\n".join(lines) + "\n")
    print(paths[1].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
