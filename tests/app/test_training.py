"""Base models and noise-augmented training: reproducibility, cache reuse, accuracy, arguments."""

import time

import pytest
import torch
from ddrs_app.models import MLP, SmallCNN, make_model
from ddrs_app.training import cache_path, load_or_train, train


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models train fastest on one thread (and a loaded 2-core machine makes 2 threads spin)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_make_model_shapes():
    cnn = make_model("fashion-mnist", 10, (1, 28, 28))
    assert isinstance(cnn, SmallCNN)
    assert [m.out_channels for m in (cnn.conv1, cnn.conv2)] == [16, 32]
    assert cnn.conv1.kernel_size == (5, 5) and cnn.conv2.kernel_size == (5, 5)
    out = cnn(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 10) and out.dtype == torch.float32
    mlp = make_model("digits", 10, (1, 8, 8))
    assert isinstance(mlp, MLP) and mlp(torch.rand(4, 1, 8, 8)).shape == (4, 10)
    assert make_model("toy2d", 3, (2,))(torch.rand(5, 2)).shape == (5, 3)
    with pytest.raises(ValueError, match="name"):
        make_model("imagenet", 10, (3, 32, 32))


def test_training_reproducible_for_seed():
    a, ia = train("digits", 0.25, epochs=1, seed=0, progress=False, save=False)
    b, ib = train("digits", 0.25, epochs=1, seed=0, progress=False, save=False)
    c, _ = train("digits", 0.25, epochs=1, seed=1, progress=False, save=False)
    assert _same_weights(a, b)
    assert ia["clean_accuracy"] == ib["clean_accuracy"] and ia["noisy_accuracy"] == ib["noisy_accuracy"]
    assert not _same_weights(a, c)


def test_digits_noise_training_accuracy(tmp_path):
    model, info = train("digits", 0.25, seed=0, model_dir=tmp_path, progress=False)
    print(
        f"digits sigma=0.25: clean {info['clean_accuracy']:.3f}, noisy {info['noisy_accuracy']:.3f}, "
        f"{info['train_seconds']:.1f} s"
    )
    assert info["clean_accuracy"] > 0.85 and info["noisy_accuracy"] > 0.80
    assert not model.training


def test_toy2d_trains(tmp_path):
    _, info = train("toy2d", 0.12, model_dir=tmp_path, progress=False)
    assert info["clean_accuracy"] > 0.9 and info["noisy_accuracy"] > 0.75


def test_cache_reused_and_keyed(tmp_path):
    m1, i1 = load_or_train("digits", 0.5, epochs=1, seed=3, model_dir=tmp_path, progress=False)
    assert i1["cached"] is False
    path = cache_path(
        {
            k: i1[k]
            for k in (
                "dataset",
                "sigma",
                "rotate",
                "epochs",
                "seed",
                "arch",
                "batch_size",
                "lr",
                "optimizer",
                "threads",
                "format",
                "train_data",
            )
        },
        tmp_path,
    )
    assert str(path) == i1["path"] and path.is_file()
    t = time.perf_counter()
    m2, i2 = load_or_train("digits", 0.5, epochs=1, seed=3, model_dir=tmp_path, progress=False)
    assert i2["cached"] is True and time.perf_counter() - t < 1.0
    assert _same_weights(m1, m2)
    for k in ("dataset", "sigma", "rotate", "epochs", "seed", "arch", "clean_accuracy", "noisy_accuracy"):
        assert i2[k] == i1[k]
    # any change of the key retrains
    for kwargs in (dict(epochs=2), dict(seed=4), dict(rotate=1)):
        args = dict(epochs=1, seed=3) | kwargs
        _, i3 = load_or_train("digits", 0.5, model_dir=tmp_path, progress=False, **args)
        assert i3["cached"] is False
    _, i4 = load_or_train("digits", 0.25, epochs=1, seed=3, model_dir=tmp_path, progress=False)
    assert i4["cached"] is False
    assert len(list(tmp_path.glob("*.pt"))) == 5


def test_model_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DDRS_MODEL_DIR", str(tmp_path))
    _, info = load_or_train("toy2d", 0.25, epochs=1, progress=False)
    assert info["path"].startswith(str(tmp_path)) and info["rotate"] is None
    _, again = load_or_train("toy2d", 0.25, epochs=1, progress=False)
    assert again["cached"] is True


@pytest.mark.parametrize(
    "args, kwargs, word",
    [
        (("digits", -0.1), {}, "sigma"),
        (("digits", float("nan")), {}, "sigma"),
        (("cifar10", 0.25), {}, "dataset"),
        (("digits", 0.25), dict(epochs=0), "epochs"),
        (("digits", 0.25), dict(optimizer="lbfgs"), "optimizer"),
        (("digits", 0.25), dict(rotate="x"), "rotate"),
    ],
)
def test_bad_arguments(args, kwargs, word, tmp_path):
    for fn in (train, load_or_train):
        with pytest.raises(ValueError, match=word):
            fn(*args, model_dir=tmp_path, progress=False, **kwargs)


def test_reproducer_2_the_model_cache_is_keyed_on_the_training_data(tmp_path, monkeypatch, capsys):
    """Other training data (another --data-dir) must not reuse the cached model, and the accuracy
    reported for a cached model is measured on the test data given."""
    import ddrs_app.training as training
    from ddrs_app.cli import main

    _, a = load_or_train("toy2d", 0.1, epochs=1, model_dir=tmp_path, progress=False)
    real = training.load_dataset

    def other_data(name, split, *args, **kw):  # the same files with every label moved by one class
        d = real(name, split, *args, **kw)
        d.y = (d.y + 1) % d.num_classes
        return d

    monkeypatch.setattr(training, "load_dataset", other_data)
    _, b = load_or_train("toy2d", 0.1, epochs=1, model_dir=tmp_path, progress=False)
    assert b["cached"] is False and b["path"] != a["path"] and b["train_data"] != a["train_data"]
    assert a["clean_accuracy"] > 0.8 and b["clean_accuracy"] > 0.8  # each measured on its own data
    # a model cached for A, evaluated on a test set that differs: accuracy recomputed on that set
    monkeypatch.setattr(
        training,
        "load_dataset",
        lambda name, split, *args, **kw: (
            real(name, split, *args, **kw) if split == "train" else other_data(name, split, *args, **kw)
        ),
    )
    _, c = load_or_train("toy2d", 0.1, epochs=1, model_dir=tmp_path, progress=False)
    assert c["cached"] is True and c["path"] == a["path"] and c["clean_accuracy"] < 0.5
    assert (
        main(
            ["train", "--dataset", "toy2d", "--sigma", "0.1", "--epochs", "1", "--model-dir", str(tmp_path), "--quiet"]
        )
        == 0
    )
    assert f"clean accuracy {c['clean_accuracy']:.3f}" in capsys.readouterr().out
