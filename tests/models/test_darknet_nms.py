"""Darknet's greedy DIoU NMS (``nms_kind=greedynms``) against a line-by-line port of src/box.c's loop."""
import math

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms

from yolo_attn.models import darknet_nms, postprocess


def darknet_box_diou(a, b):
    """box.c box_diou on (x, y, w, h) centre boxes: IoU - (d^2 / c^2) ** 0.6."""
    def corners(box):
        x, y, w, h = box
        return x - w / 2, y - h / 2, x + w / 2, y + h / 2

    (al, at, ar, ab), (bl, bt, br, bb) = corners(a), corners(b)
    iw, ih = min(ar, br) - max(al, bl), min(ab, bb) - max(at, bt)
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    union = a[2] * a[3] + b[2] * b[3] - inter
    iou = 0.0 if inter == 0 or union == 0 else inter / union
    c = (max(ar, br) - min(al, bl)) ** 2 + (max(ab, bb) - min(at, bt)) ** 2
    if c == 0:
        return iou
    d = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    return iou - (d / c) ** 0.6


def darknet_diounms_sort(xywh, probs, thresh):
    """box.c diounms_sort for GREEDY_NMS: per class, sort by that class's probability and zero the
    probability of every later detection whose box_diou with a surviving one exceeds ``thresh``."""
    probs = probs.copy()
    n, classes = probs.shape
    for k in range(classes):
        order = sorted(range(n), key=lambda i: -probs[i, k])
        for ii, i in enumerate(order):
            if probs[i, k] == 0:
                continue
            for j in order[ii + 1:]:
                if darknet_box_diou(xywh[i], xywh[j]) > thresh:
                    probs[j, k] = 0
    return probs


@pytest.mark.parametrize("seed", range(6))
def test_keeps_what_darknet_keeps(seed):
    rng = np.random.default_rng(seed)
    n, classes = 60, 3
    centres = rng.uniform(20, 100, (n, 2))
    sizes = rng.uniform(8, 40, (n, 2))
    xywh = np.concatenate([centres, sizes], axis=1)
    # Darknet's probabilities: objectness * class, zeroed at or below the threshold; distinct values (no ties)
    probs = rng.permutation(n * classes).reshape(n, classes) / (n * classes) + 1e-3
    probs[probs <= 0.3] = 0
    expected = darknet_diounms_sort(xywh, probs, 0.45)

    idx, cls = np.nonzero(probs)
    xyxy = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    kept = darknet_nms(torch.tensor(xyxy[idx]), torch.tensor(probs[idx, cls]), torch.tensor(cls), 0.45)
    got = sorted(zip(idx[kept.numpy()].tolist(), cls[kept.numpy()].tolist()))
    assert got == sorted(zip(*map(np.ndarray.tolist, np.nonzero(expected))))
    scores = probs[idx, cls][kept.numpy()]
    assert np.all(np.diff(scores) <= 0)  # by decreasing score
    # it keeps more than plain IoU NMS would, never fewer
    assert len(kept) >= len(batched_nms(torch.tensor(xyxy[idx]), torch.tensor(probs[idx, cls]),
                                        torch.tensor(cls), 0.45))


def test_close_objects_survive_where_iou_nms_merges_them():
    # IoU 70 / 130 = 0.54 > 0.45, but the centres are 3 px apart in a 13 x 10 enclosing box:
    # DIoU = 0.54 - (9 / 269) ** 0.6 = 0.41, so Darknet keeps both.
    boxes = torch.tensor([[0.0, 0, 10, 10], [3, 0, 13, 10]])
    scores, labels = torch.tensor([0.9, 0.8]), torch.tensor([0, 0])
    assert darknet_box_diou((5, 5, 10, 10), (8, 5, 10, 10)) == pytest.approx(70 / 130 - (9 / 269) ** 0.6)
    assert darknet_nms(boxes, scores, labels, 0.45).tolist() == [0, 1]
    assert batched_nms(boxes, scores, labels, 0.45).tolist() == [0]
    assert darknet_nms(boxes, scores, labels, 0.45, max_det=1).tolist() == [0]
    assert darknet_nms(boxes[:0], scores[:0], labels[:0], 0.45).numel() == 0


def test_postprocess_selects_it():
    decoded = torch.zeros(1, 2, 7)
    decoded[0, :, :4] = torch.tensor([[0.0, 0, 10, 10], [3, 0, 13, 10]])
    decoded[0, :, 4] = torch.tensor([0.9, 0.8])
    decoded[0, :, 5] = 1.0
    assert len(postprocess(decoded, 0.25, 0.45, nms="darknet")[0]) == 2
    assert len(postprocess(decoded, 0.25, 0.45)[0]) == 1
    with pytest.raises(ValueError, match="nms must be"):
        postprocess(decoded, nms="diou")
    assert math.isclose(postprocess(decoded, 0.25, 0.45, nms="darknet")[0][1, 4].item(), 0.8, rel_tol=1e-6)


def test_blocks_of_rows_keep_what_one_row_at_a_time_keeps(monkeypatch):
    """Undecided boxes are compared with the later ones in blocks of rows; one row at a time (the plain greedy
    loop) keeps the same boxes (clustered boxes, ties in score included), with and without max_det."""
    import yolo_attn.models.decode as decode

    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 200, (40, 2)).repeat(15, axis=0) + rng.normal(0, 3, (600, 2))
    sizes = rng.uniform(8, 60, (600, 2))
    boxes = torch.tensor(np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1), dtype=torch.float32)
    scores = torch.tensor(rng.integers(1, 200, 600) / 200.0, dtype=torch.float32)  # many ties
    labels = torch.tensor(rng.integers(0, 3, 600))
    blocks = [darknet_nms(boxes, scores, labels, 0.45, max_det) for max_det in (None, 25, 0)]
    monkeypatch.setattr(decode, "_BLOCK_PAIRS", 1)
    rows = [darknet_nms(boxes, scores, labels, 0.45, max_det) for max_det in (None, 25, 0)]
    assert 25 < len(blocks[0]) < 600 and len(blocks[1]) == 25 and len(blocks[2]) == 0
    for a, b in zip(blocks, rows):
        assert torch.equal(a, b)


def test_nms_benchmark_runs(monkeypatch, capsys):
    from benchmarks import darknet_nms as bench

    monkeypatch.setattr(bench, "CASES", [(300, 3, "sparse"), (200, 1, "crowd")])
    assert bench.main(["--repeats", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| 300 ", "| 200 "))]
    assert len(rows) == 2
