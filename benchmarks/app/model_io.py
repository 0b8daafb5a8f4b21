"""Load the user's model for ``ddrs certify --model`` (and the Python entry point), pick the device.

``--model`` takes

* a ``torch.export`` program (``torch.export.save``; conventionally ``.pt2``), or a TorchScript file
  (``torch.jit.save``; deprecated by torch, but how most published checkpoints ship);
* ``package.module:factory``: an importable callable returning an ``nn.Module`` (called with no
  arguments; the current directory is importable), with its weights from ``--weights state_dict.pt``
  (a state_dict, or a dict holding one under ``"state_dict"``); without them only with
  ``--random-weights`` (an untrained network, on purpose);
* a checkpoint ``{"arch": ..., "state_dict": ...}`` for an architecture this project ships
  (``ddrs_app.models``: ``mlp-D-H1-...-K``, ``smallcnn-CxHxW-16-32-K``; ``model.arch`` names it),
  including the project's own cached models (``~/.cache/ddrs/models/*.pt``, the arch under ``info``).

Everything is read with ``torch.load(weights_only=True)``, which cannot run code from the file. A file
holding a whole pickled ``nn.Module`` can only be unpickled, and unpickling runs arbitrary code stored in
the file, so it is accepted only with ``trust_pickle=True`` (``--trust-pickle``); the current directory
is importable while unpickling, as for a factory.

``--normalize MEAN... STD...`` puts :class:`Normalize` in front: the noise is then added in the data's own
[0, 1] space and the network sees ``(x - mean) / std``, as Cohen et al.'s models expect.

Every error is a :class:`ddrs_app.data.BadInput` whose message starts with the argument's name.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .data import BadInput, Dataset

#: torch seed of a factory's network with ``random_weights`` (``--random-weights``)
RANDOM_WEIGHTS_SEED = 0
DEVICE_HELP = "auto (a GPU when torch sees one, else the CPU), cpu, cuda, cuda:N or mps"


# ---------------------------------------------------------------------------------- device
def resolve_device(text: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> ``cuda`` if available, else ``mps`` if available, else ``cpu``; otherwise the named
    device, checked to be usable by this torch build. Raises BadInput naming --device."""
    if text is None or (isinstance(text, str) and text == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise BadInput(f"--device: expected {DEVICE_HELP}, got {text!r}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise BadInput(f"--device: {text} is not usable: torch {torch.__version__} sees no CUDA device")
        if device.index is not None and device.index >= count:
            raise BadInput(
                f"--device: {text} is not usable: torch sees {count} CUDA device(s), cuda:0..cuda:{count - 1}"
            )
        return device
    if device.type == "mps":
        if not _mps_available():
            raise BadInput(f"--device: {text} is not usable: torch.backends.mps.is_available() is False")
        return device
    raise BadInput(f"--device: expected {DEVICE_HELP}, got {text!r}")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


# ---------------------------------------------------------------------------------- normalisation
class Normalize(nn.Module):
    """``(x - mean[c]) / std[c]`` per channel (dimension 1) in front of ``model``."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise BadInput(f"--normalize: expected as many MEAN as STD values, got {len(mean)} and {len(std)}")
        if any(not (s > 0) for s in std):
            raise BadInput(f"--normalize: every STD must be positive, got {list(std)}")
        self.model = model
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))

    @property
    def channels(self) -> int:
        return int(self.mean.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return self.model((x - self.mean.to(x.dtype).view(shape)) / self.std.to(x.dtype).view(shape))


def split_normalize(values: Sequence[float] | None) -> tuple[list[float], list[float]] | None:
    """``--normalize MEAN... STD...``: the first half are means, the second half standard deviations."""
    if not values:
        return None
    if len(values) % 2:
        raise BadInput(
            f"--normalize: expected MEAN... STD... (one of each per channel, an even count), got {len(values)} numbers"
        )
    half = len(values) // 2
    return list(values[:half]), list(values[half:])


# ---------------------------------------------------------------------------------- loading
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = str(err).strip().splitlines()
    first = text[0].split(". ")[0] if text else ""
    first = first if len(first) <= limit else first[: limit - 3] + "..."
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _load_weights_only(path: Path, what: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for pickled objects, RuntimeError/EOFError when corrupt
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise _PickledObject(str(err)) from None
        raise BadInput(f"{what}: {path} is not a readable torch file ({_first_line(err)})") from None


class _PickledObject(Exception):
    pass


def model_from_arch(arch: str) -> nn.Module:
    """The shipped architecture named ``arch`` (``ddrs_app.models``), freshly initialised."""
    from .models import MLP, SmallCNN

    mlp = re.fullmatch(r"mlp-(\d+)((?:-\d+)*)-(\d+)", arch)
    if mlp:
        hidden = tuple(int(h) for h in mlp.group(2).split("-")[1:])
        return MLP((int(mlp.group(1)),), int(mlp.group(3)), hidden)
    cnn = re.fullmatch(r"smallcnn-(\d+)x(\d+)x(\d+)-16-32-(\d+)", arch)
    if cnn:
        c, h, w, k = (int(g) for g in cnn.groups())
        return SmallCNN((c, h, w), k)
    raise BadInput(
        f"--model: checkpoint arch {arch!r} is not one this project ships (expected mlp-D-H...-K or "
        "smallcnn-CxHxW-16-32-K); for any other network use package.module:factory with --weights"
    )


def _load_state(model: nn.Module, state, what: str, source: str) -> nn.Module:
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInput(f"{what}: {source} does not hold a state_dict (a dict of tensors)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else ""
        raise BadInput(f"{what}: {source} does not match the model's parameters ({detail[:300]})") from None
    return model


@contextlib.contextmanager
def _cwd_importable():
    """The current directory on ``sys.path`` for the duration (as ``python -c`` has it): a factory's
    module, or the class of a pickled module, may live next to the user's code."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _factory(spec: str) -> nn.Module:
    module_name, attr = spec.split(":", 1)
    try:
        with _cwd_importable():
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise BadInput(
            f"--model: cannot import {spec!r} (expected package.module:factory, an importable callable "
            f"returning an nn.Module; {_first_line(err)})"
        ) from None
    if not callable(obj):
        raise BadInput(f"--model: {spec} is not callable (expected a factory returning an nn.Module)")
    model = obj()
    if not isinstance(model, nn.Module):
        raise BadInput(f"--model: {spec}() returned {type(model).__name__}, expected an nn.Module")
    return model


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in names) and not any(
        n.endswith("/models/model.json") or "/serialized_exported_program" in n for n in names
    )


def _is_export(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(
            "serialized_exported_program" in n or n.endswith("models/model.json") or "/models/" in n
            for n in z.namelist()
        )


def load_model(
    spec: str,
    *,
    weights: str | os.PathLike | None = None,
    trust_pickle: bool = False,
    normalize: Sequence[float] | None = None,
    random_weights: bool = False,
) -> nn.Module:
    """The model ``spec`` names (see the module docstring), in eval mode, float32, on the CPU.

    ``normalize`` is ``MEAN... STD...`` (``--normalize``). A factory needs ``weights``: its network is
    freshly initialised, so certifying it without them is refused unless ``random_weights``
    (``--random-weights``), which initialises it reproducibly (torch seed :data:`RANDOM_WEIGHTS_SEED`,
    the same network on every worker and on resume; the log's fingerprint holds its model_hash).
    Raises BadInput naming --model/--weights/--random-weights/--normalize with what was expected."""
    if not isinstance(spec, str) or not spec:
        raise BadInput(f"--model: expected a file or package.module:factory, got {spec!r}")
    path = Path(spec).expanduser()
    if path.exists():
        if weights is not None:
            raise BadInput(f"--weights: only used with --model package.module:factory; {spec} is a file")
        if random_weights:
            raise BadInput(
                f"--random-weights: only used with --model package.module:factory; {spec} is a file "
                "(its weights are in it)"
            )
        model = _load_file(path, trust_pickle)
    elif _FACTORY.match(spec):
        if random_weights and weights is not None:
            raise BadInput(f"--random-weights: not used with --weights (the weights would come from {weights})")
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            model = _factory(spec)
        if weights is None and not random_weights:
            raise BadInput(
                f"--weights: required with --model {spec} (a factory's network is freshly initialised, so "
                "its certificates would describe random weights); pass --weights STATE_DICT, or "
                "--random-weights to certify the untrained network on purpose"
            )
        if weights is not None:
            wpath = Path(weights).expanduser()
            if not wpath.is_file():
                raise BadInput(f"--weights: {wpath} is not a file (expected a state_dict saved with torch.save)")
            try:
                state = _load_weights_only(wpath, "--weights")
            except _PickledObject:
                raise BadInput(
                    f"--weights: {wpath} holds pickled Python objects, expected a state_dict of tensors "
                    "(torch.save(model.state_dict(), ...))"
                ) from None
            model = _load_state(model, state, "--weights", str(wpath))
    else:
        raise BadInput(
            f"--model: {spec} does not exist; expected a model file (.pt2, TorchScript, checkpoint) "
            "or package.module:factory"
        )
    means_stds = split_normalize(normalize)
    if means_stds is not None:
        model = Normalize(model, *means_stds)
    return _eval(model)


def _eval(model: nn.Module) -> nn.Module:
    """Eval mode, float32 parameters; an exported program's module refuses .eval() and is left as saved."""
    try:
        return model.float().eval()
    except NotImplementedError:  # torch.export's module: "Calling eval() is not supported yet"
        return model


def _load_file(path: Path, trust_pickle: bool) -> nn.Module:
    if path.is_dir() or path.stat().st_size == 0:
        raise BadInput(f"--model: {path} is {'a directory' if path.is_dir() else 'empty'}; expected a model file")
    if _is_export(path) or path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)).module()
        except Exception as err:
            raise BadInput(f"--model: {path} is not a readable torch.export program ({_first_line(err)})") from None
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as err:
            raise BadInput(f"--model: {path} is not a readable TorchScript file ({_first_line(err)})") from None
    try:
        blob = _load_weights_only(path, "--model")
    except _PickledObject:
        if not trust_pickle:
            raise BadInput(
                f"--model: {path} holds a pickled Python object (e.g. a whole nn.Module); unpickling runs "
                "any code stored in the file, so it is refused unless you pass --trust-pickle (only for "
                "files you trust); safer: save a state_dict, a {'arch', 'state_dict'} checkpoint or "
                "torch.export"
            ) from None
        try:
            with _cwd_importable():  # the pickled module's class may live next to the user's code
                blob = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:
            raise BadInput(f"--model: {path} could not be unpickled ({_first_line(err)})") from None
        if not isinstance(blob, nn.Module):
            raise BadInput(f"--model: {path} unpickled to {type(blob).__name__}, expected an nn.Module") from None
        return blob
    arch = _checkpoint_arch(blob)
    if arch is not _NO_ARCH:
        if not isinstance(arch, str):
            raise BadInput(f"--model: checkpoint {path} has arch {arch!r}, expected a string")
        return _load_state(model_from_arch(arch), blob["state_dict"], "--model", str(path))
    if isinstance(blob, dict):
        raise BadInput(
            f"--model: {path} holds a dict without 'arch' (keys {sorted(map(str, blob))[:6]}); a bare "
            "state_dict needs its architecture: use --model package.module:factory --weights FILE"
        )
    raise BadInput(f"--model: {path} holds {type(blob).__name__}, expected a model (.pt2, TorchScript, checkpoint)")


_NO_ARCH = object()


def _checkpoint_arch(blob):
    """The ``arch`` of a checkpoint holding a ``state_dict``: top-level (``{"arch", "state_dict"}``) or,
    in the project's own model cache (``ddrs_app.training``: ``{"key", "info", "state_dict"}``), under
    ``info`` (or ``key``). ``_NO_ARCH`` when there is none."""
    if not isinstance(blob, dict) or "state_dict" not in blob:
        return _NO_ARCH
    if "arch" in blob:
        return blob["arch"]
    for inner in ("info", "key"):
        if isinstance(blob.get(inner), dict) and "arch" in blob[inner]:
            return blob[inner]["arch"]
    return _NO_ARCH


# ---------------------------------------------------------------------------------- checks
def check_model(model, data: Dataset, device: torch.device, batch: int = 2) -> int:
    """One forward pass on the first inputs of ``data``: the model must return (B, K) scores with K equal
    to the data's number of classes (K above the largest label for ``tensors:`` files), and its channel
    count must match ``--normalize``. Returns K."""
    if isinstance(model, Normalize) and len(data.input_shape) >= 2 and data.input_shape[0] != model.channels:
        raise BadInput(
            f"--normalize: {model.channels} MEAN/STD pair(s) given, but the inputs have "
            f"{data.input_shape[0]} channel(s) (shape {tuple(data.input_shape)})"
        )
    if isinstance(model, Normalize) and len(data.input_shape) < 2 and model.channels != 1:
        raise BadInput(
            f"--normalize: inputs of shape {tuple(data.input_shape)} have no channel axis; "
            "expected one MEAN and one STD"
        )
    x = data.X[:batch].to(device)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:
        raise BadInput(
            f"--model: the forward pass on inputs of shape {tuple(x.shape)} from --dataset failed "
            f"({_first_line(err)[:300]})"
        ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise BadInput(f"--model: expected (batch, classes) scores for inputs {tuple(x.shape)}, got {shape}")
    k = int(out.shape[1])
    if data.classes_known and k != data.num_classes:
        raise BadInput(
            f"--model: the model outputs {k} scores per input but --dataset {data.name} has {data.num_classes} classes"
        )
    if not data.classes_known and k < data.num_classes:
        raise BadInput(
            f"--model: the model outputs {k} scores per input but --dataset {data.name} has labels up "
            f"to {data.num_classes - 1}"
        )
    return k
