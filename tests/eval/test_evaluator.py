"""The model evaluator: box mapping end to end (oracle model), scoring, outputs, bad images, real model."""
import contextlib
import io
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolo_attn.eval import evaluate, evaluate_detections, format_class_table, format_summary
from yolo_attn.models import build_model

from ..models.helpers import RectangleFinder
from .eval_fakes import FakeDataset, FakeRecord, OracleModel, make_dataset, perfect_predictions

IMG = 96


def test_perfect_predictions_score_one_and_map_back_to_original_pixels():
    ds = make_dataset(num_images=6, num_classes=3, category_ids=[5, 9, 17])
    model = OracleModel(ds, IMG, perfect_predictions(ds))
    out = evaluate(model, ds, img_size=IMG, batch_size=4, verbose=False)
    assert out["voc07_map50"] == pytest.approx(1.0)
    assert out["voc12_map50"] == pytest.approx(1.0)
    assert out["coco_map"] == pytest.approx(1.0)
    assert out["images"] == 6 and out["image_ids"] == [f"img{i:03d}" for i in range(6)]
    for det, ann in zip(out["detections"], ds.annotations):
        assert len(det) == len(ann.boxes)
        order = np.lexsort((det[:, 0], det[:, 5]))
        ref = np.lexsort((ann.boxes[:, 0], ann.labels))
        np.testing.assert_allclose(det[order, :4], ann.boxes[ref], atol=0.02)  # letterbox undone exactly
        np.testing.assert_array_equal(det[order, 5], ann.labels[ref])
    rows = {r["class"]: r for r in out["classes"]}
    labels = np.concatenate([a.labels for a in ds.annotations])
    for c in range(3):
        assert rows[f"class{c}"]["ground_truths"] == int((labels == c).sum())
        assert rows[f"class{c}"]["detections"] == int((labels == c).sum())
        assert rows[f"class{c}"]["images"] == sum(int((a.labels == c).any()) for a in ds.annotations)


def test_stretched_inputs_map_back_per_axis():
    """resize="stretch" (Darknet's detector map): every image fills the input; boxes come back by each axis's
    own scale. The same detections read as letterboxed land elsewhere."""
    ds = make_dataset(num_images=6, num_classes=3)
    shapes = []

    class Recording(OracleModel):
        def forward(self, x):
            shapes.append(tuple(x.shape[2:]))
            return super().forward(x)

    out = evaluate(Recording(ds, IMG, perfect_predictions(ds), resize="stretch"), ds, img_size=IMG, batch_size=4,
                   verbose=False, resize="stretch")
    assert out["voc12_map50"] == pytest.approx(1.0) and out["coco_map"] == pytest.approx(1.0)
    assert set(shapes) == {(IMG, IMG)}
    for det, ann in zip(out["detections"], ds.annotations):
        order, ref = np.lexsort((det[:, 0], det[:, 5])), np.lexsort((ann.boxes[:, 0], ann.labels))
        np.testing.assert_allclose(det[order, :4], ann.boxes[ref], atol=0.02)
    misread = evaluate(OracleModel(ds, IMG, perfect_predictions(ds), resize="stretch"), ds, img_size=IMG,
                       batch_size=4, verbose=False)
    assert misread["coco_map"] < 0.9
    with pytest.raises(ValueError, match="unknown resize 'squash'; use one of letterbox, stretch, darknet-letterbox"):
        evaluate(OracleModel(ds, IMG, perfect_predictions(ds)), ds, img_size=IMG, verbose=False, resize="squash")
    with pytest.raises(ValueError, match=r"img_size 100: .* multiples of 32 \(e.g. 128\)"):
        evaluate(OracleModel(ds, IMG, perfect_predictions(ds)), ds, img_size=100, verbose=False)


def test_scores_equal_the_voc_function_on_devkit_coordinates():
    """Shifted, missed and extra boxes with varied scores: the evaluator's VOC numbers equal
    evaluate_detections on the same boxes converted to devkit coordinates (x1 + 1, y1 + 1, x2, y2)."""
    ds = make_dataset(num_images=8, num_classes=3, seed=1)
    rng = np.random.default_rng(0)
    preds, rows, gts = [], [], {}
    for a in ds.annotations:
        keep = rng.random(len(a.boxes)) < 0.8
        boxes = a.boxes[keep] + rng.normal(0, 2.0, size=(keep.sum(), 4)).astype(np.float32)
        scores = rng.uniform(0.05, 0.99, size=keep.sum())
        preds.append((boxes, a.labels[keep], scores))
        gts[a.image_id] = [(int(l), b[0] + 1, b[1] + 1, b[2], b[3], False) for b, l in zip(a.boxes, a.labels)]
    out = evaluate(OracleModel(ds, IMG, preds), ds, img_size=IMG, metrics=("voc07", "voc12"), verbose=False)
    for image_id, det in zip(out["image_ids"], out["detections"]):
        rows += [(image_id, int(d[5]), float(d[4]), d[0] + 1, d[1] + 1, d[2], d[3]) for d in det]
    for key, use_07 in (("voc07_map50", True), ("voc12_map50", False)):
        ref = evaluate_detections(rows, gts, 3, use_07_metric=use_07)
        assert out[key] == pytest.approx(ref["map"], abs=1e-12)
        assert 0.2 < out[key] < 1.0
    assert "coco_map" not in out


@pytest.mark.parametrize("x_shift,expected_ap", [(3.4, 0.0), (3.2, 1.0)])
def test_voc_iou_on_records_is_their_continuous_iou(x_shift, expected_ap):
    """Records are 0-based continuous boxes; in devkit coordinates (x1 + 1, y1 + 1, x2, y2) the devkit's
    +1 IoU equals their plain IoU. GT [10, 10, 20, 20] and the same box moved right by 3.4 px: IoU
    66 / 134 = 0.493, not a match (without the conversion the +1 would make it 0.528, a match); 3.2 px: 0.515."""
    gt = np.array([[10, 10, 20, 20]], np.float32)
    ds = FakeDataset([FakeRecord(None, gt, np.array([0]), np.array([False]), 0, "/fake/0.jpg", IMG, IMG)], ["a"])
    preds = [(gt + np.float32([x_shift, 0, x_shift, 0]), np.array([0]), np.array([0.9]))]
    out = evaluate(OracleModel(ds, IMG, preds), ds, img_size=IMG, metrics=("voc07", "voc12"), verbose=False)
    assert out["voc07_map50"] == out["voc12_map50"] == expected_ap


def test_writes_results_json_that_pycocotools_scores_the_same(tmp_path):
    ds = make_dataset(num_images=6, num_classes=3, seed=2, category_ids=[3, 8, 40])
    ds.annotations[0].difficult[:] = True
    rng = np.random.default_rng(1)
    preds = [(a.boxes + rng.normal(0, 1.5, a.boxes.shape).astype(np.float32), a.labels,
              rng.uniform(0.1, 1, len(a.labels))) for a in ds.annotations]
    out = evaluate(OracleModel(ds, IMG, preds), ds, img_size=IMG, output_dir=tmp_path, verbose=False)
    assert set(out["files"]) == {"predictions", "pr_curve", "confusion_matrix", "metrics"}
    assert (tmp_path / "pr_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((tmp_path / "predictions.json").read_text())
    assert {r["category_id"] for r in results} <= {3, 8, 40}
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["voc12_map50"] == pytest.approx(out["voc12_map50"])
    # Ground truth written by hand as a COCO file, difficult boxes as crowd regions; pycocotools directly.
    anns = []
    for a in ds.annotations:
        for b, label, difficult in zip(a.boxes.tolist(), a.labels, a.difficult):
            anns.append({"id": len(anns) + 1, "image_id": a.image_id, "category_id": [3, 8, 40][label],
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1]),
                         "iscrowd": int(difficult)})
    gt_file = tmp_path / "gt.json"
    gt_file.write_text(json.dumps({
        "images": [{"id": a.image_id, "width": a.width, "height": a.height} for a in ds.annotations],
        "annotations": anns, "categories": [{"id": c} for c in (3, 8, 40)]}))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "predictions.json")), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert out["coco_map"] == pytest.approx(ev.stats[0], abs=1e-12)
    assert out["coco_map50"] == pytest.approx(ev.stats[1], abs=1e-12)
    assert out["coco_ar100"] == pytest.approx(ev.stats[8], abs=1e-12)


def test_bad_image_is_reported_and_skipped(capsys):
    ds = make_dataset(num_images=5, num_classes=2, bad=[1])
    good = [i for i in range(5) if i != 1]
    model = OracleModel(make_dataset(num_images=5, num_classes=2), IMG, perfect_predictions(ds))
    model.outputs = [model.outputs[i] for i in good]  # the oracle is fed only the images that load
    out = evaluate(model, ds, img_size=IMG, batch_size=2, verbose=True)
    assert out["images"] == 4
    assert out["skipped"] == ["/fake/img001.jpg: truncated JPEG (no end-of-image marker)"]
    assert "img001.jpg" in capsys.readouterr().err
    assert out["voc12_map50"] == pytest.approx(1.0)  # its ground truth is left out along with it


def test_a_split_none_of_whose_images_loads_is_an_error():
    """It scored nothing and reported 0 images and mAP 0, which reads as a model that finds nothing."""
    ds = make_dataset(num_images=2, num_classes=2, bad=[0, 1])
    model = OracleModel(make_dataset(num_images=2, num_classes=2), IMG, [])
    with pytest.raises(ValueError, match=r"none of the 2 images could be loaded.*img000.jpg: truncated JPEG"):
        evaluate(model, ds, img_size=IMG, batch_size=2, verbose=False)


def test_class_count_mismatch_is_a_clear_error():
    ds = make_dataset(num_images=2, num_classes=3)
    with pytest.raises(ValueError, match="predicts 2 classes but the dataset has 3"):
        evaluate(build_model(0, 2), ds, img_size=IMG, verbose=False)


@pytest.mark.parametrize("amp_dtype,workers", [(None, 0), (torch.bfloat16, 2)])
def test_random_model_runs_and_reports(amp_dtype, workers):
    torch.manual_seed(0)
    ds = make_dataset(num_images=4, num_classes=2)
    model = build_model(2, 2).train()  # phi 2 (CBAM); evaluation must not leave it in eval mode
    out = evaluate(model, ds, img_size=IMG, batch_size=2, workers=workers, amp_dtype=amp_dtype, verbose=False)
    assert model.training
    assert out["images"] == 4 and len(out["detections"]) == 4
    assert all(d.shape[1] == 6 and len(d) <= 300 for d in out["detections"])
    for det, ann in zip(out["detections"], ds.annotations):  # clipped to the original image
        assert (det[:, [0, 2]] >= 0).all() and (det[:, [0, 2]] <= ann.width).all()
        assert (det[:, [1, 3]] >= 0).all() and (det[:, [1, 3]] <= ann.height).all()
    for key in ("voc07_map50", "voc12_map50", "coco_map", "coco_map50"):
        assert 0.0 <= out[key] <= 1.0
    assert all(out["speed"][k] > 0 for k in ("preprocess", "inference", "postprocess"))
    table = format_class_table(out)
    assert table.splitlines()[1].split()[:2] == ["all", "4"] and "class1" in table
    assert "VOC12 mAP@0.5" in format_summary(out) and "ms inference" in format_summary(out)


def test_empty_dataset_gives_nan_not_a_crash():
    ds = make_dataset(num_images=0, num_classes=2)
    out = evaluate(build_model(0, 2), ds, img_size=IMG, verbose=False)
    assert out["images"] == 0 and math.isnan(out["voc12_map50"]) and math.isnan(out["coco_map"])
    format_class_table(out), format_summary(out)


def test_checkpoint_preprocess_settings_are_used():
    """The port's weights expect bicubic resizing; the pad value shows in the padded band of a wide image."""
    box = np.array([[5, 5, 20, 20]], np.float32)
    ds = FakeDataset([FakeRecord(None, box, np.array([0]), np.array([False]), 0, "/f/0.jpg", 48, 96)], ["a"])
    model = OracleModel(ds, IMG, perfect_predictions(ds))
    seen = []
    model.register_forward_hook(lambda module, args, output: seen.append(args[0].clone()))
    out = evaluate(model, ds, img_size=IMG, preprocess={"interpolation": "bicubic", "pad_value": 0}, verbose=False)
    assert out["voc12_map50"] == pytest.approx(1.0)
    x = seen[0][0]
    assert x[:, :24].abs().max() == 0 and x[:, -24:].abs().max() == 0  # rows above and below the image
    with pytest.raises(ValueError, match="unknown interpolation 'fancy'"):
        evaluate(OracleModel(ds, IMG, perfect_predictions(ds)), ds, img_size=IMG, preprocess={"interpolation": "fancy"})


class _RectangleDataset(FakeDataset):
    """Black images, each with one red rectangle: its box is the ground truth (class 0)."""

    def load_record(self, index: int) -> FakeRecord:
        ann = self.annotations[index]
        image = np.zeros((ann.height, ann.width, 3), np.uint8)
        x1, y1, x2, y2 = ann.boxes[0].astype(int)
        image[y1:y2, x1:x2, 0] = 255
        return replace(ann, image=image)


def test_test_time_augmentation_maps_every_view_back_to_the_original_image():
    """A model that really looks at the pixels (it boxes the red rectangle), evaluated with three views (1,
    1.3 mirrored, 0.83) on images of several shapes: every view's box lands on the ground truth in original
    pixels (one box per image after NMS), and the model ran once per view and batch."""
    shapes, boxes = [(90, 120), (128, 70), (100, 100)], [(10, 20, 50, 60), (30, 8, 60, 100), (55, 40, 95, 80)]
    ds = _RectangleDataset([FakeRecord(None, np.array([b], np.float32), np.array([0]), np.array([False]), i,
                                       f"/f/{i}.png", h, w) for i, ((h, w), b) in enumerate(zip(shapes, boxes))],
                           ["rect"])
    model = RectangleFinder()
    sizes = []
    model.register_forward_hook(lambda module, args, output: sizes.append(tuple(args[0].shape[2:])))
    out = evaluate(model, ds, img_size=IMG, batch_size=2, verbose=False, scale_x_y=model.scale_x_y,
                   augment=True)
    assert sizes == [(96, 96), (128, 128), (64, 64)] * 2  # two batches, three views each
    assert out["voc12_map50"] == pytest.approx(1.0)
    for det, box in zip(out["detections"], boxes):
        assert len(det) == 1
        np.testing.assert_allclose(det[0, :4], box, atol=3.0)
    with pytest.raises(ValueError, match="3 scales but 2 flips"):
        evaluate(model, ds, img_size=IMG, augment=True, augment_scales=[1, 2, 3], augment_flips=[True, False])
