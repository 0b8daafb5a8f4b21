"""The runner's three pieces (plan, compute, finish) and the logs they write."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from ddrs_app.data import load_dataset, subset
from ddrs_app.runs import BatchResult, MethodConfig, compute_batch, plan_batches, run_certification
from ddrs_app.training import load_or_train

REFERENCE = Path(__file__).parents[1] / "data" / "runs_reference"
DD = dict(iterations=3, samples=8)
TIME_COLUMNS = ("time", "choose_seconds")


def reference_configs() -> list[MethodConfig]:
    """The configurations tests/data/runs_reference/*.tsv were written with (by the runner before its
    split into plan_batches / compute_batch / Driver)."""
    return [
        MethodConfig("rs", sigma=0.1),
        MethodConfig("ddrs", sigma=0.1, ddrs_options=DD),
        # the volume-only ANCER and RDDRS (keep_ball=False) the reference logs were written with
        MethodConfig("ancer", sigma=0.1, ddrs_options=DD, options=dict(DD, keep_ball=False)),
        MethodConfig(
            "rddrs",
            sigma=0.1,
            ddrs_options=DD,
            # and the earlier RDDRS defaults (plain exp-map gradient ascent)
            options=dict(
                DD,
                warm_start="ancer",
                ancer_options=dict(DD, keep_ball=False),
                adaptive=False,
                method="exp",
                keep_ball=False,
            ),
        ),
        MethodConfig("mog", sigma=0.1, sigmas=(0.05, 0.1)),
    ]


RUN = dict(n0=50, n=400, alpha=0.001, batch_size=400, opt_batch=3, seed=1, progress=False)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    model, _ = load_or_train("toy2d", 0.1, model_dir=str(tmp_path_factory.mktemp("models")), progress=False)
    return model, subset(load_dataset("toy2d", "test"), 40, 7)


def rows_without_time(path) -> list[list[str]]:
    lines = Path(path).read_text().splitlines()
    lines = [ln for ln in lines if not ln.startswith("#")]
    header = lines[0].split("\t")
    drop = {header.index(c) for c in TIME_COLUMNS}
    return [[v for j, v in enumerate(ln.split("\t")) if j not in drop] for ln in lines]


def test_plan_batches_are_fixed_chunks(toy):
    _, data = toy
    assert plan_batches(data, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert plan_batches(data, 64) == [list(range(7))]
    with pytest.raises(ValueError, match="opt_batch"):
        plan_batches(data, 0)


def test_single_process_driver_writes_the_logs_of_the_runner_before_the_split(toy, tmp_path):
    model, data = toy
    star, theta = {}, {}
    for config in reference_configs():
        out = run_certification(
            config, model, data, tmp_path / f"{config.method}.tsv", sigma_star_cache=star, stage_cache=theta, **RUN
        )
        assert rows_without_time(out) == rows_without_time(REFERENCE / f"{config.method}.tsv"), config.method


def test_compute_batch_is_deterministic_and_picklable(toy):
    model, data = toy
    config = reference_configs()[2]  # ancer
    kw = dict(n0=50, n=400, alpha=0.001, batch_size=400, seed=1)
    a = compute_batch(config, model, data, [3, 4, 5], **kw)
    b = pickle.loads(pickle.dumps(compute_batch(config, model, data, [3, 4, 5], **kw)))
    assert isinstance(b, BatchResult) and b.indices == [120, 160, 200]
    assert [c.p_lower for c in a.certificates] == [c.p_lower for c in b.certificates]
    assert [c.radius for c in a.certificates] == [c.radius for c in b.certificates]
    assert len(a.sigma_star) == 3 and len(a.ancer) == 3
    assert torch.equal(a.ancer[0][0], b.ancer[0][0])
    skipped = compute_batch(config, model, data, [3, 4, 5], skip={4}, **kw)
    assert skipped.certificates[1] is None and skipped.certificates[0].radius == a.certificates[0].radius


def test_certificate_repr_is_short(toy):
    model, data = toy
    cert = compute_batch(
        reference_configs()[2], model, data, [0], n0=50, n=400, alpha=0.001, batch_size=400, seed=1
    ).certificates[0]
    text = repr(cert)
    assert text.startswith("Certificate(prediction=") and len(text) < 160 and "\n" not in text
    assert f"{cert.l2_radius:.4g}" in text


def test_figure_titles_state_n_alpha_and_inputs_and_classes_have_their_own_colours():
    from ddrs_app.compare import Budget
    from ddrs_app.methods import REGISTRY
    from ddrs_app.plots import CLASS_COLORS, LABEL_COLORS, run_suffix
    from matplotlib.colors import to_hex

    assert run_suffix(Budget(n=10_000, alpha=0.001), 40) == "n = 10000, alpha = 0.001, 40 inputs"
    method_colors = [s.color for s in REGISTRY.values()] + list(LABEL_COLORS.values())
    assert not {to_hex(c) for c in CLASS_COLORS} & {to_hex(c) for c in method_colors}


@pytest.mark.parametrize("method", ["ancer", "rddrs"])
def test_a_later_stage_certifies_the_same_whether_ddrs_was_shared_or_made_here(toy, tmp_path, method):
    """ANCER / RDDRS started from DDRS's sigma_x*: taken from the comparison's DDRS run (shared) or made by the run
    itself (``ddrs compare --methods ancer`` on a folder whose DDRS log exists) give the same certificates; the
    network-work columns differ, since a run counts the DDRS stage only when it made it."""
    model, data = toy
    dd = dict(iterations=3, samples=8)
    ddrs_config = MethodConfig("ddrs", sigma=0.1, ddrs_options=dd)
    later = MethodConfig(method, sigma=0.1, ddrs_options=dd, options=dict(iterations=2, samples=8))
    star: dict = {}
    run_certification(ddrs_config, model, data, tmp_path / "ddrs.tsv", sigma_star_cache=star, **RUN)
    assert len(star) == len(data)
    run_certification(later, model, data, tmp_path / "shared.tsv", sigma_star_cache=star, **RUN)
    run_certification(later, model, data, tmp_path / "alone.tsv", **RUN)
    work = ("forward_evals", "backward_evals")
    shared, alone = rows_without_time(tmp_path / "shared.tsv"), rows_without_time(tmp_path / "alone.tsv")
    header = shared[0]
    keep = [j for j, c in enumerate(header) if c not in work]
    assert [[r[j] for j in keep] for r in shared] == [[r[j] for j in keep] for r in alone]
    ev = header.index("forward_evals")
    assert all(int(a[ev]) > int(s[ev]) for s, a in zip(shared[1:], alone[1:]))
