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

* ``"photos-32"`` / ``"photos-224"`` CIFAR-10-shaped (3x32x32, d = 3,072) and ImageNet-shaped (3x224x224,
                  d = 150,528) colour images of real photographs that install with the package: the 10 photos
                  that ship inside scikit-learn (china, flower) and scikit-image (astronaut, chelsea, coffee,
                  rocket, hubble_deep_field, immunohistochemistry, retina, the left stereo_motorcycle view).
                  The task: which photo a square crop comes from (10 classes). Crops have random sides and
                  positions and a random horizontal flip (seeded), resized by area averaging; train crops lie in
                  the left 70 % of each photo, test crops in the right 30 % (no test pixel was seen in training).
                  Real colour statistics, and built so that no noise structure fits them by construction
                  (unlike a grey image tinted per image, which is exactly channel (x) spatial).

Your own data (``load_data(spec, ...)``; ``--dataset`` on the command line) also come as

* ``imagefolder:PATH``  ``PATH/<class>/<image>`` (torchvision's ``ImageFolder``: classes are the sorted
                  folder names); grayscale images stay one channel, others become RGB;
* ``torchvision:NAME:ROOT`` any ``torchvision.datasets`` class whose constructor takes ``root``,
                  ``train`` or ``split`` and ``transform`` (CIFAR10, MNIST, SVHN, ...), read from ROOT,
                  never downloaded (a missing file is an error that names the files expected);
* ``tensors:FILE``  a ``.pt`` (``torch.save({"x": ..., "y": ...})``, read with ``weights_only=True``) or a
                  ``.npz`` holding ``x`` (N, ...) and integer labels ``y`` (N,); uint8 ``x`` is divided by 255.

Images go through ``ToTensor()`` (float32 in [0, 1]); only the inputs ``every``/``max_inputs`` select are
decoded. The inputs selected must be finite (a NaN or inf is an error naming the file and the input's
index); values outside [0, 1] are legal but warned about (:class:`DataRangeWarning`): sigma and the radii
are in the data's own units, so 0..255 pixels or normalised data are almost always a mistake.

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
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

DATASETS = ("toy2d", "digits", "fashion-mnist", "mnist", "photos-32", "photos-224")
SPLITS = ("train", "test")
NUM_CLASSES = {"toy2d": 3, "digits": 10, "fashion-mnist": 10, "mnist": 10, "photos-32": 10, "photos-224": 10}
INPUT_SHAPES = {
    "toy2d": (2,),
    "digits": (1, 8, 8),
    "fashion-mnist": (1, 28, 28),
    "mnist": (1, 28, 28),
    "photos-32": (3, 32, 32),
    "photos-224": (3, 224, 224),
}
#: the photo-crop sets: crop side in pixels of the output, and crops per split (sized for 2 cores and 24 GiB).
PHOTO_SETS = {"photos-32": (32, {"train": 6000, "test": 1000}), "photos-224": (224, {"train": 600, "test": 100})}
#: the photos, one class each, in label order: (package, name).
PHOTOS = (
    ("sklearn", "china.jpg"),
    ("sklearn", "flower.jpg"),
    ("skimage", "astronaut"),
    ("skimage", "chelsea"),
    ("skimage", "coffee"),
    ("skimage", "rocket"),
    ("skimage", "hubble_deep_field"),
    ("skimage", "immunohistochemistry"),
    ("skimage", "retina"),
    ("skimage", "stereo_motorcycle"),
)
PHOTO_SEED = 20261207
DEBIAN_DIRS = {"fashion-mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
_TV_CLASS = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

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
    #: False when num_classes was only inferred from the labels seen (``tensors:`` files); the model's
    #: output width then only has to exceed the largest label.
    classes_known: bool = True

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
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, rotate={self.rotate})"
        )


# ---------------------------------------------------------------------------------- checks
def check_name(name) -> str:
    if not isinstance(name, str) or name.lower() not in DATASETS:
        raise ValueError(f"dataset name must be one of {DATASETS}, got {name!r}")
    return name.lower()


def check_split(split) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def check_nonnegative(value, not_a_number: str, out_of_range: Callable[[float], str]) -> float:
    """``value`` as a finite float >= 0; else a ValueError saying ``not_a_number`` (``float`` refuses
    it) or ``out_of_range(number)`` (the float is negative, nan or infinite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(not_a_number) from None
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(out_of_range(number))
    return number


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


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The 10 photos as uint8 (H, W, 3) arrays, read from the installed packages (no network)."""
    from sklearn.datasets import load_sample_image

    try:
        import skimage.data
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ImportError("the photos-32 / photos-224 data sets need scikit-image (pip install scikit-image)") from err
    out = []
    for package, name in PHOTOS:
        image = load_sample_image(name) if package == "sklearn" else getattr(skimage.data, name)()
        image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
        out.append(np.ascontiguousarray(image[..., :3], dtype=np.uint8))
    return tuple(out)


def _photo_crops(name: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` seeded square crops per split, cycling through the photos (labels 0..9), resized to side x side
    with antialiasing; train crops from the left 70 % of a photo's width, test crops from the right 30 %."""
    side, counts = PHOTO_SETS[name]
    count = counts[split]
    rng = np.random.default_rng([PHOTO_SEED, SPLITS.index(split), side])
    photos = _photos()
    X = torch.empty((count, 3, side, side), dtype=torch.float32)
    y = torch.arange(count, dtype=torch.int64) % len(photos)
    for i in range(count):
        image = photos[int(y[i])]
        h, w = image.shape[:2]
        cut = int(0.7 * w)
        x0, x1 = (0, cut) if split == "train" else (cut, w)
        largest = min(h, x1 - x0, int(0.3 * w))  # the same range of sides in both splits
        crop_side = int(rng.integers(largest // 2, largest + 1))
        top = int(rng.integers(0, h - crop_side + 1))
        left = int(rng.integers(x0, x1 - crop_side + 1))
        crop = torch.tensor(image[top : top + crop_side, left : left + crop_side]).permute(2, 0, 1)
        crop = crop.to(torch.float32).div_(255.0)[None]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        if crop_side >= side:  # area averaging (no aliasing)
            X[i] = torch.nn.functional.adaptive_avg_pool2d(crop, side)[0]
        else:
            X[i] = torch.nn.functional.interpolate(crop, size=(side, side), mode="bilinear", align_corners=False)[0]
    return X.clamp_(0.0, 1.0), y


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
    files = f"{', '.join(_IDX_FILES)}, optionally .gz, directly or under {cls_name}/raw/"
    if data_dir is not None:
        raise MissingData(
            f"--data-dir: the {name} IDX files are not in {data_dir} (expected {files}); "
            f"{_idx_hint(name, data_dir=True)}"
        )
    root = cache_root() / "data" / f"{cls_name}-download"
    try:
        ds = cls(root=str(root), train=train, download=True)
    except Exception as exc:  # no network, blocked, checksum ...
        detail = str(exc).strip().splitlines()[0].rstrip(":") if str(exc).strip() else ""
        raise MissingData(
            f"--dataset {name}: its IDX files are not in {DEBIAN_DIRS[name]} and downloading them into {root} "
            f"failed ({type(exc).__name__}{': ' + detail if detail else ''}); {_idx_hint(name, data_dir=False)} "
            f"({files})"
        ) from None
    return ds.data, ds.targets


#: how to get the IDX files of a data set without a network
_APT_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}


def _idx_hint(name: str, data_dir: bool) -> str:
    package = _APT_PACKAGES.get(name)
    where = f"`apt-get install {package}` puts them in" if package else "put them in"
    drop = " (then drop --data-dir)" if data_dir else ""
    return f"{where} {DEBIAN_DIRS[name]}{drop}, or pass --data-dir DIR holding them"


def load_dataset(name: str, split: str, data_dir=None, rotate: int | None = None, *, seed: int = TOY2D_SEED) -> Dataset:
    """Load split ``"train"``/``"test"`` of data set ``name`` (see the module docstring).

    ``data_dir`` is only used by the IDX data sets; ``seed`` only by ``toy2d``; ``rotate`` applies
    the fixed orthogonal rotation of seed ``rotate`` to every input (values leave [0, 1]).
    Raises ValueError for an unknown name/split/rotate, :class:`MissingData` (a BadInput and a
    FileNotFoundError, naming --data-dir or --dataset and how to get the files) when IDX files are missing.
    """
    name = check_name(name)
    split = check_split(split)
    rotate = check_rotate(rotate)
    if name == "toy2d":
        X, y = _toy2d(split, seed)
    elif name == "digits":
        X, y = _digits(split)
    elif name in PHOTO_SETS:
        X, y = _photo_crops(name, split)
    else:
        images, labels = _torchvision_images(name, split, data_dir)
        X = images.to(torch.float32).div_(255.0).unsqueeze(1)
        y = labels.to(torch.int64)
    X = X.to(torch.float32).contiguous()
    y = y.to(torch.int64).contiguous()
    if rotate is not None:
        X = apply_rotation(X, rotate)
    return Dataset(
        X=X, y=y, name=name, split=split, num_classes=NUM_CLASSES[name], input_shape=INPUT_SHAPES[name], rotate=rotate
    )


def subset(dataset: Dataset, every: int = 1, max_inputs: int | None = None) -> Dataset:
    """Every ``every``-th input (0, K, 2K, ...; Cohen's --skip), at most ``max_inputs`` of them.
    ``indices`` keeps the positions in the original split."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an int >= 1, got {every!r}")
    if max_inputs is not None and (
        isinstance(max_inputs, bool) or not isinstance(max_inputs, (int, np.integer)) or max_inputs < 0
    ):
        raise ValueError(f"max_inputs must be None or an int >= 0, got {max_inputs!r}")
    pos = torch.arange(0, len(dataset), int(every))
    if max_inputs is not None:
        pos = pos[: int(max_inputs)]
    return replace(dataset, X=dataset.X[pos], y=dataset.y[pos], indices=dataset.indices[pos])


# ---------------------------------------------------------------------------------- your own data
class BadInput(ValueError):
    """A user-supplied argument (model, data, device, ...) that cannot be used; the message starts with
    the argument's name and says what was expected. The command line prints it and exits with code 2."""


class MissingData(BadInput, FileNotFoundError):
    """The IDX files of a built-in data set are neither in ``--data-dir``/the Debian location nor
    downloadable: the message names the argument and how to get them."""


class DataRangeWarning(UserWarning):
    """Inputs outside [0, 1]: legal, but sigma and the radii are then in the data's own units (e.g.
    0..255 pixels), almost always by mistake. The command line prints it as one line."""


DATA_PREFIXES = ("imagefolder:", "torchvision:", "tensors:")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def check_data_spec(spec: str) -> str:
    """A built-in data set name or ``imagefolder:PATH``, ``torchvision:NAME:ROOT``, ``tensors:FILE``."""
    if isinstance(spec, str) and spec.lower() in DATASETS:
        return spec.lower()
    if isinstance(spec, str) and spec.startswith(DATA_PREFIXES) and spec.split(":", 1)[1]:
        if spec.startswith("torchvision:") and len(spec.split(":", 2)) != 3:
            raise BadInput(f"--dataset: expected torchvision:NAME:ROOT, got {spec!r}")
        return spec
    raise BadInput(
        f"--dataset: expected one of {', '.join(DATASETS)}, imagefolder:PATH, torchvision:NAME:ROOT "
        f"or tensors:FILE, got {spec!r}"
    )


def folder_name(spec: str) -> str:
    """A directory name for a ``--dataset`` spec: the name itself for a built-in data set, else
    ``<kind>-<last path component or class name>`` (``imagefolder:~/data/val`` -> ``imagefolder-val``)."""
    spec = check_data_spec(spec)
    if spec in DATASETS:
        return spec
    kind, rest = spec.split(":", 1)
    stem = rest.split(":", 1)[0] if kind == "torchvision" else Path(rest.rstrip("/\\")).stem
    return f"{kind}-" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "data")


def _positions(n: int, every: int, max_inputs: int | None) -> torch.Tensor:
    pos = torch.arange(0, n, int(every))
    return pos if max_inputs is None else pos[: int(max_inputs)]


def _stack(items, spec: str) -> torch.Tensor:
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) > 1:
        raise BadInput(
            f"--dataset {spec}: inputs have different shapes {sorted(shapes)[:4]}; "
            "expected one size (resize the images first)"
        )
    return torch.stack(items).to(torch.float32).contiguous()


def check_values(X: torch.Tensor, positions: torch.Tensor, argument: str, source) -> None:
    """Inputs must be finite (BadInput naming ``argument``, ``source`` and the first bad index, a
    position in the file); inputs outside [0, 1] are legal but almost always a scaling mistake (0..255
    pixels, or already normalised data), so they are warned about (:class:`DataRangeWarning`)."""
    if X.numel() == 0:
        return
    finite = torch.isfinite(X.reshape(len(X), -1)).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite)[:, 0]
        first = int(positions[int(bad[0])])
        row = X[int(bad[0])]
        what = "NaN" if bool(torch.isnan(row).any()) else "an infinite value"
        more = f" ({len(bad)} of the {len(X)} inputs selected are not finite)" if len(bad) > 1 else ""
        raise BadInput(
            f"{argument}: input {first} of {source} holds {what}{more}; certificates need finite inputs: "
            "fix or drop it (--every/--max-inputs select inputs)"
        )
    lo, hi = float(X.min()), float(X.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        warnings.warn(
            f"{argument}: the inputs of {source} range over [{lo:g}, {hi:g}], outside [0, 1]: noise, sigma "
            "and radii are then in those units, not in [0, 1]; divide x by 255 (or store it as uint8, which "
            "is divided by 255), and put any normalisation in --normalize",
            DataRangeWarning,
            stacklevel=3,
        )


def _image_loader(path: str):
    from PIL import Image

    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("L") if img.mode in ("1", "L", "I", "I;16", "F") else img.convert("RGB")


def _from_items(ds, spec: str, every: int, max_inputs: int | None, num_classes: int | None, source) -> Dataset:
    pos = _positions(len(ds), every, max_inputs)
    xs, ys = [], []
    for p in pos.tolist():
        x, y = ds[p]
        xs.append(x)
        ys.append(int(y))
    if not xs:
        raise BadInput(f"--dataset {spec}: no inputs selected (--every/--max-inputs)")
    X = _stack(xs, spec)
    check_values(X, pos, f"--dataset {spec}", source)
    y = torch.tensor(ys, dtype=torch.int64)
    known = num_classes is not None
    k = int(num_classes) if known else int(y.max()) + 1
    return Dataset(
        X=X,
        y=y,
        name=spec,
        split="test",
        num_classes=k,
        input_shape=tuple(X.shape[1:]),
        indices=pos,
        classes_known=known,
    )


def _imagefolder(spec: str, path: str, every: int, max_inputs: int | None) -> Dataset:
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    root = Path(path).expanduser()
    if not root.is_dir():
        raise BadInput(f"--dataset {spec}: {root} is not a directory; expected PATH/<class>/<image>")
    try:
        ds = ImageFolder(str(root), transform=ToTensor(), loader=_image_loader)
    except (FileNotFoundError, RuntimeError) as err:
        raise BadInput(
            f"--dataset {spec}: no images found under {root}; expected PATH/<class>/<image> with "
            f"extensions {', '.join(IMAGE_EXTENSIONS)} ({str(err).splitlines()[0]})"
        ) from None
    return _from_items(ds, spec, every, max_inputs, len(ds.classes), root)


def _expected_files(cls, root: Path, train: bool) -> list[str]:
    """The files a torchvision data set class looks for, where the class says (best effort)."""
    if hasattr(cls, "base_folder") and hasattr(cls, "test_list"):  # CIFAR10/100
        return [str(root / cls.base_folder / f[0]) for f in (cls.train_list if train else cls.test_list)]
    if hasattr(cls, "resources"):  # MNIST family
        folder = root / cls.__name__ / "raw"
        return [
            str(folder / Path(url_or_name[0]).name.removesuffix(".gz"))
            for url_or_name in cls.resources
            if ("train" in Path(url_or_name[0]).name) == train
        ]
    if hasattr(cls, "split_list"):  # SVHN
        split = "train" if train else "test"
        return [str(root / cls.split_list[split][1])]
    return []


def _torchvision(spec: str, name: str, root_text: str, split: str, every: int, max_inputs: int | None) -> Dataset:
    import inspect

    import torchvision.datasets
    from torchvision.transforms import ToTensor

    cls = getattr(torchvision.datasets, name, None)
    if not isinstance(cls, type):
        raise BadInput(f"--dataset {spec}: torchvision.datasets has no data set class {name!r}")
    params = inspect.signature(cls.__init__).parameters
    root = Path(root_text).expanduser()
    kwargs: dict = {"transform": ToTensor()}
    if "download" in params:
        kwargs["download"] = False
    if "train" in params:
        kwargs["train"] = split == "train"
    elif "split" in params:
        kwargs["split"] = "train" if split == "train" else "test"
    elif "transform" not in params:
        raise BadInput(f"--dataset {spec}: {name} takes neither train= nor split= nor transform=")
    try:
        try:
            ds = cls(str(root), **kwargs)
        except ValueError:
            if kwargs.get("split") != "test":
                raise
            ds = cls(str(root), **dict(kwargs, split="val"))  # ImageNet-style data sets call it val
    except (RuntimeError, FileNotFoundError, OSError, ValueError) as err:
        expected = _expected_files(cls, root, split == "train")
        missing = [f for f in expected if not Path(f).exists()]
        what = f"missing {', '.join(missing)}" if missing else f"see torchvision.datasets.{name} for the layout"
        raise BadInput(
            f"--dataset {spec}: {name} not found under {root} (never downloaded here; {what}; "
            f"torchvision said: {str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    classes = getattr(ds, "classes", None)
    return _from_items(ds, spec, every, max_inputs, len(classes) if classes else None, root)


def _tensors(spec: str, path_text: str, every: int, max_inputs: int | None) -> Dataset:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise BadInput(f"--dataset {spec}: {path} is not a file; expected a .pt or .npz holding x and y")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                blob = {k: torch.from_numpy(z[k]) for k in z.files}
        else:
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BadInput(
            f"--dataset {spec}: cannot read {path} as a .pt (torch.load, weights_only) or .npz "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None
    if not isinstance(blob, dict) or "x" not in blob or "y" not in blob:
        keys = sorted(blob) if isinstance(blob, dict) else type(blob).__name__
        raise BadInput(f"--dataset {spec}: expected a dict with keys x and y, got {keys}")
    x, y = torch.as_tensor(blob["x"]), torch.as_tensor(blob["y"])
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise BadInput(
            f"--dataset {spec}: expected x of shape (N, ...) and y of shape (N,), got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    if y.is_floating_point() or y.dtype == torch.bool or int(y.min()) < 0:
        raise BadInput(f"--dataset {spec}: expected integer labels y >= 0, got dtype {y.dtype}")
    pos = _positions(len(y), every, max_inputs)
    X = x[pos].to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x[pos].to(torch.float32)
    check_values(X, pos, f"--dataset {spec}", path)
    y = y.to(torch.int64)
    return Dataset(
        X=X.contiguous(),
        y=y[pos].contiguous(),
        name=spec,
        split="test",
        num_classes=int(y.max()) + 1,
        input_shape=tuple(X.shape[1:]),
        indices=pos,
        classes_known=False,
    )


def load_data(
    spec: str,
    split: str = "test",
    *,
    every: int = 1,
    max_inputs: int | None = None,
    data_dir=None,
    rotate: int | None = None,
) -> Dataset:
    """A built-in data set (``load_dataset`` then ``subset``) or your own (see the module docstring),
    subset to every ``every``-th input, at most ``max_inputs``. Raises :class:`BadInput` naming --dataset."""
    spec = check_data_spec(spec)
    if spec in DATASETS:
        return subset(load_dataset(spec, split, data_dir=data_dir, rotate=rotate), every, max_inputs)
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise BadInput(f"--every: expected an int >= 1, got {every!r}")
    if max_inputs is not None and (
        isinstance(max_inputs, bool) or not isinstance(max_inputs, (int, np.integer)) or max_inputs < 1
    ):
        raise BadInput(f"--max-inputs: expected None or an int >= 1, got {max_inputs!r}")
    kind, rest = spec.split(":", 1)
    if kind == "imagefolder":
        data = _imagefolder(spec, rest, every, max_inputs)
    elif kind == "torchvision":
        name, root = rest.split(":", 1)
        data = _torchvision(spec, name, root, check_split(split), every, max_inputs)
    else:
        data = _tensors(spec, rest, every, max_inputs)
    if rotate is not None:
        data = replace(data, X=apply_rotation(data.X, check_rotate(rotate)), rotate=rotate)
    return data
