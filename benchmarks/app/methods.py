"""The method registry: one :class:`MethodSpec` per method, read by the runner, the CLI, ``compare``, the
plots and the claims. A new method is one preset (a class with ``fit``, like ``ddrs.DDRS``) and one spec::

    from ddrs_app.methods import MethodSpec, register

    register(MethodSpec("mine", title="Mine", color="tab:purple", choose=choose_mine, data_dependent=True))

after which ``ddrs certify --method mine``, ``ddrs compare --methods ... mine``, the plots' legends and the
claims table know it (``tests/app/test_methods.py`` adds one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import certify
import ddrs

#: ``choose(config, model, x, generator, sigma_star, cache, progress) -> (noises, counter, sigma_star)``:
#: one noise per input of the batch ``x``, the network work spent, and DDRS's sigma_x* when made (see
#: ``ddrs_app.runs.choose_noise`` for the arguments).
Choose = Callable[..., tuple[list, ddrs.NetworkCounter, torch.Tensor | None]]


@dataclass(frozen=True)
class MethodSpec:
    """Everything the application needs to know about one method.

    Parameters
    ----------
    name : str
        The ``--method`` choice, the log label's stem and the key everywhere else.
    title : str
        How tables, plots and claims name it (``"RDDRS"``).
    color : str
        Its matplotlib colour in every plot.
    choose : callable
        The noise of a batch of inputs (see :data:`Choose`).
    data_dependent : bool
        Whether the noise depends on the input (then the memory-based certifier applies).
    steps : callable, optional
        ``steps(config, sigma_star_known, ancer_known) -> int``: the ascent steps ``choose`` reports to a
        progress bar for one batch (the total of the runner's bar).
    options : tuple of str
        The ``ddrs certify`` options that apply to this method only (``"--metric"``); giving one with
        another method is an error.
    budget_options : callable, optional
        ``budget_options(budget) -> dict``: the preset's options in a comparison's budget
        (``ddrs_app.compare.Budget``).
    in_compare : bool
        Whether ``ddrs compare`` runs it at every sigma by default, in registry order (the mixture is not:
        ``ddrs compare`` gives it the mixture paper's own rows).
    beats : tuple of str
        The claims table's "this method > that one in proxy ACR" claims (the seed papers' chain).
    preset : type, optional
        The class whose constructor takes the method's ``options`` (checked by ``certify_model``); None
        when it takes none (RS, the mixture) or only DDRS's (``ddrs_options``).
    step_rules : callable, optional
        ``step_rules(config, dim) -> dict``: stage name -> the step rule it runs on inputs of ``dim``
        entries (``SmoothingResult.step_rule``), recorded in the log's fingerprint.
    stages : callable, optional
        ``stages(config) -> dict``: stage name -> the preset it runs; every field of each (its ``repr``) is recorded
        in the log's fingerprint, so that a changed default (e.g. ``keep_ball``) is never resumed into an old log.
    certify_one : callable, optional
        ``certify_one(config, model, noise, x, num_classes, n0, n, alpha, batch_size, generator, radii)``: the
        certificate of one input x under its chosen ``noise`` (``radii``: the table's l2 radii of a sequential
        run, or None); None: ``certify.Smooth(model, noise, num_classes).certify`` (``ddrs_app.runs``). Whatever
        it returns is read like a ``certify.Certificate`` (prediction, radii, p_lower, noise, decided, ...).
    columns : tuple of str
        Log columns of this method only, after the shared ones; ``row(cert) -> dict`` gives their values.
    anisotropic : bool
        Whether its noise is anisotropic (a sequential run then decides the proxy and the l2 radii of the table,
        ``ddrs_app.runs.certify_smooth``; recorded in the fingerprint).
    load_model : callable, optional
        ``load_model(config, dataset, seed=, model_dir=, data_dir=, rotate=, progress=) -> (model, info)``: the
        networks a built-in data set certifies with; None: the project's model trained at ``config.sigma``.
    """

    name: str
    title: str
    color: str
    choose: Choose
    data_dependent: bool = False
    steps: Callable[..., int] = field(default=lambda config, sigma_star_known, ancer_known: 0)
    options: tuple[str, ...] = ()
    budget_options: Callable[[Any], dict] = field(default=lambda budget: {})
    in_compare: bool = True
    beats: tuple[str, ...] = ()
    preset: type | None = None
    step_rules: Callable[..., dict] = field(default=lambda config, dim: {})
    stages: Callable[..., dict] = field(default=lambda config: {})
    certify_one: Callable[..., Any] | None = None
    columns: tuple[str, ...] = ()
    row: Callable[[Any], dict] = field(default=lambda cert: {})
    load_model: Callable[..., tuple] | None = None
    anisotropic: bool = False


REGISTRY: dict[str, MethodSpec] = {}


@dataclass
class MethodConfig:
    """A method and its parameters. ``sigma`` is RS's sigma and the data-dependent methods' start;
    ``sigmas``/``kind`` are the mixture's (``sigmas`` also the dual's dictionary); ``options`` go to the preset (e.g.
    iterations, samples; the dual's selector recipe, ``ddrs_app.dual.SelectorRecipe``); ``metric``, ``backend``,
    ``structure`` and ``rank`` are RDDRS's (``ddrs.RDDRS``: the noise's structure, 'full', 'kronecker', 'low-rank' or
    'spiked', and the spikes of the last two; None: ``ddrs.methods.DEFAULT_RANK``)."""

    method: str
    sigma: float = 0.25
    sigmas: tuple = ()
    kind: str = "mixture"
    metric: str = "affine-invariant"
    backend: str = "rgd"
    structure: str = "full"
    rank: int | None = None
    ddrs_options: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    mog_range: tuple | None = None  # the [lo, hi] a mixture's constituents were spread over (for labels)

    def __post_init__(self) -> None:
        spec_of(self.method)  # a registered method
        if not (self.sigma > 0):
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.method == "mog":
            if not self.sigmas:
                raise ValueError("sigmas: the mixture method needs at least one sigma (--sigmas)")
            certify.MixtureOfGaussians(self.sigmas, kind=self.kind)  # validates
        if self.method == "dual" and not self.sigmas:
            raise ValueError("sigmas: the dual method needs its dictionary, at least one sigma (--sigmas)")
        from ddrs.methods import LOW_RANK_STRUCTURES, STRUCTURES

        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {STRUCTURES}, got {self.structure!r}")
        if self.structure != "full" and self.method != "rddrs":
            raise ValueError(f"structure: only used with method rddrs, got method {self.method!r}")
        if self.rank is not None:
            if self.structure not in LOW_RANK_STRUCTURES:
                raise ValueError(f"rank: only used with structure 'low-rank' or 'spiked', got {self.structure!r}")
            if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
                raise ValueError(f"rank must be a positive int, got {self.rank!r}")

    @property
    def structure_options(self) -> dict:
        """``structure`` and ``rank`` as ``ddrs.RDDRS`` keywords ({} for the full structure: its presets' repr, and
        hence older logs' fingerprints, stay as they were)."""
        if self.structure == "full":
            return {}
        from ddrs.methods import DEFAULT_RANK, LOW_RANK_STRUCTURES

        out: dict[str, Any] = {"structure": self.structure}
        if self.structure in LOW_RANK_STRUCTURES:
            out["rank"] = DEFAULT_RANK if self.rank is None else self.rank
        return out

    @property
    def label(self) -> str:
        if self.method == "mog":
            lo, hi = self.mog_range or (min(self.sigmas), max(self.sigmas))
            return f"mog-{self.kind}-K{len(self.sigmas)}-[{lo:g},{hi:g}]"
        if self.method == "dual":
            kind = (self.options or {}).get("dictionary", "isotropic")
            head = "dual" if kind == "isotropic" else f"dual-{kind}{(self.options or {}).get('entries', 4)}"
            sigma_e = (self.options or {}).get("sigma_e")  # None: the largest sigma, unnamed (older logs' labels)
            tail = "" if sigma_e is None else f"-e{float(sigma_e):g}"
            return f"{head}-K{len(self.sigmas)}-[{min(self.sigmas):g},{max(self.sigmas):g}]{tail}"
        if self.method == "rddrs":
            parts = ["rddrs"] + ([self.metric] if self.metric != "affine-invariant" else [])
            own = self.structure_options
            if own:
                parts.append(own["structure"] + (f"-k{own['rank']}" if "rank" in own else ""))
            return "-".join(parts)
        return self.method


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` (a new name, or the replacement of one) to the registry; returns it."""
    if not (isinstance(spec.name, str) and spec.name and spec.name.replace("-", "").replace("_", "").isalnum()):
        raise ValueError(f"name must be a word (letters, digits, - or _), got {spec.name!r}")
    REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


def method_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def data_dependent_names() -> tuple[str, ...]:
    return tuple(name for name, spec in REGISTRY.items() if spec.data_dependent)


def compare_names() -> tuple[str, ...]:
    """The methods ``ddrs compare`` runs at every sigma by default (the mixture has its own rows)."""
    return tuple(name for name, spec in REGISTRY.items() if spec.in_compare)


def spec_of(name: str) -> MethodSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"method must be one of {method_names()}, got {name!r}") from None


# ---------------------------------------------------------------------------------- the shipped methods
def _ddrs_stage(config: MethodConfig, model, x, generator, sigma_star, counter, progress):
    """sigma_x* of the batch: DDRS's optimum, or the one a comparison already made (``sigma_star``). DDRS runs on a
    copy of ``generator`` (the state the DDRS method's own batch starts from), so the later stage draws the same
    samples whether sigma_x* was made here or taken from the comparison: the same log either way."""
    if sigma_star is not None:
        return sigma_star, None
    copy = torch.Generator(device=generator.device)
    copy.set_state(generator.get_state())
    dd = ddrs.DDRS(sigma0=config.sigma, **config.ddrs_options).fit(model, x, generator=copy, progress=progress)
    counter.add(dd.network.forward, dd.network.backward)
    return dd.points, dd


def _choose_rs(config, model, x, generator, sigma_star=None, cache=None, progress=None):
    return [certify.IsotropicGaussian(config.sigma)] * len(x), ddrs.NetworkCounter(), None


def _choose_mog(config, model, x, generator, sigma_star=None, cache=None, progress=None):
    return [certify.MixtureOfGaussians(config.sigmas, kind=config.kind)] * len(x), ddrs.NetworkCounter(), None


def _choose_ddrs(config, model, x, generator, sigma_star=None, cache=None, progress=None):
    counter = ddrs.NetworkCounter()
    dd = ddrs.DDRS(sigma0=config.sigma, **config.ddrs_options).fit(model, x, generator=generator, progress=progress)
    counter.add(dd.network.forward, dd.network.backward)
    return dd.noises(), counter, dd.points


def _choose_ancer(config, model, x, generator, sigma_star=None, cache=None, progress=None):
    counter = ddrs.NetworkCounter()
    sigma_star, _ = _ddrs_stage(config, model, x, generator, sigma_star, counter, progress)
    options = dict(config.options)
    options.pop("warm_start", None)
    options.pop("ancer_options", None)
    res = ddrs.ANCER(**options).fit(model, x, init=sigma_star, generator=generator, progress=progress)
    if cache is not None:
        cache["ancer"] = [(theta, res.network.forward / len(x), res.network.backward / len(x)) for theta in res.points]
    counter.add(res.network.forward, res.network.backward)
    return res.noises(), counter, sigma_star


def _choose_rddrs(config, model, x, generator, sigma_star=None, cache=None, progress=None):
    """RDDRS from DDRS's sigma_x* (cold start), or with ``options["warm_start"] == "ancer"`` from ANCER's
    Theta (the chain RS -> DDRS -> ANCER -> RDDRS; ``cache["ancer"]`` reuses a comparison's ANCER run,
    whose network work is counted in RDDRS's)."""
    counter = ddrs.NetworkCounter()
    sigma_star, _ = _ddrs_stage(config, model, x, generator, sigma_star, counter, progress)
    options = dict(config.options)
    warm = options.pop("warm_start", None)
    ancer_options = options.pop("ancer_options", {})
    init = sigma_star
    if warm == "ancer":
        cached = (cache or {}).get("ancer")
        if cached is not None and len(cached) == len(x):
            thetas = torch.stack([c[0] for c in cached])
            counter.add(sum(c[1] for c in cached), sum(c[2] for c in cached))
            init = ddrs.SmoothingResult("ancer", None, thetas, sigma_star)
        else:
            init = ddrs.ANCER(**ancer_options).fit(model, x, init=sigma_star, generator=generator, progress=progress)
            counter.add(init.network.forward, init.network.backward)
    res = _rddrs(config, options).fit(model, x, init=init, generator=generator, progress=progress)
    counter.add(res.network.forward, res.network.backward)
    return res.noises(), counter, sigma_star


def _rddrs(config: MethodConfig, options: dict) -> ddrs.RDDRS:
    """The RDDRS preset of ``config``: its metric, backend, structure (and rank) and ``options``."""
    return ddrs.RDDRS(metric=config.metric, backend=config.backend, **config.structure_options, **options)


def _ddrs_steps(config: MethodConfig, sigma_star_known: bool) -> int:
    return 0 if sigma_star_known else ddrs.DDRS(sigma0=config.sigma, **config.ddrs_options).progress_steps


def _steps_ddrs(config, sigma_star_known, ancer_known):
    return ddrs.DDRS(sigma0=config.sigma, **config.ddrs_options).progress_steps


def _steps_ancer(config, sigma_star_known, ancer_known):
    options = {k: v for k, v in config.options.items() if k not in ("warm_start", "ancer_options")}
    return _ddrs_steps(config, sigma_star_known) + ddrs.ANCER(**options).progress_steps


def _steps_rddrs(config, sigma_star_known, ancer_known):
    options = dict(config.options)
    warm = options.pop("warm_start", None)
    ancer_options = options.pop("ancer_options", {})
    steps = _ddrs_steps(config, sigma_star_known)
    if warm == "ancer" and not ancer_known:
        steps += ddrs.ANCER(**ancer_options).progress_steps
    return steps + _rddrs(config, options).progress_steps


def _stages(config) -> dict:
    """The presets of the DDRS stage and, for ANCER / RDDRS, of their own stages (and of a warm start's ANCER
    stage), as ``choose`` builds them."""
    options = dict(config.options)
    warm, ancer_options = options.pop("warm_start", None), options.pop("ancer_options", {})
    stages: dict[str, Any] = {"ddrs": ddrs.DDRS(sigma0=config.sigma, **config.ddrs_options)}
    if config.method == "ancer" or warm == "ancer":
        stages["ancer"] = ddrs.ANCER(**(options if config.method == "ancer" else ancer_options))
    if config.method == "rddrs":
        stages["rddrs"] = _rddrs(config, options)
    return stages


def _rules(config, dim) -> dict:
    """The step rules of the stages (``_stages``) on inputs of ``dim`` entries."""
    return {name: preset.step_rule_for(dim) for name, preset in _stages(config).items()}


def _rddrs_budget(budget) -> dict:
    options = dict(budget.rddrs)
    if options.get("warm_start") == "ancer":
        options["ancer_options"] = dict(budget.ancer)
    return options


_ASCENT_OPTIONS = ("--iterations", "--samples", "--no-memory")

register(MethodSpec("rs", title="RS", color="tab:gray", choose=_choose_rs))
register(
    MethodSpec(
        "ddrs", "DDRS", "tab:blue", _choose_ddrs, data_dependent=True, steps=_steps_ddrs, options=_ASCENT_OPTIONS,
        beats=("rs",), step_rules=_rules, stages=_stages,
    )
)  # fmt: skip
register(
    MethodSpec(
        "ancer", "ANCER", "tab:orange", _choose_ancer, data_dependent=True, steps=_steps_ancer,
        options=_ASCENT_OPTIONS, budget_options=lambda budget: dict(budget.ancer), beats=("ddrs",),
        preset=ddrs.ANCER, step_rules=_rules, stages=_stages, anisotropic=True,
    )
)  # fmt: skip
register(
    MethodSpec(
        "rddrs", "RDDRS", "tab:green", _choose_rddrs, data_dependent=True, steps=_steps_rddrs,
        options=_ASCENT_OPTIONS + ("--metric", "--backend", "--structure", "--rank"), budget_options=_rddrs_budget,
        beats=("ancer",), preset=ddrs.RDDRS, step_rules=_rules, stages=_stages, anisotropic=True,
    )
)  # fmt: skip
register(
    MethodSpec("mog", "MoG", "tab:pink", _choose_mog, options=("--sigmas", "--kind"), in_compare=False)
)  # fmt: skip


# ---------------------------------------------------------------------------------- the dual certifier
def _dual_options(budget) -> dict:
    """The selector's recipe with its defaults (recorded in the log's fingerprint)."""
    from dataclasses import asdict

    from .dual import SelectorRecipe

    return asdict(SelectorRecipe())


def _load_dual(config, dataset, **training):
    from .dual import SelectorRecipe, load_or_train_dual

    return load_or_train_dual(dataset, tuple(config.sigmas), SelectorRecipe.from_options(config.options), **training)


def _choose_dual(config, model, x, generator, sigma_star=None, cache=None, progress=None):
    """No noise is chosen ahead: the smoothed selector picks the entry inside certification; the noise
    returned is the one every input gets first, the selector's N(0, sigma_e^2 I)."""
    return [certify.IsotropicGaussian(model.sigma_e)] * len(x), ddrs.NetworkCounter(), None


def _certify_dual(config, model, noise, x, num_classes, n0, n, alpha, batch_size, generator, radii):
    """``certify.DualSmooth.certify`` with alpha split in halves between the selector and the classifier (Dual RS),
    each stage n0 + n draws (sequential at the table's l2 radii when ``radii``)."""
    return model.smooth(num_classes).certify(
        x, n0, n, alpha / 2, n0, n, alpha / 2, generator=generator, batch_size=batch_size, l2_radii=radii
    )


def _dual_row(cert) -> dict:
    return {
        "selected": cert.selected,
        "selector_radius": cert.selector_radius,
        "selector_p_lower": cert.selector_p_lower,
        "selector_samples": cert.selector.samples,
    }


register(
    MethodSpec(
        "dual", "Dual", "tab:brown", _choose_dual, options=("--sigmas", "--sigma-e"), in_compare=False,
        certify_one=_certify_dual, columns=("selected", "selector_radius", "selector_p_lower", "selector_samples"),
        row=_dual_row, load_model=_load_dual, budget_options=_dual_options,
    )
)  # fmt: skip
