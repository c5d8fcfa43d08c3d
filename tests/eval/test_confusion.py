"""Precision and recall at the best-F1 confidence, and the confusion matrix, on cases worked out by hand."""
import numpy as np
import pytest

from yolo_attn.eval.confusion import best_f1_point, confusion_matrix
from yolo_attn.eval.evaluator import GroundTruth, _score
from yolo_attn.eval.report import format_class_table, format_summary
from yolo_attn.eval.voc import evaluate_detection_arrays

A, B, C, D = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]


def test_best_f1_point_counts_the_detections_at_each_confidence():
    """Class 0: two objects, detections 0.9 (hit), 0.6 (miss), 0.3 (hit); class 1: one object found at 0.8.
    Mean F1 is 0.833 above 0.6, 0.75 from 0.3 to 0.6 and 0.9 at 0.3 and below: the best is the highest
    confidence at or below 0.3, with class 0 at P 2/3, R 1."""
    curves = evaluate_detection_arrays(
        [0, 0, 0, 0], [0, 0, 0, 1], [0.9, 0.6, 0.3, 0.8], np.array([A, D, B, C], float),
        [0, 0, 0], [0, 0, 1], np.array([A, B, C], float), [False] * 3, num_classes=3, use_07_metric=False)
    point = best_f1_point(curves["recall"], curves["precision"], curves["scores"], curves["num_gt"])
    assert point["conf"] == 0.3
    np.testing.assert_allclose(point["precision"][:2], [2 / 3, 1.0])
    np.testing.assert_allclose(point["recall"][:2], [1.0, 1.0])
    assert np.isnan(point["precision"][2])  # no ground truth
    assert point["mean_f1"] == pytest.approx((0.8 + 1.0) / 2)
    assert best_f1_point([np.zeros(0)], [np.zeros(0)], [np.zeros(0)], [0]) is None
    # no true positive: confidence 0, where the precision is the detections' (0), not 1 at a cut keeping none
    none = best_f1_point([np.zeros(3)], [np.zeros(3)], [np.array([0.9, 0.5, 0.1])], [2])
    assert (none["conf"], none["precision"], none["recall"]) == (0.0, [0.0], [0.0])


def test_confusion_matrix_pairs_one_to_one_by_iou_and_ignores_difficult_objects():
    """Image 0: a cat at A (found as a dog), a dog at B (found twice: the tighter box pairs, the other is a
    false alarm), a difficult person at C (a detection on it is not counted), a dog detection at D on
    nothing, and one at B below the confidence. Image 1: a cat nobody found."""
    boxes = [np.array([A, B, C], float), np.array([A], float)]
    labels = [np.array([0, 1, 2]), np.array([0])]
    difficult = [np.array([False, False, True]), np.array([False])]
    dets = [np.array([[*A, 0.9, 1], [20, 0, 30, 10, 0.5, 1], [21, 0, 30, 11, 0.8, 1], [*C, 0.7, 2],
                      [*D, 0.6, 1], [*B, 0.2, 0]], float), np.zeros((0, 6))]
    m = confusion_matrix(boxes, labels, difficult, dets, num_classes=3)
    expected = np.zeros((4, 4), int)
    expected[1, 0] = 1  # the cat, predicted as a dog
    expected[1, 1] = 1  # the dog, by its best-overlapping detection
    expected[1, 3] = 2  # the second dog box at B, and the one at D: background
    expected[3, 0] = 1  # image 1's cat: missed
    np.testing.assert_array_equal(m, expected)


def test_precision_recall_columns_and_summary_line():
    gt = GroundTruth("a", None, 20, 80, np.array([A, B], float), np.array([0, 1]), np.array([False, False]))
    det = np.array([[*A, 0.9, 0], [*C, 0.7, 1], [*B, 0.4, 1]], np.float32)
    result = _score([gt], [det], ["cat", "dog"], [0, 1], [], ("voc12",), None)
    rows = result["classes"]
    assert [rows[0]["precision"], rows[0]["recall"], rows[1]["precision"], rows[1]["recall"]] == [1, 1, 0.5, 1]
    assert result["f1_conf"] <= 0.4 and result["precision"] == 0.75 and result["recall"] == 1.0
    table = format_class_table({**result, "images": 1})
    assert table.splitlines()[0].split()[4:6] == ["P", "R"]
    assert table.splitlines()[1].split()[4:6] == ["0.750", "1.000"]
    summary = format_summary({**result, "images": 1, "skipped": [], "speed": dict.fromkeys(
        ("preprocess", "inference", "postprocess"), 0.0)})
    assert "P 0.750  R 1.000  F1 0.833 at conf 0.400" in summary
    assert np.asarray(result["confusion_matrix"]["matrix"]).tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    # an evaluation cut above 0.25 is the matrix's cut, and says so (the 0.4 dog is left out: missed)
    strict = _score([gt], [det], ["cat", "dog"], [0, 1], [], ("voc12",), None, confusion_conf=0.5)
    assert strict["confusion_matrix"]["conf"] == 0.5
    assert np.asarray(strict["confusion_matrix"]["matrix"]).tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
