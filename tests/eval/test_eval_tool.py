"""tools/eval.py end to end (checkpoints and YOLO-txt / COCO datasets the tests write), and COCO data scored
against its own annotation JSON."""
import contextlib
import importlib.util
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolo_attn.models import build_model
from yolo_attn.models.darknet import save_darknet_weights, write_darknet_cfg
from yolo_attn.utils.checkpoint import make_meta, save_checkpoint

pytest.importorskip("yolo_attn.data.config", reason="the data package (load_data_config, build_dataset)")

from yolo_attn.data.config import build_dataset, load_data_config  # noqa: E402
from yolo_attn.eval import evaluate  # noqa: E402

from .eval_fakes import NAMES, OracleModel, perfect_predictions, write_yolo_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def load_tool():
    spec = importlib.util.spec_from_file_location("eval_tool", ROOT / "tools" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_tool_end_to_end(tmp_path, capsys):
    config = write_yolo_dataset(tmp_path / "ds")
    torch.manual_seed(0)
    model = build_model(3, len(NAMES))  # phi 3 (ECA), random weights
    weights = tmp_path / "model.pt"
    save_checkpoint({"meta": make_meta(model, NAMES, img_size=96), "model": model.state_dict(), "ema": None}, weights)
    project = tmp_path / "runs"
    args = ["--weights", str(weights), "--data", str(config), "--batch-size", "2", "--workers", "0",
            "--project", str(project)]
    assert load_tool().main(args) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.split()[:4] == ["class", "images", "truths", "detections"])
    assert "AP50 VOC07" in header and "AP50-95 COCO" in header
    all_row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["all"])
    assert all_row[1:3] == ["4", "8"]  # images, ground truths
    assert "VOC07 mAP@0.5" in out and "VOC12 mAP@0.5" in out and "COCO  mAP@[.5:.95]" in out
    assert "ms pre-process" in out and "ms inference" in out and "ms post-process" in out
    run_dir = project / "exp"
    results = json.loads((run_dir / "predictions.json").read_text())
    assert results and {r["category_id"] for r in results} <= {1, 2}  # YOLO category ids: label + 1
    # the COCO results format, not what pycocotools' loadRes adds to the dicts it scores (area, id, segmentation)
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} for r in results)
    assert (run_dir / "pr_curve.png").stat().st_size > 1000
    assert json.loads((run_dir / "metrics.json").read_text())["images"] == 4
    # A second run never overwrites the first; --metric limits what is computed.
    assert load_tool().main(args + ["--metric", "voc12", "--no-save-json"]) == 0
    out = capsys.readouterr().out
    assert "VOC12 mAP@0.5" in out and "VOC07" not in out and "COCO" not in out
    assert (project / "exp2" / "pr_curve.png").exists() and not (project / "exp2" / "predictions.json").exists()
    # --augment: the views reach the evaluator and the summary line names them
    assert load_tool().main(args + ["--metric", "voc12", "--augment", "--augment-scales", "1", "0.5",
                                    "--augment-flips", "1", "0"]) == 0
    out = capsys.readouterr().out
    assert "test-time augmentation: scales 1 0.5, flips 1 0" in out
    plain, augmented = (json.loads((project / run / "metrics.json").read_text()) for run in ("exp2", "exp3"))
    assert augmented["images"] == 4
    assert [c["detections"] for c in augmented["classes"]] != [c["detections"] for c in plain["classes"]]


def test_eval_tool_darknet_weights_take_the_dataset_names(tmp_path, capsys, monkeypatch):
    import yolo_attn.eval.run as run_module

    config = write_yolo_dataset(tmp_path / "ds", num_images=2)
    model = build_model(0, len(NAMES))
    save_darknet_weights(model, tmp_path / "tiny.weights")
    args = ["--weights", str(tmp_path / "tiny.weights"), "--data", str(config), "--img-size", "64",
            "--workers", "0", "--metric", "voc07", "--project", str(tmp_path / "runs")]
    assert load_tool().main(args) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:1] == ["disc"] for line in out.splitlines())
    # by default they run as yolov4-tiny.cfg says (no cfg beside them): stretched, Darknet's greedy DIoU NMS,
    # which keeps every box plain IoU NMS keeps, and close neighbours too
    assert load_tool().main(args + ["--nms", "iou"]) == 0
    default, iou = (json.loads((tmp_path / "runs" / run / "metrics.json").read_text()) for run in ("exp", "exp2"))
    counts = [sum(c["detections"] for c in m["classes"]) for m in (iou, default)]
    assert counts[1] > counts[0] > 0
    # the flags reach the evaluator; a cfg with letter_box=1 and no nms_kind letterboxes as Darknet does and runs
    # Darknet's IoU NMS
    seen = {}
    real = run_module.evaluate
    monkeypatch.setattr(run_module, "evaluate", lambda *a, **kw: seen.update(kw) or real(*a, **kw))
    assert load_tool().main(args) == 0
    assert (seen["resize"], seen["nms"]) == ("stretch", "darknet")
    assert load_tool().main(args + ["--resize", "letterbox", "--nms", "iou"]) == 0
    assert (seen["resize"], seen["nms"]) == ("letterbox", "iou")
    write_darknet_cfg(model, tmp_path / "tiny.cfg", 64, 64, letter_box=True, nms="iou")
    assert load_tool().main(args) == 0
    assert (seen["resize"], seen["nms"]) == ("darknet-letterbox", "darknet-iou")


def write_coco_dataset(root: Path) -> Path:
    """Two images; category ids 1 and 3 (a gap); image 7 has a crowd region, which records leave out."""
    (root / "val").mkdir(parents=True)
    images, anns = [], []
    for image_id in (7, 9):
        cv2.imwrite(str(root / "val" / f"{image_id}.jpg"), np.full((80, 96, 3), 90, np.uint8))
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 96, "height": 80})
        for category_id, bbox in ((1, [10, 12, 20, 18]), (3, [50, 40, 40, 30])):  # block: medium by its box
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": category_id, "bbox": bbox,
                         "area": bbox[2] * bbox[3] * 0.7, "iscrowd": 0})  # mask area, as in COCO's files
    anns.append({"id": len(anns) + 1, "image_id": 7, "category_id": 1, "bbox": [60, 2, 30, 20], "area": 500.0,
                 "iscrowd": 1})
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val.json").write_text(json.dumps(
        {"images": images, "annotations": anns,
         "categories": [{"id": 1, "name": "disc"}, {"id": 3, "name": "block"}]}))
    config = root / "coco.yaml"
    config.write_text(f"format: coco\nroot: {root}\ntrain: val\nval: val\n")
    return config


def test_coco_data_is_scored_against_its_own_json(tmp_path):
    """evaluate(coco_gt=the JSON) gives the official numbers: the JSON's mask areas put the block (a 40x30 box,
    mask area 840) among the small objects, where the records' box area makes it medium. A detection on the
    crowd region is ignored either way (the records keep it as a difficult box, an iscrowd region)."""
    config = write_coco_dataset(tmp_path / "coco")
    ds = build_dataset(load_data_config(config), "val")
    assert ds.category_ids == [1, 3]
    preds = perfect_predictions(ds)
    crowd = np.array([[60, 2, 90, 22]], np.float32)
    preds[0] = (np.concatenate([preds[0][0], crowd]), np.r_[preds[0][1], 0], np.r_[preds[0][2], 0.95])
    ann_file = tmp_path / "coco" / "annotations" / "instances_val.json"
    official = evaluate(OracleModel(ds, 96, preds), ds, img_size=96, metrics=("coco",), coco_gt=ann_file,
                        output_dir=tmp_path / "out", verbose=False)
    from_records = evaluate(OracleModel(ds, 96, preds), ds, img_size=96, metrics=("coco",), verbose=False)
    assert official["coco_map"] == pytest.approx(1.0) and from_records["coco_map"] == pytest.approx(1.0)
    assert np.isnan(official["coco_map_medium"]) and from_records["coco_map_medium"] == pytest.approx(1.0)  # no medium
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        ev = COCOeval(gt, gt.loadRes(str(tmp_path / "out" / "predictions.json")), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    np.testing.assert_allclose([official[f"coco_{k}"] for k in ("map", "map50", "map_small", "ar100")],
                               ev.stats[[0, 1, 3, 8]], atol=1e-12)


def test_annotation_ids_from_zero_are_scored_like_any_other(tmp_path):
    """COCOeval reads a matched ground-truth id 0 as "unmatched": the box with id 0 (exports often count from
    0) could never be found, scoring perfect predictions below 1."""
    config = write_coco_dataset(tmp_path / "coco")
    ann_file = tmp_path / "coco" / "annotations" / "instances_val.json"
    data = json.loads(ann_file.read_text())
    for k, ann in enumerate(data["annotations"]):
        ann["id"] = k
    ann_file.write_text(json.dumps(data))
    ds = build_dataset(load_data_config(config), "val")
    official = evaluate(OracleModel(ds, 96, perfect_predictions(ds)), ds, img_size=96, metrics=("coco",),
                        coco_gt=ann_file, verbose=False)
    assert official["coco_map"] == pytest.approx(1.0) and official["coco_ar100"] == pytest.approx(1.0)


def test_training_scores_coco_data_against_its_own_json(tmp_path, monkeypatch):
    """The trainer's per-epoch COCO mAP (and so best.pt) was scored against the records, where a detection on
    a crowd region is a false positive; tools/eval.py against the JSON."""
    import yolo_attn.engine.trainer as trainer
    from yolo_attn.engine.config import load_train_config

    config = write_coco_dataset(tmp_path / "coco")
    seen = []
    real = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **kw: seen.append(kw.get("coco_gt")) or real(*a, **kw))
    cfg = dict(data=str(config), img_size=64, batch_size=2, workers=0, epochs=1, time=None, eval_batch_size=2,
               phi=0, amp=False, ema=False, project=str(tmp_path / "runs"))
    trainer.train(load_train_config(None, cfg))
    assert len(seen) == 1 and seen[0] is not None
    assert len(seen[0].getAnnIds(iscrowd=True)) == 1  # the JSON's crowd region is there to be ignored


def test_training_scores_coco_val_by_the_train_splits_class_names(tmp_path, monkeypatch):
    """A COCO config without names, whose val JSON numbers the categories otherwise (disc 5, block 2 against
    train's disc 1, block 3): val once numbered its classes by its own ids, so the model's class 0 (disc) was
    scored as block. Val now takes train's classes by name."""
    import yolo_attn.engine.trainer as trainer
    from yolo_attn.engine.config import load_train_config

    config = write_coco_dataset(tmp_path / "coco")
    data = json.loads((tmp_path / "coco/annotations/instances_val.json").read_text())
    renumber = {1: 5, 3: 2}
    data["categories"] = [{"id": renumber[c["id"]], "name": c["name"]} for c in data["categories"]]
    for ann in data["annotations"]:
        ann["category_id"] = renumber[ann["category_id"]]
    (tmp_path / "coco/annotations/instances_other.json").write_text(json.dumps(data))
    (tmp_path / "coco/other").symlink_to(tmp_path / "coco/val")
    config.write_text(config.read_text().replace("val: val", "val: other"))
    seen = []

    class Stop(Exception):
        pass

    def evaluate_stub(model, dataset, **kw):
        seen.append(dataset)
        raise Stop

    monkeypatch.setattr(trainer, "evaluate", evaluate_stub)
    cfg = dict(data=str(config), img_size=64, batch_size=2, workers=0, epochs=1, time=None, eval_batch_size=2,
               phi=0, amp=False, ema=False, project=str(tmp_path / "runs"))
    with pytest.raises(Stop):
        trainer.train(load_train_config(None, cfg))
    (val,) = seen
    assert val.names == ["disc", "block"] and val.category_ids == [5, 2]
    first = val.records[0]
    disc = first.boxes.tolist().index([10.0, 12.0, 30.0, 30.0])
    assert first.labels[disc] == 0


def test_eval_tool_on_coco_data(tmp_path, capsys):
    config = write_coco_dataset(tmp_path / "coco")
    model = build_model(0, 2)
    weights = tmp_path / "m.pt"
    save_checkpoint({"meta": make_meta(model, ["disc", "block"], img_size=64), "model": model.state_dict()}, weights)
    args = ["--weights", str(weights), "--data", str(config), "--workers", "0", "--project", str(tmp_path / "runs")]
    assert load_tool().main(args) == 0
    results = json.loads((tmp_path / "runs" / "exp" / "predictions.json").read_text())
    assert {r["category_id"] for r in results} <= {1, 3} and {r["image_id"] for r in results} <= {7, 9}
    assert "COCO  mAP@[.5:.95]" in capsys.readouterr().out


def write_two_coco_exports(root: Path) -> Path:
    """Two COCO exports in one split, each numbering its single image 1 (as CVAT or Roboflow do): image 1 of
    export a has a disc and a crowd region; image 1 of export b is empty."""
    for part, anns in (("a", [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 12, 30, 30], "area": 900,
                               "iscrowd": 0},
                              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 50, 30, 20], "area": 600,
                               "iscrowd": 1}]),
                       ("b", [])):
        (root / part).mkdir(parents=True)
        cv2.imwrite(str(root / part / "img.jpg"), np.full((80, 96, 3), 90, np.uint8))
        (root / f"{part}.json").write_text(json.dumps(
            {"images": [{"id": 1, "file_name": "img.jpg", "width": 96, "height": 80}], "annotations": anns,
             "categories": [{"id": 1, "name": "disc"}]}))
    config = root / "coco.yaml"
    config.write_text(f"format: coco\nroot: {root}\ntrain: val\n"
                      "val:\n  - {images: a, annotations: a.json}\n  - {images: b, annotations: b.json}\n")
    return config


def test_coco_exports_with_the_same_image_ids_stay_apart(tmp_path):
    """Image ids that repeat across a split's JSONs get the entry's prefix, and the split is scored against its
    JSONs merged: a false positive on b's image must not match a's disc, and a detection on a's crowd region is
    ignored. Expected, by hand: a false positive (0.95) then the true disc (0.9): AP50 0.5."""
    from yolo_attn.eval import load_coco_ground_truth

    config = write_two_coco_exports(tmp_path / "coco")
    ds = build_dataset(load_data_config(config), "val")
    assert [ds.get_annotation(i).image_id for i in range(len(ds))] == ["0:1", "1:1"]
    disc = np.array([[10, 12, 40, 42]], np.float32)
    preds = [(np.concatenate([disc, [[60, 50, 90, 70]]]), np.array([0, 0]), np.array([0.9, 0.93])),
             (disc, np.array([0]), np.array([0.95]))]
    gt = load_coco_ground_truth(ds.annotation_files, ds.id_prefixes)
    result = evaluate(OracleModel(ds, 96, preds), ds, img_size=96, metrics=("coco", "voc12"), coco_gt=gt,
                      verbose=False)
    assert result["coco_map50"] == pytest.approx(0.5, abs=1e-6)
    # The records keep the crowd region as a difficult box: scored against them, the same (before, 1/3: the
    # crowd detection was one more false positive); and VOC's AP ignores it too
    from_records = evaluate(OracleModel(ds, 96, preds), ds, img_size=96, metrics=("coco",), verbose=False)
    assert from_records["coco_map50"] == pytest.approx(0.5, abs=1e-6)
    assert result["voc12_map50"] == pytest.approx(0.5, abs=1e-6)


def test_repeated_image_ids_are_scored_by_position(tmp_path, capsys):
    """Folders that name their images alike (two VOC years with the same ids): without a JSON of its own the
    COCO ground truth would merge the two images; the evaluator scores them by position and says so."""
    config = write_yolo_dataset(tmp_path / "ds", num_images=2)
    ds = build_dataset(load_data_config(config), "val")
    first = ds.get_annotation(0)
    for record in ds.records:
        record.image_id = "000001"
    empty = ds.records[1]
    empty.boxes, empty.labels, empty.difficult = np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, bool)
    preds = [(first.boxes, first.labels, np.full(len(first.labels), 0.5)),
             (first.boxes[:1], first.labels[:1], np.array([0.95]))]  # a false positive where image 0 has a box
    result = evaluate(OracleModel(ds, 64, preds), ds, img_size=64, metrics=("coco", "voc12"), verbose=False)
    assert "image ids repeat in this split (e.g. '000001')" in capsys.readouterr().err
    assert result["coco_map50"] < 0.99
    assert result["coco_map50"] == pytest.approx(result["voc12_map50"], abs=0.02)


def test_eval_tool_on_a_split_of_two_coco_exports(tmp_path):
    config = write_two_coco_exports(tmp_path / "coco")
    model = build_model(0, 1)
    weights = tmp_path / "m.pt"
    save_checkpoint({"meta": make_meta(model, ["disc"], img_size=64), "model": model.state_dict()}, weights)
    args = ["--weights", str(weights), "--data", str(config), "--workers", "0", "--project", str(tmp_path / "runs"),
            "--conf", "0.0001"]
    assert load_tool().main(args) == 0
    results = json.loads((tmp_path / "runs" / "exp" / "predictions.json").read_text())
    assert results and {r["image_id"] for r in results} <= {"0:1", "1:1"}


def test_eval_tool_errors_are_one_line(tmp_path, capsys):
    config = write_yolo_dataset(tmp_path / "ds", num_images=1)
    model = build_model(0, 2)
    weights = tmp_path / "m.pt"
    save_checkpoint({"meta": make_meta(model, NAMES, img_size=64), "model": model.state_dict()}, weights)
    args = ["--weights", str(weights), "--data", str(config), "--workers", "0", "--project", str(tmp_path / "runs")]
    assert load_tool().main(args + ["--split", "test"]) == 1
    assert "error: the data config has no split 'test' (it has: train, val)" in capsys.readouterr().err
    assert load_tool().main(args + ["--device", "tpu9"]) == 1
    assert "error: unknown device 'tpu9'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # found by the evaluator, after the results folder was claimed: it is taken back, not left empty
    assert load_tool().main(args + ["--img-size", "100"]) == 1
    assert "error: img_size 100: " in capsys.readouterr().err
    assert not any((tmp_path / "runs").iterdir())
    # a root that is not there fails at load, naming it; --root gives the dataset's folder in its place
    moved = tmp_path / "moved.yaml"
    moved.write_text(config.read_text().replace(f"root: {config.parent}", "root: /nowhere/ds"))
    assert load_tool().main(args[:2] + ["--data", str(moved), "--workers", "0"]) == 1
    assert f"error: {moved}: `root: /nowhere/ds` (the dataset folder) is not a folder" in capsys.readouterr().err
    assert load_tool().main(args[:2] + ["--data", str(moved), "--root", str(config.parent), "--workers", "0",
                                        "--project", str(tmp_path / "runs"), "--metric", "voc12"]) == 0
    assert "VOC12 mAP@0.5" in capsys.readouterr().out
    # a missing weights file: how to get some, in the words tools/predict.py uses
    assert load_tool().main(["--weights", str(tmp_path / "none.pt"), "--data", str(config)]) == 1
    assert "none.pt: no such weights file. Get weights by training (`python tools/train.py`)" in capsys.readouterr().err
