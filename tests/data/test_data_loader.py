"""Training / evaluation loaders: batch format, seeding, closing mosaic in persistent workers, bad images."""
import logging

import numpy as np
import pytest
import torch

from yolo_attn.data import (
    DetectionDataset, EpochSampler, Record, TrainDataset, build_eval_loader, build_train_loader, unletterbox_boxes,
)

from .conftest import write_jpeg

SIZE = 96
NO_JITTER = dict(mosaic=0.0, mixup=0.0, scale=0.0, translate=0.0, flip=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0,
                 blur=0.0, noise=0.0)


def small_dataset(tmp_path, n=8, bad=()):
    """n JPEGs, each with one box (the first also a difficult one); indices in ``bad`` are truncated files."""
    records = []
    for i in range(n):
        path = tmp_path / f"img{i}.jpg"
        data = write_jpeg(path, 48 + i, 64, boxes=[(8, 8, 30, 30)])
        if i in bad:
            path.write_bytes(data[: len(data) // 2])
        boxes = [[8, 8, 30, 30], [34, 10, 60, 40]] if i == 0 else [[8, 8, 30, 30]]
        records.append(Record(None, np.array(boxes, np.float32), np.array([i % 3] + [2] * (len(boxes) - 1)),
                              np.array([False] + [True] * (len(boxes) - 1)), f"img{i}", str(path), 48 + i, 64))
    return DetectionDataset(records, ["a", "b", "c"])


def test_batch_format_and_determinism(tmp_path):
    ds = small_dataset(tmp_path)
    loader = build_train_loader(ds, img_size=SIZE, batch_size=4, workers=0, seed=5)
    images, targets, infos = next(iter(loader))
    assert images.shape == (4, 3, SIZE, SIZE) and images.dtype == torch.float32 and images.is_contiguous()
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert targets.dtype == torch.float32 and targets.shape[1] == 6 and len(targets)
    assert set(targets[:, 0].long().tolist()) <= {0, 1, 2, 3}
    assert targets[:, 1].max() < 3 and targets[:, 2:].min() >= 0 and targets[:, 2:].max() <= SIZE
    assert len(infos) == 4 and all("path" in info for info in infos)
    again = next(iter(build_train_loader(ds, img_size=SIZE, batch_size=4, workers=0, seed=5)))
    assert torch.equal(images, again[0]) and torch.equal(targets, again[1])
    loader.dataset.set_epoch(1)
    other = next(iter(loader))
    assert not torch.equal(images, other[0])


def test_difficult_left_out_unless_asked(tmp_path):
    ds = small_dataset(tmp_path, n=2)
    for include, expected in ((False, 1), (True, 2)):
        train = TrainDataset(ds, SIZE, NO_JITTER, include_difficult=include, cache="none")
        _, targets, _ = train[0]
        assert len(targets) == expected
    # no jitter: the target is the letterboxed box (48x64 image -> gain 1.5, padded 12 px vertically)
    np.testing.assert_allclose(targets[0, 1:], [12, 24, 45, 57], atol=0.05)


def test_close_mosaic_reaches_persistent_workers(tmp_path):
    ds = small_dataset(tmp_path)
    loader = build_train_loader(ds, img_size=SIZE, batch_size=4, workers=1, aug=dict(mosaic=1.0))
    assert loader.persistent_workers
    first = [info for _, _, infos in loader for info in infos]
    assert all(info["mosaic"] and len(info["sources"]) == 4 for info in first)
    worker_iter = loader._iterator
    loader.dataset.close_mosaic()
    loader.dataset.set_epoch(1)
    second = [info for _, _, infos in loader for info in infos]
    assert loader._iterator is worker_iter  # the same workers, not rebuilt
    assert second and all(not info["mosaic"] and len(info["sources"]) == 1 for info in second)


def test_bad_image_reported_once_and_skipped(tmp_path, caplog):
    ds = small_dataset(tmp_path, bad={3})
    loader = build_train_loader(ds, img_size=SIZE, batch_size=4, workers=0, cache="none")
    with caplog.at_level(logging.WARNING, logger="yolo_attn.data"):
        for epoch in range(2):
            loader.dataset.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == 2 and all(b[0].shape[0] == 4 for b in batches)
            assert all(info["index"] != 3 for b in batches for info in b[2])
    warnings = [r for r in caplog.records if "img3.jpg" in r.getMessage()]
    assert len(warnings) == 1 and "truncated" in warnings[0].getMessage()
    assert loader.dataset.bad_indices() == [3]


def test_a_split_none_of_whose_images_loads_is_a_data_error(tmp_path, caplog):
    """A ValueError (tools/train.py prints it as one line), not a RuntimeError's traceback."""
    ds = small_dataset(tmp_path, n=2, bad={0, 1})
    loader = build_train_loader(ds, img_size=SIZE, batch_size=2, workers=0, cache="none")
    with caplog.at_level(logging.ERROR, logger="yolo_attn.data"), \
            pytest.raises(ValueError, match="100 images in a row could not be loaded"):
        next(iter(loader))


def test_bad_image_never_kills_a_worker(tmp_path):
    ds = small_dataset(tmp_path, bad={0, 5})
    loader = build_train_loader(ds, img_size=SIZE, batch_size=4, workers=1, cache="none")
    batches = list(loader)
    assert len(batches) == 2
    assert sorted(loader.dataset.bad_indices()) == [0, 5]  # flags set in the worker, seen here


def test_ram_cache_matches_decoding(tmp_path):
    ds = small_dataset(tmp_path, n=4)
    a = TrainDataset(ds, SIZE, dict(mixup=0.5), seed=2, cache="ram")
    b = TrainDataset(ds, SIZE, dict(mixup=0.5), seed=2, cache="none")
    for i in range(4):
        (ia, ta, _), (ib, tb, _) = a[i], b[i]
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_allclose(ta, tb)


def test_ram_cache_clips_to_the_decoded_size_like_decoding(tmp_path):
    # the annotation says 100x100 but the image is 100 wide and 50 high: one box lies wholly below the image,
    # one crosses its bottom edge; both paths must drop the first and clip the second to the drawn pixels
    path = tmp_path / "short.jpg"
    write_jpeg(path, 50, 100, boxes=[(10, 30, 40, 50)])
    record = Record(None, np.array([[10, 30, 40, 70], [50, 60, 80, 90]], np.float32), np.array([0, 1]),
                    np.zeros(2, bool), "short", str(path), 100, 100)
    ds = DetectionDataset([record], ["a", "b"])
    (image, ram, _), (_, none, _) = (TrainDataset(ds, 100, NO_JITTER, cache=c)[0] for c in ("ram", "none"))
    np.testing.assert_array_equal(ram, none)
    assert ram[:, 0].tolist() == [0]
    x1, y1, x2, y2 = ram[0, 1:].round().astype(int)
    assert image[y1:y2, x1:x2].mean() > 240  # the target covers the white box, not the padding


def test_epoch_sampler_splits_ranks():
    class Fake:
        epoch = 0

        def __len__(self):
            return 10

    shares = [list(EpochSampler(Fake(), True, 0, rank, 3)) for rank in range(3)]
    assert all(len(s) == 4 for s in shares)
    assert set(sum(shares, [])) == set(range(10))


def test_eval_loader_maps_back(tmp_path):
    ds = small_dataset(tmp_path, n=3, bad={2})
    loader = build_eval_loader(ds, img_size=SIZE, batch_size=3, workers=0)
    images, infos = next(iter(loader))
    assert images.shape == (3, 3, SIZE, SIZE)
    assert infos[2]["bad"] and "img2.jpg" in infos[2]["bad"] and infos[0]["bad"] is None
    info = infos[1]
    boxes = np.array([[12, 22, 45, 55]], np.float32)
    back = unletterbox_boxes(boxes, info["letterbox"])
    assert (info["height"], info["width"]) == (49, 64)
    assert back[0, 2] <= 64 and back[0, 3] <= 49
    np.testing.assert_allclose(back * info["letterbox"].scale + [info["letterbox"].pad_x, info["letterbox"].pad_y] * 2,
                               boxes, atol=1e-3)


def test_memory_is_pinned_only_for_training_on_a_gpu(tmp_path, monkeypatch):
    """Pinning opens a CUDA context (on GPU 0): a run on the CPU of a GPU machine, each rank of DDP on the CPU
    included, must not pin; the trainer says where it trains."""
    ds = small_dataset(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert build_train_loader(ds, img_size=SIZE, workers=0).pin_memory  # no word from the caller: as before
    assert not build_train_loader(ds, img_size=SIZE, workers=0, pin_memory=False).pin_memory
