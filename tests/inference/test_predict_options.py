"""tools/predict.py's Ultralytics options: --vid-stride, --agnostic-nms, --save-crop, --line-width, --hide-labels,
--hide-conf and --exist-ok."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

from yolo_attn.inference.detector import Detections, Detector
from yolo_attn.inference.draw import draw_detections
from yolo_attn.inference.fastproc import decode_nms
from yolo_attn.inference.predict import _save_crops
from yolo_attn.models.decode import decode_outputs, postprocess

from .helpers import count_frames, make_checkpoint, run_predict_tool, write_images, write_video


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "cbam.pt", phi=2, objectness_bias=0.0)


_run = run_predict_tool


def test_vid_stride_predicts_every_nth_frame_under_its_own_number(ckpt, tmp_path):
    video = write_video(tmp_path / "clip.mp4", frames=7, size=(160, 120), fps=12.0)
    assert _run(ckpt, video, tmp_path / "runs", "--save-txt", "--save-json") == 0
    assert _run(ckpt, video, tmp_path / "runs", "--save-txt", "--save-json", "--vid-stride", "3") == 0
    every, strided = tmp_path / "runs" / "exp", tmp_path / "runs" / "exp2"
    assert sorted(p.name for p in (strided / "labels").iterdir()) == ["clip_0.txt", "clip_3.txt", "clip_6.txt"]
    texts = {i: (every / "labels" / f"clip_{i}.txt").read_text() for i in range(7)}
    assert len(set(texts.values())) == 7  # every frame finds other boxes: a wrong frame would show
    for i in (0, 3, 6):
        assert (strided / "labels" / f"clip_{i}.txt").read_text() == texts[i]
    assert {r["frame"] for r in json.loads((strided / "predictions.json").read_text())} == {0, 3, 6}
    # the video keeps its length: 3 frames at a third of the fps
    assert count_frames(strided / "clip.mp4") == 3
    capture = cv2.VideoCapture(str(strided / "clip.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(4.0)
    capture.release()


def test_vid_stride_must_be_positive(ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _run(ckpt, tmp_path, tmp_path / "runs", "--vid-stride", "0")
    assert "--vid-stride: 0 is not at least 1" in capsys.readouterr().err


def _same_box_two_classes(num_classes=3):
    """Raw maps of one 416 input where two anchors of one cell predict the same 100x100 box, one as class 0
    (score about 0.9), the other as class 1 (about 0.8)."""
    anchors = [[(81, 82), (135, 169), (344, 319)], [(23, 27), (37, 58), (81, 82)]]
    maps = [torch.full((1, 3 * (5 + num_classes), s, s), -20.0) for s in (13, 26)]
    p = maps[0].view(1, 3, 5 + num_classes, 13, 13)
    for a, (cls, score) in enumerate([(0, 0.9), (1, 0.8)]):
        p[0, a, 0:2, 6, 6] = 0.0  # centre of the cell
        p[0, a, 2] = -20.0
        p[0, a, 2, 6, 6] = math.log(100 / anchors[0][a][0])
        p[0, a, 3, 6, 6] = math.log(100 / anchors[0][a][1])
        p[0, a, 4, 6, 6] = 20.0  # objectness 1
        p[0, a, 5 + cls, 6, 6] = math.log(score / (1 - score))
    return maps, anchors


def test_agnostic_nms_keeps_one_of_two_classes_on_one_box():
    maps, anchors = _same_box_two_classes()
    for agnostic, classes in ((False, [0, 1]), (True, [0])):
        fast = decode_nms(maps, anchors, (32, 16), 1.0, 0.25, 0.45, agnostic=agnostic)[0]
        assert fast[:, 5].long().tolist() == classes
        decoded = decode_outputs(maps, anchors, (32, 16), 1.0)
        for nms in ("iou", "darknet", "darknet-iou"):
            kept = postprocess(decoded, 0.25, 0.45, nms=nms, agnostic=agnostic)[0]
            assert kept[:, 5].long().tolist() == classes, nms
        torch.testing.assert_close(fast[:, :5], kept[:, :5])


def test_agnostic_nms_reaches_the_detector_from_the_command_line(ckpt, tmp_path):
    image = write_images(tmp_path / "in", 1)[0]
    assert _run(ckpt, image, tmp_path / "runs", "--no-save", "--save-txt", "--agnostic-nms", "--conf", "0.1") == 0
    rows = np.loadtxt(tmp_path / "runs" / "exp" / "labels" / "img0.txt", ndmin=2)
    aware = Detector.load(ckpt, conf=0.1)
    agnostic = Detector.load(ckpt, conf=0.1)
    agnostic.agnostic = True
    expected = agnostic(image)
    assert "class-agnostic NMS" in agnostic.describe()
    assert len(expected) < len(aware(image))  # the test image has overlapping boxes of different classes
    np.testing.assert_array_equal(rows[:, 0].astype(int), expected.labels)
    np.testing.assert_allclose(rows[:, 2:6], expected.boxes, atol=0.01)


def test_save_crop_writes_each_box_from_the_unannotated_image(ckpt, tmp_path):
    # smooth colours, which JPEG keeps closely, and no two places alike
    y, x = np.mgrid[0:120, 0:160]
    image = tmp_path / "ramp.png"
    cv2.imwrite(str(image), np.stack([x * 1.5, y * 2, (x + y) * 0.9], axis=2).astype(np.uint8))
    assert _run(ckpt, image, tmp_path / "runs", "--save-crop") == 0
    out = tmp_path / "runs" / "exp"
    det = Detector.load(ckpt)(image)
    assert len(det) > 1
    pixels = cv2.imread(str(image))
    h, w = pixels.shape[:2]
    written = 0
    for k, (box, name) in enumerate(zip(det.boxes, det.names)):
        x1, y1 = max(math.floor(box[0]), 0), max(math.floor(box[1]), 0)
        x2, y2 = min(math.ceil(box[2]), w), min(math.ceil(box[3]), h)
        crop = cv2.imread(str(out / "crops" / name / f"ramp_{k}.jpg"))
        if x2 <= x1 or y2 <= y1:  # a box in the letterbox padding holds no pixel of the image
            assert crop is None
            continue
        assert crop.shape == (y2 - y1, x2 - x1, 3)
        # JPEG changes pixels a little; a crop of the annotated image, or of another place, a lot
        assert np.abs(crop.astype(int) - pixels[y1:y2, x1:x2]).mean() < 3
        written += 1
    assert len(list((out / "crops").rglob("*.jpg"))) == written > 1


def test_save_crop_names_and_boxes_outside_the_image(tmp_path):
    image = np.full((50, 80, 3), 255, np.uint8)
    det = Detections(boxes=np.array([[-10, -5, 20, 30], [90, 0, 120, 10], [10, 10, 11, 11]], np.float32),
                     scores=np.ones(3, np.float32), labels=np.array([0, 1, 2]),
                     names=["traffic/light", "a", "b:c"], image_shape=(50, 80))
    assert _save_crops(tmp_path, image, det, "x") == 2  # the second box lies wholly outside the image
    assert cv2.imread(str(tmp_path / "crops" / "traffic_light" / "x_0.jpg")).shape == (30, 20, 3)
    assert cv2.imread(str(tmp_path / "crops" / "b_c" / "x_2.jpg")).shape == (1, 1, 3)
    assert not (tmp_path / "crops" / "a").exists()


def _changed(image, drawn):
    return int((image != drawn).any(axis=2).sum())


def test_line_width_and_hidden_labels_and_scores():
    image = np.full((200, 300, 3), 128, np.uint8)
    args = (np.array([[50, 80, 250, 180]], np.float32), np.array([0.87], np.float32), np.array([0]), ["dog"])
    full = _changed(image, draw_detections(image, *args, line_width=2))
    no_conf = _changed(image, draw_detections(image, *args, line_width=2, hide_conf=True))
    boxes_only = draw_detections(image, *args, line_width=2, hide_labels=True)
    bare = _changed(image, boxes_only)
    assert full > no_conf > bare > 0
    assert (boxes_only[:75] == 128).all()  # nothing above the box: no label
    assert _changed(image, draw_detections(image, *args, line_width=6, hide_labels=True)) > 1.5 * bare


def test_exist_ok_writes_into_the_named_folder(ckpt, tmp_path, capsys):
    image = write_images(tmp_path / "in", 1)[0]
    for _ in range(2):
        assert _run(ckpt, image, tmp_path / "runs", "--save-txt", "--exist-ok") == 0
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["exp"]
    assert sorted(p.name for p in (tmp_path / "runs" / "exp").iterdir()) == ["img0.png", "labels"]
    (tmp_path / "runs" / "file").write_text("not a folder")
    assert _run(ckpt, image, tmp_path / "runs", "--exist-ok", "--name", "file") == 1
    assert "runs/file: a file stands where the results folder goes" in capsys.readouterr().err


def test_yolo_txt_format_writes_labels_that_train(ckpt, tmp_path):
    """--txt-format yolo (Ultralytics' --save-txt): class, centre and size as fractions of the image, the score
    only with --save-conf; read back by the YOLO label reader, they are the detections' boxes."""
    from yolo_attn.data import records as R
    from yolo_attn.data.yolo_txt import parse_label_file

    image = write_images(tmp_path / "in", 1)[0]  # 160x120
    assert _run(ckpt, image, tmp_path / "runs", "--no-save", "--save-txt", "--txt-format", "yolo") == 0
    assert _run(ckpt, image, tmp_path / "runs", "--no-save", "--save-txt", "--txt-format", "yolo",
                "--save-conf") == 0
    det = Detector.load(ckpt)(image)
    plain = tmp_path / "runs" / "exp" / "labels" / "img0.txt"
    boxes, labels = parse_label_file(plain, ["cat", "dog", "bird"], 120, 160, R.ProblemLog())
    np.testing.assert_array_equal(labels, det.labels)
    np.testing.assert_allclose(boxes, det.boxes, atol=1e-3)
    assert {len(line.split()) for line in plain.read_text().splitlines()} == {5}
    rows = np.loadtxt(tmp_path / "runs" / "exp2" / "labels" / "img0.txt", ndmin=2)
    np.testing.assert_allclose(rows[:, 5], det.scores, atol=1e-5)
