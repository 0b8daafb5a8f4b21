"""The ImageNet-shaped chain's cost at d = 3 x 224 x 224 = 150,528: peak memory of each part and the geometry's share
of an RDDRS step, for the Kronecker and low-rank structures.

Memory. Each part runs in its own Python process (1 torch thread) that reports its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``): the baseline (imports, the committed photos-224 model, the test crops),
the RDDRS fit of one crop (cold start at sigma I, ``iterations`` steps: the peak does not grow with the step count, each
step draws and frees the same blocks), the certification of that crop with the noise of a one-step fit (fixed n =
``--n`` in the budget's batches of 500 draws: a sequential run draws the same batches and stops sooner), and the
memory's pair test of two such regions (after their one-step fits and certifications). "Above the model" is each
part's peak minus the baseline's (each part's peak includes what it ran before its own step).

Geometry. Seconds per ascent step of the same fit (``RDDRS(samples=1000)``, the default) with a null network (a linear
150,528 -> 10 map: the structure's own work, the noise map of 1,000 draws included), with the committed ``PooledCNN``
(average pooling to 32 x 32, then the small CNN: a network chosen to be cheap on CPUs), and the network time per step
of a torchvision ResNet-18 (random weights; forward and backward of 1,000 noisy crops, timed on a batch of
``--resnet-batch`` and scaled by 1,000 / batch, an extrapolation stated as such). The geometry's share of a step is
geometry / step time for the pooled CNN (both measured) and geometry / (geometry + network) for ResNet-18.

    python -m benchmarks.studies.imagenet_cost --model-dir benchmarks/results/in-progress/photos-224/models --results
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time

import torch

from benchmarks.analysis.outputs import add_output_args, check_writable, output_dir

STRUCTURES = {"kronecker": {"structure": "kronecker"}, "low-rank-k8": {"structure": "low-rank", "rank": 8}}

PRELUDE = """
import json, resource, sys, time, torch
torch.set_num_threads(1)
import certify, ddrs
from ddrs_app.data import load_dataset
from ddrs_app.training import load_or_train
model = load_or_train("photos-224", 0.25, model_dir={model_dir!r}, progress=False)[0].eval()
x = load_dataset("photos-224", "test").X[:1].clone()
out = {{}}
"""

RDDRS = "ddrs.RDDRS(iterations={iterations}, select=False, **{options!r})"
SEED = "generator=torch.Generator().manual_seed({seed})"

PARTS = {
    "baseline": "",
    "fit": f"""
t = time.perf_counter()
res = {RDDRS}.fit(model, x, init=0.25, {SEED.format(seed=0)})
out["seconds"] = time.perf_counter() - t
""",
    "certify": f"""
noise = {RDDRS}.fit(model, x, init=0.25, {SEED.format(seed=0)}).noises()[0]
t = time.perf_counter()
smooth = certify.Smooth(model, noise, 10)
cert = smooth.certify(x[0], 100, {{n}}, 0.001, batch_size=500, {SEED.format(seed=1)})
out["seconds"] = time.perf_counter() - t
out["samples"] = cert.samples
""",
    "memory": f"""
res = {RDDRS}.fit(model, torch.cat([x, x + 0.3]), init=0.25, {SEED.format(seed=0)})
a, b = res.noises()
ra = certify.Smooth(model, a, 10).certify(x[0], 50, 200, 0.001, batch_size=250, {SEED.format(seed=1)}).region
rb = certify.Smooth(model, b, 10).certify(x[0] + 0.3, 50, 200, 0.001, batch_size=250, {SEED.format(seed=2)}).region
t = time.perf_counter()
if ra is not None and rb is not None:
    out["disjoint_radius"] = float(certify.max_disjoint_radius(ra, rb))
out["seconds"] = time.perf_counter() - t
""",
}

POSTLUDE = """
out["peak_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print("RESULT " + json.dumps(out))
"""


def run_part(part: str, model_dir: str, options: dict, iterations: int, n: int) -> dict:
    iterations = 1 if part in ("certify", "memory") else iterations  # their fit only makes the noise
    code = PRELUDE.format(model_dir=model_dir) + PARTS[part].format(options=options, iterations=iterations, n=n)
    code = code + POSTLUDE
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{part} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def seconds_per_step(model, x, options: dict, iterations: int) -> float:
    import ddrs

    preset = ddrs.RDDRS(iterations=iterations, select=False, keep_ball=False, **options)
    preset.fit(model, x, init=0.25, generator=torch.Generator().manual_seed(0))  # warm-up
    start = time.perf_counter()
    res = preset.fit(model, x, init=0.25, generator=torch.Generator().manual_seed(1))
    return (time.perf_counter() - start) / max(len(res.trace.objective), 1)


def resnet_seconds_per_sample(batch: int) -> float:
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=10)
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    net(x[:1]).sum().backward()  # warm-up
    start = time.perf_counter()
    net(x).logsumexp(dim=1).sum().backward()
    return (time.perf_counter() - start) / batch


def main(argv: list[str] | None = None) -> int:
    from ddrs_app.data import load_dataset
    from ddrs_app.training import load_or_train

    from benchmarks.studies.structured_rddrs import null_model

    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.imagenet_cost", allow_abbrev=False)
    p.add_argument("--model-dir", required=True, help="where the photos-224 sigma-0.25 model is (committed)")
    p.add_argument("--iterations", type=int, default=2, help="ascent steps per timed fit")
    p.add_argument("--n", type=int, default=2_000, help="draws of the certification (fixed n)")
    p.add_argument("--resnet-batch", type=int, default=8)
    add_output_args(p, "imagenet_cost")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out = output_dir("imagenet_cost", args.results, args.out_dir)
    paths = [out / "imagenet_cost.csv", out / "imagenet_cost.md"]
    check_writable(paths, args.results)
    model = load_or_train("photos-224", 0.25, model_dir=args.model_dir, progress=False)[0].eval()
    x = load_dataset("photos-224", "test").X[:1].clone()
    null = null_model(x[0].numel(), 10)
    resnet = resnet_seconds_per_sample(args.resnet_batch) * 1000  # forward + backward of one step's 1,000 draws
    print(f"ResNet-18: {resnet:.1f} s per 1,000 draws (extrapolated from a batch of {args.resnet_batch})", flush=True)
    base = run_part("baseline", args.model_dir, {}, 1, args.n)
    print(f"baseline peak {base['peak_gb']:.2f} GB", flush=True)
    rows = []
    for name, options in STRUCTURES.items():
        row: dict = {"structure": name, "baseline_peak_gb": base["peak_gb"]}
        for part in ("fit", "certify", "memory"):
            got = run_part(part, args.model_dir, options, args.iterations, args.n)
            row[f"{part}_peak_gb"] = got["peak_gb"]
            row[f"{part}_above_model_gb"] = got["peak_gb"] - base["peak_gb"]
            row[f"{part}_seconds"] = got["seconds"]
            if "samples" in got:
                row["certify_samples"] = got["samples"]
            print(f"{name} {part}: peak {got['peak_gb']:.2f} GB, {got['seconds']:.1f} s", flush=True)
        geometry = seconds_per_step(null, x, options, args.iterations)
        pooled = seconds_per_step(model, x, options, args.iterations)
        row |= {
            "geometry_s_per_step": geometry,
            "pooled_cnn_s_per_step": pooled,
            "geometry_share_pooled_cnn": geometry / pooled,
            "resnet18_network_s_per_step": resnet,
            "geometry_share_resnet18": geometry / (geometry + resnet),
        }
        print(
            f"{name}: geometry {geometry:.2f} s/step, with the pooled CNN {pooled:.2f} s/step "
            f"({geometry / pooled:.0%}); with ResNet-18 {geometry / (geometry + resnet):.1%}",
            flush=True,
        )
        rows.append(row)
    out.mkdir(parents=True, exist_ok=True)
    with open(paths[0], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"One photos-224 test crop (3 x 224 x 224), 1 torch thread; baseline (imports, model, data) "
        f"{base['peak_gb']:.2f} GB peak resident memory.",
        "",
        "| structure | fit: peak above baseline | certification | pair test | geometry s / step | "
        "step with the pooled CNN | geometry share (pooled CNN) | geometry share (ResNet-18, extrapolated) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['structure']} | {r['fit_above_model_gb']:.2f} GB | {r['certify_above_model_gb']:.2f} GB "
            f"({r.get('certify_samples', 0)} draws, {r['certify_seconds']:.0f} s) | "
            f"{r['memory_above_model_gb']:.2f} GB ({r['memory_seconds'] * 1e3:.0f} ms) | "
            f"{r['geometry_s_per_step']:.2f} | {r['pooled_cnn_s_per_step']:.2f} | "
            f"{r['geometry_share_pooled_cnn']:.0%} | {r['geometry_share_resnet18']:.1%} |"
        )
    paths[1].write_text("\n".join(lines) + "\n")
    print(paths[1].read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
