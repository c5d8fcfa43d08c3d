"""The OpenVINO int8 graph: each CSP split quantized once (share_slice_quantizers), and the NNCF preset."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from yolo_attn.inference.export import (export_meta, onnx_bytes, openvino_model, quantize_int8,
                                        share_slice_quantizers, synthetic_images)
from yolo_attn.models import build_model
from yolo_attn.utils.checkpoint import make_meta

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
    reason="openvino and nncf not installed (the openvino extra)")
SIZE = 96


def _fp32_model(phi: int = 0):
    torch.manual_seed(0)
    model = build_model(phi, 3).eval()
    meta = export_meta(make_meta(model, ["a", "b", "c"], img_size=SIZE), SIZE, False, "int8", "test")
    return openvino_model(onnx_bytes(model, meta, SIZE, dynamic=False), meta), meta


@pytest.fixture(scope="module")
def fp32_model():
    return _fp32_model()


def _quantized(fp32_model, preset):
    import nncf

    model, meta = fp32_model
    batches = [np.random.default_rng(i).random((1, 3, SIZE, SIZE), dtype=np.float32) for i in range(4)]
    return nncf.quantize(model.clone(), nncf.Dataset(batches), preset=nncf.QuantizationPreset(preset),
                         subset_size=len(batches))


def _csp_slices(model):
    """The CSP blocks' channel slices (phi 4's coordinate attention slices too, but those read no conv)."""
    return [op for op in model.get_ordered_ops() if op.get_type_name() in ("Slice", "StridedSlice")
            and "backbone" in op.get_friendly_name()]


def _slice_inputs(model):
    return [op.input_value(0).get_node().get_type_name() for op in _csp_slices(model)]


def _consumers_of_slices(model):
    return [t.get_node().get_type_name() for op in _csp_slices(model) for t in op.output(0).get_target_inputs()]


def _run(model, x):
    from yolo_attn.inference.backends import _openvino_core

    compiled = _openvino_core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [compiled(x)[out] for out in compiled.outputs]


@pytest.mark.parametrize("phi, preset", [(0, "performance"), (0, "mixed"), (4, "performance")])
def test_each_csp_split_reads_the_quantized_route(phi, preset):
    quantized = _quantized(_fp32_model(phi), preset)
    # as NNCF leaves it: the slice reads the conv's float output, and a quantizer of its own follows it
    assert len(_slice_inputs(quantized)) == 3 and "FakeQuantize" not in _slice_inputs(quantized)
    assert _consumers_of_slices(quantized) == ["FakeQuantize"] * 3
    x = np.random.default_rng(9).random((1, 3, SIZE, SIZE), dtype=np.float32)
    before = _run(quantized, x)

    assert share_slice_quantizers(quantized) == 3  # one per CSP block
    assert _slice_inputs(quantized) == ["FakeQuantize"] * 3
    assert _consumers_of_slices(quantized) == ["Convolution"] * 3
    after = _run(quantized, x)
    # the slice moves to the route quantizer's grid: close to the two-quantizer graph, not equal to it
    for a, b in zip(after, before):
        assert not np.array_equal(a, b)
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
    assert share_slice_quantizers(quantized) == 0  # nothing left to share


def test_quantize_int8_shares_for_openvino_and_checks_the_preset(fp32_model):
    model, meta = fp32_model
    images = synthetic_images(2)
    logs = []
    quantized = quantize_int8(model.clone(), images, meta, SIZE, log=logs.append)
    assert _slice_inputs(quantized) == ["FakeQuantize"] * 3
    assert logs == ["int8: NNCF, performance preset, on 2 images"]
    assert json.loads(quantized.get_rt_info(["yolo_attn"]).astype(str))["quantizer"] == "nncf performance"
    with pytest.raises(ValueError, match="int8 preset must be one of performance, mixed, not 'fast'"):
        quantize_int8(model.clone(), images, meta, SIZE, preset="fast")


def test_quantize_int8_keeps_only_the_letterboxed_images(fp32_model):
    """Each calibration image is read, letterboxed and let go before the next: 12 large originals (6.2 MB
    each) never sit in memory together. Before, 300 such images held 1.9 GB, and a float copy of each input
    0.6 GB more at 416."""
    import tracemalloc

    from yolo_attn.inference.export import CalibrationImages

    model, meta = fp32_model
    base = synthetic_images(3)

    def read(i):
        return np.ascontiguousarray(np.broadcast_to(base[i % 3][:1, :1], (1080, 1920, 3)))  # a 6.2 MB original

    quantize_int8(model.clone(), base[:1], meta, SIZE)  # NNCF's imports and caches, not counted below
    tracemalloc.start()
    try:
        quantized = quantize_int8(model.clone(), CalibrationImages(read, 12, "large", print), meta, SIZE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert _slice_inputs(quantized) == ["FakeQuantize"] * 3
    assert peak < 4 * 1080 * 1920 * 3, f"{peak / 2 ** 20:.0f} MB traced at the peak"
