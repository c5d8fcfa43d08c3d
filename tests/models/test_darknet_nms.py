"""Darknet's greedy DIoU NMS (``nms_kind=greedynms``) and its default IoU NMS (no ``nms_kind``) against
line-by-line ports of src/box.c's loops."""
import math

import numpy as np
import pytest
import torch
from torchvision.ops import batched_nms

from yolo_attn.data.letterbox import letterbox
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


def darknet_box_iou(a, b):
    """box.c box_iou on (x, y, w, h) centre boxes."""
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    iw = min(ax + aw / 2, bx + bw / 2) - max(ax - aw / 2, bx - bw / 2)
    ih = min(ay + ah / 2, by + bh / 2) - max(ay - ah / 2, by - bh / 2)
    inter = iw * ih if iw > 0 and ih > 0 else 0.0
    union = aw * ah + bw * bh - inter
    return 0.0 if inter == 0 or union == 0 else inter / union


def darknet_diounms_sort(xywh, probs, thresh, overlap=darknet_box_diou):
    """box.c diounms_sort for GREEDY_NMS: per class, sort by that class's probability and zero the
    probability of every later detection whose box_diou with a surviving one exceeds ``thresh``. With
    ``overlap=darknet_box_iou`` it is do_nms_sort (Darknet's default NMS), the same loop over box_iou."""
    probs = probs.copy()
    n, classes = probs.shape
    for k in range(classes):
        order = sorted(range(n), key=lambda i: -probs[i, k])
        for ii, i in enumerate(order):
            if probs[i, k] == 0:
                continue
            for j in order[ii + 1:]:
                if overlap(xywh[i], xywh[j]) > thresh:
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


@pytest.mark.parametrize("seed", range(4))
def test_darknet_iou_keeps_what_do_nms_sort_keeps(seed):
    """postprocess(nms="darknet-iou", multi_label=True) on objectness 1 and Darknet's class probabilities: the
    (box, class) pairs do_nms_sort leaves above zero, a box under every class it keeps."""
    rng = np.random.default_rng(seed)
    n, classes = 50, 3
    centres, sizes = rng.uniform(20, 100, (n, 2)), rng.uniform(8, 40, (n, 2))
    probs = rng.permutation(n * classes).reshape(n, classes) / (n * classes) + 1e-3
    probs[probs <= 0.3] = 0
    expected = darknet_diounms_sort(np.concatenate([centres, sizes], axis=1), probs, 0.45, darknet_box_iou)
    decoded = torch.zeros(1, n, 5 + classes, dtype=torch.float64)
    decoded[0, :, :4] = torch.tensor(np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1))
    decoded[0, :, 4] = 1.0
    decoded[0, :, 5:] = torch.tensor(probs)
    kept = postprocess(decoded, 0.3, 0.45, multi_label=True, nms="darknet-iou")[0]
    rows = [int((decoded[0, :, :4] == box).all(1).nonzero()) for box in kept[:, :4]]
    got = sorted(zip(rows, kept[:, 5].long().tolist()))
    assert got == sorted(zip(*map(np.ndarray.tolist, np.nonzero(expected))))
    assert len({r for r, _ in got}) < len(got)  # boxes kept under two classes
    # the greedy DIoU NMS over the same pairs is another NMS: it keeps more here
    assert len(postprocess(decoded, 0.3, 0.45, multi_label=True, nms="darknet")[0]) > len(got)


def test_postprocess_judges_diou_relative_to_the_image():
    """Darknet judges DIoU on boxes relative to the image (x / width, y / height), which a letterbox scales
    unevenly: two boxes of a 1000x250 image overlapping by 70 of 100 rows have DIoU 0.408 there (kept), 0.496
    in the letterboxed input's pixels (merged)."""
    _, info = letterbox(np.zeros((250, 1000, 3), np.uint8), 416)
    image_boxes = np.array([[300.0, 50, 700, 150], [300, 80, 700, 180]])
    sx, sy = info.scales
    decoded = torch.zeros(1, 2, 6, dtype=torch.float64)
    decoded[0, :, :4] = torch.tensor(image_boxes * [sx, sy, sx, sy] + [info.pad_x, info.pad_y] * 2)
    decoded[0, :, 4], decoded[0, :, 5] = torch.tensor([0.9, 0.8]), 1.0
    relative = [[(b[0] + b[2]) / 2000, (b[1] + b[3]) / 500, (b[2] - b[0]) / 1000, (b[3] - b[1]) / 250]
                for b in image_boxes]
    assert darknet_box_diou(*relative) == pytest.approx(0.408, abs=1e-3)
    assert len(postprocess(decoded, 0.25, 0.45, nms="darknet", nms_scales=[info.image_relative])[0]) == 2
    assert len(postprocess(decoded, 0.25, 0.45, nms="darknet")[0]) == 1


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
