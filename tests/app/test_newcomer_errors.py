"""A fresh machine and a new user: input that used to give a wrong answer with exit code 0, or an error
nobody could act on, is now one line naming the argument (exit code 2, no log and no fingerprint left)
or, where the input is legal but suspicious, a one-line warning.

* pixel values outside [0, 1] (0..255 ints or floats): a warning naming the file, the range and the fix;
* ``--model package.module:factory`` without ``--weights``: an error unless ``--random-weights``;
* NaN / inf in a ``tensors:`` file: an error naming --dataset, the file and the first bad input;
* ``certify_model(metric=..., backend=...)`` and its ``options`` keys checked up front;
* the project's own cached model file as ``--model``;
* a whole pickled module whose class lives next to the user's code, without PYTHONPATH;
* fashion-mnist / mnist without their files: an error naming --data-dir / --dataset and how to get them.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ddrs_app.cli import main
from ddrs_app.data import BadInput, load_data, load_dataset
from ddrs_app.models import MLP
from ddrs_app.training import model_hash

import certify

RS = ["--method", "rs", "--sigma", "0.12", "--n0", "20", "--n", "100", "--batch-size", "100", "--quiet"]
API = dict(method="rs", sigma=0.12, n0=20, n=100, batch_size=100, progress=False, device="cpu")

FACTORY = textwrap.dedent("""
    from ddrs_app.models import MLP

    def make():
        return MLP((64,), 10, (8,))
""")

PICKLED_CLASS = textwrap.dedent("""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))
""")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Six digits as tensors files of every kind (uint8, int64/float 0..255, [0, 1], with a NaN / inf), a
    checkpoint and a factory module."""
    root = tmp_path_factory.mktemp("newcomer")
    test = load_dataset("digits", "test")
    x, y = test.X[:6].clone(), test.y[:6].clone()
    u8 = torch.round(x * 255).to(torch.uint8)
    torch.save({"x": u8, "y": y}, root / "uint8.pt")
    torch.save({"x": u8.to(torch.int64), "y": y}, root / "int64.pt")
    np.savez(root / "float255.npz", x=u8.numpy().astype(np.float64), y=y.numpy())
    torch.save({"x": x, "y": y}, root / "unit.pt")
    nan = x.clone()
    nan[4, 0, 3, 3] = float("nan")
    torch.save({"x": nan, "y": y}, root / "nan.pt")
    inf = x.numpy().copy()
    inf[2, 0, 1, 1] = np.inf
    np.savez(root / "inf.npz", x=inf, y=y.numpy())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)  # not the seed of --random-weights
        model = MLP((64,), 10, (8,))
    torch.save({"arch": model.arch, "state_dict": model.state_dict()}, root / "checkpoint.pt")
    torch.save(model.state_dict(), root / "state_dict.pt")
    (root / "newcomer_factory.py").write_text(FACTORY)
    return root


def _run(argv, capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err.strip()


def _assert_one_line_error(code, err, command, name, out: Path):
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"ddrs {command}: error: {name}"), err
    assert not out.exists(), "a log was left behind"
    assert not Path(str(out) + ".fingerprint.json").exists(), "a fingerprint was left behind"
    assert not Path(str(out) + ".regions").exists()


# ---------------------------------------------------------------------------------- 1. pixels in 0..255
@pytest.mark.parametrize("name", ["int64.pt", "float255.npz"])
def test_pixel_values_outside_unit_range_are_a_one_line_warning_naming_file_range_and_fix(
    files, tmp_path, name, capsys
):
    out = tmp_path / "log.tsv"
    code, err = _run(
        ["certify", *RS, "--model", str(files / "checkpoint.pt"), "--dataset", f"tensors:{files / name}"]
        + ["--out", str(out)],
        capsys,
    )
    assert code == 0  # legal input: certified, but the user is told
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"ddrs certify: warning: --dataset tensors:{files / name}")
    assert str(files / name) in line and "[0, 255]" in line and "outside [0, 1]" in line
    assert "divide x by 255" in line and "uint8" in line


@pytest.mark.parametrize("name", ["uint8.pt", "unit.pt"])
def test_inputs_in_the_unit_range_give_no_warning(files, tmp_path, name, capsys):
    out = tmp_path / "log.tsv"
    code, err = _run(
        ["certify", *RS, "--model", str(files / "checkpoint.pt"), "--dataset", f"tensors:{files / name}"]
        + ["--out", str(out)],
        capsys,
    )
    assert code == 0 and "warning" not in err, err


def test_range_warning_from_python_and_from_image_data_sets(files, tmp_path):
    from ddrs_app.api import as_dataset
    from ddrs_app.data import DataRangeWarning, _from_items

    with pytest.warns(DataRangeWarning, match=r"int64\.pt.*\[0, 255\].*divide x by 255"):
        load_data(f"tensors:{files / 'int64.pt'}")
    u8 = torch.load(files / "uint8.pt")
    with pytest.warns(DataRangeWarning, match=r"^data: .*\[0, 255\]"):
        as_dataset((u8["x"].to(torch.float32), u8["y"]))  # floats in 0..255 from Python
    images = [(torch.full((1, 2, 2), 200.0), 0), (torch.zeros(1, 2, 2), 1)]  # what an image data set returns
    with pytest.warns(DataRangeWarning, match=r"imagefolder:/some/dir: the inputs of /some/dir range over \[0, 200\]"):
        _from_items(images, "imagefolder:/some/dir", 1, None, 2, Path("/some/dir"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataRangeWarning)
        load_data(f"tensors:{files / 'uint8.pt'}")
        as_dataset((u8["x"], u8["y"]))  # uint8 is divided by 255


# ---------------------------------------------------------------------------------- 2. factory, no weights
def test_factory_without_weights_is_an_error_unless_random_weights(files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(files)
    data = f"tensors:{files / 'unit.pt'}"
    out = tmp_path / "log.tsv"
    code, err = _run(["certify", *RS, "--model", "newcomer_factory:make", "--dataset", data, "--out", str(out)], capsys)
    _assert_one_line_error(code, err, "certify", "--weights:", out)
    assert "--random-weights" in err and "freshly initialised" in err
    cmp = tmp_path / "cmp"
    budget = ["--n", "100", "--sigmas", "0.12", "--methods", "rs", "--quiet", "--device", "cpu"]
    code, err = _run(
        ["compare", *budget, "--model", "newcomer_factory:make", "--dataset", data, "--out-dir", str(cmp)], capsys
    )
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("ddrs compare: error: --weights:"), err
    assert not cmp.exists()
    # on purpose: the untrained network, initialised the same way every time (so the log resumes)
    argv = ["certify", *RS, "--model", "newcomer_factory:make", "--random-weights", "--dataset", data]
    code, err = _run(argv + ["--out", str(out)], capsys)
    assert code == 0, err
    fp = json.loads(Path(str(out) + ".fingerprint.json").read_text())
    code, err = _run(argv + ["--out", str(tmp_path / "again.tsv")], capsys)
    assert code == 0, err
    assert (
        json.loads(Path(str(tmp_path / "again.tsv") + ".fingerprint.json").read_text())["model_hash"]
        == fp["model_hash"]
    )
    with_weights = MLP((64,), 10, (8,))
    with_weights.load_state_dict(torch.load(files / "state_dict.pt"))
    assert fp["model_hash"] != model_hash(with_weights)  # the fingerprint tells the random network apart
    # --random-weights elsewhere is an error, not ignored
    for extra, name in [
        (["--model", str(files / "checkpoint.pt")], "--random-weights: only used with --model package.module:factory"),
        (["--model", "newcomer_factory:make", "--weights", str(files / "state_dict.pt")], "--random-weights:"),
        ([], "--random-weights: only used with --model"),
    ]:
        bad = tmp_path / "bad.tsv"
        dataset = data if extra else "digits"
        code, err = _run(["certify", *RS, *extra, "--random-weights", "--dataset", dataset, "--out", str(bad)], capsys)
        _assert_one_line_error(code, err, "certify", name, bad)


def test_factory_without_weights_from_python(files, tmp_path, monkeypatch):
    from ddrs_app.api import certify_model

    monkeypatch.chdir(files)
    data = f"tensors:{files / 'unit.pt'}"
    with pytest.raises(BadInput, match="^--weights: .*--random-weights"):
        certify_model("newcomer_factory:make", data, tmp_path / "a.tsv", **API)
    assert not (tmp_path / "a.tsv").exists()
    result = certify_model("newcomer_factory:make", data, tmp_path / "b.tsv", random_weights=True, **API)
    assert result["summary"]["rows"] == 6
    trained = certify_model("newcomer_factory:make", data, tmp_path / "c.tsv", weights=files / "state_dict.pt", **API)
    same = certify_model(str(files / "checkpoint.pt"), data, tmp_path / "d.tsv", **API)
    assert certify.read_log(trained["log"])["predict"].tolist() == certify.read_log(same["log"])["predict"].tolist()


# ---------------------------------------------------------------------------------- 3. NaN / inf
@pytest.mark.parametrize(
    "name,extra,index,what",
    [("nan.pt", [], 4, "NaN"), ("inf.npz", [], 2, "an infinite value"), ("nan.pt", ["--every", "2"], 4, "NaN")],
)
def test_nan_or_inf_in_a_tensors_file_is_one_line_naming_file_and_index_and_no_log(
    files, tmp_path, name, extra, index, what, capsys
):
    out = tmp_path / "log.tsv"
    path = files / name
    argv = ["certify", *RS, *extra, "--model", str(files / "checkpoint.pt"), "--dataset", f"tensors:{path}"]
    code, err = _run(argv + ["--out", str(out)], capsys)
    _assert_one_line_error(code, err, "certify", "--dataset", out)
    assert f"input {index} of {path} holds {what}" in err, err
    # at load time, before any model or log
    with pytest.raises(BadInput, match=f"^--dataset tensors:.*input {index} of .* holds"):
        load_data(f"tensors:{path}", every=2 if extra else 1)
    # an input that is not selected does not matter
    assert len(load_data(f"tensors:{files / 'nan.pt'}", max_inputs=4)) == 4


def test_nan_from_python_is_named_before_any_log(files, tmp_path):
    from ddrs_app.api import certify_model

    blob = torch.load(files / "nan.pt")
    model = MLP((64,), 10, (8,))
    with pytest.raises(BadInput, match="^data: input 4 .* holds NaN"):
        certify_model(model, (blob["x"], blob["y"]), tmp_path / "a.tsv", **API)
    assert not (tmp_path / "a.tsv").exists() and not (tmp_path / "a.tsv.fingerprint.json").exists()


# ---------------------------------------------------------------------------------- 4. certify_model options
def test_certify_model_takes_metric_and_backend_and_checks_options_up_front(files, tmp_path):
    from ddrs_app.api import certify_model

    model = str(files / "checkpoint.pt")
    data = f"tensors:{files / 'unit.pt'}"
    out = tmp_path / "bad.tsv"
    bad = [
        (dict(method="rddrs", options=dict(metric="log-euclidean")), "^options: unknown key 'metric'.*metric=..."),
        (dict(method="ancer", options=dict(iteratons=3)), "^options: unknown key 'iteratons'.*valid keys.*iterations"),
        (dict(method="rs", options=dict(iterations=3)), "^options: unknown key 'iterations' for method rs"),
        (dict(method="ddrs", options=dict(iterations=3)), "^options: .*ddrs_options"),
        (dict(method="rddrs", ddrs_options=dict(sigma0=0.3)), "^ddrs_options: unknown key 'sigma0'.*sigma="),
        (dict(method="rddrs", options=dict(ancer_options=dict(kapa=2))), r"^options\['ancer_options'\]: .*'kapa'"),
        (dict(method="rs", metric="log-euclidean"), "^metric: only used with method rddrs"),
        (dict(method="rddrs", metric="euclid"), "^metric: expected one of affine-invariant"),
        (dict(method="rddrs", backend="scipy"), "^backend: expected one of rgd, pymanopt"),
    ]
    for kwargs, message in bad:
        args = dict(API) | kwargs
        with pytest.raises(BadInput, match=message):
            certify_model(model, data, out, **args)
        assert not out.exists() and not Path(str(out) + ".fingerprint.json").exists(), kwargs
    budget = dict(
        API,
        method="rddrs",
        metric="log-euclidean",
        backend="rgd",
        max_inputs=1,
        options=dict(iterations=1, samples=8, selection_samples=20),
        ddrs_options=dict(iterations=1, samples=8, selection_samples=20),
    )
    result = certify_model(model, data, tmp_path / "le.tsv", **budget)
    fp = json.loads(Path(str(result["log"]) + ".fingerprint.json").read_text())
    assert fp["metric"] == "log-euclidean" and fp["backend"] == "rgd" and fp["label"] == "rddrs-log-euclidean"


def test_python_metric_choices_are_the_command_lines():
    from ddrs_app.api import BACKENDS, METRICS
    from ddrs_app.cli import build_parser

    certify_parser = build_parser()._subparsers._group_actions[0].choices["certify"]
    choices = {a.dest: a.choices for a in certify_parser._actions}
    assert tuple(choices["metric"]) == METRICS and tuple(choices["backend"]) == BACKENDS


# ---------------------------------------------------------------------------------- 5. the project's cache
def test_the_projects_own_cached_model_is_a_model_file(tmp_path, capsys):
    from ddrs_app.api import certify_model
    from ddrs_app.model_io import load_model
    from ddrs_app.training import train

    model, info = train("toy2d", 0.1, epochs=1, model_dir=tmp_path / "models", progress=False)
    path = Path(info["path"])
    blob = torch.load(path, weights_only=True)
    assert "arch" not in blob and blob["info"]["arch"] == model.arch  # the cache's own format
    loaded = load_model(str(path))
    assert model_hash(loaded) == model_hash(model)
    out = tmp_path / "log.tsv"
    argv = ["certify", *RS, "--model", str(path), "--dataset", "toy2d", "--max-inputs", "4", "--sigma", "0.1"]
    code, err = _run(argv + ["--out", str(out)], capsys)
    assert code == 0, err
    fp = json.loads(Path(str(out) + ".fingerprint.json").read_text())
    assert fp["model_hash"] == model_hash(model) and len(certify.read_log(out)) == 4
    api = certify_model(str(path), "toy2d", tmp_path / "api.tsv", **dict(API, sigma=0.1, max_inputs=4))
    assert certify.read_log(api["log"])["predict"].tolist() == certify.read_log(out)["predict"].tolist()


# ---------------------------------------------------------------------------------- 6. pickle next to the code
def test_pickled_module_whose_class_lives_next_to_the_users_code_loads_without_pythonpath(
    files, tmp_path, monkeypatch, capsys
):
    from ddrs_app.model_io import load_model

    work = tmp_path / "work"
    work.mkdir()
    module_name = "newcomer_pickled_net"
    (work / f"{module_name}.py").write_text(PICKLED_CLASS)
    spec = importlib.util.spec_from_file_location(module_name, work / f"{module_name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, module_name, module)
    spec.loader.exec_module(module)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = module.Net()
    torch.save(net, work / "whole.pt")
    monkeypatch.delitem(sys.modules, module_name)  # a fresh process: only the file next to the user's code
    monkeypatch.chdir(work)
    assert str(work) not in sys.path  # nothing else makes the class importable
    loaded = load_model("whole.pt", trust_pickle=True)
    assert type(loaded).__name__ == "Net" and model_hash(loaded) == model_hash(net)
    assert str(work) not in sys.path  # the path is restored
    sys.modules.pop(module_name, None)
    out = tmp_path / "log.tsv"
    data = f"tensors:{files / 'unit.pt'}"
    code, err = _run(
        ["certify", *RS, "--model", "whole.pt", "--trust-pickle", "--dataset", data, "--out", str(out)], capsys
    )
    assert code == 0, err
    assert len(certify.read_log(out)) == 6
    sys.modules.pop(module_name, None)


# ---------------------------------------------------------------------------------- 7. IDX files missing
@pytest.fixture
def no_idx_files(tmp_path, monkeypatch):
    """Neither the Debian location nor a download: empty directories, no mirrors, a private cache."""
    import ddrs_app.data
    import torchvision.datasets

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setitem(ddrs_app.data.DEBIAN_DIRS, "fashion-mnist", str(tmp_path / "no-debian-fashion"))
    monkeypatch.setitem(ddrs_app.data.DEBIAN_DIRS, "mnist", str(tmp_path / "no-debian-mnist"))
    monkeypatch.setenv("DDRS_CACHE_DIR", str(tmp_path / "cache"))
    for cls in (torchvision.datasets.MNIST, torchvision.datasets.FashionMNIST):
        monkeypatch.setattr(cls, "mirrors", [])
    return empty


@pytest.mark.parametrize("command", ["train", "certify", "compare"])
@pytest.mark.parametrize("data_dir", [True, False])
def test_fashion_mnist_without_its_files_is_one_line_naming_where_to_get_them(
    no_idx_files, tmp_path, command, data_dir, capsys
):
    models = tmp_path / "models"
    out = tmp_path / "out"
    argv = {
        "train": ["train", "--sigma", "0.25", "--quiet"],
        "certify": ["certify", *RS, "--out", str(out)],
        "compare": ["compare", "--quiet", "--methods", "rs", "--sigmas", "0.25", "--out-dir", str(out)],
    }[command]
    argv += ["--dataset", "fashion-mnist", "--model-dir", str(models)]
    argv += ["--data-dir", str(no_idx_files)] if data_dir else []
    code, err = _run(argv, capsys)
    name = "--data-dir:" if data_dir else "--dataset fashion-mnist:"
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"ddrs {command}: error: {name}"), err
    assert "apt-get install dataset-fashion-mnist" in err and "--data-dir" in err, err
    assert "train-images-idx3-ubyte" in err
    assert not out.exists() and not Path(str(out) + ".fingerprint.json").exists()
    assert not models.exists() or not any(models.iterdir())


def test_mnist_without_its_files_names_data_dir(no_idx_files, tmp_path, capsys):
    out = tmp_path / "log.tsv"
    code, err = _run(["certify", *RS, "--dataset", "mnist", "--out", str(out)], capsys)
    _assert_one_line_error(code, err, "certify", "--dataset mnist:", out)
    assert "--data-dir" in err and "downloading them" in err
    with pytest.raises(FileNotFoundError, match="^--data-dir"):  # still a FileNotFoundError for old callers
        load_dataset("mnist", "test", data_dir=no_idx_files)
