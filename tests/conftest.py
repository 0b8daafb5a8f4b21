"""Shared test configuration: one torch thread, a deterministic Hypothesis profile (loaded by default) and
``--shuffle-seed``.

``python -m pytest -q --shuffle-seed 20261207`` runs the suite in a seeded random order (``.ci/run`` does,
so that no test depends on another having run first); without the option the order is the file order.
"""

import random

import pytest
import scipy.linalg  # noqa: F401  (loads scipy's own BLAS before the limit below)
import threadpoolctl
import torch
from hypothesis import HealthCheck, settings

# The command line's default thread count (``--threads 1``): a model a fixture trains is then the one a
# CLI call in the same test finds in the cache (the count is part of the cache key), and every number a
# test pins is the same on any machine.
torch.set_num_threads(1)
# numpy / scipy's BLAS at one thread too: on a busy machine a multi-threaded BLAS spins on the tiny matrices of the
# manifold batteries (scipy's logm took 15x longer beside one busy process)
threadpoolctl.threadpool_limits(1)  # after ``import scipy.linalg``: it limits the libraries loaded so far

settings.register_profile(
    "ci", deadline=None, derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shuffle-seed",
        type=int,
        default=None,
        help="run the tests in the random order of this seed (modules and the tests inside them shuffled)",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = config.getoption("--shuffle-seed")
    return None if seed is None else f"test order shuffled with --shuffle-seed {seed}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = config.getoption("--shuffle-seed")
    if seed is None:
        return
    # As pytest-randomly does: modules in a random order, and the tests inside each module shuffled, so that
    # module-scoped fixtures (a Ray cluster, a trained model) are still built once per module.
    rng = random.Random(seed)
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    blocks = list(modules.values())
    rng.shuffle(blocks)
    for block in blocks:
        rng.shuffle(block)
    items[:] = [item for block in blocks for item in block]
