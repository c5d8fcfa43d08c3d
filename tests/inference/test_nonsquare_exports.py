"""An OpenVINO export picked beside a checkpoint converted from a non-square Darknet cfg runs at that cfg's
(h, w), static or dynamic, as the checkpoint itself does."""
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
