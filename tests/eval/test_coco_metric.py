"""COCO metric: our in-memory ground truth + COCOeval agrees with pycocotools run directly on files."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolo_attn.eval.coco import COCO_STAT_NAMES, coco_ground_truth, coco_results, evaluate_coco

from .eval_fakes import FakeRecord

CATEGORY_IDS = [1, 5, 90]  # COCO-style: starting at 1, with gaps


def random_records(seed, num_images=10):
    rng = np.random.default_rng(seed)
    records, detections = [], []
    for i in range(num_images):
        h, w = int(rng.integers(100, 600)), int(rng.integers(100, 600))
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, [w * 0.8, h * 0.8], size=(n, 2))
        wh = rng.uniform(4, 0.5 * min(w, h), size=(n, 2))  # small, medium and large objects
        boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1).astype(np.float32)
        labels = rng.integers(0, 3, n)
        records.append(FakeRecord(None, boxes, labels, rng.random(n) < 0.15, 1000 + i, f"/x/{i}.jpg", h, w))
        jitter = boxes + rng.normal(0, 0.05 * wh.mean() if n else 1, size=(n, 4))
        corner = rng.uniform(0, [w / 2, h / 2], size=(2, 2))
        extra = np.c_[corner, corner + rng.uniform(4, min(w, h) / 2, size=(2, 2))]  # false positives
        det = np.concatenate([np.c_[jitter, rng.random(n), labels], np.c_[extra, rng.random(2), rng.integers(0, 3, 2)]])
        detections.append(det)
    return records, detections


def direct_pycocotools(records, results, tmp_path):
    anns = []
    for r in records:
        for b, label, difficult in zip(r.boxes.tolist(), r.labels, r.difficult):
            anns.append({"id": len(anns) + 1, "image_id": r.image_id, "category_id": CATEGORY_IDS[label],
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1]),
                         "iscrowd": int(difficult)})
    (tmp_path / "gt.json").write_text(json.dumps({
        "images": [{"id": r.image_id, "width": r.width, "height": r.height} for r in records],
        "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in CATEGORY_IDS]}))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return ev


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_pycocotools_on_files(seed, tmp_path, capsys):
    records, detections = random_records(seed)
    results = coco_results([r.image_id for r in records], detections, CATEGORY_IDS)
    ours = evaluate_coco(coco_ground_truth(records, CATEGORY_IDS, ["a", "b", "c"]), results)
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced
    ev = direct_pycocotools(records, results, tmp_path)
    np.testing.assert_allclose(ours["stats"], ev.stats, rtol=0, atol=1e-12)
    for name, value in zip(COCO_STAT_NAMES, ev.stats):
        assert (math.isnan(ours[name]) and value == -1) or ours[name] == pytest.approx(value, abs=1e-12)
    assert 0.05 < ours["map"] < 1.0
    assert ours["category_ids"] == CATEGORY_IDS
    # Per-category AP@[.5:.95] averages to the overall AP.
    assert np.nanmean(ours["ap"]) == pytest.approx(ours["map"], abs=1e-12)


def test_results_use_original_category_ids_and_xywh():
    det = np.array([[10.0, 20.0, 40.0, 60.0, 0.87654321, 2]])
    (entry,) = coco_results([7], [det], CATEGORY_IDS)
    assert entry == {"image_id": 7, "category_id": 90, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.87654}


def test_no_detections_and_verbose(capsys):
    records, _ = random_records(3)
    out = evaluate_coco(coco_ground_truth(records, CATEGORY_IDS, ["a", "b", "c"]), [], verbose=True)
    assert out["map"] == 0.0 and out["ar100"] == 0.0
    assert "Average Precision" in capsys.readouterr().out


def test_difficult_boxes_are_ignored_regions():
    rec = FakeRecord(None, np.array([[0, 0, 50, 50], [100, 100, 150, 150]], np.float32), np.array([0, 0]),
                     np.array([False, True]), 1, "/x/1.jpg", 200, 200)
    gt = coco_ground_truth([rec], CATEGORY_IDS, ["a", "b", "c"])
    on_both = np.array([[0, 0, 50, 50, 0.9, 0], [100, 100, 150, 150, 0.8, 0]])
    # The detection on the difficult box is neither a hit nor a false positive: AP stays 1.
    assert evaluate_coco(gt, coco_results([1], [on_both], CATEGORY_IDS))["map"] == pytest.approx(1.0)


def test_a_hand_made_file_without_iscrowd_area_or_a_box_is_scored(tmp_path):
    """COCOeval reads ``iscrowd`` and ``area`` of every annotation and ``bbox`` of each: a file that leaves them
    out (labelling tools' exports often do) is scored with none a crowd and the boxes' areas, and annotations
    without a usable box are left out, as the dataset leaves them out; before, pycocotools failed on them."""
    from yolo_attn.eval.coco import load_coco_ground_truth

    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20]},  # small: 400 px
                   {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 60, 60], "iscrowd": 0},  # medium
                   {"id": 3, "image_id": 1, "category_id": 1, "bbox": None},
                   {"id": 4, "image_id": 1, "category_id": 1},
                   {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 2, "x", 4]}]
    path = tmp_path / "hand_made.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "1.jpg", "height": 200, "width": 200}],
                                "categories": [{"id": 1, "name": "a"}], "annotations": annotations}))
    gt = load_coco_ground_truth(path)
    assert [(a["bbox"], a["area"], a["iscrowd"]) for a in gt.dataset["annotations"]] == [
        ([0, 0, 20, 20], 400, 0), ([100, 100, 60, 60], 3600, 0)]
    hits = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [100, 100, 60, 60], "score": 0.8}]
    out = evaluate_coco(gt, hits)
    assert (out["map"], out["map_small"], out["map_medium"]) == (pytest.approx(1.0),) * 3
    assert math.isnan(out["map_large"])
