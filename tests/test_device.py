"""Every tensor of a step beside the model.

No GPU is needed: the model is put on ``device="meta"`` (shapes and dtypes, no data) as a stand-in for
CUDA. Any tensor left on the CPU and mixed with the model's (a noise parameter, a floor, an identity)
then fails exactly as on a GPU ("Tensor on device cpu is not on the expected device meta", the issue's
reproducer). The few host reads a run makes (``bool(...)``, ``.item()``, ``.cpu()``) cannot work on
data-free tensors, so :class:`MetaReads` answers them with placeholders (ones; identity matrices); every
other operation runs for real on meta tensors, so the whole ascent (draws, noise, forward, backward,
step, projection, selection) and the whole CERTIFY loop are exercised. A real GPU test runs when torch
sees one and is skipped otherwise.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch.overrides import TorchFunctionMode

import certify
import ddrs
from ddrs import progress as ddrs_progress


def _placeholder(t: torch.Tensor) -> torch.Tensor:
    """Ones; the identity for square matrices (so that a placeholder covariance is positive definite)."""
    if t.ndim >= 2 and t.shape[-1] == t.shape[-2]:
        return torch.eye(t.shape[-1], dtype=t.dtype).expand(t.shape).clone()
    return torch.ones(t.shape, dtype=t.dtype)


class MetaReads(TorchFunctionMode):
    """Host reads of meta tensors (which hold no data) return placeholder ones; all else runs as is."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        t = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if t is None or not t.is_meta:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "bincount":  # data-dependent length: assume minlength
            length = kwargs.get("minlength", args[2] if len(args) > 2 else 1)
            return torch.zeros(length, dtype=torch.int64, device="meta")
        if name == "__bool__":
            return True
        if name in ("item", "__float__"):
            return 1.0 if t.is_floating_point() else 1
        if name in ("__int__", "__index__"):
            return 1
        if name in ("tolist", "numpy"):
            return getattr(_placeholder(t), name)()
        if name in ("cpu", "to"):
            try:
                return func(*args, **kwargs)
            except (RuntimeError, NotImplementedError) as err:
                if "meta" not in str(err):
                    raise
                return func(_placeholder(t), *args[1:], **kwargs)
        return func(*args, **kwargs)


@pytest.fixture
def meta_reads():
    import torch.fx.experimental._config as fx_config

    # Through torch's own config API: monkeypatch's undo deletes the entry from torch's config module
    # under pytest >= 9, which breaks every later test in the session.
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True), MetaReads():  # boolean indexing on meta
        yield


class Conv(torch.nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.head = torch.nn.Linear(2 * 4 * 4, classes)

    def forward(self, v):
        return self.head(torch.relu(self.conv(v)).flatten(1))


def meta_model(dtype=torch.float32):
    """A conv net on the meta device that records the device of every input it sees."""
    model = Conv().to(dtype).eval().to("meta")
    model.seen = set()
    model.register_forward_pre_hook(lambda m, args: m.seen.add((args[0].device.type, args[0].dtype)))
    return model


X = torch.rand(2, 1, 6, 6)
FITS = {
    "ddrs": lambda m, g: ddrs.DDRS(iterations=3, samples=4, selection_samples=8).fit(m, X, generator=g),
    "ancer": lambda m, g: ddrs.ANCER(iterations=3, samples=4, selection_samples=8).fit(m, X, init=0.2, generator=g),
    "rddrs": lambda m, g: ddrs.RDDRS(iterations=3, samples=4, selection_samples=8).fit(m, X, init=0.2, generator=g),
    "rddrs-after-ancer": lambda m, g: ddrs.RDDRS(iterations=2, samples=4, selection_samples=8).fit(
        m, X, init=ddrs.ANCER(iterations=2, samples=4).fit(m, X, init=0.2, generator=g), generator=g
    ),
}


@pytest.mark.parametrize("method", sorted(FITS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fit_runs_beside_a_model_on_another_device(method, dtype, meta_reads):
    model = meta_model(dtype)
    result = FITS[method](model, torch.Generator().manual_seed(0))  # a CPU generator: draws moved to the model
    assert result.points.device.type == "meta"
    assert result.points.dtype == torch.float64  # geometry stays float64 on any device
    assert model.seen == {("meta", dtype)}  # every forward pass ran on the model's device, in its dtype
    assert len(result.trace) == (3 if method != "rddrs-after-ancer" else 2) + 1
    assert result.kept_new is not None  # the selection ran too
    noises = result.noises()  # noise objects are built on the CPU (float64)
    assert len(noises) == 2 and all(isinstance(nz, certify.GaussianNoise) for nz in noises)


@pytest.mark.parametrize(
    "noise",
    [
        certify.IsotropicGaussian(0.25),
        certify.DiagonalGaussian(torch.full((36,), 0.2)),
        certify.FullGaussian(0.2 * torch.eye(36, dtype=torch.float64)),
        certify.MixtureOfGaussians([0.12, 0.25], kind="mixture"),
    ],
    ids=lambda nz: nz.kind,
)
def test_smooth_certify_runs_beside_a_model_on_another_device(noise, meta_reads):
    model = meta_model()
    cert = certify.Smooth(model, noise, 3).certify(X[0], 10, 30, 0.01, batch_size=16, generator=torch.Generator())
    assert model.seen == {("meta", torch.float32)}
    assert cert.n == 30 and cert.n0 == 10


def test_runner_batch_runs_beside_a_model_on_another_device(meta_reads):
    from ddrs_app.data import Dataset
    from ddrs_app.runs import MethodConfig, compute_batch

    data = Dataset(
        X=torch.rand(3, 1, 6, 6),
        y=torch.tensor([0, 1, 2]),
        name="t",
        split="test",
        input_shape=(1, 6, 6),
        num_classes=3,
        indices=torch.arange(3),
    )
    model = meta_model()
    config = MethodConfig("ancer", sigma=0.2, ddrs_options={"iterations": 2, "samples": 4}, options={"iterations": 2})
    result = compute_batch(config, model, data, [0, 1, 2], n0=5, n=10, alpha=0.01, batch_size=8, seed=0)
    assert model.seen == {("meta", torch.float32)}
    assert len(result.certificates) == 3 and result.sigma_star is not None and len(result.ancer) == 3


def test_before_the_fix_the_issue_reproducer_would_fail():
    """What the issue saw: a CPU noise parameter against a model's draws on its device. Our fit moves
    the parameter; the raw mix still fails, so the meta stand-in does detect misplaced tensors."""
    with pytest.raises(RuntimeError, match="expected device meta|same device"):
        torch.ones(4, device="meta") * torch.ones(4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
def test_gpu_fit_and_certify_match_the_cpu_with_a_cpu_generator():
    """With a CPU generator the draws are the same on both devices (drawn on the CPU, then moved); only
    the network's rounding differs. A CUDA generator draws a different stream (documented)."""
    cpu = Conv().eval()
    gpu = Conv().eval().cuda()
    a = ddrs.DDRS(iterations=20, samples=64, select=False).fit(cpu, X, generator=torch.Generator().manual_seed(1))
    b = ddrs.DDRS(iterations=20, samples=64, select=False).fit(gpu, X, generator=torch.Generator().manual_seed(1))
    assert b.points.device.type == "cuda"
    torch.testing.assert_close(a.points, b.points.cpu(), rtol=1e-3, atol=1e-4)
    ca = certify.Smooth(cpu, certify.IsotropicGaussian(0.25), 3).certify(X[0], 100, 1000, 0.001, generator=None)
    g = torch.Generator(device="cuda").manual_seed(0)
    cb = certify.Smooth(gpu, certify.IsotropicGaussian(0.25), 3).certify(X[0], 100, 1000, 0.001, generator=g)
    assert cb.prediction == ca.prediction or min(ca.p_lower, cb.p_lower) < 0.6


# ---------------------------------------------------------------------------------- the door checks
class BNConv(Conv):
    def __init__(self):
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(2)

    def forward(self, v):
        return self.head(torch.relu(self.bn(self.conv(v))).flatten(1))


@pytest.mark.parametrize("x", [torch.rand(1, 6, 6), torch.rand(6, 6)], ids=["CHW", "HW"])
@pytest.mark.parametrize("method", ["ddrs", "ancer", "rddrs"])
def test_fit_names_one_input_passed_where_a_batch_is_expected(x, method):
    fit = {
        "ddrs": lambda: ddrs.DDRS(iterations=1, samples=4).fit(Conv().eval(), x),
        "ancer": lambda: ddrs.ANCER(iterations=1, samples=4).fit(Conv().eval(), x, init=0.2),
        "rddrs": lambda: ddrs.RDDRS(iterations=1, samples=4).fit(Conv().eval(), x, init=0.2),
    }[method]
    expected = r"x must be a BATCH of inputs \(B, \*input_shape\); for one input pass x\[None\]"
    with pytest.raises(ValueError, match=expected):
        fit()


def test_certify_names_a_batch_passed_where_one_input_is_expected():
    with pytest.raises(ValueError, match="ONE input"):
        certify.Smooth(Conv().eval(), certify.IsotropicGaussian(0.25), 3).certify(X, 10, 20, 0.1)
    with pytest.raises(ValueError, match="x must be a batch"):
        ddrs.certify_inputs(Conv().eval(), X[0, 0, 0], ddrs.RS(0.25).fit(Conv(), X), 3, 5, 10)
    with pytest.raises(ValueError, match="noise for 2 inputs but x is a batch of 1"):
        ddrs.certify_inputs(Conv().eval(), X[:1], ddrs.RS(0.25).fit(Conv(), X), 3, 5, 10)


@pytest.mark.parametrize("method", ["ddrs", "rddrs"])
def test_fit_warns_in_training_mode_and_never_mutates_the_model(method):
    model = BNConv()  # training mode: BatchNorm would update its running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit = ddrs.DDRS(iterations=3, samples=8) if method == "ddrs" else ddrs.RDDRS(iterations=3, samples=8)
    with pytest.warns(UserWarning, match="training mode"):
        fit.fit(model, X, init=None if method == "ddrs" else 0.2, generator=torch.Generator().manual_seed(0))
    after = model.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert model.training  # the caller's mode is left alone
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit.fit(model, X, init=None if method == "ddrs" else 0.2, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------- progress
def test_fit_progress_text_bar_callable_and_bar_object(capsys):
    fit = ddrs.DDRS(iterations=4, samples=4, select=False)
    fit.fit(Conv().eval(), X, generator=torch.Generator().manual_seed(0), progress=True)
    err = capsys.readouterr().err
    assert "ddrs fit (2 inputs): 5/5" in err and err.endswith("\n")

    seen = []
    fit.fit(Conv().eval(), X, generator=torch.Generator(), progress=lambda step, point, value, terms: seen.append(step))
    assert seen == [0, 1, 2, 3, 4]

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    ddrs.ANCER(iterations=2, samples=4, select=False).fit(Conv().eval(), X, init=0.2, progress=bar)
    assert bar.n == 3
    with pytest.raises(TypeError, match="progress must be"):
        fit.fit(Conv().eval(), X, progress=3)


def test_certify_inputs_progress(capsys):
    model = Conv().eval()
    res = ddrs.RS(0.25).fit(model, X)
    got = []
    certs = ddrs.certify_inputs(model, X, res, 3, 5, 20, progress=lambda i, c: got.append((i, c.n)))
    assert got == [(0, 20), (1, 20)] and len(certs) == 2
    ddrs.certify_inputs(model, X, res, 3, 5, 20, progress=True)
    assert "certify rs (2 inputs): 2/2" in capsys.readouterr().err


def test_text_bar_draws_remaining_time_and_closes_a_short_run():
    out = io.StringIO()
    bar = ddrs_progress.TextBar(4, "x", stream=out, interval=0.0)
    bar.update()
    assert out.getvalue().startswith("\rx: 1/4 [") and "left]" in out.getvalue()
    bar.close()  # ended early (e.g. an exception): the line is still terminated
    assert out.getvalue().endswith("\n")
    with pytest.raises(ValueError, match="total"):
        ddrs_progress.TextBar(-1)


def test_runner_passes_a_progress_bar_to_the_noise_choice():
    from ddrs_app.data import Dataset
    from ddrs_app.runs import MethodConfig, compute_batch

    data = Dataset(
        X=torch.rand(2, 1, 6, 6),
        y=torch.tensor([0, 1]),
        name="t",
        split="test",
        input_shape=(1, 6, 6),
        num_classes=3,
        indices=torch.arange(2),
    )

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    opts = {"iterations": 2, "samples": 4}
    config = MethodConfig("ancer", sigma=0.2, ddrs_options=opts, options=opts)
    compute_batch(config, Conv().eval(), data, [0, 1], n0=5, n=10, alpha=0.01, batch_size=8, seed=0, fit_progress=bar)
    assert bar.n == 3 + 3  # DDRS then ANCER: iterations + 1 evaluated steps each


@pytest.mark.parametrize(
    "noise",
    [certify.IsotropicGaussian(0.25), certify.MixtureOfGaussians([0.12, 0.25], kind="convolution")],
    ids=lambda nz: nz.kind,
)
def test_sequential_certify_and_predict_run_beside_a_model_on_another_device(noise, meta_reads):
    model = meta_model()
    smooth = certify.Smooth(model, noise, 3)
    cert = smooth.certify(X[0], 10, 200, 0.01, batch_size=16, generator=torch.Generator(), radii=[0.1, 0.2])
    assert cert.samples is not None and 10 < cert.samples <= 210
    assert isinstance(smooth.predict(X[0], 50, 0.01, generator=torch.Generator()), int)
    assert model.seen == {("meta", torch.float32)}


def test_fingerprint_records_a_device_other_than_the_cpu_and_a_cpu_resume_of_it_is_refused(tmp_path):
    import json

    from ddrs_app.data import Dataset
    from ddrs_app.runs import FingerprintMismatch, MethodConfig, fingerprint, fingerprint_path, run_certification

    data = Dataset(
        X=torch.rand(2, 1, 6, 6),
        y=torch.tensor([0, 1]),
        name="t",
        split="test",
        input_shape=(1, 6, 6),
        num_classes=3,
        indices=torch.arange(2),
    )
    run = dict(n0=5, n=20, alpha=0.01, batch_size=20, opt_batch=2, seed=0, memory=False)
    config = MethodConfig("rs", sigma=0.25)
    cpu = fingerprint(config, Conv().eval(), data, **run)
    assert "device" not in cpu  # CPU fingerprints (every committed log's) unchanged
    with MetaReads():  # the model hash reads the (data-free) meta weights
        assert fingerprint(config, meta_model(), data, **run)["device"] == "meta"
    assert fingerprint(config, Conv().eval(), data, **run, device="cuda")["device"] == "cuda"
    out = tmp_path / "gpu.tsv"
    run_certification(config, Conv().eval(), data, out, progress=False, **run)
    side = fingerprint_path(out)
    side.write_text(json.dumps(json.loads(side.read_text()) | {"device": "cuda"}))  # as if made on a GPU
    out.write_text("\n".join(out.read_text().splitlines()[:2]) + "\n")  # one row: a resume would append
    with pytest.raises(FingerprintMismatch, match="device"):
        run_certification(config, Conv().eval(), data, out, progress=False, **run)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)")
def test_runner_draws_noise_on_the_gpu_with_the_input_seed():
    from ddrs_app.data import Dataset
    from ddrs_app.runs import MethodConfig, compute_batch, input_seed

    data = Dataset(X=torch.rand(1, 1, 6, 6), y=torch.tensor([0]), name="t", split="test", input_shape=(1, 6, 6),
                   num_classes=3, indices=torch.arange(1))  # fmt: skip
    gpu = Conv().eval().cuda()
    got = compute_batch(MethodConfig("rs", sigma=0.25), gpu, data, [0], n0=10, n=200, alpha=0.01, batch_size=50, seed=3)
    g = torch.Generator(device="cuda").manual_seed(input_seed(3, 0))
    want = certify.Smooth(gpu, certify.IsotropicGaussian(0.25), 3).certify(data.X[0], 10, 200, 0.01, 50, generator=g)
    assert (got.certificates[0].prediction, got.certificates[0].p_lower) == (want.prediction, want.p_lower)


def test_training_runs_on_another_device_and_is_cached_under_its_own_key(tmp_path, meta_reads):
    from ddrs_app.training import load_or_train, train

    model, info = train("toy2d", 0.1, epochs=1, model_dir=tmp_path, progress=False, device="meta")
    assert next(model.parameters()).device.type == "cpu"  # returned (and saved) on the CPU
    assert info["train_device"] == "meta" and "-meta-" in info["path"] and info["device"] == "meta"
    again, cached = load_or_train("toy2d", 0.1, epochs=1, model_dir=tmp_path, progress=False, device="meta")
    assert cached["cached"] is True and cached["path"] == info["path"]
    _, cpu = load_or_train("toy2d", 0.1, epochs=1, model_dir=tmp_path, progress=False)
    assert cpu["path"] != info["path"] and "device" not in cpu
