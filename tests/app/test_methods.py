"""The method registry: a method added as one preset and one spec is known to ``ddrs certify``, ``ddrs
compare``, the plots and the claims, and the shipped specs keep what the runner did before."""

from __future__ import annotations

import csv

import pytest
from ddrs_app import methods, plots
from ddrs_app.cli import main

import certify
import ddrs
from benchmarks.analysis import claims


class ShrunkRS:
    """The preset: RS at a fixed fraction of the run's sigma (a stand-in for a user's new method)."""

    def __init__(self, factor: float = 0.5):
        self.factor = factor

    def noises(self, sigma: float, count: int) -> list:
        return [certify.IsotropicGaussian(sigma * self.factor)] * count


def choose_shrunk(config, model, x, generator, sigma_star=None, cache=None, progress=None):
    return ShrunkRS(**config.options).noises(config.sigma, len(x)), ddrs.NetworkCounter(), None


SPEC = methods.MethodSpec("shrunk", "Shrunk RS", "tab:brown", choose_shrunk, beats=("rs",), preset=ShrunkRS)


@pytest.fixture
def shrunk():
    methods.register(SPEC)
    try:
        yield SPEC
    finally:
        methods.unregister("shrunk")


def test_a_new_method_is_one_spec_and_one_preset(shrunk, tmp_path):
    md = ["--model-dir", str(tmp_path / "models"), "--quiet"]
    log = tmp_path / "shrunk.tsv"
    args = ["certify", "--dataset", "toy2d", "--method", "shrunk", "--sigma", "0.1", "--max-inputs", "4"]
    assert main(args + ["--n", "200", "--out", str(log)] + md) == 0
    assert len(certify.read_log(log)) == 4
    small = ["compare", "--dataset", "toy2d", "--sigmas", "0.1", "--methods", "rs", "shrunk", "--max-inputs", "6"]
    out = tmp_path / "compare"
    assert main(small + ["--n", "300", "--out-dir", str(out), "--jobs", "1"] + md) == 0
    rows = list(csv.DictReader(open(out / "toy2d" / "summary.csv")))
    assert [r["method"] for r in rows] == ["rs", "shrunk"]
    assert plots.color_of("shrunk") == "tab:brown"
    assert ("shrunk", "rs") in claims.chain()
    found = [r.claim for r in claims.evaluate(out, ["toy2d"]) if r.family == "chain"]
    assert any(c.startswith("Shrunk RS > RS") for c in found), found
    with pytest.raises(SystemExit):  # an option of another method is refused for it
        main(args + ["--metric", "log-euclidean", "--out", str(tmp_path / "x.tsv")] + md)


def test_without_registration_the_method_is_unknown(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["certify", "--dataset", "toy2d", "--method", "shrunk", "--out", str(tmp_path / "x.tsv")])
    assert "invalid choice: 'shrunk'" in capsys.readouterr().err


def test_the_shipped_registry():
    assert methods.method_names() == ("rs", "ddrs", "ancer", "rddrs", "mog", "dual")
    assert methods.data_dependent_names() == ("ddrs", "ancer", "rddrs")
    assert methods.compare_names() == ("rs", "ddrs", "ancer", "rddrs")
    assert claims.chain() == (("rddrs", "ancer"), ("ancer", "ddrs"), ("ddrs", "rs"))
    with pytest.raises(ValueError, match="name must be a word"):
        methods.register(methods.MethodSpec("two words", "x", "k", choose_shrunk))
