"""``ddrs compare``: every method on the same inputs and base models, with tables and plots.

The RDDRS paper's experiment (its Figure 2: certified accuracy against l2 radius and against proxy
radius for RS, DDRS, ANCER, RDDRS at sigma in {0.12, 0.25, 0.5}) and the mixture-of-Gaussians paper's
(its Figures 1-2: mixtures of K in {1, 2, 5, 10} Gaussians over [0.25, 0.5] and [0.5, 1.0]), with the
sound mixture certificate and, beside it and labelled as not a certificate, the paper's max-sigma number.
"""

from __future__ import annotations

import csv
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import certify
from certify.sequential import check_radii

from .budgets import BUDGETS, Budget
from .data import folder_name, load_dataset, subset
from .methods import compare_names, spec_of
from .runs import MethodConfig, differing_fields, fingerprint, fingerprint_path, library_version, run_certification
from .training import dataset_hash, load_or_train, model_hash

PAPER_SIGMAS = (0.12, 0.25, 0.5)
MOG_RANGES = ((0.25, 0.5), (0.5, 1.0))
MOG_KS = (1, 2, 5, 10)


L2_RADII = {
    "toy2d": (0.0, 0.05, 0.1, 0.15, 0.2, 0.3),
    "digits": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
    "fashion-mnist": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
    "mnist": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
    "photos-32": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
    "photos-224": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
}


def mog_sigmas(lo: float, hi: float, K: int) -> tuple:
    """K constituents spread evenly over [lo, hi] (K = 1: the largest, the paper's reference)."""
    return (hi,) if K == 1 else tuple(float(s) for s in np.linspace(lo, hi, K))


def configs_for(
    budget: Budget,
    sigmas=PAPER_SIGMAS,
    methods=None,
    mog_ks=MOG_KS,
    mog_ranges=MOG_RANGES,
    rddrs_structures=("full",),
    rddrs_rank=None,
    dual_dictionaries=("isotropic",),
    dual_entries=None,
    dual_sigma_es=(None,),
) -> list[tuple[float, MethodConfig]]:
    """(training sigma, config) pairs of a comparison: every method but the mixture at every sigma, with
    its options from the budget (``MethodSpec.budget_options``), then the mixture paper's rows, then the dual
    certifier over all ``sigmas`` (one row; asked by name). ``methods`` None: the registry's compare methods and
    the mixture and the dual. RDDRS runs once per structure of ``rddrs_structures`` (``ddrs.RDDRS(structure=...)``;
    ``rddrs_rank`` the spikes of 'low-rank' / 'spiked'), each its own row and log (``MethodConfig.label``); the dual
    once per dictionary of ``dual_dictionaries`` ('isotropic', 'ancer', 'rddrs': ``ddrs_app.dual.SelectorRecipe``,
    ``dual_entries`` its anisotropic centres), and per selector noise of ``dual_sigma_es`` (None: the largest sigma)."""
    methods = (*compare_names(), "mog", "dual") if methods is None else methods
    out = []
    for s in sigmas:
        for m in methods:
            if m in ("mog", "dual"):
                continue
            opts = spec_of(m).budget_options(budget)
            for structure in rddrs_structures if m == "rddrs" else ("full",):
                rank = rddrs_rank if structure in ("low-rank", "spiked", "signed-spiked") else None
                config = MethodConfig(
                    m, sigma=s, structure=structure, rank=rank, ddrs_options=dict(budget.ddrs), options=dict(opts)
                )
                out.append((s, config))
    if "mog" in methods:
        for lo, hi in mog_ranges:
            for K in mog_ks:
                out.append(
                    (
                        hi,
                        MethodConfig("mog", sigma=hi, sigmas=mog_sigmas(lo, hi, K), kind="mixture", mog_range=(lo, hi)),
                    )
                )
    if "dual" in methods:
        dictionary = tuple(sorted(float(s) for s in sigmas))
        for kind in dual_dictionaries:
            for sigma_e in dual_sigma_es:
                options = spec_of("dual").budget_options(budget)
                if kind != "isotropic":
                    options |= {"dictionary": kind} | ({} if dual_entries is None else {"entries": int(dual_entries)})
                if sigma_e is not None:
                    options["sigma_e"] = float(sigma_e)
                out.append(
                    (max(dictionary), MethodConfig("dual", sigma=max(dictionary), sigmas=dictionary, options=options))
                )
    return out


def header(command: str) -> str:
    """Command, package versions and machine: the first lines of every results file."""
    import pymanopt
    import scipy

    versions = (
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, pymanopt {pymanopt.__version__}"
    )
    from importlib.metadata import PackageNotFoundError, version

    for package in ("geomstats", "torchvision", "ddrs"):
        try:
            versions += f", {package} {version(package)}"
        except PackageNotFoundError:
            versions += f", {package} (not installed)"
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.system()} {platform.release()}"
    return f"command: {command}\nversions: {versions}\nmachine: {machine}\ndate: {time.strftime('%Y-%m-%d %H:%M:%S')}\n"


def sequential_accuracy(log, radii) -> np.ndarray:
    """Fraction of rows classified correctly and decided certified (``cert@r`` = 1) at each radius."""
    correct = log["correct"] == 1
    certified = lambda r: np.array([str(v) in ("1", "1.0") for v in log[f"cert@{r:g}"]])  # noqa: E731
    return np.array([float(np.mean(correct & certified(r))) for r in radii])


def summarise_sequential(log, radii) -> dict:
    """``seq@r`` (certified accuracy from the sequential decisions) and samples per input (mean,
    median, 90th percentile, n0 included)."""
    row = {f"seq@{r:g}": a for r, a in zip(radii, sequential_accuracy(log, radii))}
    samples = np.asarray(log["samples"], dtype=np.float64)
    row.update(
        samples_mean=float(samples.mean()),
        samples_median=float(np.median(samples)),
        samples_p90=float(np.percentile(samples, 90)),
    )
    return row


def summarise(log_path: Path, radii, proxy_radii, seq_radii=None) -> dict:
    log = certify.read_log(log_path)
    row = {"inputs": len(log)}
    if seq_radii is not None:
        row.update(summarise_sequential(log, seq_radii))
    for r, a in zip(radii, certify.certified_accuracy(log, radii)):
        row[f"l2@{r:g}"] = a
    for r, a in zip(proxy_radii, certify.certified_accuracy(log, proxy_radii, column="proxy_radius")):
        row[f"proxy@{r:g}"] = a
    row["acr"] = certify.average_certified_radius(log)
    row["acr_proxy"] = certify.average_certified_radius(log, "proxy_radius")
    lower = np.asarray(log["p_lower"], dtype=np.float64)
    for q in (10, 50, 90):  # the distribution of the p_A lower bounds (what every radius is a function of)
        row[f"p_lower_q{q}"] = float(np.percentile(lower, q)) if len(lower) else float("nan")
    row["abstain"] = certify.abstention_rate(log)
    row["sec_per_input"] = float(np.mean(log["time"]))
    changed = log["memory_action"] if "memory_action" in log.columns else np.array([])
    row["memory_changed"] = int(sum(a not in ("-", "kept") for a in changed))
    if "paper_radius" in log.columns and np.isfinite(log["paper_radius"]).any():
        paper = log["paper_radius"] * (log["correct"] == 1)
        for r in radii:
            row[f"paper_claim_l2@{r:g}"] = float(np.mean(paper >= r)) if r > 0 else float(np.mean(log["correct"] == 1))
    return row


COLUMN_LEGEND = (
    "Columns: `subset` which test inputs (the first `inputs` of every k-th); `inputs` certified test inputs; "
    "`l2@r` (the headline) certified accuracy at l2 radius r (fraction of inputs "
    "classified correctly with a certified l2 radius >= r); `proxy@r` the same at ANCER's proxy radius (the l2 "
    "ball of equal volume to the certified ellipsoid: not an l2 guarantee); `acr` / `acr_proxy` average "
    "certified (proxy) radius over correct inputs (secondary: a trivial classifier can make it arbitrarily large); "
    "`p_lower_q10` / `_q50` / `_q90` quantiles of the per-input Clopper-Pearson lower bound on p_A; "
    "`abstain` fraction of abstentions; `sec_per_input` noise "
    "choice + certification seconds per input; `memory_changed` inputs whose certificate the memory-based "
    "certifier shrank, replaced or abstained. Sequential runs (`--sequential`): `seq@r` fraction of inputs "
    "classified correctly and decided certified at radius r (the table's radius: l2 for isotropic noise, comparable "
    "with `l2@r`; the proxy radius for ANCER/RDDRS, comparable with `proxy@r`; each input's noise is asked at its "
    "own-norm radius r / gm_sigma; l2 for the dual, whatever its dictionary); `samples_mean`, "
    "`samples_median`, `samples_p90` samples drawn per input (n0 included; n is the maximum); true-mixture rows "
    "(mog-mixture) at l2 radius r, one confidence sequence per component.\n"
)


def write_tables(rows: list[dict], out_dir: Path, head: str) -> tuple[Path, Path]:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    csv_path, md_path = out_dir / "summary.csv", out_dir / "summary.md"
    (out_dir / "summary.provenance.txt").write_text(head)  # the CSV itself reads with plain pandas.read_csv
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))
    with open(md_path, "w") as f:
        f.write("```\n" + head + "```\n\n")
        f.write("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys) + "\n")
        for r in rows:
            f.write("| " + " | ".join(fmt(r.get(k)) for k in keys) + " |\n")
        f.write("\n" + COLUMN_LEGEND)
        f.write(
            "\nColumns `paper_claim_l2@r` (mixture rows) are what the MoG paper's max-sigma formula would "
            "claim on the same samples: NOT a certificate for the mixture; the sound numbers are `l2@r`.\n"
        )
    return csv_path, md_path


def ancer_thetas_from_log(log_path: Path) -> dict:
    """idx -> (Theta, forward, backward) of a finished ANCER run, read from its log and saved regions
    (the region's scale is Theta unless memory made the input adopt another region), so that a
    resumed comparison warm-starts RDDRS from exactly the ANCER solution it reports."""
    regions = Path(str(log_path) + ".regions")
    if not log_path.is_file() or not regions.is_dir():
        return {}
    out = {}
    for row in certify.read_log(log_path).rows():
        idx = int(row["idx"])
        path = regions / f"{idx}.pt"
        if row["memory_action"] in ("kept", "shrunk") and path.is_file():
            scale = torch.load(path, weights_only=False)["scale"]
            if scale is not None and np.ndim(scale) == 1:
                out[idx] = (torch.as_tensor(scale, dtype=torch.float64), row["forward_evals"], row["backward_evals"])
    return out


def check_out_dir(out_dir: Path, expected: dict) -> None:
    """Write the out-dir's fingerprint; if another comparison made it, say so (its logs are then
    recomputed one by one, each log's own fingerprint deciding)."""
    path = out_dir / "fingerprint.json"
    expected = json.loads(json.dumps(expected, sort_keys=True, default=str))
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            old = {}
        diff = differing_fields(old, expected)
        if diff:
            print(
                f"{out_dir}: made by another comparison (differs in {', '.join(diff)}); logs that differ "
                "are recomputed",
                file=sys.stderr,
            )
    path.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


def same_stage_run(ancer_log: Path, rddrs_fp: dict) -> bool:
    """True iff the ANCER log was made on the same inputs, model, budget and seed as this RDDRS run
    (so its Theta may warm-start RDDRS)."""
    side = fingerprint_path(ancer_log)
    if not side.is_file():
        return False
    try:
        old = json.loads(side.read_text())
    except (ValueError, UnicodeDecodeError):
        return False
    keys = (
        "n0",
        "n",
        "alpha",
        "batch_size",
        "opt_batch",
        "seed",
        "sigma",
        "dataset",
        "inputs_hash",
        "model_hash",
        "ddrs_options",
        "version",
    )
    return (
        old.get("method") == "ancer"
        and all(old.get(k) == rddrs_fp.get(k) for k in keys)
        and old.get("options") == rddrs_fp.get("options", {}).get("ancer_options")
    )


@dataclass
class Runs:
    """The certification runs of one comparison: where each log goes, and how they are computed (here,
    or in worker processes). Everything a worker process needs travels in this object."""

    dataset: str
    out_dir: Path
    test: Any
    budget: Budget
    seed: int
    rotate: int | None
    data_dir: Any
    model_dir: Any
    seq_radii: tuple | None
    threads: int

    def log_path(self, config: MethodConfig) -> Path:
        return self.out_dir / "logs" / f"{config.label}_sigma{config.sigma:g}.tsv"

    def radii_of(self, config: MethodConfig) -> tuple | None:
        # every method, true mixtures included (certify.sequential.run_mixture_looks), runs sequentially
        return self.seq_radii

    def certify(self, configs, progress: bool, device=None, cluster=None, model=None) -> None:
        """Run ``configs`` (``(training sigma, config)`` pairs) in order in this process. The DDRS stage is
        shared between the methods of one sigma (and ANCER's with a warm-started RDDRS)."""
        star_caches: dict[float, dict] = {}
        theta_caches: dict[float, dict] = {}
        user_model = model
        budget = self.budget
        for train_sigma, config in configs:
            spec = spec_of(config.method)
            if user_model is not None:
                model, info = user_model, {}
            elif spec.load_model is not None:
                model, info = spec.load_model(
                    config, self.dataset, seed=self.seed, rotate=self.rotate, data_dir=self.data_dir,
                    model_dir=self.model_dir, progress=progress,
                )  # fmt: skip
            else:
                model, info = load_or_train(
                    self.dataset, train_sigma, rotate=self.rotate, data_dir=self.data_dir,
                    model_dir=self.model_dir, progress=progress, seed=self.seed,
                )  # fmt: skip
            if device is not None:
                model = model.to(device)
            if cluster is not None and info.get("path"):
                cluster.register_cache_file(model, info["path"])
            config_radii = self.radii_of(config)
            run = dict(
                n0=budget.n0,
                n=budget.n,
                alpha=budget.alpha,
                batch_size=budget.batch_size,
                opt_batch=budget.opt_batch,
                seed=self.seed,
            )
            if config.method == "rddrs" and not theta_caches.get(config.sigma):
                ancer_log = self.out_dir / "logs" / f"ancer_sigma{config.sigma:g}.tsv"
                fp = fingerprint(config, model, self.test, memory=True, radii=config_radii, **run)
                if same_stage_run(ancer_log, fp):
                    theta_caches[config.sigma] = ancer_thetas_from_log(ancer_log)
            # a log made by another run (other budget, data, model, ...) is recomputed, never reused
            run_certification(
                config,
                model,
                self.test,
                self.log_path(config),
                progress=progress,
                restart_on_mismatch=True,
                sigma_star_cache=star_caches.setdefault(config.sigma, {}),
                stage_cache=theta_caches.setdefault(config.sigma, {}),
                radii=config_radii,
                cluster=cluster,
                **run,
            )

    def in_processes(self, configs, jobs: int, progress: bool) -> None:
        """Run ``configs`` in ``jobs`` worker processes (spawned: fresh torch thread pools), one group per
        sigma (the runs that share a DDRS stage stay together), largest groups first. Every model is
        trained (or found in the cache) here first, so no two processes train the same one. Each worker
        runs at ``threads`` torch threads, so every log is the one a single process writes at that count."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from tqdm import tqdm

        for train_sigma in dict.fromkeys(s for s, _ in configs):
            load_or_train(
                self.dataset, train_sigma, rotate=self.rotate, data_dir=self.data_dir, model_dir=self.model_dir,
                progress=progress, seed=self.seed,
            )  # fmt: skip
        for _, config in configs:  # a method's own networks (the dual's selector), made once, here
            load = spec_of(config.method).load_model
            if load is not None:
                load(config, self.dataset, seed=self.seed, rotate=self.rotate, data_dir=self.data_dir,
                     model_dir=self.model_dir, progress=progress)  # fmt: skip
        groups: dict[tuple, list] = {}
        for train_sigma, config in configs:
            key = (config.method == "mog", config.mog_range or (), config.sigma)
            groups.setdefault(key, []).append((train_sigma, config))
        order = sorted(groups.values(), key=lambda g: -_group_cost(g))
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(jobs, len(order)), mp_context=context) as pool:
            futures = [pool.submit(_certify_group, self, group) for group in order]
            bar = tqdm(
                total=len(configs), disable=not progress, desc=f"certify {self.dataset}", unit="run", leave=False
            )
            try:
                for future in as_completed(futures):
                    bar.update(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            finally:
                bar.close()


def finished_configs(runs: Runs, configs: list, inputs: int, inputs_hash: str) -> list:
    """The configurations whose log holds a row for every one of the ``inputs`` test inputs and was made on them
    (its fingerprint's ``inputs_hash``); the others are named on stderr."""
    kept = []
    for train_sigma, config in configs:
        path = runs.log_path(config)
        fp_path = fingerprint_path(path)
        rows = len(certify.read_log(path)) if path.is_file() else 0
        same = fp_path.is_file() and json.loads(fp_path.read_text()).get("inputs_hash") == inputs_hash
        if rows == inputs and same:
            kept.append((train_sigma, config))
        else:
            print(f"left out {config.label} sigma={config.sigma:g}: {rows}/{inputs} rows", file=sys.stderr)
    return kept


def _group_cost(group: list) -> float:
    """A rough order for scheduling: the data-dependent chains first, then mixtures by component count."""
    return sum({"rddrs": 40, "ancer": 20, "ddrs": 10}.get(c.method, 1 + len(c.sigmas) / 10) for _, c in group)


def _certify_group(runs: Runs, group: list) -> int:
    """A worker process's task: ``runs.certify(group)`` at the run's thread count, without progress bars."""
    torch.set_num_threads(runs.threads)
    runs.certify(group, progress=False)
    return len(group)


def run_compare(
    dataset: str = "digits",
    out_dir: str | Path = "runs/compare",
    *,
    sigmas=PAPER_SIGMAS,
    methods=None,
    budget: Budget | None = None,
    seed: int = 0,
    rotate=None,
    data_dir=None,
    model_dir=None,
    progress: bool = True,
    command: str = "",
    device: str | torch.device | None = None,
    radii=None,
    cluster=None,
    model=None,
    data=None,
    jobs: int = 1,
    run: bool = True,
    rddrs_structures=("full",),
    rddrs_rank=None,
    dual_dictionaries=("isotropic",),
    dual_entries=None,
    dual_sigma_es=(None,),
) -> dict:
    """Run every configuration on the same inputs and models; write logs, tables and plots.

    ``model`` (your own, already on ``device``) certifies every configuration instead of the project's
    models trained per sigma; ``data`` (a ``ddrs_app.data.Dataset``, already subset) replaces the
    built-in test inputs; ``dataset`` then only names the run (``ddrs_app.data.folder_name``).

    ``device`` is where the models certify (None: the CPU; training and its cache stay on the CPU).
    ``radii`` certifies sequentially at those radii (``budget.n`` the maximum sample count): the logs
    gain ``samples`` and ``cert@r`` columns, the tables ``seq@r`` and samples per input. ``cluster`` (a started
    ``ddrs_app.cluster.Cluster``) computes the runs' batches on Ray workers. ``jobs`` > 1 certifies the
    project's models on the CPU in that many processes (:meth:`Runs.in_processes`), each at this process's
    torch thread count: the same logs as one process. ``rddrs_structures`` / ``rddrs_rank``: RDDRS's noise
    structures, one row each (``configs_for``); ``dual_dictionaries`` / ``dual_entries`` / ``dual_sigma_es`` the dual's
    dictionaries and selector noises, one row each. ``run=False`` certifies nothing: the tables and plots of the
    configurations whose logs are finished (every input, made on these inputs), naming the ones left out."""
    from . import plots

    budget = budget or BUDGETS.get(dataset, Budget())
    out_dir = Path(out_dir) / (folder_name(dataset) + (f"-rot{rotate}" if rotate is not None else ""))
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    if data is None:
        data = subset(load_dataset(dataset, "test", data_dir=data_dir, rotate=rotate), budget.every, budget.max_inputs)
    test = data
    seq_radii = None if radii is None else tuple(float(r) for r in check_radii(radii))
    radii = L2_RADII.get(dataset, L2_RADII["digits"])
    check_out_dir(
        out_dir,
        ({} if seq_radii is None else {"radii": list(seq_radii)})
        | ({} if model is None else {"model_hash": model_hash(model)})
        | {
            "dataset": dataset,
            "rotate": rotate,
            "seed": seed,
            "budget": budget.__dict__,
            "inputs_hash": dataset_hash(test),
            "version": library_version(),
        },
    )
    rows, logs = [], {}
    t_start = time.perf_counter()
    configs = configs_for(
        budget, sigmas, methods, rddrs_structures=rddrs_structures, rddrs_rank=rddrs_rank,
        dual_dictionaries=dual_dictionaries, dual_entries=dual_entries, dual_sigma_es=dual_sigma_es,
    )  # fmt: skip
    runs = Runs(dataset, out_dir, test, budget, seed, rotate, data_dir, model_dir, seq_radii, torch.get_num_threads())
    jobs = 1 if model is not None or cluster is not None or (device is not None and str(device) != "cpu") else jobs
    if not run:
        configs = finished_configs(runs, configs, len(test), dataset_hash(test))
    elif jobs > 1:
        runs.in_processes(configs, jobs, progress)
    else:
        runs.certify(configs, progress, device=device, cluster=cluster, model=model)
    for _, config in configs:
        config_radii = runs.radii_of(config)
        log_path = runs.log_path(config)
        row = {
            "dataset": dataset,
            "method": config.label,
            "sigma": config.sigma,
            "sigmas": "/".join(f"{s:g}" for s in config.sigmas) if config.sigmas else "",
            "subset": f"every {budget.every}th test input",
        }
        row.update(summarise(log_path, radii, radii, config_radii))
        rows.append(row)
        logs[(config.label, config.sigma)] = log_path
    head = header(command or f"ddrs compare --dataset {dataset}")
    compute = sum(float(np.sum(certify.read_log(p)["time"])) for p in logs.values())
    head += (
        f"budget: {json.dumps(budget.__dict__)}\ninputs: {len(test)} test inputs (every {budget.every}); "
        f"compute {compute:.0f} s summed over the logs' per-input times (noise choice + certification); "
        f"this invocation {time.perf_counter() - t_start:.0f} s (resumed runs skip finished inputs)\n"
    )
    csv_path, md_path = write_tables(rows, out_dir, head)
    figures = plots.write_all(
        dataset,
        rows,
        logs,
        out_dir,
        radii,
        test=test if dataset == "toy2d" else None,
        sigmas=sigmas,
        model_dir=model_dir,
        seed=seed,
        budget=budget,
    )
    if seq_radii is not None:
        figures.append(plots.sequential_panels(rows, out_dir / "sequential.png", seq_radii, f"{dataset}: sequential"))
    return {"out_dir": out_dir, "csv": csv_path, "markdown": md_path, "figures": figures, "rows": rows}
