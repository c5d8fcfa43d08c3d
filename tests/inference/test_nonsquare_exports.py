"""An OpenVINO export picked beside a checkpoint converted from a non-square Darknet cfg runs at that cfg's
(h, w), static or dynamic, and with its resize and NMS, as the checkpoint itself does."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from yolo_attn.inference.detector import Detector
from yolo_attn.utils.checkpoint import load_checkpoint

from ..models.helpers import convert_darknet, write_wide_darknet
from .helpers import NAMES

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino not installed (the openvino extra)")


@needs_openvino
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_export_chosen_beside_a_converted_non_square_checkpoint_keeps_its_shape(tmp_path, dynamic):
    """use_exports picks the export and the detector runs at 96x192, the checkpoint's own shape, not a square of
    its larger side (a static export, fixed to 96x192, was then passed over for torch; a dynamic one ran square)."""
    from yolo_attn.inference.export import export_model

    ckpt = convert_darknet(write_wide_darknet(tmp_path, NAMES))
    assert load_checkpoint(ckpt)["meta"]["input_shape"] == [96, 192]
    assert Detector.load(ckpt, backend="torch", precision="fp32").input_shape == (96, 192)
    out = export_model(ckpt, "openvino", dynamic=dynamic, log=lambda s: None)
    detector = Detector.load(ckpt, use_exports=True)
    assert detector.backend.name == "openvino" and detector.choice.weights == out
    assert detector.input_shape == (96, 192)
    image = np.random.default_rng(0).integers(0, 255, (120, 300, 3), dtype=np.uint8)
    assert detector(image).input_shape == (96, 192)


@needs_openvino
def test_export_chosen_beside_a_checkpoint_runs_as_the_checkpoint_does(tmp_path):
    """An export made with --resize / --nms runs its own way when named, and the checkpoint's way when it
    stands in for the checkpoint (use_exports), as its size does; flags still decide over both."""
    from yolo_attn.inference.export import export_model

    ckpt = convert_darknet(write_wide_darknet(tmp_path, NAMES))  # Darknet's way: stretch, greedy DIoU NMS
    out = export_model(ckpt, "openvino", resize="darknet-letterbox", nms="iou", log=lambda s: None)
    named = Detector.load(out)
    assert (named.resize, named.nms) == ("darknet-letterbox", "iou")
    standing_in = Detector.load(ckpt, use_exports=True)
    assert standing_in.choice.weights == out
    assert (standing_in.resize, standing_in.nms) == ("stretch", "darknet")
    told = Detector.load(ckpt, use_exports=True, resize="letterbox", nms="darknet-iou")
    assert (told.choice.weights, told.resize, told.nms) == (out, "letterbox", "darknet-iou")
