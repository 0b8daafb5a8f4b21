"""The ``ddrs`` command line: ``train``, ``certify``, ``compare`` and ``report``.

``ddrs compare`` with no arguments is the quick start: digits and toy2d, every method, tables and
plots under ``runs/compare/`` in a few minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from pathlib import Path

from ddrs.dual_dictionary import MAX_ENTRIES
from ddrs.methods import LOW_RANK_STRUCTURES
from ddrs.methods import STRUCTURES as RDDRS_STRUCTURES

from .data import DATASETS
from .dual import DICTIONARIES as DUAL_DICTIONARIES
from .methods import REGISTRY, compare_names, method_names, spec_of


def _positive_float(name):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {text}")
        return value

    return parse


def _int_at_least(name, minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {value}")
        return value

    return parse


def _alpha(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alpha must be a number in (0, 1), got {text!r}") from None
    if not (0 < value < 1):
        raise argparse.ArgumentTypeError(f"--alpha must lie in (0, 1), got {text}")
    return value


DATASET_CHOICES = DATASETS
#: default sigmas per data set: the RDDRS paper's for images; scaled to toy2d's unit box.
DEFAULT_SIGMAS = {
    "toy2d": (0.05, 0.1, 0.2),
    "digits": (0.12, 0.25, 0.5),
    "fashion-mnist": (0.12, 0.25, 0.5),
    "mnist": (0.12, 0.25, 0.5),
    "photos-32": (0.12, 0.25, 0.5),
    "photos-224": (0.12, 0.25, 0.5),
}


def _common(p: argparse.ArgumentParser, own_data: bool = False) -> None:
    if own_data:
        p.add_argument(
            "--dataset",
            type=_data_spec,
            default="digits",
            metavar="DATA",
            help=f"{', '.join(DATASET_CHOICES)} (default digits), or your own: imagefolder:PATH, "
            "torchvision:NAME:ROOT (never downloaded), tensors:FILE (.pt/.npz with x, y)",
        )
    else:
        p.add_argument("--dataset", choices=DATASET_CHOICES, default="digits", help="data set (default digits)")
    p.add_argument("--data-dir", default=None, help="directory with the IDX files (fashion-mnist, mnist)")
    p.add_argument("--model-dir", default=None, help="base-model cache (default ~/.cache/ddrs/models)")
    p.add_argument(
        "--rotate",
        type=_int_at_least("--rotate", 0),
        default=None,
        help="apply the fixed random rotation of this seed to every input",
    )
    p.add_argument("--seed", type=_int_at_least("--seed", 0), default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_threads_arg(p)


THREADS_HELP = (
    "torch threads of this process and of each --workers worker (default 1: the same log and the same "
    "trained model on any machine and with any --workers; other counts round differently and are "
    "recorded in the log's fingerprint and the model cache key)"
)


def _add_threads_arg(p: argparse.ArgumentParser) -> None:
    # --worker-threads: the earlier name, when only workers had a thread count.
    p.add_argument(
        "--threads",
        "--worker-threads",
        dest="threads",
        type=_int_at_least("--threads", 1),
        default=1,
        metavar="T",
        help=THREADS_HELP,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddrs", description=__doc__.split("\n")[0], allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser(
        "train", allow_abbrev=False, help="train (or reuse) a base model with Gaussian noise augmentation"
    )
    _common(t)
    t.add_argument("--sigma", type=_positive_float("--sigma"), required=True)
    t.add_argument("--epochs", type=_int_at_least("--epochs", 1), default=None)
    _add_device_arg(t, training=True)

    c = sub.add_parser(
        "certify", allow_abbrev=False, help="certify a test subset with one method; a resumable per-input log"
    )
    _common(c, own_data=True)
    _add_model_args(c)
    c.add_argument("--method", choices=method_names(), required=True)
    c.add_argument(
        "--metric", choices=("affine-invariant", "log-euclidean", "bures-wasserstein"), default="affine-invariant"
    )
    c.add_argument("--backend", choices=("rgd", "pymanopt"), default="rgd")
    c.add_argument(
        "--structure",
        choices=RDDRS_STRUCTURES,
        default="full",
        help="RDDRS's noise structure: full (a dense d x d scale), kronecker (one factor per input axis), low-rank "
        "(diagonal plus --rank spikes on the Stiefel manifold), spiked (s I plus --rank spikes) or signed-spiked "
        "(spikes that may also shrink the noise below s)",
    )
    c.add_argument(
        "--rank",
        type=_int_at_least("--rank", 1),
        default=None,
        metavar="K",
        help="spikes of --structure low-rank / spiked / signed-spiked (default 8)",
    )
    c.add_argument(
        "--sigma",
        type=_positive_float("--sigma"),
        default=0.25,
        help="RS sigma, start of the data-dependent methods, and the base model's training sigma",
    )
    c.add_argument(
        "--sigmas",
        type=_positive_float("--sigmas"),
        nargs="+",
        default=None,
        help="mixture constituents (method mog); the dictionary of isotropic noises (method dual)",
    )
    c.add_argument("--kind", choices=("mixture", "convolution"), default="mixture")
    c.add_argument(
        "--sigma-e",
        type=_positive_float("--sigma-e"),
        default=None,
        help="the selector's noise of method dual (default: the largest of --sigmas)",
    )
    c.add_argument("--n0", type=_int_at_least("--n0", 1), default=100)
    c.add_argument("--n", type=_int_at_least("--n", 1), default=100_000)
    c.add_argument("--alpha", type=_alpha, default=0.001)
    c.add_argument("--batch-size", type=_int_at_least("--batch-size", 1), default=1000)
    c.add_argument("--every", type=_int_at_least("--every", 1), default=1)
    c.add_argument("--max-inputs", type=_int_at_least("--max-inputs", 1), default=None)
    c.add_argument(
        "--iterations",
        type=_int_at_least("--iterations", 0),
        default=None,
        help="optimisation steps of the method (default: its preset's)",
    )
    c.add_argument(
        "--samples",
        type=_int_at_least("--samples", 1),
        default=None,
        help="Monte Carlo samples per optimisation step (default: its preset's)",
    )
    c.add_argument(
        "--no-memory",
        action="store_true",
        help="skip the memory-based certifier (certificates then hold only per input)",
    )
    c.add_argument("--out", required=True, help="the log (tab-separated; resumed if it exists)")
    _add_sequential_args(c)
    _add_cluster_args(c)

    m = sub.add_parser("compare", allow_abbrev=False, help="every method on the same inputs: tables and plots")
    m.add_argument(
        "--dataset",
        type=_data_spec,
        action="append",
        default=None,
        metavar="DATA",
        help=f"data set(s): {', '.join(DATASET_CHOICES)} (default: digits and toy2d); with --model also "
        "your own: imagefolder:PATH, torchvision:NAME:ROOT, tensors:FILE",
    )
    m.add_argument("--out-dir", default="runs/compare")
    m.add_argument("--sigmas", type=_positive_float("--sigmas"), nargs="+", default=None)
    m.add_argument("--methods", nargs="+", choices=method_names(), default=None)
    m.add_argument(
        "--rddrs-structure",
        nargs="+",
        choices=RDDRS_STRUCTURES,
        default=None,
        metavar="STRUCTURE",
        help=f"RDDRS's noise structure(s), one RDDRS row each: {', '.join(RDDRS_STRUCTURES)} (default full)",
    )
    m.add_argument(
        "--rddrs-rank",
        type=_int_at_least("--rddrs-rank", 1),
        default=None,
        metavar="K",
        help="spikes of the low-rank / spiked / signed-spiked structures (default 8)",
    )
    m.add_argument(
        "--dual-dictionary",
        nargs="+",
        choices=DUAL_DICTIONARIES,
        default=None,
        metavar="KIND",
        help="the dual's dictionary(ies), one dual row each: isotropic (the --sigmas), ancer or rddrs (the sigmas plus "
        "--dual-entries centres of the noises ANCER / RDDRS choose on training inputs; default isotropic)",
    )
    m.add_argument(
        "--dual-entries",
        type=_int_at_least("--dual-entries", 1),
        default=None,
        metavar="K",
        help="anisotropic centres of an ancer / rddrs dual dictionary (default 4, at most 8)",
    )
    m.add_argument(
        "--dual-sigma-e",
        type=_positive_float("--dual-sigma-e"),
        nargs="+",
        default=None,
        metavar="S",
        help="the dual selector's noise(s), one dual row each (default: the largest of --sigmas)",
    )
    m.add_argument("--max-inputs", type=_int_at_least("--max-inputs", 1), default=None)
    m.add_argument("--every", type=_int_at_least("--every", 1), default=None)
    m.add_argument("--n", type=_int_at_least("--n", 1), default=None)
    m.add_argument("--data-dir", default=None)
    m.add_argument("--model-dir", default=None)
    m.add_argument("--rotate", type=_int_at_least("--rotate", 0), default=None)
    m.add_argument("--seed", type=_int_at_least("--seed", 0), default=0)
    m.add_argument("--quiet", action="store_true")
    _add_threads_arg(m)
    _add_count_arg(
        m,
        "--jobs",
        "J",
        "certify the project's models in J processes of --threads threads each (default: one per CPU core, at "
        "most one per sigma); the logs are the single-process ones",
    )
    m.add_argument(
        "--tables-only",
        action="store_true",
        help="certify nothing: tables and plots of the finished logs in --out-dir (unfinished ones are named)",
    )
    _add_model_args(m)  # --model, --weights, --trust-pickle, --normalize, --device
    _add_sequential_args(m)
    _add_cluster_args(m)
    _add_report_parser(sub)
    return parser


def _add_sequential_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sequential",
        action="store_true",
        help="anytime-valid sequential certification: stop drawing samples once every --radii radius is "
        "decided (--n is then the maximum); logs gain samples and cert@r columns",
    )
    p.add_argument(
        "--radii",
        type=_radius,
        nargs="+",
        default=None,
        help="radii to decide with --sequential (increasing): the table's columns, l2 for isotropic noise "
        "and ANCER's proxy radius for ancer/rddrs (converted per input to the noise's own norm, r / gm_sigma); "
        "default the data set's table radii",
    )


def _fail(message: str):
    """Print ``message`` as a command-line error and exit with code 2 (bad input; nothing written)."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def sequential_radii(args, command: str) -> tuple | None:
    """The radii of a --sequential run (None without it); a clear error for --radii alone or bad radii."""
    from .compare import L2_RADII

    if args.radii is not None and not args.sequential:
        _fail(f"ddrs {command}: error: --radii needs --sequential")
    if not args.sequential:
        return None
    radii = args.radii
    if radii is None:
        name = getattr(args, "dataset", None)
        name = name[0] if isinstance(name, list) else name
        if name not in L2_RADII:
            _fail(f"ddrs {command}: error: --sequential: give --radii (no default radii for this data)")
        radii = L2_RADII[name]
    from certify.sequential import check_radii

    try:
        return tuple(float(r) for r in check_radii(radii))
    except ValueError as err:
        _fail(f"ddrs {command}: error: --{err}")


# ---------------------------------------------------------------------------------- ddrs report
def _radius(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--radii must be numbers, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"--radii must be finite and >= 0, got {text}")
    return value


def _add_report_parser(sub) -> None:
    from .report import DEFAULT_RADII

    r = sub.add_parser(
        "report",
        allow_abbrev=False,
        help="certified-accuracy tables (Markdown, CSV) and a plot for any Cohen-format logs",
    )
    r.add_argument("logs", nargs="+", metavar="LOG", help="Cohen-format logs (ours or anyone's)")
    r.add_argument(
        "--radii",
        type=_radius,
        nargs="+",
        default=list(DEFAULT_RADII),
        help="radii of the table columns (default: Cohen et al.'s CIFAR-10 ones, 0.25 .. 1.5)",
    )
    r.add_argument(
        "--labels",
        nargs="+",
        default=None,
        help="one legend per log (default: '&sigma; = S' for Cohen's sigma_S files, else the name)",
    )
    column_help = (
        "the radius column certified accuracy is counted by (default: radius, Cohen's certified l2 radius; "
        "proxy_radius: ANCER's proxy radius, the ANCER/RDDRS papers' metric)"
    )
    r.add_argument("--column", default="radius", help=column_help)
    r.add_argument("--out-dir", default="runs/report", help="where report.md, report.csv and the plot go")
    r.add_argument("--no-plot", action="store_true", help="tables only")


def _cmd_report(args) -> int:
    from .report import write_report

    try:
        files = write_report(
            args.logs, args.out_dir, radii=args.radii, labels=args.labels, plot=not args.no_plot, column=args.column
        )
    except (OSError, ValueError) as err:  # a malformed log: one line naming the file and the line
        print(f"ddrs report: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    title, table = files["markdown"].read_text(encoding="utf-8").split("\n\n")[:2]
    print(title.lstrip("# "))
    print(table)
    print("wrote " + ", ".join(str(f) for f in files.values()))
    return 0


def _cmd_train(args) -> int:
    from .data import BadInput
    from .model_io import resolve_device
    from .training import load_or_train

    try:
        device = resolve_device(args.device)
        _, info = load_or_train(
            args.dataset,
            args.sigma,
            epochs=args.epochs,
            seed=args.seed,
            model_dir=args.model_dir,
            progress=not args.quiet,
            rotate=args.rotate,
            data_dir=args.data_dir,
            device=device,
        )
    except BadInput as err:  # e.g. the data set's files missing: before anything is trained or saved
        print(f"ddrs train: error: {err}", file=sys.stderr)
        return 2
    where = f" on {device}" if device.type != "cpu" else ""
    state = "reused cached model" if info.get("cached") else f"trained{where} in {info['train_seconds']:.1f} s"
    print(
        f"{args.dataset} sigma={args.sigma:g}: {state}; clean accuracy {info['clean_accuracy']:.3f}, "
        f"noisy accuracy {info.get('noisy_accuracy') or float('nan'):.3f}; {info['path']}"
    )
    return 0


def method_options() -> dict[str, tuple[str, ...]]:
    """``ddrs certify`` options that only some methods use (their specs' ``options``): option -> the
    methods it applies to. Giving one with another method is an error (it would be silently ignored)."""
    out: dict[str, tuple[str, ...]] = {}
    for name, spec in REGISTRY.items():
        for option in spec.options:
            out[option] = out.get(option, ()) + (name,)
    return out


def given_options(argv: list[str]) -> set[str]:
    """The long options spelled out in ``argv`` (exact names: every parser has allow_abbrev=False)."""
    out = set()
    for tok in argv:
        if tok == "--":
            break
        if tok.startswith("--"):
            out.add(tok.split("=", 1)[0])
    return out


def check_method_options(method: str, argv: list[str], command: str = "certify") -> None:
    """Refuse options that do not apply to ``method`` (see :func:`method_options`)."""
    for option in sorted(given_options(argv)):
        methods = method_options().get(option)
        if methods is not None and method not in methods:
            raise SystemExit(
                f"ddrs {command}: error: {option} does not apply to --method {method} (only to {', '.join(methods)})"
            )


# ---------------------------------------------------------------------------------- your model, your data
def _data_spec(text):
    from .data import BadInput, check_data_spec

    try:
        return check_data_spec(text)
    except BadInput as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--dataset: ")) from None


def _number(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--normalize takes numbers (MEAN... STD...), got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"--normalize takes finite numbers, got {text}")
    return value


def _add_device_arg(p: argparse.ArgumentParser, training: bool = False) -> None:
    from .model_io import DEVICE_HELP

    p.add_argument(
        "--device",
        default="auto",
        help=f"where the model trains: {DEVICE_HELP}; a model trained off the CPU is cached under its "
        "own key (a GPU trains other weights)"
        if training
        else f"where the model runs: {DEVICE_HELP}; CPU and GPU draw different noise, so their "
        "logs differ (each is reproducible on its own device)",
    )


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="your model instead of the project's: a torch.export program (.pt2), a TorchScript file, "
        "a checkpoint {'arch': ..., 'state_dict': ...} of a shipped architecture, or "
        "package.module:factory (with --weights)",
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="STATE_DICT",
        help="state_dict for --model package.module:factory (read with torch.load(weights_only=True))",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="certify --model package.module:factory without --weights: its freshly initialised network "
        "(seeded, the same on every run); without this flag a factory needs --weights",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow --model to be a whole pickled nn.Module: unpickling runs any code stored in the "
        "file, so only for files you trust",
    )
    p.add_argument(
        "--normalize",
        type=_number,
        nargs="+",
        default=None,
        metavar="MEAN... STD...",
        help="wrap the model in (x - mean) / std per channel, so that noise is added in [0, 1] space "
        "(e.g. CIFAR-10: 0.4914 0.4822 0.4465 0.2023 0.1994 0.2010)",
    )
    _add_device_arg(p)


def _add_count_arg(p: argparse.ArgumentParser, flag: str, metavar: str, help_text: str) -> None:
    """An optional count >= 1 (default None: the command decides)."""
    p.add_argument(flag, type=_int_at_least(flag, 1), default=None, metavar=metavar, help=help_text)


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    _add_count_arg(
        p,
        "--workers",
        "N",
        "certify on N Ray workers, each with one model replica (one GPU each with --device cuda); a local Ray "
        "cluster starts and stops with the command unless --ray-address; the log is the single-process one "
        "(time columns aside)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="join this running Ray cluster (e.g. HEAD:6379 after `ray start --head`, or auto) with --workers",
    )


def _cluster(args):
    """The (not yet started) :class:`ddrs_app.cluster.Cluster` of --workers; None without it
    (Ray is then never imported)."""
    from .data import BadInput

    if args.workers is None:
        if args.ray_address is not None:
            raise BadInput("--ray-address: only used with --workers")
        return None
    from .cluster import Cluster

    return Cluster(args.workers, address=args.ray_address, device=args.device, threads=args.threads)


def _model_spec(args) -> dict:
    """The keyword arguments of ``ddrs_app.model_io.load_model`` for --model."""
    return dict(
        weights=args.weights,
        trust_pickle=args.trust_pickle,
        normalize=args.normalize,
        random_weights=args.random_weights,
    )


def _user_model_and_data(args, train_sigma: float, config=None):
    """(model on the device, data, device, loader) for ``ddrs certify``; BadInput on anything unusable.
    ``loader`` is how Ray workers load the same model (with --workers the driver's copy stays on the CPU)."""
    from dataclasses import replace

    from .cluster import CachedModel, checkpoint_loader
    from .data import DATASETS, BadInput, load_data
    from .model_io import check_model, load_model, resolve_device

    device = resolve_device("cpu" if getattr(args, "workers", None) else args.device)
    if args.model is None:
        for name in ("weights", "normalize", "random_weights"):
            if getattr(args, name) not in (None, False):
                raise BadInput(f"--{name.replace('_', '-')}: only used with --model")
        if args.dataset not in DATASETS:
            raise BadInput(
                f"--model: required with --dataset {args.dataset} (the project trains models only for "
                f"{', '.join(DATASETS)})"
            )
    data = load_data(
        args.dataset, "test", every=args.every, max_inputs=args.max_inputs, data_dir=args.data_dir, rotate=args.rotate
    )
    load = None if config is None else spec_of(config.method).load_model
    if args.model is None and load is not None:  # the method's own networks (the dual's per-entry models, selector)
        model, _ = load(config, args.dataset, seed=args.seed, model_dir=args.model_dir, progress=not args.quiet,
                        rotate=args.rotate, data_dir=args.data_dir)  # fmt: skip
        loader = None
    elif args.model is None:
        from .training import load_or_train

        model, info = load_or_train(
            args.dataset,
            train_sigma,
            seed=args.seed,
            model_dir=args.model_dir,
            progress=not args.quiet,
            rotate=args.rotate,
            data_dir=args.data_dir,
            device=device,  # trained where it runs (a GPU-trained model has its own cache key)
        )
        loader = CachedModel(info["path"]) if info.get("path") else None
    else:
        spec = _model_spec(args)
        model = load_model(args.model, **spec)
        loader = checkpoint_loader(args.model, **spec)
    model = model.to(device)
    from .dual import DualModel

    classes = check_model(model.classifiers[0] if isinstance(model, DualModel) else model, data, device)
    if not data.classes_known:
        data = replace(data, num_classes=classes, classes_known=True)
    return model, data, device, loader


def _cmd_certify(args) -> int:
    from .compare import BUDGETS, Budget
    from .data import BadInput
    from .runs import MethodConfig, certify_on

    check_method_options(args.method, getattr(args, "argv", []))
    if args.rank is not None and args.structure not in LOW_RANK_STRUCTURES:
        _fail(f"ddrs certify: error: --rank sets the spikes of --structure {' or '.join(LOW_RANK_STRUCTURES)}")
    if args.method in ("mog", "dual") and not args.sigmas:
        raise SystemExit(f"ddrs certify: error: --sigmas is required for --method {args.method}")
    if args.method == "dual" and (args.model is not None or getattr(args, "workers", None)):
        raise SystemExit(
            "ddrs certify: error: --method dual certifies with the project's per-sigma models and a selector trained "
            "on the data set's training split (ddrs_app.dual): not with --model or --workers"
        )
    budget = BUDGETS.get(args.dataset, Budget())
    options = spec_of(args.method).budget_options(budget)
    ddrs_options = dict(budget.ddrs)
    for key in ("iterations", "samples"):
        if getattr(args, key) is not None:
            (ddrs_options if args.method == "ddrs" else options)[key] = getattr(args, key)
    if args.method == "dual" and args.sigma_e is not None:
        options["sigma_e"] = args.sigma_e
    config = MethodConfig(
        args.method,
        sigma=max(args.sigmas) if args.method == "dual" else args.sigma,
        sigmas=tuple(sorted(args.sigmas)) if args.method == "dual" else tuple(args.sigmas or ()),
        kind=args.kind,
        metric=args.metric,
        backend=args.backend,
        structure=args.structure,
        rank=args.rank,
        ddrs_options=ddrs_options,
        options=options,
    )
    train_sigma = max(args.sigmas) if args.method == "mog" else args.sigma
    radii = sequential_radii(args, "certify")
    try:
        cluster = _cluster(args)
        model, data, _, loader = _user_model_and_data(args, train_sigma, config)
    except BadInput as err:  # before any log exists: nothing partial is left behind
        print(f"ddrs certify: error: {err}", file=sys.stderr)
        return 2
    budget = dict(n0=args.n0, n=args.n, alpha=args.alpha, batch_size=args.batch_size, seed=args.seed, radii=radii)
    out = certify_on(
        cluster, loader, config, model, data, args.out, memory=not args.no_memory, progress=not args.quiet, **budget
    )
    import certify

    log = certify.read_log(out)
    if radii is not None:
        from .compare import summarise_sequential

        seq = summarise_sequential(log, radii)
        print(
            f"{out}: sequential, samples per input mean {seq['samples_mean']:.0f}, median "
            f"{seq['samples_median']:.0f}, p90 {seq['samples_p90']:.0f} (max {args.n0 + args.n}); certified "
            "accuracy " + ", ".join(f"r={r:g}: {seq[f'seq@{r:g}']:.3f}" for r in radii)
        )
    print(
        f"{out}: {len(log)} inputs, certified accuracy at r=0 {certify.certified_accuracy(log, [0.0])[0]:.3f}, "
        f"average certified radius {certify.average_certified_radius(log):.3f}"
    )
    return 0


def _cmd_compare(args) -> int:
    from .data import BadInput
    from .model_io import resolve_device

    try:
        cluster = _cluster(args)
        device = resolve_device("cpu" if cluster is not None else args.device)
    except BadInput as err:
        print(f"ddrs compare: error: {err}", file=sys.stderr)
        return 2
    datasets = args.dataset or ["digits", "toy2d"]
    if args.model is None:
        for name in ("weights", "normalize", "random_weights"):
            if getattr(args, name) not in (None, False):
                _fail(f"ddrs compare: error: --{name.replace('_', '-')}: only used with --model")
        custom = [d for d in datasets if d not in DEFAULT_SIGMAS]
        if custom:
            _fail(f"ddrs compare: error: --model: required with --dataset {custom[0]} (your data needs your model)")
    elif len(datasets) != 1:
        _fail("ddrs compare: error: --model: give exactly one --dataset for your model")
    if args.sequential and args.radii is None and len(datasets) > 1:
        _fail("ddrs compare: error: --sequential with several data sets needs --radii")
    radii = sequential_radii(args, "compare")
    if args.jobs is not None and args.jobs > 1:
        if args.model is not None or cluster is not None or device.type != "cpu":
            why = "--model" if args.model is not None else ("--workers" if cluster is not None else "--device")
            _fail(f"ddrs compare: error: --jobs: only for the project's models on the CPU (not with {why})")
    import os

    args.jobs = args.jobs or max(1, os.cpu_count() or 1)
    command = "ddrs " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["compare"] else "ddrs compare"
    with cluster or contextlib.nullcontext() as cl:
        return _compare_datasets(args, datasets, command, device, radii, cl)


def _compare_datasets(args, datasets, command, device, radii, cluster) -> int:
    from dataclasses import replace

    from .compare import BUDGETS, Budget, run_compare

    for name in datasets:
        budget = BUDGETS.get(name, Budget())
        changes = {k: getattr(args, k) for k in ("max_inputs", "every", "n") if getattr(args, k) is not None}
        budget = replace(budget, **changes)
        default = compare_names() if name == "toy2d" else compare_names() + ("mog", "dual")
        methods = tuple(args.methods) if args.methods else default
        sigmas = tuple(args.sigmas) if args.sigmas else DEFAULT_SIGMAS.get(name, DEFAULT_SIGMAS["digits"])
        structures = tuple(dict.fromkeys(args.rddrs_structure or ("full",)))
        if (args.rddrs_structure or args.rddrs_rank is not None) and "rddrs" not in methods:
            _fail("ddrs compare: error: --rddrs-structure / --rddrs-rank: only used when --methods runs rddrs")
        if args.rddrs_rank is not None and not set(structures) & set(LOW_RANK_STRUCTURES):
            _fail(
                "ddrs compare: error: --rddrs-rank sets the spikes of --rddrs-structure "
                + " / ".join(LOW_RANK_STRUCTURES)
            )
        dual_dictionaries = tuple(dict.fromkeys(args.dual_dictionary or ("isotropic",)))
        if (args.dual_dictionary or args.dual_entries is not None or args.dual_sigma_e) and "dual" not in methods:
            _fail(
                "ddrs compare: error: --dual-dictionary / --dual-entries / --dual-sigma-e: only used when --methods "
                "runs dual"
            )
        if args.dual_entries is not None and dual_dictionaries == ("isotropic",):
            _fail("ddrs compare: error: --dual-entries sets the centres of --dual-dictionary ancer / rddrs")
        if args.dual_entries is not None and args.dual_entries > MAX_ENTRIES:
            _fail(f"ddrs compare: error: --dual-entries must be at most {MAX_ENTRIES}, got {args.dual_entries}")
        own = {}
        from .data import BadInput

        try:
            if "dual" in methods and (args.model is not None or cluster is not None):
                raise BadInput(
                    "--methods dual certifies with the project's per-sigma models and a selector trained on the "
                    "data set's training split (ddrs_app.dual): not with --model or --workers"
                )
            if args.model is not None:
                own = _compare_user_model(args, name, budget, device, cluster)
            else:
                _check_builtin_data(name, args.data_dir)
        except BadInput as err:  # before any log exists
            print(f"ddrs compare: error: {err}", file=sys.stderr)
            return 2
        result = run_compare(
            name,
            args.out_dir,
            sigmas=sigmas,
            methods=methods,
            budget=budget,
            seed=args.seed,
            rotate=args.rotate,
            data_dir=args.data_dir,
            model_dir=args.model_dir,
            progress=not args.quiet,
            command=command,
            device=device,
            radii=radii,
            cluster=cluster,
            jobs=args.jobs,
            run=not args.tables_only,
            rddrs_structures=structures,
            rddrs_rank=args.rddrs_rank,
            dual_dictionaries=dual_dictionaries,
            dual_entries=args.dual_entries,
            dual_sigma_es=tuple(dict.fromkeys(args.dual_sigma_e)) if args.dual_sigma_e else (None,),
            **own,
        )
        print(
            f"{name}: table {result['markdown']} (and {result['csv'].name}); plots: "
            + ", ".join(str(f) for f in result["figures"])
        )
        print(Path(result["markdown"]).read_text().split("```", 2)[-1].strip().split("\n\nColumns")[0])
    return 0


def _check_builtin_data(name: str, data_dir) -> None:
    """A built-in data set read from files (fashion-mnist, mnist) is found (or downloaded) before
    ``run_compare`` creates its out-dir; BadInput naming --data-dir/--dataset otherwise."""
    from .data import DEBIAN_DIRS, load_dataset

    if name in DEBIAN_DIRS:
        load_dataset(name, "test", data_dir=data_dir)


def _compare_user_model(args, name: str, budget, device, cluster) -> dict:
    """``{"model": ..., "data": ...}`` for ``ddrs compare --model``: the user's model on the device (checked
    against the inputs by one forward pass) and the budget's subset of the data; BadInput otherwise."""
    from dataclasses import replace

    from .cluster import checkpoint_loader
    from .data import load_data
    from .model_io import check_model, load_model

    spec = _model_spec(args)
    data = load_data(
        name, "test", every=budget.every, max_inputs=budget.max_inputs, data_dir=args.data_dir, rotate=args.rotate
    )
    model = load_model(args.model, **spec).to(device)
    classes = check_model(model, data, device)
    if not data.classes_known:
        data = replace(data, num_classes=classes, classes_known=True)
    if cluster is not None:
        cluster.register(model, checkpoint_loader(args.model, **spec))
    return {"model": model, "data": data}


@contextlib.contextmanager
def _warnings_as_lines(command: str):
    """Warnings about the user's input (``ddrs_app.data.DataRangeWarning``) as one line each on
    stderr, ``ddrs COMMAND: warning: ...``, every time; other warnings as Python shows them."""
    import warnings

    from .data import DataRangeWarning

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, DataRangeWarning):
                print(f"ddrs {command}: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        warnings.simplefilter("always", DataRangeWarning)
        yield


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    commands = {"train": _cmd_train, "certify": _cmd_certify, "compare": _cmd_compare, "report": _cmd_report}
    import torch

    from .cluster import ClusterError
    from .runs import FingerprintMismatch, Interrupted

    threads = torch.get_num_threads()
    if hasattr(args, "threads"):  # train, certify, compare: rows depend on the thread count (fingerprinted)
        torch.set_num_threads(args.threads)
    try:
        with _warnings_as_lines(args.command):
            return commands[args.command](args)
    except ClusterError as err:
        print(f"ddrs {args.command}: error: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:  # Ctrl-C in a run: the log is resumable
        print(f"ddrs {args.command}: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"ddrs {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except FingerprintMismatch as err:
        print(f"ddrs {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)  # a caller in the same process (a test, a notebook) keeps its own


if __name__ == "__main__":
    sys.exit(main())
