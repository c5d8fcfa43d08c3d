"""Numerical equivalence with an independent Darknet implementation: OpenCV 4.10's Darknet importer.

OpenCV 5 dropped ``cv2.dnn.readNetFromDarknet``, so OpenCV 4.10 runs in its own environment, in a
subprocess: set YOLO_ATTN_OPENCV4_PYTHON to its Python (.ci/run creates /tmp/yolo_attn_opencv4 with
``opencv-python-headless==4.10.0.84`` and sets it). The same random weights, written in Darknet's format,
must give the same raw head maps (``conv_29``, ``conv_36``) and the same decoded boxes (``yolo_30``,
``yolo_37``) as our model and :func:`decode_outputs`; so must the files ``tools/export.py --format darknet``
writes for a model with custom anchors, masks and ``scale_x_y``.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from yolo_attn.inference.export import export_darknet
from yolo_attn.models import build_model, decode_outputs
from yolo_attn.models.darknet import save_darknet_weights, write_darknet_cfg
from yolo_attn.utils.checkpoint import make_meta

from .helpers import randomize_bn

pytestmark = pytest.mark.oracle

ENV_VAR = "YOLO_ATTN_OPENCV4_PYTHON"
OFFICIAL_CFG = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "yolov4-tiny.cfg"
SCORE_THRESHOLD = 0.2  # OpenCV's yolo layer zeroes obj * class probability at or below this

# Runs under OpenCV 4.10's Python: one network per job, the raw maps and the yolo layers saved to .npz.
ORACLE_SCRIPT = """
import json, sys
import cv2, numpy as np
for job in json.load(open(sys.argv[1])):
    net = cv2.dnn.readNetFromDarknet(job["cfg"], job["weights"])
    image = np.load(job["image"])  # BGR, as cv2.imread gives
    blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (image.shape[1], image.shape[0]), swapRB=True, crop=False)
    net.setInput(blob)
    names = ["conv_29", "conv_36", "yolo_30", "yolo_37"]
    np.savez(job["out"], **dict(zip(names, net.forward(names))), version=cv2.__version__)
"""


def _oracle_python() -> str:
    python = os.environ.get(ENV_VAR)
    if not python:
        pytest.skip(f"{ENV_VAR} is not set: point it at a Python with opencv-python-headless==4.10.0.84 "
                    "(.ci/run creates one at /tmp/yolo_attn_opencv4)")
    probe = subprocess.run(
        [python, "-c", "import cv2; cv2.dnn.readNetFromDarknet; print(cv2.__version__)"],
        capture_output=True, text=True, timeout=60,
    )
    if probe.returncode:
        pytest.skip(f"{ENV_VAR}={python} has no cv2.dnn.readNetFromDarknet (needs OpenCV 4.x): "
                    f"{(probe.stderr.strip().splitlines() or ['no error output'])[-1]}")
    return python


CUSTOM_ANCHORS = [(12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146)]
CUSTOM_MASKS = [(3, 4, 5), (0, 1, 2)]


def _random_darknet_model(num_classes: int = 80, anchors=None, masks=None) -> nn.Module:
    """phi=0, random weights and BN statistics (so BN matters); head outputs spread over a few units, so
    sigmoids and the score threshold are exercised across their range."""
    torch.manual_seed(0)
    model = build_model(0, num_classes, anchors, masks)
    randomize_bn(model)
    with torch.no_grad():
        for pred in (model.head_p5.pred, model.head_p4.pred):
            pred.weight.mul_(8)
            pred.bias.normal_(0, 1)
    return model.eval()


CASES = {"416x416": ("ours", 416, 416), "320x416": ("ours", 320, 416), "exported-custom-320": ("export", 320, 320)}
EXPORT_SCALE_X_Y = 2.0  # the multi assigner's decoding, which Darknet's scale_x_y expresses exactly
if OFFICIAL_CFG.exists():
    CASES["official-416x416"] = ("official", 416, 416)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """Run OpenCV once on every case; returns per case (model, its scale_x_y, input image, OpenCV outputs)."""
    python = _oracle_python()
    tmp = tmp_path_factory.mktemp("opencv_oracle")
    model = _random_darknet_model()
    weights = tmp / "random.weights"
    save_darknet_weights(model, weights)
    custom = _random_darknet_model(20, CUSTOM_ANCHORS, CUSTOM_MASKS)
    meta = make_meta(custom, [f"c{i}" for i in range(20)], scale_x_y=EXPORT_SCALE_X_Y)
    exported = export_darknet(custom, meta, tmp / "custom.pt", tmp / "export", 320, log=lambda s: None)
    models, jobs, rng = {}, [], np.random.default_rng(0)
    for case, (cfg_source, h, w) in CASES.items():
        cfg = OFFICIAL_CFG if cfg_source == "official" else tmp / f"{case}.cfg"
        if cfg_source == "ours":
            write_darknet_cfg(model, cfg, width=w, height=h)
        case_weights = weights
        models[case] = (model, 1.05)
        if cfg_source == "export":
            cfg, case_weights, models[case] = exported.with_suffix(".cfg"), exported, (custom, EXPORT_SCALE_X_Y)
        image = tmp / f"{case}.npy"
        np.save(image, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        jobs.append({"cfg": str(cfg), "weights": str(case_weights), "image": str(image),
                     "out": str(tmp / f"{case}.npz")})
    (tmp / "jobs.json").write_text(json.dumps(jobs))
    (tmp / "oracle.py").write_text(ORACLE_SCRIPT)
    run = subprocess.run([python, str(tmp / "oracle.py"), str(tmp / "jobs.json")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"OpenCV oracle failed:\n{run.stderr[-3000:]}"
    return {case: (*models[case], np.load(job["image"]), dict(np.load(job["out"]))) for case, job in zip(CASES, jobs)}


def _ours(model, image_bgr):
    x = torch.from_numpy(image_bgr[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255  # RGB in [0, 1]
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("case", list(CASES))
def test_raw_head_maps_equal_opencv(oracle, case):
    model, _, image, cv_out = oracle[case]
    assert str(cv_out["version"]).startswith("4.")
    for name, ours in zip(["conv_29", "conv_36"], _ours(model, image)):
        theirs = cv_out[name]
        assert theirs.shape == tuple(ours.shape), name
        worst = np.abs(ours.numpy() - theirs).max() / np.abs(theirs).max()
        # OpenCV folds BN with eps 1e-6 rather than Darknet's 1e-5: about 5e-6 here
        assert worst < 1e-4, f"{case} {name}: worst relative difference {worst:.2e}"


@pytest.mark.parametrize("case", list(CASES))
def test_decoded_boxes_equal_opencv_yolo_layers(oracle, case):
    model, scale_x_y, image, cv_out = oracle[case]
    h, w = image.shape[:2]
    decoded = decode_outputs(_ours(model, image), model.level_anchors(), scale_x_y=scale_x_y)[0].numpy()
    theirs = np.concatenate([cv_out["yolo_30"], cv_out["yolo_37"]])  # rows (y * W + x) * A + a, per head
    assert theirs.shape == decoded.shape

    x1, y1, x2, y2 = decoded[:, :4].T
    boxes = np.stack([(x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h], axis=1)
    # centres to 1e-5 of the input size (scale_x_y = 1.0 would be off by 1e-3); sizes to 1e-4 relative
    np.testing.assert_allclose(boxes[:, :2], theirs[:, :2], rtol=0, atol=1e-5)
    np.testing.assert_allclose(boxes[:, 2:], theirs[:, 2:4], rtol=1e-4)
    np.testing.assert_allclose(decoded[:, 4], theirs[:, 4], atol=1e-4)

    scores = decoded[:, 5:] * decoded[:, 4:5]
    expected = np.where(scores > SCORE_THRESHOLD, scores, 0)
    clear = np.abs(scores - SCORE_THRESHOLD) > 1e-4  # a last-bit difference may flip a score at 0.2
    assert 0.05 < (expected > 0).mean() < 0.95  # both sides of the threshold are exercised
    np.testing.assert_allclose(expected[clear], theirs[:, 5:][clear], atol=1e-4)
