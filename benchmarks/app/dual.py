"""The dual certifier's parts for a built-in data set: one classifier per dictionary entry and a trained selector.

``certify.DualSmooth`` (Sun, Mao and Vechev, ICLR 2026) needs a dictionary of noises, a base classifier for
each entry and a base selector. For the isotropic dictionary {sigma_1, ..., sigma_K} of ``ddrs certify
--method dual`` and ``ddrs compare --methods ... dual``:

* entry k's classifier is the project's model trained with noise sigma_k (``training.load_or_train``, the same
  cached model RS certifies at sigma_k). One model per entry, not one model trained on noise drawn from the
  dictionary: each entry then certifies exactly what RS at sigma_k certifies, so the dual is compared with the
  per-sigma RS rows on the same networks, and no new classifier is trained.
* the selector (``ddrs.train_selector``, an MLP on the flattened input) learns, on ``inputs`` training inputs
  (every k-th of the training split), the entry with the largest hard-vote l2 radius of the input's true class
  (``ddrs.label_inputs``: ``samples`` common draws per entry at level ``alpha``; Dual RS labels with N = 100
  per sigma), trained with the selector's own noise sigma_e. It is cached in the model directory under a key
  of everything it depends on (the classifiers' hashes, the training inputs' hash, the recipe, the seed).

An anisotropic dictionary (``SelectorRecipe(dictionary="ancer" | "rddrs")``, ``--dual-dictionary``) adds to the
sigmas' entries K centres of the noises DDRS then ANCER / RDDRS choose at the largest sigma on a few training inputs
(``preset_dictionary``: Riemannian k-means under the preset's own metric), each served by the largest sigma's model;
its labels keep the ball first, then grow the volume (``prefer_volume``), and the centres are cached with the selector.

Nothing here bears on soundness: ``certify.dual``'s theorem holds for any selector.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import certify
import ddrs
import manifolds

from .budgets import BUDGETS, Budget
from .data import load_dataset, subset
from .training import dataset_hash, default_model_dir, load_or_train, model_hash


@dataclass(frozen=True)
class SelectorRecipe:
    """How the selector is made. ``sigma_e``: the selector's noise (None: the largest entry, Dual RS's
    sigma_e >= max sigma). ``inputs``: training inputs labelled (every k-th of the split, at most this many).
    ``samples``, ``alpha``: the labelling draws per entry and level. ``tie``: an input whose best entry beats the
    most often best one by less than this (l2 radius) is labelled with the latter, so that the smoothed selector
    is constant where the choice matters little (its ball bounds the certificate; on the digits a selector trained
    on the raw best entries votes 0.6-0.7 for its choice and its ball cuts certified accuracy at l2 0.25 from
    0.86 to 0.64, results README). ``epochs``, ``hidden``, ``lr``: the MLP.

    ``dictionary``: 'isotropic' (the entries are the sigmas) or 'ancer' / 'rddrs': the sigmas' isotropic entries
    plus ``entries`` centres (``ddrs.NoiseDictionary.from_result``, Riemannian k-means under the preset's metric)
    of the noises the preset (DDRS then ANCER / RDDRS, the comparison's budget) chooses at the largest sigma on
    ``dictionary_inputs`` training inputs (every k-th of the training split); the centres' classifier is the largest
    sigma's model. Their labels keep the ball and then the volume: the entry
    with the largest proxy radius among those whose l2 radius is within ``tie`` of the input's best."""

    sigma_e: float | None = None
    dictionary: str = "isotropic"
    entries: int = 4
    dictionary_inputs: int = 100
    inputs: int = 2000
    samples: int = 100
    alpha: float = 0.001
    tie: float = 0.1
    epochs: int = 30
    hidden: tuple[int, ...] = (128, 64)
    lr: float = 1e-3

    @classmethod
    def from_options(cls, options: dict) -> SelectorRecipe:
        """The recipe of a method's ``options`` (a log fingerprint's, where ``hidden`` is a JSON list)."""
        options = dict(options)
        if "hidden" in options:
            options["hidden"] = tuple(options["hidden"])
        return cls(**options)

    def resolved_sigma_e(self, sigmas: tuple[float, ...]) -> float:
        return float(max(sigmas) if self.sigma_e is None else self.sigma_e)

    def __post_init__(self) -> None:
        if self.dictionary not in DICTIONARIES:
            raise ValueError(f"dictionary must be one of {DICTIONARIES}, got {self.dictionary!r}")
        if not (isinstance(self.entries, int) and 1 <= self.entries <= ddrs.dual_dictionary.MAX_ENTRIES):
            raise ValueError(f"entries must be an int in 1..{ddrs.dual_dictionary.MAX_ENTRIES}, got {self.entries!r}")
        if not (isinstance(self.dictionary_inputs, int) and self.dictionary_inputs >= self.entries):
            raise ValueError(f"dictionary_inputs must be an int >= entries, got {self.dictionary_inputs!r}")


#: the dictionaries ``SelectorRecipe.dictionary`` names
DICTIONARIES = ("isotropic", "ancer", "rddrs")


class DualModel(nn.Module):
    """The networks of a dual certifier: ``classifiers[k]`` for dictionary entry k (isotropic ``sigmas[k]``) and
    the ``selector`` (scores over the entries, smoothed with N(0, sigma_e^2 I)). Not a classifier itself:
    ``smooth()`` gives the ``certify.DualSmooth``."""

    def __init__(
        self,
        classifiers: list[nn.Module],
        selector: nn.Module,
        sigmas: tuple[float, ...],
        sigma_e: float,
        noises: list[certify.GaussianNoise] | None = None,
    ):
        super().__init__()
        self.noises = [certify.IsotropicGaussian(float(s)) for s in sigmas] if noises is None else list(noises)
        if len(classifiers) != len(self.noises):
            raise ValueError(f"classifiers must hold one model per entry ({len(self.noises)}), got {len(classifiers)}")
        self.classifiers = nn.ModuleList(classifiers)
        self.selector = selector
        self.sigmas = tuple(float(s) for s in sigmas)
        self.sigma_e = float(sigma_e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("DualModel is the dual certifier's networks, not a classifier: use .smooth(num_classes)")

    def smooth(self, num_classes: int) -> certify.DualSmooth:
        return certify.DualSmooth(
            list(self.classifiers),
            self.selector,
            self.noises,
            num_classes,
            certify.IsotropicGaussian(self.sigma_e),
        )


def prefer_common(labels: torch.Tensor, radii: torch.Tensor, tie: float) -> torch.Tensor:
    """``labels`` with every input whose best radius exceeds the most common label's radius by less than ``tie``
    relabelled to the most common label (ties of counts: the smallest index)."""
    if tie <= 0:
        return labels
    common = int(torch.bincount(labels).argmax())
    best = radii.gather(1, labels[:, None])[:, 0]
    return torch.where(best - radii[:, common] < tie, torch.full_like(labels, common), labels)


def prefer_volume(l2: torch.Tensor, proxy: torch.Tensor, tie: float) -> torch.Tensor:
    """Per input, the entry with the largest proxy radius among those whose l2 radius is within ``tie`` of the
    input's largest (ties to the smallest index): keep the ball, then grow the volume (ANCER's eq. (4) in spirit).
    Then, as ``prefer_common`` does for the isotropic labels, an input whose chosen entry beats the most often chosen
    one by less than ``tie`` in proxy radius, the latter keeping the ball too, gets the latter: a selector smoothed
    over labels that change where little is at stake votes split, and its ball then binds."""
    keeps = l2 >= l2.max(dim=1, keepdim=True).values - tie
    score = torch.where(keeps, proxy, torch.full_like(proxy, -1.0))
    best = score.argmax(dim=1)  # the first maximal index (torch.argmax)
    if tie <= 0:
        return best
    common = int(torch.bincount(best).argmax())
    near = keeps[:, common] & (score.gather(1, best[:, None])[:, 0] - proxy[:, common] < tie)
    return torch.where(near, torch.full_like(best, common), best)


def preset_dictionary(
    preset: str,
    model: nn.Module,
    x: torch.Tensor,
    sigma: float,
    entries: int,
    generator: torch.Generator,
    budget: Any,
    progress: bool = False,
) -> ddrs.NoiseDictionary:
    """``entries`` centres of the noises that DDRS (from ``sigma``) then ``preset`` ('ancer' or 'rddrs') choose for
    the inputs ``x`` with the comparison's ``budget`` (its ddrs / ancer / rddrs options), fitted ``budget.opt_batch``
    inputs at a time and clustered under the preset's manifold (``ddrs.NoiseDictionary.from_result``)."""
    parts = []
    for start in range(0, x.shape[0], budget.opt_batch):
        xb = x[start : start + budget.opt_batch]
        dd = ddrs.DDRS(sigma0=sigma, **budget.ddrs).fit(model, xb, generator=generator)
        stage = ddrs.ANCER(**budget.ancer) if preset == "ancer" else ddrs.RDDRS(**budget.rddrs)
        parts.append(stage.fit(model, xb, init=dd, generator=generator))
        if progress:
            print(f"{preset} dictionary: {min(start + budget.opt_batch, x.shape[0])}/{x.shape[0]} inputs", flush=True)
    first = parts[0]
    result = ddrs.SmoothingResult(
        preset,
        first.manifold,
        torch.cat([p.points for p in parts]),
        torch.cat([p.sigma_star for p in parts]),
        noise=first.noise,
    )
    return ddrs.NoiseDictionary.from_result(result, entries, generator)


def _cache_path(key: dict, model_dir: Any, part: str) -> Path:
    """``<model dir>/<data set>-<part>-K<sigmas>-seed<seed>-<digest of key>.pt``."""
    directory = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return directory / f"{key['dataset']}-{part}-K{len(key['sigmas'])}-seed{key['seed']}-{digest}.pt"


def _save(blob: dict, path: Path) -> None:
    """``torch.save`` through a temporary file, so that an interrupted save never leaves a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)


def load_or_train_dual(
    dataset: str,
    sigmas: tuple[float, ...],
    recipe: SelectorRecipe | None = None,
    *,
    seed: int = 0,
    model_dir: Any = None,
    data_dir: Any = None,
    rotate: int | None = None,
    progress: bool = True,
) -> tuple[DualModel, dict]:
    """The ``DualModel`` of ``dataset`` for the dictionary of ``recipe`` over ``sigmas``: the per-sigma models
    (trained or cached), the anisotropic centres when the recipe asks for them, and the selector (cached with the
    centres, else built, labelled and trained here). Returns it (eval mode, CPU) and an info dict: the selector's
    cache key, ``label_counts`` (training inputs per entry), ``dictionary_seconds``, ``label_seconds`` and
    ``train_seconds`` (0 when cached), ``selector_accuracy`` (on its labels, no noise) and ``cached``."""
    recipe = recipe or SelectorRecipe()
    sigmas = tuple(float(s) for s in sigmas)
    if not sigmas or any(not (s > 0) for s in sigmas) or list(sigmas) != sorted(set(sigmas)):
        raise ValueError(f"sigmas must be distinct positive numbers in increasing order, got {sigmas}")
    sigma_e = recipe.resolved_sigma_e(sigmas)
    classifiers = [
        load_or_train(dataset, s, seed=seed, model_dir=model_dir, data_dir=data_dir, rotate=rotate, progress=progress)[
            0
        ]
        for s in sigmas
    ]
    train_set = load_dataset(dataset, "train", data_dir=data_dir, rotate=rotate)
    inputs = subset(train_set, max(1, len(train_set) // recipe.inputs), recipe.inputs)
    d, shape = inputs.X[0].numel(), tuple(inputs.X.shape[1:])
    isotropic = recipe.dictionary == "isotropic"
    budget = BUDGETS.get(dataset, Budget())
    key = {
        "dataset": dataset,
        "rotate": rotate,
        "sigmas": list(sigmas),
        "sigma_e": sigma_e,
        "recipe": asdict(recipe) | {"hidden": list(recipe.hidden)},
        "labels": "true-class radius" if isotropic else "true-class radius, ball then volume, then the common entry",
        "classifiers": [model_hash(m) for m in classifiers],
        "inputs": dataset_hash(inputs),
        "seed": int(seed),
    }
    if not isotropic:
        key["budget"] = {
            "ddrs": budget.ddrs,
            "ancer": budget.ancer,
            "rddrs": budget.rddrs,
            "opt_batch": budget.opt_batch,
        }
    path = _cache_path(key, model_dir, "selector")
    entry_models = classifiers if isotropic else classifiers + [classifiers[-1]] * recipe.entries
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("key") == key:
            selector = ddrs.selector_mlp(d, len(entry_models), torch.Generator(), recipe.hidden, dtype=inputs.X.dtype)
            selector.load_state_dict(blob["state_dict"])
            noises = None
            if not isotropic:
                dictionary = _anisotropic_dictionary(recipe.dictionary, budget, shape, sigmas, blob["points"])
                noises = dictionary.noises()
            model = DualModel(entry_models, selector.eval(), sigmas, sigma_e, noises)
            return model, dict(blob["info"]) | {"cached": True}
    # the dictionary and the labels do not depend on how the selector is trained: cached on their own
    parts_key = {k: v for k, v in key.items() if k not in ("recipe", "labels", "sigma_e")}
    parts_key["recipe"] = {
        k: getattr(recipe, k) for k in ("dictionary", "entries", "dictionary_inputs", "inputs", "samples", "alpha")
    }
    parts_path = _cache_path(parts_key, model_dir, f"dual-{recipe.dictionary}")
    parts = torch.load(parts_path, map_location="cpu", weights_only=True) if parts_path.is_file() else {}
    if parts.get("key") != parts_key:
        parts = {"key": parts_key}
    t0 = time.perf_counter()
    if isotropic:
        dictionary = ddrs.NoiseDictionary.from_points(
            torch.tensor(sigmas, dtype=torch.float64), manifolds.PositiveScalar(d)
        )
    else:
        if "centres" not in parts:
            fit_inputs = subset(train_set, max(1, len(train_set) // recipe.dictionary_inputs), recipe.dictionary_inputs)
            parts["centres"] = preset_dictionary(
                recipe.dictionary, classifiers[-1], fit_inputs.X, sigmas[-1], recipe.entries,
                torch.Generator().manual_seed(seed + 13), budget, progress,
            ).points  # fmt: skip
            parts["dictionary_seconds"] = time.perf_counter() - t0
            _save(parts, parts_path)
        dictionary = _anisotropic_dictionary(recipe.dictionary, budget, shape, sigmas, parts["centres"])
    dictionary_seconds = float(parts.get("dictionary_seconds", time.perf_counter() - t0))
    if "l2" not in parts:
        t0 = time.perf_counter()
        with torch.no_grad():
            labels = ddrs.label_inputs(
                entry_models,
                inputs.X,
                dictionary,
                recipe.samples,
                recipe.alpha,
                torch.Generator().manual_seed(seed + 11),
                targets=inputs.y,
            )
        parts |= {"l2": labels.by_kind["l2"], "proxy": labels.by_kind["proxy"]}
        parts["label_seconds"] = time.perf_counter() - t0
        _save(parts, parts_path)
    label_seconds = float(parts["label_seconds"])
    if isotropic:
        l2 = parts["l2"]
        targets = prefer_common(ddrs.dual_dictionary.first_argmax(l2), l2, recipe.tie)
    else:
        targets = prefer_volume(parts["l2"], parts["proxy"], recipe.tie)
    t0 = time.perf_counter()
    selector = ddrs.train_selector(
        inputs.X, targets, len(entry_models), sigma_e, recipe.epochs, torch.Generator().manual_seed(seed + 12),
        hidden=recipe.hidden, lr=recipe.lr,
    )  # fmt: skip
    train_seconds = time.perf_counter() - t0
    with torch.no_grad():
        accuracy = float((selector(inputs.X).argmax(dim=1) == targets).double().mean())
    info = {
        "key": key,
        "label_counts": torch.bincount(targets, minlength=len(entry_models)).tolist(),
        "dictionary_seconds": dictionary_seconds,
        "label_seconds": label_seconds,
        "train_seconds": train_seconds,
        "selector_accuracy": accuracy,
    }
    blob = {"key": key, "state_dict": selector.state_dict(), "info": info}
    if not isotropic:  # a selector is valid only with the centres it was trained on: its file carries its own copy
        blob["points"] = dictionary.points[len(sigmas) :].clone()
    _save(blob, path)
    if progress:
        print(
            f"selector for {dataset} sigmas {list(sigmas)} ({recipe.dictionary}): labels {info['label_counts']} "
            f"(dictionary {dictionary_seconds:.0f} s, labels {label_seconds:.0f} s), trained ({train_seconds:.0f} s), "
            f"accuracy on its labels {accuracy:.3f}"
        )
    noises = None if isotropic else dictionary.noises()
    return DualModel(entry_models, selector, sigmas, sigma_e, noises), info | {"cached": False, "path": str(path)}


def _anisotropic_dictionary(
    preset: str, budget: Any, shape: tuple[int, ...], sigmas: tuple[float, ...], centres: torch.Tensor
) -> ddrs.NoiseDictionary:
    """The sigmas' isotropic entries, then the preset's ``centres``, as one dictionary of the manifold the preset
    (with the budget's options) fits on inputs of ``shape``."""
    d = math.prod(shape)
    stage = ddrs.ANCER(**budget.ancer) if preset == "ancer" else ddrs.RDDRS(**budget.rddrs)
    manifold = stage.manifold_for(shape)
    noise_map = manifolds.as_noise_map(manifold if stage.noise is None else stage.noise)
    iso = noise_map.from_scales(torch.tensor(sigmas, dtype=torch.float64)[:, None].expand(-1, d).clone())
    return ddrs.NoiseDictionary(manifold, torch.cat([iso, centres.to(torch.float64)]), stage.noise)


__all__ = ["DICTIONARIES", "DualModel", "SelectorRecipe", "load_or_train_dual", "preset_dictionary", "prefer_volume"]
