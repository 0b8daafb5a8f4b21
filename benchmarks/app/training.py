"""Training of the benchmark base classifiers with Gaussian noise augmentation (Cohen et al. 2019:
every batch gets fresh ``N(0, sigma^2 I)`` noise added to the inputs), seeded and cached.

``train`` always trains and saves; ``load_or_train`` returns the cached model when a file with the
same key (dataset, sigma, rotate, epochs, seed, architecture, batch size, learning rate,
optimizer) exists in the model directory (``model_dir``, else ``$DDRS_MODEL_DIR``, else
``~/.cache/ddrs/models``).

Defaults are sized for 2 CPU cores (Adam): toy2d 20 epochs, digits 40 epochs (seconds each),
fashion-mnist / mnist 3 epochs at batch 256 (a few minutes), photos-32 / photos-224 10 epochs, as ``DEFAULTS``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Dataset, check_name, check_nonnegative, check_rotate, load_dataset
from .models import make_model

#: per data set: epochs, batch size, Adam learning rate.
DEFAULTS = {
    "toy2d": {"epochs": 20, "batch_size": 128, "lr": 1e-2},
    "digits": {"epochs": 40, "batch_size": 64, "lr": 1e-3},
    "fashion-mnist": {"epochs": 3, "batch_size": 256, "lr": 1e-3},
    "mnist": {"epochs": 3, "batch_size": 256, "lr": 1e-3},
    "photos-32": {"epochs": 10, "batch_size": 128, "lr": 1e-3},
    "photos-224": {"epochs": 10, "batch_size": 32, "lr": 1e-3},
}
OPTIMIZERS = ("adam", "sgd")
CACHE_FORMAT = 1


def default_model_dir() -> Path:
    """``$DDRS_MODEL_DIR`` or ``~/.cache/ddrs/models``."""
    env = os.environ.get("DDRS_MODEL_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ddrs" / "models"


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def cache_key(dataset, sigma, epochs, seed, rotate, batch_size, lr, optimizer, device="cpu") -> dict:
    """Validate the arguments and return the cache key (a JSON-able dict). A model trained off the CPU
    is keyed by its device type too (a GPU trains other weights), and every model by the torch thread
    count it is trained with (more threads sum the weight gradients in another order: other weights)."""
    if not isinstance(dataset, str):
        raise ValueError(f"dataset must be a data set name (str), got {type(dataset).__name__}")
    name = check_name(dataset)
    sigma = check_nonnegative(
        sigma,
        f"sigma must be a float >= 0, got {sigma!r}",
        lambda number: f"sigma must be a finite float >= 0, got {number!r}",
    )
    d = DEFAULTS[name]
    epochs = _check_int(d["epochs"] if epochs is None else epochs, "epochs", 1)
    seed = _check_int(seed, "seed", 0)
    rotate = check_rotate(rotate)
    batch_size = _check_int(d["batch_size"] if batch_size is None else batch_size, "batch_size", 1)
    lr = float(d["lr"] if lr is None else lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive float, got {lr!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    from .data import INPUT_SHAPES, NUM_CLASSES

    arch = make_model(name, NUM_CLASSES[name], INPUT_SHAPES[name]).arch
    kind = torch.device(device).type
    return ({} if kind == "cpu" else {"device": kind}) | {
        "dataset": name,
        "sigma": sigma,
        "rotate": rotate,
        "epochs": epochs,
        "seed": seed,
        "arch": arch,
        "batch_size": batch_size,
        "lr": lr,
        "optimizer": optimizer,
        "threads": torch.get_num_threads(),
        "format": CACHE_FORMAT,
    }


#: dataset_hash results of live tensors: (id, version counter, data pointer, shape, dtype) per tensor ->
#: digest; an entry goes when one of its tensors is freed, and an in-place change bumps the version.
_HASHES: dict[tuple, str] = {}


def _memo_key(tensors) -> tuple | None:
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        return None
    return tuple((id(t), t._version, t.data_ptr(), tuple(t.shape), str(t.dtype), str(t.device)) for t in tensors)


def dataset_hash(data: Dataset) -> str:
    """sha256 (first 16 hex digits) of a data set's inputs, labels and indices: what a model was
    trained on, or what a run certified. Computed once per set of live tensors (a comparison asks for
    the training set's hash once per configuration: 0.5 s each for Fashion-MNIST's 188 MB)."""
    tensors = (data.X, data.y, data.indices)
    key = _memo_key(tensors)
    if key is not None and key in _HASHES:
        return _HASHES[key]
    h = hashlib.sha256()
    for t in tensors:
        a = t.detach().cpu().contiguous().numpy() if hasattr(t, "detach") else np.ascontiguousarray(t)
        h.update(str((a.dtype, a.shape)).encode())
        h.update(a.tobytes())
    digest = h.hexdigest()[:16]
    if key is not None:
        _HASHES[key] = digest
        for t in tensors:
            weakref.finalize(t, _HASHES.pop, key, None)
    return digest


def model_hash(model) -> str:
    """sha256 (first 16 hex digits) of a model's parameters and buffers (or its repr if it has none)."""
    h = hashlib.sha256()
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    for name, t in sorted(state.items()):
        h.update(name.encode())
        a = t.detach().cpu().contiguous()
        h.update(str((a.dtype, tuple(a.shape))).encode())
        h.update(a.view(torch.uint8).numpy().tobytes() if a.dtype == torch.bfloat16 else a.numpy().tobytes())
    if not state:
        h.update(repr(model).encode())
    return h.hexdigest()[:16]


def cache_path(key: dict, model_dir=None) -> Path:
    """File of the model with this key in ``model_dir`` (default ``default_model_dir()``)."""
    directory = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    rot = f"-rot{key['rotate']}" if key["rotate"] is not None else ""
    rot += f"-{key['device']}" if key.get("device", "cpu") != "cpu" else ""
    return directory / f"{key['dataset']}{rot}-sigma{key['sigma']:g}-e{key['epochs']}-seed{key['seed']}-{digest}.pt"


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, sigma: float = 0.0, seed: int = 0, batch_size: int = 1000) -> float:
    """Accuracy of ``model`` on ``data``, with one draw of ``N(0, sigma^2 I)`` noise per input
    (seeded) when sigma > 0."""
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    g = torch.Generator().manual_seed(int(seed))  # noise drawn on the CPU: the same draws on any device
    correct = 0
    for i in range(0, len(data), batch_size):
        x = data.X[i : i + batch_size]
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)
        correct += int((model(x.to(device)).argmax(dim=1).cpu() == data.y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(data), 1)


def train(
    dataset: str,
    sigma: float,
    epochs: int | None = None,
    seed: int = 0,
    model_dir=None,
    progress: bool = True,
    rotate: int | None = None,
    *,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str = "adam",
    data_dir=None,
    save: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict]:
    """Train the base classifier of ``dataset`` (a name of ``ddrs_app.data.DATASETS``) with
    Gaussian noise augmentation at ``sigma`` (0: clean training), reproducibly from ``seed``.

    Returns the model (eval mode) and an info dict: the cache key fields, ``clean_accuracy`` and
    ``noisy_accuracy`` (test split, one noise draw per input at sigma), ``train_seconds``,
    ``path`` (where it was saved, if ``save``) and ``cached=False``. ``device`` is where it trains (the
    model is returned on the CPU); the noise and shuffling are drawn on the CPU either way, but a GPU
    rounds differently, so a model trained off the CPU is cached under its own key.
    """
    device = torch.device(device)
    key = cache_key(dataset, sigma, epochs, seed, rotate, batch_size, lr, optimizer, device)
    name, sigma, epochs, seed = key["dataset"], key["sigma"], key["epochs"], key["seed"]
    train_set = load_dataset(name, "train", data_dir=data_dir, rotate=key["rotate"])
    test_set = load_dataset(name, "test", data_dir=data_dir, rotate=key["rotate"])
    key["train_data"] = dataset_hash(train_set)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model(name, train_set.num_classes, train_set.input_shape).to(device)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=key["lr"])
    else:
        opt = torch.optim.SGD(model.parameters(), lr=key["lr"], momentum=0.9, weight_decay=1e-4)
    shuffle_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    loss_fn = nn.CrossEntropyLoss()
    n, bs = len(train_set), key["batch_size"]
    steps = math.ceil(n / bs)

    start = time.perf_counter()
    model.train()
    bar = tqdm(
        total=epochs * steps, disable=not progress, desc=f"train {name} sigma={sigma:g}", unit="batch", leave=False
    )
    try:
        for epoch in range(epochs):
            perm = torch.randperm(n, generator=shuffle_gen)
            total = 0.0
            for i in range(steps):
                idx = perm[i * bs : (i + 1) * bs]
                x, y = train_set.X[idx], train_set.y[idx]
                if sigma > 0:  # fresh noise for every batch (Cohen et al.)
                    x = x + sigma * torch.randn(x.shape, generator=noise_gen, dtype=x.dtype)
                loss = loss_fn(model(x.to(device)), y.to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / n:.4f}")
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    model.eval()
    info_device = {} if device.type == "cpu" else {"train_device": str(device)}

    info = dict(key)
    info.update(
        num_classes=train_set.num_classes,
        input_shape=list(train_set.input_shape),
        train_seconds=seconds,
        clean_accuracy=evaluate(model, test_set, 0.0),
        noisy_accuracy=evaluate(model, test_set, sigma, seed=seed + 2) if sigma > 0 else None,
        torch_version=str(torch.__version__),
        cached=False,
        path=None,
        test_data=dataset_hash(test_set),
        **info_device,
    )
    model = model.cpu()
    if save:
        path = cache_path(key, model_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        info["path"] = str(path)
        stored = {k: v for k, v in info.items() if k != "cached"}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save({"key": key, "info": stored, "state_dict": model.state_dict()}, tmp)
        os.replace(tmp, path)
    return model, info


def load_or_train(dataset: str, sigma: float, *args: Any, **options: Any) -> tuple[nn.Module, dict]:
    """The cached model for this key if ``model_dir`` holds one (``info["cached"] is True``, no
    training), else ``train(...)`` (which saves it). Arguments as for ``train``; the key includes the
    training ``device``'s type when it is not the CPU. The model is returned on the CPU (``save`` is not an
    option here: a trained model is always saved)."""
    if "save" in options:
        raise TypeError("load_or_train always saves what it trains: call train(..., save=False) instead")
    bound = inspect.signature(train).bind(dataset, sigma, *args, **options)
    bound.apply_defaults()
    a = bound.arguments
    epochs, seed, model_dir, progress, rotate = a["epochs"], a["seed"], a["model_dir"], a["progress"], a["rotate"]
    batch_size, lr, optimizer, data_dir = a["batch_size"], a["lr"], a["optimizer"], a["data_dir"]
    device = torch.device(a["device"])
    key = cache_key(dataset, sigma, epochs, seed, rotate, batch_size, lr, optimizer, device)
    train_set = load_dataset(key["dataset"], "train", data_dir=data_dir, rotate=key["rotate"])
    key["train_data"] = dataset_hash(train_set)  # the cache holds what these data train, nothing else
    path = cache_path(key, model_dir)
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # corrupt / incompatible file: retrain and overwrite
            blob = None
        if blob is not None and blob.get("key") == key:
            info = dict(blob["info"])
            model = make_model(key["dataset"], info["num_classes"], tuple(info["input_shape"]))
            model.load_state_dict(blob["state_dict"])
            model.eval()
            test_set = load_dataset(key["dataset"], "test", data_dir=data_dir, rotate=key["rotate"])
            test_data = dataset_hash(test_set)
            if info.get("test_data") != test_data:  # accuracy of the data given, not of the cached run's
                info.update(
                    clean_accuracy=evaluate(model, test_set, 0.0),
                    test_data=test_data,
                    noisy_accuracy=evaluate(model, test_set, key["sigma"], seed=key["seed"] + 2)
                    if key["sigma"] > 0
                    else None,
                )
            info.update(cached=True, path=str(path))
            return model, info
    return train(
        key["dataset"],
        key["sigma"],
        key["epochs"],
        key["seed"],
        model_dir,
        progress,
        key["rotate"],
        batch_size=key["batch_size"],
        lr=key["lr"],
        optimizer=optimizer,
        data_dir=data_dir,
        save=True,
        device=device,
    )


__all__ = [
    "DEFAULTS",
    "cache_path",
    "dataset_hash",
    "model_hash",
    "default_model_dir",
    "evaluate",
    "load_or_train",
    "train",
]
