"""Certify on a Ray cluster: one model replica per actor, the runner's batches, every input exactly once.

``Cluster(workers=N)`` starts a local Ray cluster of N workers (or joins one with ``address=``) and
``ddrs_app.runs.run_certification(..., cluster=cluster)`` hands it the runner's fixed batches
(:func:`ddrs_app.runs.plan_batches`). Each actor holds one replica of each model, loaded once (from
the model cache, a checkpoint, or the driver's copy through the object store) and checked against the
run's fingerprint; it runs the pure :func:`ddrs_app.runs.compute_batch`, so every input's noise and
certificate come from the seeds a single-process run uses. The driver keeps the log: it finishes the
results in plan order (memory in idx order, one row per input), so the log is byte for byte the
single-process one apart from the time columns, whatever the number of workers.

Faults, as Ray documents them (docs.ray.io, ray-core/fault_tolerance/actors): actors are created with
``max_restarts=0`` and tasks with ``max_task_retries=0`` (at most once); a ``RayActorError`` may arrive
for a batch that did finish. The driver keeps its own bookkeeping over ``ray.wait`` (not
``ray.util.ActorPool``, which could wedge on one dead actor): a dead actor's batch (killed, crashed, node
lost) goes back to the queue for another actor and a replacement actor is started; a batch that raised
is retried on another actor up to ``max_attempts`` times; the first result of a unit is kept and any
later one dropped. ``ray`` (the ``cluster`` extra) is imported only when a :class:`Cluster` starts.
"""

from __future__ import annotations

import collections
import copy
import functools
import importlib.util
import logging
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .data import BadInput, Dataset
from .runs import BatchResult, FingerprintMismatch, MethodConfig, compute_batch, library_version
from .training import dataset_hash, model_hash

#: methods whose noise choice is free (no optimisation): their batches are split into smaller units
FREE_CHOICE = ("rs", "mog")
#: models and data sets an actor keeps (a comparison goes through them one sigma at a time)
ACTOR_CACHE = 4
#: units handed out per worker beyond the first unfinished one (bounds the driver's buffer)
LOOKAHEAD = 4


class ClusterError(RuntimeError):
    """The cluster could not finish a run (too many workers died, or a batch failed every attempt)."""


@dataclass(frozen=True)
class CachedModel:
    """Loader of a model-cache file (``ddrs_app.training``); never trains: the file must be on the node."""

    path: str

    def __call__(self) -> torch.nn.Module:
        from .models import make_model

        if not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"model cache file {self.path} is not on node {socket.gethostname()}: copy the model cache "
                "there (or use a shared --model-dir, or --model with a checkpoint every node can read)"
            )
        blob = torch.load(self.path, map_location="cpu", weights_only=True)
        info = blob["info"]
        model = make_model(blob["key"]["dataset"], info["num_classes"], tuple(info["input_shape"]))
        model.load_state_dict(blob["state_dict"])
        return model.eval()


def checkpoint_loader(spec: str, **kwargs: Any) -> Callable[[], Any]:
    """Loader of ``--model`` ``spec`` (``ddrs_app.model_io.load_model``) on each worker."""
    from .model_io import load_model

    return functools.partial(load_model, spec, **kwargs)


@dataclass(frozen=True)
class Unit:
    """One piece of work: certify ``certify`` (positions) of the runner's batch ``positions``.

    The noise is always chosen for the whole batch (seeded by its first index), so a unit's
    certificates are the single-process ones; ``sigma_star``/``ancer`` are the batch's shared stages."""

    positions: list[int]
    certify: list[int]
    sigma_star: list | None = None
    ancer: list | None = None


def plan_units(method: str, batches: list[tuple[list[int], list[int]]], stages: Callable, workers: int) -> list[Unit]:
    """Units for the batches ``(positions, todo)`` in plan order. A batch of a method that optimises
    noise is one unit; a batch of :data:`FREE_CHOICE` is split into chunks of its ``todo`` (about four
    per worker over the run) so that even one batch keeps every worker busy."""
    batches = [(p, t) for p, t in batches if t]
    total = sum(len(t) for _, t in batches)
    chunk = max(1, math.ceil(total / (4 * workers))) if method in FREE_CHOICE else None
    units = []
    for positions, todo in batches:
        star, thetas = stages(positions)
        step = chunk or len(todo)
        units += [Unit(list(positions), todo[i : i + step], star, thetas) for i in range(0, len(todo), step)]
    return units


def start_local_ray(num_cpus: int) -> None:
    """A local Ray instance of ``num_cpus`` CPUs for this process (no dashboard). Its workers keep
    the driver's priority: Ray's default renices them by +15 (``worker_niceness``), which on a shared
    machine would leave a command's own work to run after everybody else's."""
    import ray

    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        _system_config={"worker_niceness": 0},
    )


def worker_device(device: str) -> str:
    """The device string an actor uses: each GPU actor sees only its own GPU (Ray sets
    CUDA_VISIBLE_DEVICES), so ``cuda:N`` becomes ``cuda``; ``auto`` is resolved on the worker."""
    device = str(device)
    if device.startswith("cuda"):
        return "cuda"
    return device


class Worker:
    """A Ray actor: a thread budget, a device, and the models and data sets it has loaded."""

    def __init__(self, device: str, threads: int):
        torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.models: collections.OrderedDict = collections.OrderedDict()
        self.data: collections.OrderedDict = collections.OrderedDict()
        self.where = f"{socket.gethostname()} pid {os.getpid()}"

    def _get(self, cache: collections.OrderedDict, key: str, make: Callable):
        if key not in cache:
            cache[key] = make()
            while len(cache) > ACTOR_CACHE:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return cache[key]

    def _load_model(self, fp: dict, box: list):
        import ray

        kind, ref = box
        source = ray.get(ref)
        model = source() if kind == "load" else source
        got = model_hash(model)
        if got != fp["model_hash"]:
            raise FingerprintMismatch(
                f"worker {self.where}: its model (hash {got}) is not the run's (hash {fp['model_hash']}); "
                "every node must load the same weights"
            )
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        return model

    def _load_data(self, fp: dict, box: list) -> Dataset:
        import ray

        data = ray.get(box[0])
        if dataset_hash(data) != fp["inputs_hash"]:
            raise FingerprintMismatch(f"worker {self.where}: its inputs are not the run's")
        return data

    def compute(self, fp: dict, model_box: list, data_box: list, config: MethodConfig, unit: Unit, kw: dict):
        """``compute_batch`` for ``unit`` with the run's model and data (loaded once, then kept)."""
        if fp["version"] != library_version():
            raise FingerprintMismatch(
                f"worker {self.where}: ddrs {library_version()} is not the driver's {fp['version']}; "
                "install the same version on every node"
            )
        if fp.get("threads", torch.get_num_threads()) != torch.get_num_threads():
            raise FingerprintMismatch(
                f"worker {self.where}: runs {torch.get_num_threads()} torch threads, the run's rows are "
                f"fingerprinted with {fp['threads']}"
            )
        model = self._get(self.models, fp["model_hash"], lambda: self._load_model(fp, model_box))
        data = self._get(self.data, fp["inputs_hash"], lambda: self._load_data(fp, data_box))
        skip = set(unit.positions) - set(unit.certify)
        return compute_batch(
            config,
            model,
            data,
            unit.positions,
            sigma_star=unit.sigma_star,
            ancer_cache=unit.ancer,
            skip=skip,
            **kw,
        )

    def prepare(self, fp: dict, model_box: list, data_box: list) -> str:
        """Load (and check) the run's model and inputs now; returns where this actor runs."""
        self._get(self.models, fp["model_hash"], lambda: self._load_model(fp, model_box))
        self._get(self.data, fp["inputs_hash"], lambda: self._load_data(fp, data_box))
        return self.where

    def loaded(self) -> list[str]:
        """Hashes of the models this actor holds (for tests and diagnostics)."""
        return list(self.models)


class Cluster:
    """N Ray actors that compute the runner's batches. A context manager: it starts a local Ray
    cluster of ``workers`` x ``threads`` CPUs (or joins ``address``, or the Ray this process is already
    connected to) and stops only what it started.

    ``device``: ``cpu`` (``threads`` torch threads per actor), ``cuda`` / ``cuda:N`` (one GPU per
    actor, by Ray resource request), ``auto`` (a GPU each if the cluster has ``workers`` GPUs).
    ``max_failures``: actor deaths tolerated over the cluster's life (default 2 per worker);
    ``max_attempts``: tries of a batch that raises."""

    def __init__(
        self,
        workers: int,
        *,
        address: str | None = None,
        device: str = "cpu",
        threads: int = 1,
        max_failures: int | None = None,
        max_attempts: int = 3,
    ):
        for name, value in (("--workers", workers), ("--threads", threads), ("max_attempts", max_attempts)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadInput(f"{name}: expected an integer >= 1, got {value!r}")
        if str(device) != "auto":
            try:
                kind = torch.device(str(device)).type
            except (RuntimeError, TypeError):
                raise BadInput(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}") from None
            if kind not in ("cpu", "cuda"):
                raise BadInput(f"--device: {device} cannot be shared by Ray workers; use cpu, cuda or auto")
        if importlib.util.find_spec("ray") is None:
            raise BadInput("--workers: Ray is not installed; pip install 'ddrs[cluster]'")
        self.workers, self.address, self.device, self.threads = workers, address, str(device), threads
        self.max_failures = 2 * workers if max_failures is None else max_failures
        self.max_attempts = max_attempts
        self.actors: list = []
        self.failures = 0
        self.loaders: dict[str, Callable[[], Any]] = {}
        self._owns_ray = False
        self._refs: dict[tuple[str, str], list] = {}
        self._inflight: dict = {}

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Connect to Ray (starting a local cluster unless ``address``) and create the actors."""
        import ray

        if not ray.is_initialized():
            if self.address is None:
                start_local_ray(self.workers * self.threads)
            else:
                ray.init(address=self.address, logging_level=logging.WARNING)
            self._owns_ray = True
        gpus = ray.cluster_resources().get("GPU", 0)
        self.num_gpus = 1 if self.device.startswith("cuda") or (self.device == "auto" and gpus >= self.workers) else 0
        self._actor_class = ray.remote(Worker).options(
            num_cpus=self.threads, num_gpus=self.num_gpus, max_restarts=0, max_task_retries=0
        )
        self.actors = [self._spawn() for _ in range(self.workers)]

    def _spawn(self):
        device = worker_device(self.device) if self.num_gpus or self.device != "auto" else "cpu"
        return self._actor_class.remote(device, self.threads)

    def stop(self) -> None:
        """Kill the actors; shut Ray down if this object started (or connected) it."""
        import ray

        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001  (already dead)
                pass
        self.actors, self._refs = [], {}
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    # ------------------------------------------------------------------ models and data
    def register(self, model: Any, loader: Callable[[], Any]) -> None:
        """Workers load ``model`` with ``loader`` (a picklable zero-argument callable, e.g.
        :class:`CachedModel` or :func:`checkpoint_loader`) instead of receiving the driver's copy."""
        self.loaders[model_hash(model)] = loader

    def register_cache_file(self, model: Any, path: str) -> None:
        """Workers load ``model`` from this model-cache file (:class:`CachedModel`)."""
        self.register(model, CachedModel(str(path)))

    def _model_box(self, model: Any, key: str) -> list:
        import ray

        if ("model", key) not in self._refs:
            loader = self.loaders.get(key)
            if loader is not None:
                self._refs[("model", key)] = ["load", ray.put(loader)]
            else:  # the driver's replica, through the object store (on the CPU: workers place it)
                on_cpu = all(t.device.type == "cpu" for t in getattr(model, "state_dict", dict)().values())
                self._refs[("model", key)] = ["replica", ray.put(model if on_cpu else copy.deepcopy(model).cpu())]
        return self._refs[("model", key)]

    def _data_box(self, data: Dataset, key: str) -> list:
        import ray

        if ("data", key) not in self._refs:
            self._refs[("data", key)] = [ray.put(data)]
        return self._refs[("data", key)]

    def prepare(self, model: Any, data: Dataset, fingerprint: dict) -> list[str]:
        """Every actor loads and checks the run's model and inputs now (else at its first batch):
        fails fast on a worker that cannot, and keeps loading out of a timed run. Returns the actors'
        hosts and pids."""
        import ray

        boxes = self._model_box(model, fingerprint["model_hash"]), self._data_box(data, fingerprint["inputs_hash"])
        return ray.get([a.prepare.remote(fingerprint, *boxes) for a in self.actors])

    # ------------------------------------------------------------------ the run
    def run(
        self,
        config: MethodConfig,
        model: Any,
        data: Dataset,
        batches: list[tuple[list[int], list[int]]],
        *,
        fingerprint: dict,
        finish: Callable[[BatchResult], None],
        stages: Callable[[list[int]], tuple],
        **kw: Any,
    ) -> None:
        """Compute the batches ``(positions, todo)`` on the actors; call ``finish`` on each result in
        plan order, as soon as it and every earlier one have arrived. ``kw`` go to ``compute_batch``."""
        import ray

        if not self.actors:
            raise ClusterError("the cluster is not started (use it as a context manager)")
        units = plan_units(config.method, batches, stages, len(self.actors))
        model_box = self._model_box(model, fingerprint["model_hash"])
        data_box = self._data_box(data, fingerprint["inputs_hash"])
        try:
            self._drive(units, fingerprint, model_box, data_box, config, kw, finish)
        finally:  # a run that stops early (an error, Ctrl-C) leaves no work queued on the actors
            for ref in self._inflight:
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001  (finished or gone)
                    pass
            self._inflight = {}

    def _drive(self, units: list[Unit], fingerprint, model_box, data_box, config, kw, finish) -> None:
        """The bookkeeping over ``ray.wait``: hand units to idle actors (at most ``LOOKAHEAD`` per
        worker beyond the first unfinished one, so the buffer of early results stays small), requeue
        a dead actor's unit, retry a unit that raised on another actor, finish results in order."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        queue = collections.deque(range(len(units)))
        idle = list(self.actors)
        inflight = self._inflight = {}  # ObjectRef -> (unit number, actor)
        results: dict[int, BatchResult] = {}
        tried: dict[int, list] = collections.defaultdict(list)  # unit -> actors it raised on
        next_unit = 0
        while next_unit < len(units):
            for u in list(queue):
                if not idle or u >= next_unit + LOOKAHEAD * len(self.actors):
                    break
                fresh = [a for a in idle if a not in tried[u]]
                if not fresh and any(a not in tried[u] for a in self.actors):
                    continue  # wait for an actor this unit has not failed on
                actor = (fresh or idle)[0]
                idle.remove(actor)
                queue.remove(u)
                inflight[actor.compute.remote(fingerprint, model_box, data_box, config, units[u], kw)] = (u, actor)
            if not inflight:
                raise ClusterError("no worker left to run the remaining batches")
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                u, actor = inflight.pop(ref)
                try:
                    result = ray.get(ref)
                except RayActorError as err:  # the actor died (killed, crashed, node lost): requeue
                    self._replace(actor, idle, err)
                    queue.appendleft(u)
                    continue
                except RayTaskError as err:  # the unit raised on a live actor: retry on another
                    cause = err.cause if isinstance(err.cause, BaseException) else err
                    if isinstance(cause, (FingerprintMismatch, BadInput)):
                        raise cause from None
                    tried[u].append(actor)
                    idle.append(actor)
                    if len(tried[u]) >= self.max_attempts:
                        raise ClusterError(
                            f"a batch (inputs at positions {units[u].certify[0]}..{units[u].certify[-1]}) "
                            f"failed on {len(tried[u])} attempts; last error: {cause!r}"
                        ) from cause
                    queue.appendleft(u)
                    continue
                idle.append(actor)
                if u >= next_unit and u not in results:  # the first result of a unit is kept
                    results[u] = result
                while next_unit in results:
                    finish(results.pop(next_unit))
                    next_unit += 1

    def _replace(self, actor, idle: list, err: BaseException) -> None:
        """Drop a dead actor and start another (Ray does not restart it: max_restarts=0)."""
        import ray

        self.failures += 1
        if actor in self.actors:
            self.actors.remove(actor)
        if actor in idle:
            idle.remove(actor)
        try:
            ray.kill(actor)
        except Exception:  # noqa: BLE001  (already gone)
            pass
        if self.failures > self.max_failures:
            raise ClusterError(
                f"{self.failures} workers died (more than max_failures={self.max_failures}); last: {err}"
            ) from err
        fresh = self._spawn()
        self.actors.append(fresh)
        idle.append(fresh)


__all__ = ["CachedModel", "Cluster", "ClusterError", "FREE_CHOICE", "Unit", "checkpoint_loader", "plan_units"]
