"""Benchmark data sets, read from real files (no network at run time unless a download is needed
and possible).

``load_dataset(name, split, data_dir=None, rotate=None)`` returns a :class:`Dataset` with float32
inputs ``X`` of shape ``(N, *input_shape)`` in [0, 1] and int64 labels ``y``:

* ``"toy2d"``     3-class 2-D problem: three elongated Gaussian clusters, each stretched along a
                  different rotated direction (the RDDRS paper's Figure 1 setting), generated
                  from a seed and clipped to the unit box, so sigma ~ 0.1-0.5 is meaningful.
* ``"digits"``    scikit-learn's 8x8 digits (d = 64) divided by 16, shape (1, 8, 8), fixed seeded
                  stratified split (75 % train / 25 % test). The embedded default.
* ``"fashion-mnist"`` / ``"mnist"`` the standard 28x28 IDX files (d = 784), read through
                  ``torchvision.datasets.FashionMNIST`` / ``MNIST``. Files are looked up in
                  ``data_dir`` (the argument; ``--data-dir`` on the command line), else in the
                  Debian package location ``/usr/share/datasets/<name>``, else downloaded by
                  torchvision into ``~/.cache/ddrs/data`` where a network exists.

``rotate=SEED`` multiplies every flattened input (train and test alike) by one fixed Haar-random
orthogonal matrix Q drawn from SEED (``rotation_matrix``): ``x -> Q x``. This is the experiment
behind RDDRS's rotation-invariance claim. Rotated inputs are NOT in [0, 1] any more (they keep
their l2 norms and pairwise distances, so l2 certificates are comparable, but a box clip no longer
makes sense); ``Dataset.rotate`` records the seed.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

DATASETS = ("toy2d", "digits", "fashion-mnist", "mnist")
SPLITS = ("train", "test")
NUM_CLASSES = {"toy2d": 3, "digits": 10, "fashion-mnist": 10, "mnist": 10}
INPUT_SHAPES = {"toy2d": (2,), "digits": (1, 8, 8), "fashion-mnist": (1, 28, 28), "mnist": (1, 28, 28)}
DEBIAN_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
_TV_CLASS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# toy2d generator settings: class centres, rotation angles (degrees) of the long axis, axes.
TOY2D_SEED = 0
TOY2D_SIZES = {"train": 3000, "test": 600}
TOY2D_CENTERS = ((0.30, 0.32), (0.70, 0.32), (0.50, 0.70))
TOY2D_ANGLES = (60.0, 120.0, 0.0)
TOY2D_AXES = (0.16, 0.025)  # standard deviations along the long and the short axis


@dataclass
class Dataset:
    """Inputs ``X`` (float32, (N, *input_shape)), labels ``y`` (int64, (N,)) and metadata.

    ``indices`` are the positions in the full split (after ``subset``), ``rotate`` the rotation
    seed (None: unrotated, values in [0, 1]).
    """

    X: torch.Tensor
    y: torch.Tensor
    name: str
    split: str
    num_classes: int
    input_shape: tuple
    rotate: int | None = None
    indices: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.indices is None:
            self.indices = torch.arange(len(self.y))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i):
        return self.X[i], self.y[i]

    @property
    def dim(self) -> int:
        """Flattened input dimension d."""
        return math.prod(self.input_shape)

    def __repr__(self):
        return (f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes}, rotate={self.rotate})")


# ---------------------------------------------------------------------------------- checks
def check_name(name) -> str:
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise ValueError(f"dataset name must be one of {DATASETS}, got {name!r}")
    return name.lower()


def check_split(split) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_rotate(rotate) -> int | None:
    if rotate is None:
        return None
    if isinstance(rotate, bool) or not isinstance(rotate, (int, np.integer)) or rotate < 0:
        raise ValueError(f"rotate must be None or a non-negative int seed, got {rotate!r}")
    return int(rotate)


def cache_root() -> Path:
    """``$DDRS_CACHE_DIR`` or ``~/.cache/ddrs``."""
    return Path(os.environ.get("DDRS_CACHE_DIR") or Path.home() / ".cache" / "ddrs")


# ---------------------------------------------------------------------------------- rotation
def rotation_matrix(d: int, seed: int) -> torch.Tensor:
    """A Haar-distributed random orthogonal (d, d) float64 matrix from ``seed``: QR of a Gaussian
    matrix with the signs of R's diagonal moved into Q (Mezzadri 2007)."""
    g = torch.Generator().manual_seed(int(seed))
    A = torch.randn((d, d), generator=g, dtype=torch.float64)
    Q, R = torch.linalg.qr(A)
    signs = torch.sign(torch.diagonal(R))
    signs[signs == 0] = 1.0
    return Q * signs[None, :]


def apply_rotation(X: torch.Tensor, seed: int) -> torch.Tensor:
    """``x -> Q x`` for every flattened row of X (float64 product, float32 result)."""
    n = X.shape[0]
    flat = X.reshape(n, -1).to(torch.float64)
    Q = rotation_matrix(flat.shape[1], seed)
    return (flat @ Q.T).to(torch.float32).reshape(X.shape)


# ---------------------------------------------------------------------------------- loaders
def _toy2d(split: str, seed: int = TOY2D_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    # one stream per (seed, split): train and test are independent draws of the same distribution
    rng = np.random.default_rng([int(seed), SPLITS.index(split)])
    n = TOY2D_SIZES[split]
    y = np.arange(n) % 3
    rng.shuffle(y)
    X = np.empty((n, 2))
    for c, (center, angle) in enumerate(zip(TOY2D_CENTERS, TOY2D_ANGLES)):
        m = int((y == c).sum())
        a = math.radians(angle)
        R = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        z = rng.standard_normal((m, 2)) * np.array(TOY2D_AXES)
        X[y == c] = np.asarray(center) + z @ R.T
    X = np.clip(X, 0.0, 1.0)
    return torch.from_numpy(X).float(), torch.from_numpy(y).long()


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    X = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    return {"train": (X_tr, y_tr), "test": (X_te, y_te)}


def _digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    X, y = _digits_arrays()[split]  # copies below: callers may modify the tensors
    return torch.tensor(X).reshape(-1, 1, 8, 8), torch.tensor(y)


def _find_idx(directory: Path, cls_name: str) -> dict[str, Path] | None:
    """The four IDX files (plain or .gz) directly in ``directory`` or in ``directory/<Cls>/raw``."""
    for base in (directory, directory / cls_name / "raw"):
        found = {}
        for stem in _IDX_FILES:
            for cand in (base / stem, base / (stem + ".gz")):
                if cand.is_file():
                    found[stem] = cand
                    break
        if len(found) == len(_IDX_FILES):
            return found
    return None


def _stage(files: dict[str, Path], cls_name: str, source: Path) -> Path:
    """A torchvision root ``<cache>/data/<tag>/`` whose ``<Cls>/raw/`` holds the extracted IDX
    files (decompressed from .gz, or symlinked when plain). Never writes next to the source."""
    tag = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:10]
    root = cache_root() / "data" / f"{cls_name}-{tag}"
    raw = root / cls_name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem, path in files.items():
        target = raw / stem
        if target.exists():
            continue
        tmp = raw / f".{stem}.{os.getpid()}.tmp"
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            tmp.symlink_to(path.resolve())
        os.replace(tmp, target)
    return root


def _torchvision_images(name: str, split: str, data_dir) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    cls_name = _TV_CLASS[name]
    cls = getattr(torchvision.datasets, cls_name)
    train = split == "train"
    candidates = [Path(data_dir).expanduser()] if data_dir is not None else [Path(DEBIAN_DIRS[name])]
    for directory in candidates:
        if not directory.is_dir():
            continue
        files = _find_idx(directory, cls_name)
        if files is None:
            continue
        # use the directory itself when it already is a torchvision root with extracted files
        if all(p.parent == directory / cls_name / "raw" and p.suffix != ".gz" for p in files.values()):
            root = directory
        else:
            root = _stage(files, cls_name, directory)
        ds = cls(root=str(root), train=train, download=False)
        return ds.data, ds.targets
    hint = (f"Pass the directory holding the four IDX files ({', '.join(_IDX_FILES)}, optionally .gz, "
            f"directly or under {cls_name}/raw/) with --data-dir (data_dir=...)")
    if data_dir is not None:
        raise FileNotFoundError(f"{name}: IDX files not found in data_dir={str(data_dir)!r}. {hint}.")
    root = cache_root() / "data" / f"{cls_name}-download"
    try:
        ds = cls(root=str(root), train=train, download=True)
    except Exception as exc:  # no network, blocked, checksum ...
        raise FileNotFoundError(
            f"{name}: IDX files not found in {DEBIAN_DIRS[name]} and the torchvision download into "
            f"{root} failed ({type(exc).__name__}: {exc}). {hint}.") from exc
    return ds.data, ds.targets


def load_dataset(name: str, split: str, data_dir=None, rotate: int | None = None, *,
                 seed: int = TOY2D_SEED) -> Dataset:
    """Load split ``"train"``/``"test"`` of data set ``name`` (see the module docstring).

    ``data_dir`` is only used by the IDX data sets; ``seed`` only by ``toy2d``; ``rotate`` applies
    the fixed orthogonal rotation of seed ``rotate`` to every input (values leave [0, 1]).
    Raises ValueError for an unknown name/split/rotate, FileNotFoundError (naming --data-dir)
    when IDX files are missing.
    """
    name = check_name(name)
    split = check_split(split)
    rotate = check_rotate(rotate)
    if name == "toy2d":
        X, y = _toy2d(split, seed)
    elif name == "digits":
        X, y = _digits(split)
    else:
        images, labels = _torchvision_images(name, split, data_dir)
        X = images.to(torch.float32).div_(255.0).unsqueeze(1)
        y = labels.to(torch.int64)
    X = X.to(torch.float32).contiguous()
    y = y.to(torch.int64).contiguous()
    if rotate is not None:
        X = apply_rotation(X, rotate)
    return Dataset(X=X, y=y, name=name, split=split, num_classes=NUM_CLASSES[name],
                   input_shape=INPUT_SHAPES[name], rotate=rotate)


def subset(dataset: Dataset, every: int = 1, max_inputs: int | None = None) -> Dataset:
    """Every ``every``-th input (0, K, 2K, ...; Cohen's --skip), at most ``max_inputs`` of them.
    ``indices`` keeps the positions in the original split."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    if max_inputs is not None and (isinstance(max_inputs, bool) or not isinstance(max_inputs, (int, np.integer))
                                   or max_inputs < 0):
        raise ValueError(f"max_inputs must be None or an int >= 0, got {max_inputs!r}")
    pos = torch.arange(0, len(dataset), int(every))
    if max_inputs is not None:
        pos = pos[: int(max_inputs)]
    return replace(dataset, X=dataset.X[pos], y=dataset.y[pos], indices=dataset.indices[pos])
