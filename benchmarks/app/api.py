"""Certify any model on any data from Python: the resumable log, the memory, the tables and the plot.

    from ddrs_app import certify_model
    result = certify_model(model, (x, y), "runs/mine/rs.tsv", method="rs", sigma=0.25, device="auto")
    result["summary"]          # rows, certified accuracy at each radius, ACR, abstention
    result["report"]["plot"]   # certified_accuracy.png beside report.md / report.csv

``model``: an ``nn.Module`` (or any callable returning (B, K) scores), or a ``--model`` string
(``ddrs_app.model_io.load_model``). ``data``: a ``(x, y)`` pair of tensors or arrays, a
``ddrs_app.data.Dataset``, any map-style ``torch.utils.data.Dataset`` returning ``(image, label)``
(e.g. a torchvision data set built with ``transform=ToTensor()``), a ``DataLoader``, or a ``--dataset``
string. The run is ``ddrs_app.runs.run_certification``: a Cohen-format log written line by line,
resumed when it exists, the memory-based certifier for the data-dependent methods.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import certify

from .data import BadInput, Dataset, check_values, load_data
from .model_io import Normalize, check_model, load_model, resolve_device, split_normalize
from .report import DEFAULT_RADII, summary_rows, write_report


def as_dataset(data: Any, *, every: int = 1, max_inputs: int | None = None, name: str = "data") -> Dataset:
    """``data`` (see the module docstring) as a :class:`ddrs_app.data.Dataset`, every ``every``-th input,
    at most ``max_inputs`` (a map-style data set decodes only those)."""
    if isinstance(data, str):
        return load_data(data, every=every, max_inputs=max_inputs)
    if isinstance(data, Dataset):
        from .data import subset

        return subset(data, every, max_inputs)
    if isinstance(data, tuple) and len(data) == 2:
        x, y = (torch.as_tensor(np.asarray(v)) if not isinstance(v, torch.Tensor) else v for v in data)
        pos = torch.arange(0, len(y), every)[:max_inputs]
        xs = x[pos].to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x[pos].to(torch.float32)
        return _dataset(xs, y[pos], pos, name, None)
    if isinstance(data, torch.utils.data.DataLoader):
        xs, ys = [], []
        for xb, yb in data:
            xs.append(torch.as_tensor(xb))
            ys.append(torch.as_tensor(yb).reshape(-1))
        if not xs:
            raise BadInput("data: the DataLoader yielded no batches")
        x, y = torch.cat(xs), torch.cat(ys)
        pos = torch.arange(0, len(y), every)[:max_inputs]
        return _dataset(x[pos].to(torch.float32), y[pos], pos, name, _classes(data.dataset))
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        pos = torch.arange(0, len(data), every)[:max_inputs]
        items = [data[int(p)] for p in pos]
        if not items:
            raise BadInput("data: no inputs selected")
        x = torch.stack([torch.as_tensor(it[0]) for it in items]).to(torch.float32)
        y = torch.tensor([int(it[1]) for it in items], dtype=torch.int64)
        return _dataset(x, y, pos, name, _classes(data))
    raise BadInput(
        f"data: expected (x, y) tensors, a torch Dataset, a DataLoader, a benchmarks Dataset or a "
        f"--dataset string, got {type(data).__name__}"
    )


def _classes(ds) -> int | None:
    classes = getattr(ds, "classes", None)
    return len(classes) if classes else None


def _dataset(x: torch.Tensor, y: torch.Tensor, pos: torch.Tensor, name: str, num_classes: int | None) -> Dataset:
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or len(y) == 0:
        raise BadInput(f"data: expected x (N, ...) and y (N,), N >= 1, got {tuple(x.shape)} and {tuple(y.shape)}")
    if y.is_floating_point() or int(y.min()) < 0:
        raise BadInput("data: expected integer labels >= 0")
    check_values(x, pos, "data", "the data given")
    y = y.to(torch.int64).contiguous()
    known = num_classes is not None
    return Dataset(
        X=x.contiguous(),
        y=y,
        name=name,
        split="test",
        input_shape=tuple(x.shape[1:]),
        num_classes=int(num_classes) if known else int(y.max()) + 1,
        indices=pos,
        classes_known=known,
    )


def on_device_eval(model: torch.nn.Module, device: torch.device, copy_if_changed: bool = True) -> torch.nn.Module:
    """``model`` on ``device`` in eval mode (certificates are about the eval-mode network). The caller's
    module is never changed: with ``copy_if_changed`` a copy is moved / switched when it would otherwise
    move or change mode (``nn.Module.to`` and ``.eval()`` act in place)."""
    tensors = list(itertools.chain(model.parameters(), model.buffers()))
    here = all(t.device.type == device.type and device.index in (None, t.device.index) for t in tensors)
    if copy_if_changed and (not here or any(m.training for m in model.modules())):
        model = copy.deepcopy(model)
    model = model.to(device)
    try:
        return model.eval()
    except NotImplementedError:  # torch.export's module refuses .eval(): it is used as exported
        return model


#: ``metric``/``backend`` of RDDRS: the command line's --metric/--backend choices.
METRICS = ("affine-invariant", "log-euclidean", "bures-wasserstein")
BACKENDS = ("rgd", "pymanopt")
#: keys of ``options`` that are the runner's own (RDDRS: warm start from ANCER and ANCER's options then).
RUNNER_OPTIONS = {"rddrs": ("warm_start", "ancer_options")}


def _constructor_keys(cls, *own: str) -> list[str]:
    import inspect

    return sorted(k for k in inspect.signature(cls.__init__).parameters if k not in ("self", *own))


def check_method_arguments(
    method: str, metric: str | None, backend: str | None, options: dict | None, ddrs_options: dict | None
) -> None:
    """``metric``/``backend`` only for rddrs and one of :data:`METRICS`/:data:`BACKENDS`; ``options`` and
    ``ddrs_options`` hold only keys the method takes (``options``: ANCER's or RDDRS's constructor
    arguments, ``ddrs_options``: DDRS's for the methods that start from it). BadInput naming the argument."""
    import ddrs

    from .methods import REGISTRY

    if method not in REGISTRY:
        raise BadInput(f"method: expected one of {', '.join(REGISTRY)}, got {method!r}")
    spec = REGISTRY[method]
    for name, value, choices in (("metric", metric, METRICS), ("backend", backend, BACKENDS)):
        if value is None:
            continue
        if method != "rddrs":
            raise BadInput(f"{name}: only used with method rddrs, got method {method!r}")
        if value not in choices:
            raise BadInput(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    own = spec.preset
    own_keys = (
        []
        if own is None
        else _constructor_keys(own, "metric", "backend", "structure", "rank") + list(RUNNER_OPTIONS.get(method, ()))
    )
    dd_keys = _constructor_keys(ddrs.DDRS, "sigma0") if spec.data_dependent else []
    checks = [("options", options, own_keys), ("ddrs_options", ddrs_options, dd_keys)]
    if method == "rddrs" and isinstance(options, dict) and options.get("ancer_options") is not None:
        checks.append(("options['ancer_options']", options["ancer_options"], _constructor_keys(ddrs.ANCER)))
    for name, given, valid in checks:
        if given is None:
            continue
        if not isinstance(given, dict):
            raise BadInput(f"{name}: expected a dict, got {type(given).__name__}")
        for key in given:
            if key in valid:
                continue
            if key in ("metric", "backend", "structure", "rank", "sigma", "sigma0"):
                hint = f"pass {'sigma' if key == 'sigma0' else key}=... to certify_model itself"
            elif name == "options" and method == "ddrs" and key in dd_keys:
                hint = "method ddrs takes its settings in ddrs_options"
            else:
                hint = f"valid keys for method {method}: {', '.join(sorted(valid)) if valid else 'none'}"
            raise BadInput(f"{name}: unknown key {key!r} for method {method} ({hint})")


def check_structure_arguments(method: str, structure: str | None, rank: int | None) -> None:
    """``structure`` only for rddrs and one of ``ddrs.methods.STRUCTURES``; ``rank`` only with low-rank / spiked and
    a positive int. BadInput naming the argument."""
    from ddrs.methods import LOW_RANK_STRUCTURES, STRUCTURES

    if structure is not None:
        if method != "rddrs":
            raise BadInput(f"structure: only used with method rddrs, got method {method!r}")
        if structure not in STRUCTURES:
            raise BadInput(f"structure: expected one of {', '.join(STRUCTURES)}, got {structure!r}")
    if rank is not None:
        if structure not in LOW_RANK_STRUCTURES:
            raise BadInput(f"rank: only used with structure {' or '.join(LOW_RANK_STRUCTURES)}, got {structure!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise BadInput(f"rank: expected a positive int, got {rank!r}")


def certify_model(
    model: Any,
    data: Any,
    out: str | os.PathLike,
    *,
    method: str = "rs",
    sigma: float = 0.25,
    sigmas: Sequence[float] = (),
    normalize: Sequence[float] | None = None,
    device: str = "auto",
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int = 1000,
    every: int = 1,
    max_inputs: int | None = None,
    seed: int = 0,
    memory: bool = True,
    progress: bool = True,
    metric: str | None = None,
    backend: str | None = None,
    structure: str | None = None,
    rank: int | None = None,
    options: dict | None = None,
    ddrs_options: dict | None = None,
    radii: Sequence[float] = DEFAULT_RADII,
    report_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    worker_threads: int = 1,
    weights: str | os.PathLike | None = None,
    trust_pickle: bool = False,
    random_weights: bool = False,
) -> dict[str, Any]:
    """Certify ``model`` on ``data`` with ``method`` (rs, ddrs, ancer, rddrs, mog) into the log ``out``
    (resumed if it exists), then write the tables and the plot into ``report_dir`` (default
    ``<out>.report/``). Your module is never changed: it is certified in eval mode on ``device``, through a
    copy when it is elsewhere or in training mode. ``normalize`` is ``MEAN... STD...`` (noise is added
    before it, in [0, 1] space);
    ``device`` is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``. CPU and GPU runs may draw different
    noise and round differently: each device's log is reproducible on that device. ``workers`` certifies
    on that many Ray actors (a local Ray cluster, or the one at ``ray_address``; ``worker_threads`` torch
    threads each; one GPU each with ``device="cuda"``): the same log, time columns aside.

    ``metric`` and ``backend`` are RDDRS's (``--metric``/``--backend``: :data:`METRICS`, :data:`BACKENDS`;
    default affine-invariant, rgd), and so are ``structure`` and ``rank`` (``--structure``/``--rank``: the noise's
    structure, ``ddrs.methods.STRUCTURES``, default full, and the spikes of low-rank / spiked, default 8).
    ``options`` go to ANCER's or RDDRS's constructor and ``ddrs_options`` to the DDRS stage;
    unknown keys are refused up front. For a ``model`` string, ``weights``,
    ``trust_pickle`` and ``random_weights`` are ``--weights``, ``--trust-pickle`` and ``--random-weights``
    (a factory needs ``weights`` unless ``random_weights``).

    Returns ``{"log": path, "report": {markdown, csv, plot}, "summary": {...}, "num_classes": K}``.
    Raises :class:`ddrs_app.data.BadInput` (naming the argument) before any log is written."""
    from .runs import MethodConfig, certify_on

    check_method_arguments(method, metric, backend, options, ddrs_options)
    check_structure_arguments(method, structure, rank)
    model_spec: dict[str, Any] = dict(
        weights=weights, trust_pickle=trust_pickle, normalize=normalize, random_weights=random_weights
    )
    if not isinstance(model, (str, os.PathLike)):
        for name in ("weights", "trust_pickle", "random_weights"):
            if model_spec[name] not in (None, False):
                raise BadInput(f"{name}: only used with a model string (a file or package.module:factory)")
    cluster = None
    if workers is None and ray_address is not None:
        raise BadInput("ray_address: only used with workers")
    if workers is not None:
        from .cluster import Cluster

        cluster = Cluster(workers, address=ray_address, device=device, threads=worker_threads)
    dev = resolve_device("cpu" if cluster is not None else device)
    dataset = as_dataset(data, every=every, max_inputs=max_inputs)
    loader = None
    if isinstance(model, (str, os.PathLike)):
        from .cluster import checkpoint_loader

        loader = checkpoint_loader(os.fspath(model), **model_spec)
        model = load_model(os.fspath(model), **model_spec)
    elif normalize:
        model = Normalize(model, *split_normalize(normalize))  # type: ignore[misc]
    if isinstance(model, torch.nn.Module):
        model = on_device_eval(model, dev, copy_if_changed=loader is None)
    classes = check_model(model, dataset, dev)
    if not dataset.classes_known:
        dataset = replace(dataset, num_classes=classes, classes_known=True)
    config = MethodConfig(
        method,
        sigma=sigma,
        sigmas=tuple(sigmas),
        metric=metric or "affine-invariant",
        backend=backend or "rgd",
        structure=structure or "full",
        rank=rank,
        options=dict(options or {}),
        ddrs_options=dict(ddrs_options or {}),
    )
    budget = dict(n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed, memory=memory, progress=progress)
    log_path = certify_on(cluster, loader, config, model, dataset, out, **budget)
    report_dir = Path(report_dir) if report_dir is not None else Path(str(log_path) + ".report")
    files = write_report([log_path], report_dir, radii=radii, labels=[config.label])
    log = certify.read_log(log_path)
    return {
        "log": Path(log_path),
        "report": files,
        "summary": summary_rows({config.label: log}, list(radii))[0],
        "num_classes": classes,
    }
