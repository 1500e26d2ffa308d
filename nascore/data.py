"""Datasets, seeded splits and batch iteration that resumes mid-epoch.

A dataset component returns a :class:`DatasetSpec` (a train set, an optional test set, the number
of classes and the input shape). The core then splits the train set, with the run's seed, into

* ``train`` — what supernet trainers learn from,
* ``val`` — what trainers may use for a second loss (SETN/TNAS α, Cream's meta-step),
* ``archval`` — what evaluators score candidates on (never trained on),

and records the split indices in the run folder. Batches come from :meth:`DataBundle.batches`,
which orders each epoch from ``(seed, epoch)``, can start at any batch (resume after a kill) and
shards batches across ranks (torch.distributed), so a resumed or distributed run sees the same data
as an uninterrupted single-process one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "archval", "test")


@attrs.define(frozen=True)
class Preprocessing:
    """How a raw input becomes what the network sees: ``x = (pad(raw) / scale - mean) / std``.

    Exports record it in ``arch.json`` (and can bake it into the model), so a deployed model is fed
    what it was trained on (MNIST digits fed as ``raw / 255`` instead of normalised: 16 % instead of 91 %).
    ``mean``/``std`` have one value per channel of the network input (or one for all channels).
    ``pad_to`` zero-pads a raw image to that side before scaling; ``channels`` > the raw image's
    channels means the grey image is repeated. ``raw`` says in words what a raw input is.
    """

    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    raw: str = ""
    pad_to: int | None = None
    channels: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"raw": self.raw, "scale": float(self.scale), "mean": [float(v) for v in self.mean],
                "std": [float(v) for v in self.std], "pad_to": self.pad_to, "channels": self.channels,
                "formula": "x = (pad(raw) / scale - mean) / std, float32 (N, C, H, W)"}


@attrs.define
class DatasetSpec:
    """What a dataset component returns.

    ``train``/``test`` yield ``(image_tensor, int_label)``. In-memory datasets should also set
    ``tensors`` (images, labels) for the train set: batches are then sliced without a DataLoader.
    ``preprocessing`` (how raw inputs were normalised) and ``class_names`` (label index -> name)
    go into every export's ``arch.json``; leave them ``None`` when unknown.
    """

    name: str
    train: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]
    test: Dataset | None = None
    tensors: tuple[torch.Tensor, torch.Tensor] | None = None
    test_tensors: tuple[torch.Tensor, torch.Tensor] | None = None
    licence: str = ""
    preprocessing: Preprocessing | None = None
    class_names: list[str] | None = None


class RandomLabels(Dataset):
    """A view of a dataset whose labels are drawn once, uniformly, from a seed (RLNAS).

    Labels stay fixed across epochs; images are untouched.
    """

    def __init__(self, base: Dataset, num_classes: int, seed: int) -> None:
        self.base = base
        g = torch.Generator().manual_seed(int(seed))
        self.labels = torch.randint(0, num_classes, (len(base),), generator=g)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, _ = self.base[i]
        return x, int(self.labels[i])


class _StepSampler:
    """A batch sampler over a list of index lists that the bundle replaces before each pass."""

    def __init__(self) -> None:
        self.steps: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(list(self.steps))

    def __len__(self) -> int:
        return len(self.steps)


def _collate(items: Sequence[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([it[0] for it in items]), torch.as_tensor([int(it[1]) for it in items])


def split_indices(n: int, fractions: dict[str, float], seed: int, limit: int | None = None) -> dict[str, list[int]]:
    """Seeded split of ``range(n)``: ``fractions`` for val/archval, the rest is train.

    ``limit`` keeps a seeded random subset of that size (never the first items: datasets are
    often stored class by class).
    """
    g = torch.Generator().manual_seed(int(seed) + 7919)
    perm = torch.randperm(n, generator=g).tolist()
    if limit is not None and limit < n:
        perm, n = perm[:limit], limit
    out: dict[str, list[int]] = {}
    start = 0
    for name in ("val", "archval"):
        k = int(round(fractions.get(name, 0.0) * n))
        out[name] = sorted(perm[start : start + k])
        start += k
    out["train"] = sorted(perm[start:])
    return out


class DataBundle:
    """The run's data: one dataset, its seeded splits, and deterministic resumable batches."""

    def __init__(
        self,
        spec: DatasetSpec,
        splits: dict[str, list[int]],
        *,
        seed: int,
        batch_size: int,
        eval_batch_size: int | None = None,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        self.spec = spec
        self.splits = {k: list(v) for k, v in splits.items()}
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and num_workers > 0
        self._loaders: dict[str, Any] = {}  # one DataLoader per dataset (persistent workers live across epochs)
        self._reading: set[str] = set()  # datasets a live batches() pass is reading through its workers
        self.train_labels: torch.Tensor | None = None  # set by with_random_labels
        self.access_log: list[str] = []  # which splits were read (RLNAS checks no labels were used)
        self._true: DataBundle | None = None  # the real-label bundle behind a random-label view

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.spec.input_shape

    def with_random_labels(self, seed: int) -> "DataBundle":
        """The same bundle with train/val labels replaced by fixed uniform random ones."""
        other = DataBundle(
            self.spec, self.splits, seed=self.seed, batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size, rank=self.rank, world_size=self.world_size,
            num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.persistent_workers,
        )
        n = len(self.spec.train)  # type: ignore[arg-type]
        g = torch.Generator().manual_seed(int(seed))
        other.train_labels = torch.randint(0, self.spec.num_classes, (n,), generator=g)
        other.access_log = self.access_log
        other._true = self.with_true_labels()
        return other

    def with_true_labels(self) -> "DataBundle":
        """The bundle with the dataset's own labels (retraining after a random-label search).

        ``self`` unless this is a :meth:`with_random_labels` view; shares the access log.
        """
        return self._true if self._true is not None else self

    def num_batches(self, split: str = "train", batch_size: int | None = None, drop_last: bool = True) -> int:
        bs = batch_size or self.batch_size
        n = len(self.splits[split]) if split != "test" else len(self.spec.test or [])  # type: ignore[arg-type]
        per_rank_bs = bs
        total = n // (per_rank_bs * self.world_size) if drop_last else math.ceil(n / (per_rank_bs * self.world_size))
        return max(total, 0)

    def _order(self, split: str, epoch: int, shuffle: bool) -> list[int]:
        idx = self.splits[split] if split != "test" else list(range(len(self.spec.test or [])))  # type: ignore[arg-type]
        if not shuffle:
            # a fixed order that does not depend on the run, yet mixes classes (datasets are often
            # stored class by class, and evaluation may read only the first few batches)
            g = torch.Generator().manual_seed(2654435761 + SPLITS.index(split))
            perm = torch.randperm(len(idx), generator=g).tolist()
            return [idx[i] for i in perm]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 7919 + SPLITS.index(split) * 131)
        perm = torch.randperm(len(idx), generator=g).tolist()
        return [idx[i] for i in perm]

    def batches(
        self,
        split: str = "train",
        *,
        epoch: int = 0,
        start: int = 0,
        shuffle: bool = True,
        batch_size: int | None = None,
        drop_last: bool = True,
        limit: int | None = None,
        device: torch.device | str = "cpu",
        shard: bool = True,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``split`` for ``epoch``, from batch ``start``; ranks get disjoint batches.

        The global batch of step ``k`` is the same for any world size: rank ``r`` takes the
        ``r``-th slice of it, so a 2-process run averages to the single-process gradient.
        ``batch_size`` is per rank. With ``shard=False`` (evaluation: every rank scores whole
        candidates) each rank gets the whole global batch, and ``batch_size`` is global.
        """
        self.access_log.append(split)
        order = self._order(split, epoch, shuffle)
        if shard:
            global_bs = (batch_size or self.batch_size) * self.world_size
        else:
            global_bs = batch_size or self.batch_size * self.world_size
        nb = len(order) // global_bs if drop_last else math.ceil(len(order) / global_bs)
        if limit is not None:
            nb = min(nb, limit)
        steps: list[list[int]] = []
        for b in range(start, nb):
            chunk = order[b * global_bs : (b + 1) * global_bs]
            per = math.ceil(len(chunk) / self.world_size)
            mine = chunk[self.rank * per : (self.rank + 1) * per] if shard else chunk
            if mine:
                steps.append(mine)
        test = split == "test"
        key = "test" if test else "train"
        # a call made while another one reads the same dataset through workers (Cream's val batch
        # inside the training loop) is gathered in-process: a persistent loader has one iterator,
        # which a second pass would reset under the first, and a fresh loader would spawn (and
        # prefetch with) every worker for a batch or two
        if self.num_workers > 0 and (self.spec.test_tensors if test else self.spec.tensors) is None \
                and key not in self._reading:
            self._reading.add(key)
            try:
                for mine, (x, y) in zip(steps, self._loader(test, steps)):
                    x, y = self._relabel(split, mine, x, y)
                    yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            finally:
                self._reading.discard(key)
            return
        for mine in steps:
            x, y = self._gather(split, mine)
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    def _loader(self, test: bool, steps: list[list[int]]) -> Any:
        """A DataLoader yielding exactly ``steps`` (index lists) in order, read by worker processes.

        The batches are the ones the in-process path gathers (same indices, same order), so a run
        with workers resumes and shards exactly like one without; the batch list is swapped per
        call, so persistent workers serve every epoch.
        """
        from torch.utils.data import DataLoader

        key = "test" if test else "train"
        loader = self._loaders.get(key)
        if loader is None:
            loader = DataLoader(
                self.spec.test if test else self.spec.train, batch_sampler=_StepSampler(),
                num_workers=self.num_workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
                persistent_workers=self.persistent_workers, collate_fn=_collate)
            self._loaders[key] = loader
        loader.batch_sampler.steps = steps
        return loader

    def _relabel(self, split: str, idx: Sequence[int], x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if split in ("train", "val") and self.train_labels is not None:  # archval keeps true labels
            y = self.train_labels[torch.as_tensor(idx)]
        return x, y.long()

    def _gather(self, split: str, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        test = split == "test"
        tensors = self.spec.test_tensors if test else self.spec.tensors
        if tensors is not None:
            t = torch.as_tensor(idx)
            x, y = tensors[0][t], tensors[1][t]
        else:
            ds = self.spec.test if test else self.spec.train
            x, y = _collate([ds[i] for i in idx])  # type: ignore[index]
        return self._relabel(split, idx, x, y)

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.spec.name,
            "num_classes": self.spec.num_classes,
            "input_shape": list(self.spec.input_shape),
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "random_labels": self.train_labels is not None,
        }
