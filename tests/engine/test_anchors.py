"""Anchors: the fit check (best possible recall), the fit itself, the config keys and the trainer's use of them."""
import logging

import numpy as np
import pytest

from yolo_attn.data import build_dataset, load_data_config
from yolo_attn.engine.anchors import (anchor_fit, anchors_from_config, box_sizes, check_anchors, fit_anchors,
                                      parse_anchors)
from yolo_attn.engine.config import load_train_config
from yolo_attn.engine.trainer import train
from yolo_attn.models import DEFAULT_ANCHORS
from yolo_attn.utils.checkpoint import load_checkpoint, load_model

IN_USE = DEFAULT_ANCHORS[1:]  # the official masks (3, 4, 5) and (1, 2, 3) leave out the first


def _clustered_boxes(seed=0):
    """Tiny squares (4-6 px), tall bars and large squares: the anchors yolov4-tiny uses (all of Darknet's but
    10,14) cannot reach the tiny ones."""
    rng = np.random.default_rng(seed)
    tiny = rng.uniform(4, 6, (300, 1)).repeat(2, 1)
    tall = np.stack([rng.uniform(8, 12, 300), rng.uniform(60, 80, 300)], 1)
    large = rng.uniform(150, 200, (300, 1)).repeat(2, 1)
    return np.concatenate([tiny, tall, large])


def test_the_fit_check_counts_boxes_within_anchor_t():
    wh = np.array([[10.0, 10.0], [20.0, 40.0], [50.0, 10.0]])
    fit = anchor_fit([[10, 10]], wh, anchor_t=4.0)
    assert fit["bpr"] == pytest.approx(1 / 3)  # 20x40 is exactly 4x taller: out, as in YOLOv5 (ratio > 1/4)
    assert fit["anchors_per_box"] == pytest.approx(1 / 3)
    assert fit["fitness"] == pytest.approx(1 / 3)
    two = anchor_fit([[10, 10], [12, 9]], wh, anchor_t=4.0)
    assert two["anchors_per_box"] == pytest.approx(2 / 3) and two["bpr"] == pytest.approx(1 / 3)


def test_fitted_anchors_reach_boxes_the_default_ones_cannot():
    wh = _clustered_boxes()
    default = anchor_fit(IN_USE, wh)
    assert default["bpr"] < 0.7  # the tiny third is out of reach
    anchors = fit_anchors(wh, 6)
    assert anchors.shape == (6, 2) and np.all(np.diff(anchors.prod(1)) >= 0)  # sorted by area
    fitted = anchor_fit(anchors, wh)
    assert fitted["bpr"] == 1.0 and fitted["fitness"] > default["fitness"] + 0.3
    assert fitted["fitness"] >= anchor_fit(fit_anchors(wh, 6, generations=0), wh)["fitness"]  # evolution helps
    assert np.allclose(anchors, fit_anchors(wh, 6))  # the same seed gives the same anchors (one per DDP rank)


def test_a_poor_fit_is_warned_about(caplog):
    wh = _clustered_boxes()
    with caplog.at_level(logging.WARNING, logger="yolo_attn.train"):
        check_anchors(IN_USE, wh, 4.0)
    assert "--anchors fit" in caplog.text and "best possible recall" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolo_attn.train"):
        check_anchors(fit_anchors(wh, 6), wh, 4.0)
    assert caplog.text == ""


def test_anchors_are_read_as_pairs_flat_lists_or_darknet_text():
    pairs = [(10.0, 14.0), (23.0, 27.0), (37.0, 58.0), (81.0, 82.0)]
    assert parse_anchors([[10, 14], [23, 27], [37, 58], [81, 82]]) == pairs
    assert parse_anchors([10, 14, 23, 27, 37, 58, 81, 82]) == pairs
    assert parse_anchors("10,14, 23,27, 37,58, 81,82") == pairs
    for bad in ([10, 14, 23], [[10, 14], [23, 27], [0, 5], [3, 4]], "ten,14", [[10, 14], [23, 27], [37, 58]]):
        with pytest.raises(ValueError, match="anchors"):
            parse_anchors(bad)


def test_configured_anchors_are_split_by_area_unless_masks_are_given():
    anchors, masks = anchors_from_config([[81, 82], [10, 14], [135, 169], [23, 27]], None, None)
    assert anchors == [(10.0, 14.0), (23.0, 27.0), (81.0, 82.0), (135.0, 169.0)] and masks == [[2, 3], [0, 1]]
    anchors, masks = anchors_from_config(DEFAULT_ANCHORS, [[3, 4, 5], [1, 2, 3]], None)
    assert anchors == [tuple(map(float, a)) for a in DEFAULT_ANCHORS] and masks == [[3, 4, 5], [1, 2, 3]]
    with pytest.raises(ValueError, match="needs the anchors"):
        anchors_from_config(None, [[3, 4, 5], [1, 2, 3]], None)


def test_box_sizes_are_at_training_scale(tiny_data):
    ds = build_dataset(load_data_config(str(tiny_data)), "train")
    wh = box_sizes(ds, 64)
    records = [ds.get_annotation(i) for i in range(len(ds))]
    assert len(wh) == sum(len(r.boxes) for r in records)
    r = records[0]
    assert np.allclose(wh[: len(r.boxes)], (r.boxes[:, 2:] - r.boxes[:, :2]) * 64 / max(r.height, r.width))


def test_a_run_with_fitted_anchors_trains_and_keeps_them(tiny_data, tmp_path):
    cfg = load_train_config(None, dict(data=str(tiny_data), img_size=128, batch_size=4, workers=0, epochs=1,
                                       eval_batch_size=4, close_mosaic=1, warmup_epochs=0.5, phi=0,
                                       project=str(tmp_path / "runs"), anchors="fit"))
    run = train(cfg)
    expected, _ = anchors_from_config("fit", None, box_sizes(build_dataset(load_data_config(str(tiny_data)),
                                                                           "train"), 128), seed=cfg["seed"])
    arch = load_checkpoint(run / "weights/last.pt")["meta"]["model"]
    assert np.allclose(arch["anchors"], expected) and arch["anchor_masks"] == [[3, 4, 5], [0, 1, 2]]
    model, _ = load_model(run / "weights/best.pt")  # eval and predict decode with the fitted anchors
    assert np.allclose(model.level_anchors(), [expected[3:], expected[:3]])
