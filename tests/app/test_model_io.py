"""Your model, your data: a tiny model trained here, saved in every format ``--model`` accepts, certifies
the same inputs to identical logs (time columns aside), through ``tensors:`` (.pt and .npz) and through
an image folder written here; every kind of bad input is one line naming the argument, exit code 2 and
no log."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from ddrs_app.cli import main
from ddrs_app.data import BadInput, load_data, load_dataset
from ddrs_app.model_io import Normalize, load_model, resolve_device
from ddrs_app.models import MLP

import certify

HIDDEN = (32,)
PER_CLASS = 2
RS = ["--method", "rs", "--sigma", "0.12", "--n0", "40", "--n", "300", "--batch-size", "300", "--quiet"]

FACTORY = textwrap.dedent("""
    import torch
    from ddrs_app.models import MLP

    def make():
        return MLP((64,), 10, (32,))

    def make_wide():
        return MLP((64,), 10, (48,))

    class Normalised(torch.nn.Module):  # the normalisation written by hand inside the model
        def __init__(self):
            super().__init__()
            self.net = MLP((64,), 10, (32,))

        def forward(self, x):
            return self.net((x - 0.25) / 0.5)

    def make_normalised():
        return Normalised()
""")


def _rows_without_time(path: Path) -> list[list[str]]:
    lines = Path(path).read_text().splitlines()
    header = lines[0].split("\t")
    drop = {header.index(c) for c in ("time", "choose_seconds") if c in header}
    return [[v for j, v in enumerate(line.split("\t")) if j not in drop] for line in lines]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small MLP trained on digits with noise, saved every way; test inputs as PNGs and tensors."""
    root = tmp_path_factory.mktemp("tiny")
    train = load_dataset("digits", "train")
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = MLP((64,), 10, HIDDEN)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        x = train.X + 0.12 * torch.randn(train.X.shape, generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), train.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    test = load_dataset("digits", "test")
    pick = torch.cat([torch.nonzero(test.y == c)[:PER_CLASS, 0] for c in range(10)])  # class order = ImageFolder's
    u8 = torch.round(test.X[pick] * 255).to(torch.uint8)  # (20, 1, 8, 8)
    labels = test.y[pick]
    from PIL import Image

    folder = root / "images"
    for i, (img, c) in enumerate(zip(u8, labels.tolist())):
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy(), mode="L").save(folder / str(c) / f"{i:04d}.png")
    torch.save({"x": u8, "y": labels}, root / "data.pt")
    np.savez(root / "data.npz", x=u8.numpy(), y=labels.numpy())

    example = (u8[:2].float() / 255,)
    files = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated; published checkpoints still use it
        program = torch.export.export(model, example, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        torch.export.save(program, root / "model.pt2")
        torch.jit.trace(model, example).save(root / "model.ts")
    torch.save({"arch": model.arch, "state_dict": model.state_dict()}, root / "checkpoint.pt")
    torch.save(model.state_dict(), root / "state_dict.pt")
    torch.save(model, root / "whole.pt")
    (root / "tinyfactory.py").write_text(FACTORY)
    files = {
        "export": [str(root / "model.pt2")],
        "torchscript": [str(root / "model.ts")],
        "checkpoint": [str(root / "checkpoint.pt")],
        "factory": ["tinyfactory:make", "--weights", str(root / "state_dict.pt")],
        "pickle": [str(root / "whole.pt"), "--trust-pickle"],
    }
    return {"root": root, "model": model, "files": files, "labels": labels, "u8": u8}


def _certify(tiny, tmp_path, monkeypatch, model_args, data, name, extra=()):
    monkeypatch.chdir(tiny["root"])  # the factory module lives here
    out = tmp_path / f"{name}.tsv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["certify", "--dataset", data, "--model", *model_args, *RS, *extra, "--out", str(out)])
    assert code == 0
    return out


def test_every_model_format_gives_the_same_log(tiny, tmp_path, monkeypatch):
    data = f"tensors:{tiny['root'] / 'data.pt'}"
    logs = {k: _certify(tiny, tmp_path, monkeypatch, v, data, k) for k, v in tiny["files"].items()}
    reference = _rows_without_time(logs["checkpoint"])
    assert len(reference) == 1 + 10 * PER_CLASS
    for name, path in logs.items():
        assert _rows_without_time(path) == reference, name
    log = certify.read_log(logs["checkpoint"])
    assert log["label"].tolist() == tiny["labels"].tolist()
    assert float(np.mean(log["correct"])) >= 0.7  # the tiny model is a real classifier under sigma = 0.12
    assert float(np.max(log["radius"])) > 0.1


def test_image_folder_npz_and_pt_tensors_give_the_same_inputs_and_log(tiny, tmp_path, monkeypatch):
    folder = load_data(f"imagefolder:{tiny['root'] / 'images'}")
    tensors = load_data(f"tensors:{tiny['root'] / 'data.pt'}")
    npz = load_data(f"tensors:{tiny['root'] / 'data.npz'}")
    assert folder.X.shape == (10 * PER_CLASS, 1, 8, 8) and folder.num_classes == 10 and folder.classes_known
    assert torch.equal(folder.X, tensors.X) and torch.equal(folder.X, npz.X)
    assert torch.equal(folder.y, tensors.y) and torch.equal(folder.y, tiny["labels"])
    assert float(folder.X.max()) <= 1.0 and torch.equal(folder.X, tiny["u8"].float() / 255)
    sub = load_data(f"imagefolder:{tiny['root'] / 'images'}", every=3, max_inputs=4)
    assert sub.indices.tolist() == [0, 3, 6, 9] and torch.equal(sub.X, folder.X[[0, 3, 6, 9]])

    model = tiny["files"]["checkpoint"]
    runs = [
        _certify(tiny, tmp_path, monkeypatch, model, f"imagefolder:{tiny['root'] / 'images'}", "folder"),
        _certify(tiny, tmp_path, monkeypatch, model, f"tensors:{tiny['root'] / 'data.npz'}", "npz"),
        _certify(tiny, tmp_path, monkeypatch, model, f"tensors:{tiny['root'] / 'data.pt'}", "pt"),
    ]
    assert _rows_without_time(runs[0]) == _rows_without_time(runs[1]) == _rows_without_time(runs[2])


def test_data_dependent_method_through_an_exported_program(tiny, tmp_path, monkeypatch):
    """DDRS differentiates through the model: the torch.export program and the checkpoint agree."""
    extra = ["--method", "ddrs", "--iterations", "3", "--samples", "8", "--max-inputs", "4"]
    data = f"tensors:{tiny['root'] / 'data.pt'}"
    a = _certify(tiny, tmp_path, monkeypatch, tiny["files"]["export"], data, "ddrs-export", extra)
    b = _certify(tiny, tmp_path, monkeypatch, tiny["files"]["checkpoint"], data, "ddrs-ckpt", extra)
    assert _rows_without_time(a) == _rows_without_time(b)
    assert len(_rows_without_time(a)) == 5


def test_normalize_equals_the_normalisation_inside_the_model(tiny, tmp_path, monkeypatch):
    data = f"tensors:{tiny['root'] / 'data.pt'}"
    state = ["--weights", str(tiny["root"] / "state_dict.pt")]
    torch.save({"net." + k: v for k, v in tiny["model"].state_dict().items()}, tiny["root"] / "normalised.pt")
    inside = _certify(
        tiny,
        tmp_path,
        monkeypatch,
        ["tinyfactory:make_normalised", "--weights", str(tiny["root"] / "normalised.pt")],
        data,
        "inside",
    )
    wrapped = _certify(
        tiny, tmp_path, monkeypatch, ["tinyfactory:make", *state, "--normalize", "0.25", "0.5"], data, "wrapped"
    )
    plain = _certify(tiny, tmp_path, monkeypatch, ["tinyfactory:make", *state], data, "plain")
    assert _rows_without_time(inside) == _rows_without_time(wrapped)
    assert _rows_without_time(plain) != _rows_without_time(wrapped)  # the wrapper does change the network
    model = load_model(str(tiny["root"] / "checkpoint.pt"), normalize=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert isinstance(model, Normalize) and model.channels == 3
    x = torch.rand(2, 3, 4, 4)
    shifted = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)

    class Capture(torch.nn.Module):
        def forward(self, t):
            self.seen = t
            return t.flatten(1)[:, :10]

    model.model = Capture()
    model(x)
    assert torch.equal(model.model.seen, shifted)


def _bad_cases(root: Path):
    data = f"tensors:{root / 'data.pt'}"
    corrupt = root / "corrupt.pt"
    corrupt.write_bytes((root / "checkpoint.pt").read_bytes()[:300])
    seven = MLP((64,), 7, HIDDEN)
    torch.save({"arch": seven.arch, "state_dict": seven.state_dict()}, root / "seven.pt")
    empty = root / "empty_folder"
    (empty / "cat").mkdir(parents=True, exist_ok=True)
    (empty / "cat" / "notes.txt").write_text("no images here")
    ckpt = str(root / "checkpoint.pt")
    blob = torch.load(root / "data.pt")
    nan = blob["x"].float() / 255
    nan[0, 0, 0, 0] = float("nan")
    torch.save({"x": nan, "y": blob["y"]}, root / "nan.pt")
    (root / "no_idx").mkdir(exist_ok=True)
    return [
        ("missing checkpoint", ["--model", str(root / "nothere.pt"), "--dataset", data], "--model"),
        ("corrupt checkpoint", ["--model", str(corrupt), "--dataset", data], "--model"),
        ("factory not importable", ["--model", "no_such_module:make", "--dataset", data], "--model"),
        ("factory attribute missing", ["--model", "tinyfactory:nope", "--dataset", data], "--model"),
        (
            "mismatched state_dict",
            ["--model", "tinyfactory:make_wide", "--weights", str(root / "state_dict.pt"), "--dataset", data],
            "--weights",
        ),
        (
            "output width != labels",
            ["--model", str(root / "seven.pt"), "--dataset", f"imagefolder:{root / 'images'}"],
            "--model",
        ),
        ("image folder without images", ["--model", ckpt, "--dataset", f"imagefolder:{empty}"], "--dataset"),
        ("unusable device", ["--model", ckpt, "--dataset", data, "--device", "cuda:63"], "--device"),
        ("unknown device", ["--model", ckpt, "--dataset", data, "--device", "tpu"], "--device"),
        (
            "normalize wrong channels",
            ["--model", ckpt, "--dataset", data, "--normalize", "0.5", "0.5", "0.5", "0.2", "0.2", "0.2"],
            "--normalize",
        ),
        (
            "normalize odd count",
            ["--model", ckpt, "--dataset", data, "--normalize", "0.5", "0.5", "0.2"],
            "--normalize",
        ),
        ("pickle without trust", ["--model", str(root / "whole.pt"), "--dataset", data], "--trust-pickle"),
        ("bare state_dict", ["--model", str(root / "state_dict.pt"), "--dataset", data], "--model"),
        ("tensors file missing", ["--model", ckpt, "--dataset", f"tensors:{root / 'none.pt'}"], "--dataset"),
        ("own data without a model", ["--dataset", data], "--model"),
        ("factory without weights", ["--model", "tinyfactory:make", "--dataset", data], "--weights"),
        ("NaN in a tensors file", ["--model", ckpt, "--dataset", f"tensors:{root / 'nan.pt'}"], "input 0 of"),
        ("IDX files missing", ["--dataset", "fashion-mnist", "--data-dir", str(root / "no_idx")], "--data-dir"),
    ]


def test_bad_input_is_one_line_naming_the_argument_exit_2_and_no_log(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tiny["root"])
    for case, argv, name in _bad_cases(tiny["root"]):
        out = tmp_path / f"{case.replace(' ', '_')}.tsv"
        code = main(["certify", *RS, *argv, "--out", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2, case
        assert len(err.splitlines()) == 1, (case, err)
        assert err.startswith("ddrs certify: error: ") and name in err, (case, err)
        assert not out.exists() and not Path(str(out) + ".regions").exists(), case


def test_console_script_exit_code_is_2(tiny, tmp_path):
    out = tmp_path / "x.tsv"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddrs_app.cli",
            "certify",
            *RS,
            "--model",
            "nope_mod:f",
            "--dataset",
            f"tensors:{tiny['root'] / 'data.pt'}",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tiny["root"],
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--model" in proc.stderr
    assert not out.exists()


def test_resolve_device():
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else ("mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu")
    )
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("gpu", "cuda:x", "tpu:0"):
        with pytest.raises(BadInput, match="--device"):
            resolve_device(bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible to torch: GPU run not tested")
def test_certify_on_the_gpu(tiny, tmp_path, monkeypatch):
    data = f"tensors:{tiny['root'] / 'data.pt'}"
    cpu = _certify(tiny, tmp_path, monkeypatch, tiny["files"]["checkpoint"], data, "cpu", ["--device", "cpu"])
    gpu = _certify(tiny, tmp_path, monkeypatch, tiny["files"]["checkpoint"], data, "gpu", ["--device", "cuda"])
    a, b = certify.read_log(cpu), certify.read_log(gpu)
    assert len(a) == len(b) and a["label"].tolist() == b["label"].tolist()
    assert float(np.mean(b["predict"] == a["predict"])) >= 0.9  # different noise / arithmetic, same classifier


def test_python_entry_point_matches_the_command_line(tiny, tmp_path, monkeypatch):
    """``ddrs_app.api.certify_model`` on tensors, a DataLoader and a torchvision data set object writes the
    log the command line writes, plus the report."""
    from ddrs_app.api import certify_model
    from ddrs_app.data import _image_loader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    cli = _certify(
        tiny, tmp_path, monkeypatch, tiny["files"]["checkpoint"], f"tensors:{tiny['root'] / 'data.pt'}", "cli"
    )
    kw = dict(method="rs", sigma=0.12, n0=40, n=300, batch_size=300, progress=False, device="cpu")
    x = tiny["u8"].float() / 255
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, tiny["labels"]), batch_size=7)
    folder = ImageFolder(str(tiny["root"] / "images"), transform=ToTensor(), loader=_image_loader)
    for name, data in [("pair", (tiny["u8"], tiny["labels"])), ("loader", loader), ("folder", folder)]:
        result = certify_model(tiny["model"], data, tmp_path / f"api-{name}.tsv", **kw)
        assert _rows_without_time(result["log"]) == _rows_without_time(cli), name
        assert result["num_classes"] == 10 and result["summary"]["rows"] == 10 * PER_CLASS
        assert result["report"]["plot"].is_file() and "<b> rs </b>" in result["report"]["markdown"].read_text()
    with pytest.raises(BadInput, match="--model"):
        certify_model(MLP((64,), 7, HIDDEN), folder, tmp_path / "bad.tsv", **kw)
    assert not (tmp_path / "bad.tsv").exists()


def test_compare_your_model_on_your_data(tiny, tmp_path, monkeypatch, capsys):
    """``ddrs compare --model M --dataset tensors:FILE``: every method on the user's model and data, the
    tables and plots; its RS log is the one ``ddrs certify`` writes for the same budget; another model
    in the same out-dir recomputes the logs (fingerprints), never reuses them."""
    data = f"tensors:{tiny['root'] / 'data.pt'}"
    budget = ["--n", "300", "--max-inputs", "6", "--every", "3", "--sigmas", "0.12", "--quiet", "--device", "cpu"]
    argv = ["compare", "--dataset", data, "--out-dir", str(tmp_path / "cmp"), "--methods", "rs", "ddrs", "ancer"]
    monkeypatch.chdir(tiny["root"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv + ["--model", *tiny["files"]["checkpoint"], *budget]) == 0
    out = tmp_path / "cmp" / "tensors-data"
    md = (out / "summary.md").read_text()
    for method in ("rs", "ddrs", "ancer"):
        assert f"| {method} |" in md
        assert len(certify.read_log(out / "logs" / f"{method}_sigma0.12.tsv")) == 6
    assert (out / "certified_accuracy_l2.png").stat().st_size > 10_000
    single = tmp_path / "rs.tsv"
    rs = ["--method", "rs", "--sigma", "0.12", "--n0", "100", "--n", "300", "--batch-size", "10000", "--quiet"]
    sub = ["--every", "3", "--max-inputs", "6", "--device", "cpu"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (
            main(
                ["certify", "--dataset", data, "--model", *tiny["files"]["checkpoint"], *rs, *sub, "--out", str(single)]
            )
            == 0
        )
    assert _rows_without_time(single) == _rows_without_time(out / "logs" / "rs_sigma0.12.tsv")
    # another model, same out-dir: the logs are recomputed for it
    other = MLP((64,), 10, HIDDEN)
    torch.save({"arch": other.arch, "state_dict": other.state_dict()}, tmp_path / "other.pt")
    capsys.readouterr()
    assert main(argv + ["--model", str(tmp_path / "other.pt"), *budget]) == 0
    assert "differs in model_hash" in capsys.readouterr().err
    assert _rows_without_time(out / "logs" / "rs_sigma0.12.tsv") != _rows_without_time(single)


@pytest.mark.parametrize(
    "extra,message",
    [
        ([], "--model: required with --dataset tensors:"),
        (["--model", "m.pt", "--dataset", "digits"], "--model: give exactly one --dataset"),
        (["--normalize", "0.5", "0.5"], "--normalize: only used with --model"),
    ],
)
def test_compare_your_data_bad_input_is_one_line_exit_2(tiny, tmp_path, extra, message, capsys):
    argv = ["compare", "--dataset", f"tensors:{tiny['root'] / 'data.pt'}", "--out-dir", str(tmp_path / "c"), "--quiet"]
    if extra[:1] == ["--normalize"]:
        argv = ["compare", "--dataset", "digits", "--out-dir", str(tmp_path / "c"), "--quiet"]
    with pytest.raises(SystemExit) as err:
        main(argv + extra)
    assert err.value.code == 2
    text = capsys.readouterr().err
    assert text.count("\n") == 1 and message in text
    assert not (tmp_path / "c").exists()


def test_folder_names_of_data_specs():
    from ddrs_app.data import folder_name

    assert folder_name("digits") == "digits"
    assert folder_name("imagefolder:~/data/val/") == "imagefolder-val"
    assert folder_name("torchvision:CIFAR10:~/data") == "torchvision-CIFAR10"
    assert folder_name("tensors:/x/my data.npz") == "tensors-my_data"
    with pytest.raises(BadInput, match="--dataset"):
        folder_name("imagenet")


def test_compare_bad_input_is_one_line_exit_2_and_nothing_written(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tiny["root"])
    budget = ["--n", "300", "--max-inputs", "4", "--sigmas", "0.12", "--methods", "rs", "--quiet"]
    for case, argv, name in _bad_cases(tiny["root"]):
        out = tmp_path / case.replace(" ", "_")
        try:
            code = main(["compare", *budget, *argv, "--out-dir", str(out)])
        except SystemExit as exit_:
            code = exit_.code
        err = capsys.readouterr().err.strip()
        assert code == 2, case
        assert len(err.splitlines()) == 1, (case, err)
        assert err.startswith("ddrs compare: error: ") and name in err, (case, err)
        assert not out.exists(), case


def test_python_entry_point_never_changes_your_model_and_takes_a_model_file(tiny, tmp_path, monkeypatch):
    """certify_model certifies the eval-mode network without moving or switching the caller's module
    (a copy is made when needed), and a --model string works without workers."""
    from ddrs_app.api import certify_model

    model = MLP((64,), 10, HIDDEN)
    model.load_state_dict(tiny["model"].state_dict())
    model.train()  # the caller's mode
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(method="rs", sigma=0.12, n0=40, n=300, batch_size=300, progress=False, device="cpu")
    data = (tiny["u8"], tiny["labels"])
    trained_mode = certify_model(model, data, tmp_path / "a.tsv", **kw)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    monkeypatch.chdir(tiny["root"])
    from_file = certify_model(tiny["files"]["checkpoint"][0], data, tmp_path / "b.tsv", **kw)
    assert _rows_without_time(trained_mode["log"]) == _rows_without_time(from_file["log"])
