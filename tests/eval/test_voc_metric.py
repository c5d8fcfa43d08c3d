"""VOC AP: hand-computed cases, devkit edge cases, and agreement with a plain loop implementation."""
import math
import time

import numpy as np
import pytest

from yolo_attn.eval.voc import evaluate_detection_arrays, evaluate_detections, voc_ap


# --- A second implementation, written straight from the devkit description (voc_eval.py), loops only.

def reference_voc_ap(rec, prec, use_07_metric):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0.0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def reference_evaluate(detections, ground_truths, num_classes, iou_threshold=0.5, use_07_metric=True):
    aps = []
    for c in range(num_classes):
        records, npos = {}, 0
        for image_id, rows in ground_truths.items():
            boxes = [r[1:5] for r in rows if r[0] == c]
            difficult = [bool(r[5]) for r in rows if r[0] == c]
            records[image_id] = {"bbox": np.array(boxes, dtype=float).reshape(-1, 4),
                                 "difficult": difficult, "det": [False] * len(boxes)}
            npos += sum(not d for d in difficult)
        dets = [d for d in detections if d[1] == c]
        dets = sorted(dets, key=lambda d: -d[2])  # Python's sort is stable: ties keep input order
        tp = np.zeros(len(dets))
        fp = np.zeros(len(dets))
        for k, (image_id, _, _, *bb) in enumerate(dets):
            rec = records.get(image_id, {"bbox": np.zeros((0, 4)), "difficult": [], "det": []})
            ovmax, jmax = -np.inf, -1
            for j, g in enumerate(rec["bbox"]):
                iw = max(min(g[2], bb[2]) - max(g[0], bb[0]) + 1.0, 0.0)
                ih = max(min(g[3], bb[3]) - max(g[1], bb[1]) + 1.0, 0.0)
                inter = iw * ih
                union = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                         + (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0) - inter)
                if inter / union > ovmax:
                    ovmax, jmax = inter / union, j
            if ovmax > iou_threshold:
                if not rec["difficult"][jmax]:
                    if not rec["det"][jmax]:
                        tp[k] = 1
                        rec["det"][jmax] = True
                    else:
                        fp[k] = 1
            else:
                fp[k] = 1
        if npos == 0:
            aps.append(float("nan"))
            continue
        fp, tp = np.cumsum(fp), np.cumsum(tp)
        rec = tp / float(npos)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps.append(reference_voc_ap(rec, prec, use_07_metric))
    valid = [a for a in aps if not math.isnan(a)]
    return (float(np.mean(valid)) if valid else float("nan")), aps


def random_case(seed, num_images=12, num_classes=4):
    """Clustered boxes so that overlaps near the threshold, duplicates and difficult matches all happen."""
    rng = np.random.default_rng(seed)
    ground_truths, detections = {}, []
    for i in range(num_images):
        image_id = f"img{i}" if seed % 2 else i
        rows = []
        for _ in range(rng.integers(0, 6)):
            x1, y1 = rng.integers(1, 60, size=2).astype(float)
            w, h = rng.integers(3, 40, size=2)
            rows.append((int(rng.integers(num_classes)), x1, y1, x1 + w, y1 + h, bool(rng.random() < 0.2)))
        ground_truths[image_id] = rows
        for _ in range(rng.integers(0, 10)):
            if rows and rng.random() < 0.7:  # a jittered copy of a ground truth, sometimes of the wrong class
                c, *box, _ = rows[rng.integers(len(rows))]
                box = np.array(box) + rng.normal(0, 3, size=4)
                c = c if rng.random() < 0.8 else int(rng.integers(num_classes))
            else:
                x1, y1 = rng.uniform(1, 60, size=2)
                box = np.array([x1, y1, x1 + rng.uniform(2, 40), y1 + rng.uniform(2, 40)])
                c = int(rng.integers(num_classes))
            score = float(rng.choice([0.3, 0.5, 0.9])) if seed % 3 == 0 else float(rng.random())  # ties too
            detections.append((image_id, c, score, *map(float, box)))
    # Detections on an image that has no ground-truth entry at all.
    detections.append(("unlisted" if seed % 2 else 10_000, 0, 0.95, 5.0, 5.0, 20.0, 20.0))
    return detections, ground_truths, num_classes


@pytest.mark.parametrize("use_07_metric", [True, False])
def test_agrees_with_loop_implementation_over_many_seeds(use_07_metric):
    for seed in range(150):
        detections, ground_truths, num_classes = random_case(seed)
        for thr in (0.5, 0.3):
            ours = evaluate_detections(detections, ground_truths, num_classes, thr, use_07_metric)
            ref_map, ref_ap = reference_evaluate(detections, ground_truths, num_classes, thr, use_07_metric)
            np.testing.assert_allclose(ours["ap"], ref_ap, rtol=0, atol=1e-9, equal_nan=True, err_msg=f"seed {seed}")
            if math.isnan(ref_map):
                assert math.isnan(ours["map"])
            else:
                assert abs(ours["map"] - ref_map) < 1e-9, f"seed {seed}"


def test_11_point_and_area_ap_differ_as_computed_by_hand():
    # One class, two ground truths; ranked detections: TP, FP, TP.
    # Recall 0.5, 0.5, 1.0; precision 1, 1/2, 2/3.
    # 11-point: t in 0..0.5 (6 points) -> 1, t in 0.6..1.0 (5 points) -> 2/3: (6 + 5 * 2/3) / 11 = 28/33.
    # Area: 0.5 * 1 + 0.5 * 2/3 = 5/6.
    gts = {"a": [(0, 1, 1, 10, 10, False), (0, 21, 21, 30, 30, False)]}
    dets = [("a", 0, 0.9, 1, 1, 10, 10), ("a", 0, 0.8, 50, 50, 60, 60), ("a", 0, 0.7, 21, 21, 30, 30)]
    assert evaluate_detections(dets, gts, 1, use_07_metric=True)["ap"][0] == pytest.approx(28 / 33, abs=1e-12)
    assert evaluate_detections(dets, gts, 1, use_07_metric=False)["ap"][0] == pytest.approx(5 / 6, abs=1e-12)


def test_pixel_inclusive_iou_decides_the_match():
    # x spans [1, 10] and [4, 13], y [1, 10] for both: pixel-inclusive IoU 7*10 / (100 + 100 - 70) = 0.538,
    # where continuous boxes would give 6*9 / (81 + 81 - 54) = 0.5, not above the threshold.
    gts = {0: [(0, 1, 1, 10, 10, False)]}
    assert evaluate_detections([(0, 0, 0.9, 4, 1, 13, 10)], gts, 1, 0.5)["ap"][0] == pytest.approx(1.0)
    assert evaluate_detections([(0, 0, 0.9, 4, 1, 13, 10)], gts, 1, 0.55)["ap"][0] == 0.0


def test_difficult_is_neither_true_nor_false_positive():
    gts = {0: [(0, 1, 1, 10, 10, False), (0, 31, 31, 40, 40, True)]}
    # The detection on the difficult box is ignored: precision stays 1 and AP is 1.
    dets = [(0, 0, 0.9, 31, 31, 40, 40), (0, 0, 0.8, 1, 1, 10, 10)]
    out = evaluate_detections(dets, gts, 1, use_07_metric=False)
    assert out["ap"][0] == pytest.approx(1.0)
    assert out["num_gt"] == [1]  # difficult boxes do not count towards recall
    # A class whose only ground truth is difficult has no ground truth: NaN, left out of the mAP.
    only_difficult = evaluate_detections([(0, 0, 0.9, 1, 1, 10, 10)], {0: [(0, 1, 1, 10, 10, True)]}, 1)
    assert math.isnan(only_difficult["ap"][0]) and math.isnan(only_difficult["map"])


def test_duplicates_are_false_positives():
    gts = {0: [(0, 1, 1, 10, 10, False)]}
    dets = [(0, 0, 0.9, 1, 1, 10, 10), (0, 0, 0.8, 1, 1, 10, 10), (0, 0, 0.7, 1, 1, 10, 11)]
    out = evaluate_detections(dets, gts, 1, use_07_metric=False)
    np.testing.assert_allclose(out["precision"][0], [1, 1 / 2, 1 / 3])
    np.testing.assert_allclose(out["recall"][0], [1, 1, 1])
    assert out["ap"][0] == pytest.approx(1.0)
    # A duplicate of a matched box is a false positive even when another, unmatched ground truth overlaps
    # it less: the devkit only looks at the best-overlapping one.
    gts = {0: [(0, 1, 1, 10, 10, False), (0, 3, 1, 12, 10, False)]}
    dets = [(0, 0, 0.9, 1, 1, 10, 10), (0, 0, 0.8, 1, 1, 10, 10)]
    assert evaluate_detections(dets, gts, 1, use_07_metric=False)["ap"][0] == pytest.approx(0.5)


def test_nan_overlap_is_a_false_positive_as_in_the_devkit():
    """A degenerate ground truth (devkit width x2 - x1 + 1 = 0) or a NaN detection gives a NaN IoU; the devkit's
    np.max is then NaN, which fails the threshold: a false positive, not a crash."""
    gts = {0: [(0, 10, 10, 9, 20, False), (0, 30, 30, 60, 60, False)]}
    dets = [(0, 0, 0.9, 10, 10, 9, 20), (0, 0, 0.8, 30, 30, 60, 60)]
    out = evaluate_detections(dets, gts, 1, use_07_metric=True)
    np.testing.assert_allclose(out["precision"][0], [0, 1 / 2])
    assert out["ap"][0] == pytest.approx(6 * 0.5 / 11)  # precision 0.5 at recall points 0, 0.1, ..., 0.5
    dets = [(0, 0, 0.9, float("nan"), 1, 10, 10), (0, 0, 0.8, 1, 1, 10, 10)]
    out = evaluate_detections(dets, {0: [(0, 1, 1, 10, 10, False)]}, 1, use_07_metric=False)
    np.testing.assert_allclose(out["precision"][0], [0, 1 / 2])
    assert out["ap"][0] == pytest.approx(0.5)


def test_class_without_ground_truth_and_class_without_detections():
    gts = {0: [(0, 1, 1, 10, 10, False), (2, 1, 1, 10, 10, False)]}
    dets = [(0, 0, 0.9, 1, 1, 10, 10), (0, 1, 0.9, 1, 1, 10, 10)]  # class 1 has no ground truth
    out = evaluate_detections(dets, gts, 3)
    assert out["ap"][0] == pytest.approx(1.0)
    assert math.isnan(out["ap"][1])  # detections but no ground truth: NaN, not in the mAP
    assert out["ap"][2] == 0.0  # ground truth but no detections
    assert out["map"] == pytest.approx(0.5)
    assert out["num_det"] == [1, 1, 0] and out["num_gt"] == [1, 0, 1]


def test_empty_inputs():
    out = evaluate_detections([], {}, 3)
    assert math.isnan(out["map"]) and all(math.isnan(a) for a in out["ap"])
    out = evaluate_detections([], {"a": [(1, 1, 1, 5, 5, False)], "b": []}, 3)
    assert out["ap"][1] == 0.0 and out["map"] == 0.0
    out = evaluate_detections([("a", 0, 0.5, 1, 1, 5, 5)], {}, 2)
    assert math.isnan(out["map"]) and out["num_det"] == [1, 0]


def test_class_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="outside 0..1"):
        evaluate_detections([(0, 2, 0.5, 1, 1, 5, 5)], {}, 2)


def test_a_negative_image_index_is_a_clear_error():
    """Image -1 of class 1 once shared its grouping key with image 1 of class 0: a detection there took that
    image's ground truth as a true positive."""
    box = np.array([[1.0, 1.0, 10.0, 10.0]])
    args = ([-1], [1], [0.9], box, [1], [0], box, [False], 2)
    with pytest.raises(ValueError, match="detection image index -1 is negative"):
        evaluate_detection_arrays(*args)
    with pytest.raises(ValueError, match="ground truth image index -2 is negative"):
        evaluate_detection_arrays([1], [1], [0.9], box, [-2], [0], box, [False], 2)


def test_voc_ap_direct():
    assert voc_ap(np.array([]), np.array([]), True) == 0.0
    assert voc_ap(np.array([1.0]), np.array([1.0]), True) == pytest.approx(1.0)
    assert voc_ap(np.array([0.5]), np.array([1.0]), False) == pytest.approx(0.5)
    assert voc_ap(np.array([0.5]), np.array([1.0]), True) == pytest.approx(6 / 11)


def voc07_sized_case(seed=0, num_images=5000, per_image=100, num_classes=20):
    rng = np.random.default_rng(seed)
    ground_truths = {}
    for i in range(num_images):
        n = rng.integers(1, 6)
        xy = rng.uniform(1, 300, size=(n, 2))
        wh = rng.uniform(10, 200, size=(n, 2))
        cls = rng.integers(num_classes, size=n)
        difficult = rng.random(n) < 0.1
        ground_truths[f"{i:06d}"] = [(int(c), *map(float, np.r_[p, p + s]), bool(d))
                                     for c, p, s, d in zip(cls, xy, wh, difficult)]
    ids = np.repeat([f"{i:06d}" for i in range(num_images)], per_image)
    xy = rng.uniform(1, 300, size=(ids.size, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(10, 200, size=(ids.size, 2))], axis=1)
    detections = list(zip(ids.tolist(), rng.integers(num_classes, size=ids.size).tolist(),
                          rng.random(ids.size).tolist(), *boxes.T.tolist()))
    return detections, ground_truths, num_classes


def test_voc07_test_size_is_fast():
    """5,000 images x 100 detections x 20 classes: under 2 s unloaded; the bound allows for shared cores."""
    detections, ground_truths, num_classes = voc07_sized_case()
    start = time.perf_counter()
    out = evaluate_detections(detections, ground_truths, num_classes)
    elapsed = time.perf_counter() - start
    assert sum(out["num_det"]) == len(detections)
    assert elapsed < 6.0, f"{elapsed:.2f} s"
