"""Training and evaluation loaders: batches of float images in [0, 1] plus box targets.

Training batch (from :func:`build_train_loader`)::

    images  float32 (B, 3, S, S), RGB in [0, 1], letterboxed / augmented to S x S (contiguous NCHW)
    targets float32 (M, 6): [batch_index, class, x1, y1, x2, y2], absolute pixels of that S x S input
    infos   list of B dicts: path, image_id, index (of the source image; a mosaic has three more), mosaic

Closing mosaic for the last epochs works with persistent workers: ``set_epoch`` and ``close_mosaic`` write
shared-memory values (``multiprocessing`` raw values created before the workers start) that every worker
reads for each sample, so nothing is rebuilt. Call them before iterating that epoch's loader: a loader
prefetches only after ``iter(loader)``.

Bad images never stop training: a sample whose image cannot be used is reported once (a shared flag per
image, so not once per worker) and replaced by another image drawn from the same seeded generator.
"""
from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .dataset import DetectionDataset
from .letterbox import PAD_VALUE, letterbox
from .records import BadImageError, Record, target_mask
from .transforms import Sample, TrainTransform

__all__ = [
    "EpochSampler",
    "EvalDataset",
    "TrainDataset",
    "build_eval_loader",
    "build_train_loader",
    "collate_eval",
    "collate_train",
    "measure_loader",
]

LOGGER = logging.getLogger("yolo_attn.data")
CACHE_AUTO_BYTES = 3 * 2**30  # "auto" caches decoded images when they fit in this much memory


def _resize_to(image: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Resize so the longest side is ``size`` (area interpolation when shrinking); returns the image and the
    box gains ``[gx, gy, gx, gy]`` (per axis: sizes are rounded to whole pixels)."""
    h, w = image.shape[:2]
    r = size / max(h, w)
    new_w, new_h = max(1, round(w * r)), max(1, round(h * r))
    if (new_w, new_h) != (w, h):
        interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interp)
    return image, np.array([new_w / w, new_h / h] * 2, np.float32)


class TrainDataset(Dataset):
    """Training view of a :class:`DetectionDataset`: augmented S x S samples.

    ``ds[i]`` is ``(image (S, S, 3) uint8, targets (N, 5) float32 [class, x1, y1, x2, y2], info)``.

    Args:
        dataset: the source dataset (any adapter).
        img_size: S.
        aug: augmentation options (``transforms.DEFAULT_AUG`` keys).
        seed: a sample is a function of (seed, epoch, index).
        include_difficult: keep ``difficult`` boxes as targets (default: the dataset's ``include_difficult``,
            from the config's ``train_difficult``, else False).
        cache: ``"ram"`` decodes every image once (at letterbox scale, before workers start, shared with
            them copy-on-write), ``"none"`` decodes per sample, ``"auto"`` caches when that takes less than
            3 GiB.
    """

    def __init__(self, dataset: DetectionDataset, img_size: int = 416, aug: Optional[Mapping[str, Any]] = None,
                 seed: int = 0, include_difficult: Optional[bool] = None, cache: Union[str, bool] = "auto"):
        self.dataset = dataset
        self.img_size = int(img_size)
        self.transform = TrainTransform(self.img_size, aug)
        self.aug = self.transform.aug
        self.seed = int(seed)
        if include_difficult is None:
            include_difficult = bool(getattr(dataset, "include_difficult", False))
        self.include_difficult = include_difficult
        self.names = list(dataset.names)
        # (boxes, labels) per image in original pixels; the cache replaces an entry with the boxes clipped to
        # the decoded image when its size differs from the annotation's, as the uncached path does
        self._targets = [self._train_targets(dataset.get_annotation(i)) for i in range(len(dataset))]
        # Shared with workers (inherited at fork, or passed at spawn), so flips here reach running workers.
        self._epoch = mp.RawValue("i", 0)
        self._mosaic = mp.RawValue("b", 1)
        self._bad = mp.RawArray("b", max(len(dataset), 1))
        self._cache: Optional[List[Optional[Tuple[np.ndarray, np.ndarray]]]] = None
        if self._want_cache(cache):
            self._fill_cache()

    # ---------------------------------------------------------------------------------- control
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch: sample randomness and the sampler's shuffle depend on it."""
        self._epoch.value = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def close_mosaic(self) -> None:
        """Switch mosaic and mixup off from the next sample on (also in persistent workers)."""
        self._mosaic.value = 0

    def open_mosaic(self) -> None:
        """Switch mosaic and mixup back on (after :meth:`close_mosaic`, e.g. when resuming)."""
        self._mosaic.value = 1

    @property
    def mosaic_enabled(self) -> bool:
        return bool(self._mosaic.value)

    def bad_indices(self) -> List[int]:
        """Images found unusable so far (by any worker)."""
        return [i for i in range(len(self.dataset)) if self._bad[i]]

    # ---------------------------------------------------------------------------------- cache
    def _want_cache(self, cache: Union[str, bool]) -> bool:
        if cache in (True, "ram"):
            return True
        if cache in (False, None, "none"):
            return False
        if cache != "auto":
            raise ValueError(f"cache={cache!r}; expected 'auto', 'ram' or 'none'")
        s = self.img_size
        estimate = sum(3 * s * s * min(r.height, r.width) / max(r.height, r.width, 1) for r in self.dataset.records)
        return estimate <= CACHE_AUTO_BYTES

    def _fill_cache(self) -> None:
        from tqdm import tqdm

        def decode(i: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
            try:
                record = self.dataset.load_record(i)
                self._targets[i] = self._train_targets(record)
                return _resize_to(record.image, self.img_size)
            except Exception as e:  # noqa: BLE001 - any bad file: report, skip, keep going
                self._report_bad(i, e)
                return None

        start = time.perf_counter()
        with ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1))) as pool:  # cv2 decodes without the GIL
            self._cache = list(tqdm(pool.map(decode, range(len(self.dataset))), total=len(self.dataset),
                                    desc="caching images", leave=False, disable=None))
        nbytes = sum(c[0].nbytes for c in self._cache if c is not None)
        LOGGER.info("cached %d images (%.2f GB) in %.1f s", len(self._cache), nbytes / 1e9, time.perf_counter() - start)

    # ---------------------------------------------------------------------------------- loading
    def _report_bad(self, index: int, error: BaseException) -> None:
        if not self._bad[index]:
            self._bad[index] = 1
            LOGGER.warning("skipping a bad training image (reported once, replaced by another): %s", error
                           if isinstance(error, BadImageError) else f"{self.dataset.records[index].path}: "
                           f"{type(error).__name__}: {error}")

    def _train_targets(self, record: Record) -> Tuple[np.ndarray, np.ndarray]:
        """(boxes, labels) of a record that are training targets (difficult boxes only when asked)."""
        keep = target_mask(record.difficult, self.include_difficult)
        return record.boxes[keep], record.labels[keep]

    def _load_raw(self, index: int) -> Sample:
        """Image at letterbox scale (longest side S) with its boxes; raises for a bad image."""
        cached = self._cache[index] if self._cache is not None else None
        if cached is not None:
            image, r = cached
            boxes, labels = self._targets[index]
        else:
            # load_record clips the boxes to the decoded image when its size differs from the annotation's
            record = self.dataset.load_record(index)
            image, r = _resize_to(record.image, self.img_size)
            boxes, labels = self._train_targets(record)
        return image, boxes * r, labels

    def _load(self, index: int, rng: np.random.Generator) -> Tuple[Sample, int]:
        """The sample at ``index``, or, when that image is bad, at a replacement index (returned)."""
        for _ in range(100):
            if not self._bad[index]:
                try:
                    return self._load_raw(index), index
                except Exception as e:  # noqa: BLE001 - never let one file kill a worker
                    self._report_bad(index, e)
            index = int(rng.integers(len(self.dataset)))
        # a ValueError: the tools print it as the data's problem, not as a crash
        raise ValueError(f"{self.dataset.description}: 100 images in a row could not be loaded (the warnings "
                         "above name them); run tools/check_data.py on the data config")

    def _pick(self, rng: np.random.Generator) -> int:
        return int(rng.integers(len(self.dataset)))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        first, index = self._load(index, rng)
        preloaded, sources = {index: first}, [index]

        def load(i: int) -> Sample:
            if i in preloaded:
                return preloaded.pop(i)
            sample, j = self._load(i, rng)
            sources.append(j)
            return sample

        mosaic = self.mosaic_enabled
        image, boxes, labels = self.transform(index, load, self._pick, rng, mosaic)
        targets = np.concatenate([labels[:, None].astype(np.float32), boxes], 1) if len(labels) else \
            np.zeros((0, 5), np.float32)
        record = self.dataset.records[index]
        info = {"path": record.path, "image_id": record.image_id, "index": index, "sources": sources,
                "mosaic": mosaic}
        return image, targets, info


def _image_batch(images: Sequence[np.ndarray]) -> torch.Tensor:
    """(H, W, 3) uint8 images -> (B, 3, H, W) float32 in [0, 1]; one converting copy per image (about
    twice as fast as stack, permute, convert, scale as separate passes)."""
    h, w = images[0].shape[:2]
    out = torch.empty((len(images), 3, h, w), dtype=torch.float32)
    for i, image in enumerate(images):
        out[i].copy_(torch.from_numpy(image).permute(2, 0, 1))
    return out.mul_(1.0 / 255.0)


def collate_train(batch: Sequence[Tuple[np.ndarray, np.ndarray, Dict[str, Any]]]):
    """Stack samples into (images (B, 3, S, S) float32 [0, 1], targets (M, 6), infos)."""
    images = _image_batch([b[0] for b in batch])
    targets = [np.concatenate([np.full((len(t), 1), i, np.float32), t], 1) for i, (_, t, _) in enumerate(batch)]
    targets = torch.from_numpy(np.concatenate(targets, 0)) if targets else torch.zeros((0, 6))
    return images, targets.reshape(-1, 6), [b[2] for b in batch]


class EpochSampler(Sampler[int]):
    """Shuffles by (seed, epoch) with the epoch read from the training dataset, so ``set_epoch`` on the
    dataset drives it; with ``world_size > 1`` each rank takes its own equal share (padded by repeats),
    as ``DistributedSampler`` does."""

    def __init__(self, dataset: TrainDataset, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        self.dataset, self.shuffle, self.seed = dataset, shuffle, int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.num_samples = math.ceil(len(dataset) / self.world_size)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.dataset.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        total = self.num_samples * self.world_size
        order = (order * math.ceil(total / max(n, 1)))[:total] if n else []
        return iter(order[self.rank:total:self.world_size])

    def __len__(self) -> int:
        return self.num_samples


def _worker_init(seed: int, rank: int, worker_id: int) -> None:
    # Seeds for code that uses the global generators; our transforms draw from per-sample generators.
    # No cv2.setNumThreads here: in a process forked after OpenCV's thread pool started it deadlocks.
    s = (seed * 1000 + rank * 100 + worker_id) % 2**32
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def _dist_rank_world(distributed: bool) -> Tuple[int, int]:
    if distributed and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    if distributed:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return 0, 1


def build_train_loader(
    ds: DetectionDataset,
    img_size: int = 416,
    batch_size: int = 8,
    workers: int = 2,
    aug: Optional[Mapping[str, Any]] = None,
    seed: int = 0,
    distributed: bool = False,
    shuffle: bool = True,
    include_difficult: Optional[bool] = None,
    cache: Union[str, bool] = "auto",
    prefetch_factor: int = 2,
    pin_memory: Optional[bool] = None,
) -> DataLoader:
    """A training DataLoader over ``ds`` (batch format in the module docstring).

    ``loader.dataset`` is the :class:`TrainDataset` (``set_epoch``, ``close_mosaic``). Workers are
    persistent and seeded; ``pin_memory`` for training on a GPU (None: where CUDA is present; the trainer
    says whether it trains there, as pinning makes a CUDA context); under ``distributed`` each rank reads its
    own share (rank and world size from ``torch.distributed``, else ``RANK`` / ``WORLD_SIZE``).
    """
    train_ds = TrainDataset(ds, img_size, aug, seed, include_difficult, cache)
    rank, world = _dist_rank_world(distributed)
    sampler = EpochSampler(train_ds, shuffle, seed, rank, world)
    kwargs: Dict[str, Any] = {}
    if workers > 0:
        kwargs = dict(persistent_workers=True, prefetch_factor=prefetch_factor,
                      worker_init_fn=partial(_worker_init, seed, rank))
    return DataLoader(train_ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      collate_fn=collate_train,
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      drop_last=len(sampler) >= batch_size, generator=torch.Generator().manual_seed(seed),
                      **kwargs)


class EvalDataset(Dataset):
    """Evaluation / prediction view: letterboxed S x S images with everything needed to map back.

    ``ds[i]`` is ``(image (S, S, 3) uint8, info)`` with info keys path, image_id, index, height, width,
    letterbox (:class:`~yolo_attn.data.letterbox.LetterboxInfo`), boxes / labels / difficult (original pixels),
    and ``bad``: None, or the reason the image could not be read (the image is then grey; leave that sample out)."""

    def __init__(self, dataset: DetectionDataset, img_size: int = 416):
        self.dataset, self.img_size = dataset, int(img_size)
        self._bad = mp.RawArray("b", max(len(dataset), 1))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[np.ndarray, Dict[str, Any]]:
        bad = None
        try:
            record = self.dataset.load_record(index)
        except Exception as e:  # noqa: BLE001 - report, hand back a placeholder, keep the worker alive
            record, bad = self.dataset.get_annotation(index), str(e)
            if not self._bad[index]:
                self._bad[index] = 1
                LOGGER.warning("unusable image left out of evaluation: %s", bad)
            record.image = np.full((record.height or 1, record.width or 1, 3), PAD_VALUE, np.uint8)
        image, info = letterbox(record.image, self.img_size)
        return image, {"path": record.path, "image_id": record.image_id, "index": index, "height": record.height,
                       "width": record.width, "letterbox": info, "boxes": record.boxes, "labels": record.labels,
                       "difficult": record.difficult, "bad": bad}


def collate_eval(batch: Sequence[Tuple[np.ndarray, Dict[str, Any]]]):
    """(images (B, 3, S, S) float32 [0, 1], infos)."""
    return _image_batch([b[0] for b in batch]), [b[1] for b in batch]


def build_eval_loader(ds: DetectionDataset, img_size: int = 416, batch_size: int = 16, workers: int = 2,
                      rank: int = 0, world_size: int = 1) -> DataLoader:
    """An in-order loader of letterboxed images (:class:`EvalDataset`); with ``world_size > 1`` each rank
    takes every world_size-th image (no padding, so no image is counted twice)."""
    eval_ds = EvalDataset(ds, img_size)
    indices = list(range(rank, len(eval_ds), world_size))
    kwargs: Dict[str, Any] = {}
    if workers > 0:
        kwargs = dict(worker_init_fn=partial(_worker_init, 0, rank))
    return DataLoader(torch.utils.data.Subset(eval_ds, indices) if world_size > 1 else eval_ds,
                      batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_eval,
                      pin_memory=torch.cuda.is_available(), **kwargs)


def measure_loader(loader: DataLoader, batches: int = 30, warmup: int = 3) -> Dict[str, float]:
    """Images per second the loader delivers (after ``warmup`` batches, which include worker start-up)."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            images = next(it)[0]
        except StopIteration:
            it = iter(loader)
            images = next(it)[0]
        count += images.shape[0]
    seconds = time.perf_counter() - start
    return {"images_per_s": count / seconds, "images": count, "seconds": seconds}
