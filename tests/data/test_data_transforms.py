"""Augmented boxes still match the drawn pixels (mosaic, scale, translate, flip), within 2 px."""
import cv2
import numpy as np
import pytest

from yolo_attn.data import DetectionDataset, Record, TrainDataset, letterbox, letterbox_boxes
from yolo_attn.data.transforms import TrainTransform, check_aug, mosaic_canvas, random_affine

SIZE = 128
GEOMETRY_ONLY = dict(mosaic=1.0, mixup=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, blur=0.0, noise=0.0, flip=0.5,
                     flipud=0.5, scale=0.5, translate=0.2, min_size=1.0, min_visibility=0.0)


def box_dataset(tmp_path, n=6, seed=0):
    """Black PNGs (lossless) with white filled rectangles, 8 px or more from the edges and each other."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        h, w = int(rng.integers(60, 110)), int(rng.integers(60, 110))
        img = np.zeros((h, w, 3), np.uint8)
        boxes = []
        x = 8
        while x + 14 < w - 8 and len(boxes) < 3:  # rectangles side by side, 8 px apart
            bw = int(rng.integers(6, min(30, w - 8 - x)))
            y1 = int(rng.integers(8, h - 20))
            y2 = int(rng.integers(y1 + 6, h - 8))
            img[y1:y2, x:x + bw] = 255
            boxes.append((x, y1, x + bw, y2))
            x += bw + 8
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), img)
        records.append(Record(None, np.array(boxes, np.float32), np.arange(len(boxes)) % 2,
                              np.zeros(len(boxes), bool), i, str(path), h, w))
    return DetectionDataset(records, ["a", "b"])


def assert_boxes_match_pixels(image, targets):
    white = image[:, :, 0] > 192  # background 0, padding 128, rectangles 255
    for cls, x1, y1, x2, y2 in targets:
        lo_x, lo_y = max(int(x1) - 3, 0), max(int(y1) - 3, 0)
        window = white[lo_y:int(np.ceil(y2)) + 3, lo_x:int(np.ceil(x2)) + 3]
        rows, cols = np.nonzero(window)
        assert len(rows), f"no drawn pixels under box {(x1, y1, x2, y2)}"
        found = (lo_x + cols.min(), lo_y + rows.min(), lo_x + cols.max() + 1, lo_y + rows.max() + 1)
        np.testing.assert_allclose(found, (x1, y1, x2, y2), atol=2.0, err_msg="box vs drawn pixels")
    # and every drawn rectangle (bigger than interpolation crumbs) has a box
    count, _, stats, _ = cv2.connectedComponentsWithStats(white.astype(np.uint8))
    for x, y, w, h, _ in stats[1:]:
        if w >= 3 and h >= 3:
            covered = [(x >= bx1 - 2 and y >= by1 - 2 and x + w <= bx2 + 2 and y + h <= by2 + 2)
                       for _, bx1, by1, bx2, by2 in targets]
            assert any(covered), f"drawn rectangle {(x, y, x + w, y + h)} has no box"


@pytest.mark.parametrize("mosaic,cache", [(True, "ram"), (True, "none"), (False, "none")])
def test_augmented_boxes_match_drawn_pixels(tmp_path, mosaic, cache):
    ds = box_dataset(tmp_path)
    train = TrainDataset(ds, SIZE, GEOMETRY_ONLY, seed=3, cache=cache)
    if not mosaic:
        train.close_mosaic()
    checked = 0
    for epoch in range(3):
        train.set_epoch(epoch)
        for i in range(len(ds)):
            image, targets, info = train[i]
            assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
            assert (len(info["sources"]) == 4) == mosaic
            assert_boxes_match_pixels(image, targets)
            checked += len(targets)
    assert checked > 20


def test_mixup_and_colour_keep_boxes_inside_the_image(tmp_path):
    ds = box_dataset(tmp_path)
    train = TrainDataset(ds, SIZE, dict(mixup=1.0, blur=1.0, noise=1.0), seed=1, cache="none")
    image, targets, info = train[0]
    assert len(info["sources"]) == 8  # two mosaics blended
    assert image.shape == (SIZE, SIZE, 3) and len(targets)
    assert targets[:, 1:].min() >= 0 and targets[:, 1:].max() <= SIZE
    assert np.all(targets[:, 3] > targets[:, 1]) and np.all(targets[:, 4] > targets[:, 2])


def test_random_affine_without_jitter_is_the_letterbox():
    image = np.dstack([np.tile(np.arange(0, 200, 2, dtype=np.uint8), (50, 1))] * 3)  # a horizontal ramp
    boxes = np.array([[10, 10, 30, 20]], np.float32)
    out, mapped, labels = random_affine(image, boxes, np.array([1]), 200, 0.0, 0.0, np.random.default_rng(0),
                                        gain=2.0)
    ref, info = letterbox(image, 200)
    np.testing.assert_allclose(mapped, letterbox_boxes(boxes, info), atol=1e-4)
    assert labels.tolist() == [1]
    # same pixels as cv2.resize (pixel-centre aligned) away from the edges, where resize clamps
    diff = np.abs(out[51:149, 1:199].astype(int) - ref[51:149, 1:199].astype(int))
    assert diff.max() <= 1
    assert (out[:49] == 128).all() and (out[151:] == 128).all()


def test_unknown_aug_option_is_an_error():
    with pytest.raises(ValueError, match="mosiac"):
        check_aug({"mosiac": 1.0})


def test_flips_and_colour_are_drawn_independently():
    """albumentations' set_random_seed gave every transform a generator of the same seed: horizontal and
    vertical flips always came together, and flipped images were always darker. Over 400 samples all four
    flip combinations now appear, and brightness does not follow the flip."""
    transform = TrainTransform(32, dict(flip=0.5, flipud=0.5, hsv_h=0.0, hsv_s=0.0, hsv_v=0.4, blur=0.0,
                                        noise=0.0, mosaic=0.0, mixup=0.0, scale=0.0, translate=0.0))
    image = np.full((32, 32, 3), 100, np.uint8)
    image[:4, :4] = 200  # a marker in the top-left corner
    marker = np.array([[0, 0, 4, 4]], np.float32)
    combos, flipped_gain, kept_gain = {}, [], []
    for seed in range(400):
        out, boxes, _ = transform(0, lambda i: (image, marker, np.array([0])), lambda rng: 0,
                                  np.random.default_rng(seed), mosaic=False)
        key = (bool(boxes[0, 0] > 16), bool(boxes[0, 1] > 16))
        combos[key] = combos.get(key, 0) + 1
        (flipped_gain if key[0] else kept_gain).append(out[16, 16, 0] / 100.0)
    assert len(combos) == 4 and min(combos.values()) > 60
    assert abs(np.mean(flipped_gain) - np.mean(kept_gain)) < 0.05


def test_visibility_counts_the_mosaic_cut_and_the_crop_together():
    """A 100x100 object cut to a quarter by its mosaic tile, then to a quarter of that by the crop, kept
    6 % of its area with min_visibility 0.2: each step compared with its own input only."""

    class Fixed:  # the mosaic centre, then the affine's scale and shift
        def __init__(self, values):
            self.values = list(values)

        def uniform(self, low, high, n=None):
            return self.values.pop(0)

    image = np.full((100, 100, 3), 200, np.uint8)
    empty = (image[:1, :1], np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    tiles = [(image, np.array([[0, 0, 100, 100]], np.float32), np.array([1]))] + [empty] * 3
    canvas, boxes, labels, areas = mosaic_canvas(tiles, 100, Fixed([np.array([50.0, 50.0])]), 0.2)
    assert (boxes[0, 2:] - boxes[0, :2]).prod() == 2500 and areas.tolist() == [10000]  # 25 % left: kept
    crop = Fixed([1.0, np.array([0.25, 0.25])])
    _, kept, _ = random_affine(canvas, boxes, labels, 100, 0.5, 0.5, crop, 2.0, 0.2, full_areas=areas)
    assert len(kept) == 0  # 625 of 10000 px left
    _, kept, _ = random_affine(canvas, boxes, labels, 100, 0.5, 0.5, Fixed([1.0, np.array([0.25, 0.25])]),
                               2.0, 0.05, full_areas=areas)
    assert (kept[0, 2:] - kept[0, :2]).prod() == 625  # kept where 6 % is enough
