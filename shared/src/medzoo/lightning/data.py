"""Seeded splits, epoch-seeded loaders and the base DataModule."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medzoo.errors import MedzooDataError

__all__ = ["EpochSeededSampler", "MedzooDataModule", "epoch_seed", "seeded_split"]


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split ``range(n)`` into disjoint index arrays with the given fractions, deterministically.

    Sizes are ``floor(f * n)`` with the remainder given to the parts with the largest fractional parts, so
    they always sum to ``n`` when ``sum(fractions) == 1`` (otherwise the leftover indices are dropped).
    Each returned array is sorted (int64).

    Args:
        n: number of items (>= 0).
        fractions: non-negative fractions summing to at most 1, e.g. ``(0.8, 0.1, 0.1)``.
        seed: seed of the permutation; the same seed always gives the same split.
    """
    fractions = [float(f) for f in fractions]
    if n < 0 or not fractions or any(f < 0 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise MedzooDataError(
            "seeded_split",
            f"n={n}, fractions={fractions}",
            "n >= 0 and non-negative fractions summing to <= 1",
        )
    exact = [f * n for f in fractions]
    sizes = [math.floor(e) for e in exact]
    total = min(n, round(sum(exact)))
    by_remainder = sorted(range(len(exact)), key=lambda i: (sizes[i] - exact[i], i))
    for i in by_remainder[: total - sum(sizes)]:
        sizes[i] += 1
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *sizes])
    return [np.sort(order[bounds[i] : bounds[i + 1]]).astype(np.int64) for i in range(len(sizes))]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed that depends only on ``(seed, epoch)``."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(epoch)]).generate_state(1)[0])


class EpochSeededSampler(Sampler[int]):
    """A random permutation of ``range(num_samples)`` that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before each training epoch; the permutation is drawn lazily when
    iteration starts, so a run resumed at epoch ``e`` sees the same order as an uninterrupted run. The
    ``generator`` is reseeded too, so a DataLoader built with it gives its workers the same seeds.
    """

    def __init__(self, num_samples: int, seed: int = 0, epoch: int = 0) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.generator = torch.Generator()
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.generator.manual_seed(epoch_seed(self.seed, self.epoch))

    def __iter__(self) -> Iterator[int]:
        order = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch) ^ 0x5EED)
        yield from torch.randperm(self.num_samples, generator=order).tolist()

    def __len__(self) -> int:
        return self.num_samples


class _DeferredIterDataLoader(DataLoader):
    """A DataLoader that starts its workers at the first batch rather than at ``iter()``.

    When resuming, Lightning calls ``iter()`` on the train loader before ``sampler.set_epoch``; a plain
    multi-worker loader would already have drawn its worker seeds and prefetched indices for the wrong epoch.
    """

    def __iter__(self) -> Iterator[Any]:
        yield from super().__iter__()


class MedzooDataModule(pl.LightningDataModule):
    """Base DataModule of every package: the contract's data arguments and seeded loaders.

    Subclasses build their datasets in ``setup`` (splits with :func:`seeded_split` and ``self.seed``) and
    return loaders from :meth:`train_loader` / :meth:`eval_loader`, which apply the shared settings.

    Args:
        root: the dataset folder; ``None`` means the demo's synthetic set, generated on first use under
            :meth:`demo_dir` (``$MEDZOO_CACHE/<package>/``).
        batch_size: samples per batch.
        num_workers: DataLoader worker processes (0 = load in the main process).
        seed: seed of the splits and of the training order.
        predict_root: a file or a folder of inputs for ``predict`` (see :meth:`predict_files`).
        cache_dir: a preprocessing cache only (``None`` = no cache); never the demo-data folder.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 0,
        predict_root: str | Path | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        if int(batch_size) < 1 or int(num_workers) < 0:
            raise MedzooDataError(
                "data",
                f"batch_size={batch_size}, num_workers={num_workers}",
                "batch_size >= 1, num_workers >= 0",
            )
        self.root = None if root is None else Path(root)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.predict_root = None if predict_root is None else Path(predict_root)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)

    @classmethod
    def package_name(cls) -> str:
        """The distribution name of the defining package (``han_landmark`` -> ``han-landmark``)."""
        return cls.__module__.split(".")[0].replace("_", "-")

    def demo_dir(self) -> Path:
        """Where this package's generated demo data lives: ``$MEDZOO_CACHE/<package>/`` (created)."""
        from medzoo.synthetic import default_cache_dir

        folder = default_cache_dir() / self.package_name()
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def predict_files(self, suffixes: Sequence[str] | None = None) -> list[Path]:
        """The inputs of ``predict``: ``predict_root`` itself when it is a file, else the files under it.

        Args:
            suffixes: accepted file suffixes (lower case, with the dot); default ``medzoo.io.IMAGE_SUFFIXES``.
                A folder is searched recursively; a multi-part suffix such as ``.nii.gz`` is matched whole.

        Raises:
            MedzooDataError: ``predict_root`` is unset, missing, or holds no file with an accepted suffix.
        """
        from medzoo.io import IMAGE_SUFFIXES

        suffixes = tuple(s.lower() for s in (IMAGE_SUFFIXES if suffixes is None else suffixes))
        if self.predict_root is None:
            raise MedzooDataError(
                "--data.predict_root", "not set", "a file or a folder of inputs to predict (FILE_OR_DIR)"
            )
        root = self.predict_root
        if root.is_file():
            return [root]
        if not root.is_dir():
            raise MedzooDataError(root, "no such file or folder", "a file or a folder of inputs to predict")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
        if not files:
            raise MedzooDataError(
                root, "a folder with no input files", f"files ending in {', '.join(suffixes)}"
            )
        return files

    def train_loader(
        self, dataset: Dataset, *, batch_size: int | None = None, drop_last: bool = False, **kwargs: Any
    ) -> DataLoader:
        """A shuffling DataLoader whose order and worker seeds depend only on ``(self.seed, epoch)``.

        ``batch_size`` overrides ``self.batch_size`` (e.g. for a batch-size schedule by epoch).
        """
        sampler = EpochSeededSampler(len(dataset), seed=self.seed)
        return _DeferredIterDataLoader(
            dataset,
            batch_size=self.batch_size if batch_size is None else batch_size,
            sampler=sampler,
            generator=sampler.generator,
            num_workers=self.num_workers,
            drop_last=drop_last,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def eval_loader(self, dataset: Dataset, *, batch_size: int | None = None, **kwargs: Any) -> DataLoader:
        """A DataLoader in dataset order for validation, test and prediction (``batch_size`` overrides)."""
        return DataLoader(
            dataset,
            batch_size=self.batch_size if batch_size is None else batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )
