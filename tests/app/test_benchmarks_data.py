"""Benchmark data loaders: real files (scikit-learn digits, Debian Fashion-MNIST IDX files),
shapes, ranges, class counts, the seeded rotation and the subset helper."""

import os
from pathlib import Path

import pytest
import torch
from ddrs_app.data import DEBIAN_DIRS, load_dataset, rotation_matrix, subset

FMNIST_DIR = Path(DEBIAN_DIRS["fashion-mnist"])
FMNIST_FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
HAVE_FMNIST = all((FMNIST_DIR / f).is_file() for f in FMNIST_FILES)
if not HAVE_FMNIST:
    print(f"Fashion-MNIST IDX files not found in {FMNIST_DIR}: fashion-mnist tests will be skipped")
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason=f"Fashion-MNIST IDX files not found in {FMNIST_DIR}")


def _check_basic(ds, n, shape, num_classes):
    assert len(ds) == n
    assert ds.X.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert tuple(ds.X.shape) == (n,) + shape and ds.input_shape == shape
    assert ds.num_classes == num_classes
    assert set(ds.y.unique().tolist()) == set(range(num_classes))
    assert float(ds.X.min()) >= 0.0 and float(ds.X.max()) <= 1.0


def test_digits_shapes_ranges_counts():
    tr, te = load_dataset("digits", "train"), load_dataset("digits", "test")
    _check_basic(tr, 1347, (1, 8, 8), 10)
    _check_basic(te, 450, (1, 8, 8), 10)
    assert tr.dim == 64 and tr.name == "digits" and te.split == "test"
    assert float(tr.X.max()) == 1.0  # scaled by 1/16, the maximum pixel value 16 occurs
    counts = torch.bincount(te.y, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46  # stratified split
    again = load_dataset("digits", "test")
    assert torch.equal(again.X, te.X) and torch.equal(again.y, te.y)  # fixed split


def test_toy2d_elongated_rotated_classes():
    tr, te = load_dataset("toy2d", "train"), load_dataset("toy2d", "test")
    _check_basic(tr, 3000, (2,), 3)
    _check_basic(te, 600, (2,), 3)
    assert not torch.equal(tr.X[:600], te.X)
    assert torch.equal(load_dataset("toy2d", "train").X, tr.X)
    assert not torch.equal(load_dataset("toy2d", "train", seed=1).X, tr.X)
    directions = []
    for c in range(3):
        cov = torch.cov(tr.X[tr.y == c].T.double())
        ev, evec = torch.linalg.eigh(cov)
        assert ev[1] / ev[0] > 10  # elongated
        directions.append(evec[:, 1])
    for i in range(3):
        for j in range(i + 1, 3):  # long axes along different directions
            assert abs(float(directions[i] @ directions[j])) < 0.9


@needs_fmnist
def test_fashion_mnist_from_debian_files():
    te = load_dataset("fashion-mnist", "test")
    _check_basic(te, 10000, (1, 28, 28), 10)
    assert torch.bincount(te.y).tolist() == [1000] * 10
    assert te.dim == 784
    tr = load_dataset("fashion-mnist", "train")
    assert len(tr) == 60000 and tuple(tr.X.shape[1:]) == (1, 28, 28)


@needs_fmnist
def test_fashion_mnist_from_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DDRS_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "files"
    src.mkdir()
    for f in FMNIST_FILES:
        os.symlink(FMNIST_DIR / f, src / f)
    te = load_dataset("fashion-mnist", "test", data_dir=src)
    ref = load_dataset("fashion-mnist", "test")
    assert torch.equal(te.X, ref.X) and torch.equal(te.y, ref.y)
    assert not list(src.glob("FashionMNIST"))  # nothing written next to the source files


def test_mnist_missing_files_names_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_dataset("mnist", "test", data_dir=tmp_path)


def test_rotation_orthogonal_and_shared_between_splits():
    Q = rotation_matrix(64, 7)
    assert torch.allclose(Q @ Q.T, torch.eye(64, dtype=torch.float64), atol=1e-12)
    assert torch.equal(Q, rotation_matrix(64, 7)) and not torch.equal(Q, rotation_matrix(64, 8))
    for split in ("train", "test"):
        plain = load_dataset("digits", split)
        rot = load_dataset("digits", split, rotate=7)
        assert rot.rotate == 7 and rot.X.shape == plain.X.shape and torch.equal(rot.y, plain.y)
        flat, rflat = plain.X.reshape(len(plain), -1).double(), rot.X.reshape(len(rot), -1).double()
        assert torch.allclose(rflat.norm(dim=1), flat.norm(dim=1), atol=1e-5)  # norms preserved
        assert torch.allclose(rflat, flat @ Q.T, atol=1e-5)  # the same Q for train and test
    assert float(load_dataset("digits", "test", rotate=7).X.min()) < 0.0  # leaves [0, 1]


def test_subset_every_and_max():
    te = load_dataset("digits", "test")
    s = subset(te, every=10, max_inputs=20)
    assert len(s) == 20 and s.indices.tolist() == list(range(0, 200, 10))
    assert torch.equal(s.X, te.X[s.indices]) and torch.equal(s.y, te.y[s.indices])
    assert len(subset(te, every=100)) == 5
    assert len(subset(subset(te, every=2), every=3)) == len(range(0, 450, 6))
    with pytest.raises(ValueError, match="every"):
        subset(te, every=0)


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(name="cifar10", split="test"), "name"),
        (dict(name="digits", split="valid"), "split"),
        (dict(name="digits", split="test", rotate=-1), "rotate"),
    ],
)
def test_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        load_dataset(**kwargs)


# ---------------------------------------------------------------------------------- your own data
def _write_idx(path: Path, array) -> None:
    import numpy as np

    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(header + array.tobytes())


def test_torchvision_spec_reads_a_root_without_downloading(tmp_path):
    import numpy as np
    from ddrs_app.data import load_data

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 5, 5))
    _write_idx(raw / "t10k-images-idx3-ubyte", images)
    _write_idx(raw / "t10k-labels-idx1-ubyte", [0, 1, 2, 3, 4, 9])
    _write_idx(raw / "train-images-idx3-ubyte", images[:1])
    _write_idx(raw / "train-labels-idx1-ubyte", [0])
    ds = load_data(f"torchvision:MNIST:{tmp_path}", every=2)
    assert ds.X.shape == (3, 1, 5, 5) and ds.num_classes == 10 and ds.classes_known
    assert torch.equal(ds.X[:, 0], torch.tensor(images[::2], dtype=torch.float32) / 255)
    assert ds.y.tolist() == [0, 2, 4] and ds.indices.tolist() == [0, 2, 4]


def test_torchvision_spec_names_the_missing_files(tmp_path):
    from ddrs_app.data import BadInput, load_data

    with pytest.raises(BadInput, match=r"--dataset .*cifar-10-batches-py/test_batch"):
        load_data(f"torchvision:CIFAR10:{tmp_path}")
    with pytest.raises(BadInput, match=r"--dataset .*no data set class"):
        load_data(f"torchvision:NoSuchSet:{tmp_path}")
    assert not any(tmp_path.iterdir())  # nothing downloaded


def test_tensors_spec_errors_name_the_argument(tmp_path):
    from ddrs_app.data import BadInput, load_data

    torch.save({"x": torch.zeros(3, 2)}, tmp_path / "no_y.pt")
    torch.save({"x": torch.zeros(3, 2), "y": torch.zeros(2, dtype=torch.int64)}, tmp_path / "short.pt")
    torch.save({"x": torch.zeros(3, 2), "y": torch.zeros(3)}, tmp_path / "float_y.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    for name, match in [
        ("no_y.pt", "keys x and y"),
        ("short.pt", "shape"),
        ("float_y.pt", "integer labels"),
        ("junk.pt", "cannot read"),
    ]:
        with pytest.raises(BadInput, match=match) as info:
            load_data(f"tensors:{tmp_path / name}")
        assert str(info.value).startswith("--dataset")
    with pytest.raises(BadInput, match="--dataset"):
        load_data("cifar")
