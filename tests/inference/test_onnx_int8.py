"""The ONNX int8 export, quantized by ONNX Runtime's own quantizer so that ONNX Runtime runs its convolutions in
int8 (NNCF's graph left every convolution in fp32 there: 43.7 against 10.6 ms at 416)."""
from __future__ import annotations

import importlib.util
import json
import logging

import cv2
import numpy as np
import pytest
import torch

from yolo_attn.data.letterbox import PAD_VALUE, fit_to_input
from yolo_attn.inference.export import export_meta, onnx_bytes, quantize_int8, synthetic_images
from yolo_attn.models import build_model
from yolo_attn.utils.checkpoint import make_meta

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnx and onnxruntime not installed (the export extra)")
SIZE = 96


def _session(data: bytes, optimized=None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def test_onnx_runtime_runs_every_convolution_in_int8(tmp_path, monkeypatch):
    import onnx

    torch.manual_seed(0)
    model = build_model(2, 3).eval()
    meta = export_meta(make_meta(model, ["a", "b", "c"], img_size=SIZE), SIZE, False, "int8", "test")
    fp32 = onnx_bytes(model, meta, SIZE, dynamic=False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a script that has not configured logging (pytest has)
    logs = []
    quantized = quantize_int8(fp32, synthetic_images(4), meta, SIZE, log=logs.append)
    assert logs == ["int8: ONNX Runtime's quantizer (QDQ) on 4 images"]
    assert root.handlers == []  # ONNX Runtime's logging.info() would have added a stderr handler

    graph = onnx.load_from_string(quantized).graph
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    outputs = {o.name for o in graph.output}
    heads = [node for node in graph.node if node.op_type == "Conv" and node.output[0] in outputs]
    convs = [node for node in graph.node if node.op_type == "Conv" and node not in heads]
    # ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv: each output quantized,
    # but the two output maps' (raw box offsets and sizes: not rounded to 256 levels)
    assert len(heads) == 2 and all(consumers.get(head.output[0]) is None for head in heads)
    assert convs and all(consumers[conv.output[0]] == ["QuantizeLinear"] for conv in convs)
    def meta_of(data):
        return {p.key: p.value for p in onnx.load_from_string(data).metadata_props}.get("yolo_attn")

    # the meta travels along, with the quantizer that made the file
    assert json.loads(meta_of(quantized)) == {**json.loads(meta_of(fp32)), "quantizer": "onnxruntime"}
    _session(quantized, tmp_path / "optimized.onnx")
    optimized = [node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]
    assert optimized.count("QLinearConv") == len(convs) and optimized.count("Conv") == len(heads)

    image = fit_to_input(synthetic_images(1, seed=5)[0], SIZE, "letterbox", PAD_VALUE, cv2.INTER_LINEAR)[0]
    x = (image.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)
    ref = _session(fp32).run(None, {"images": x})
    out = _session(quantized).run(None, {"images": x})
    for a, b in zip(out, ref):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    if importlib.util.find_spec("openvino") is not None:  # an .onnx also runs with --backend openvino
        from yolo_attn.inference.backends import OpenVinoBackend

        (tmp_path / "int8.onnx").write_bytes(quantized)
        runner = OpenVinoBackend(tmp_path / "int8.onnx")
        assert runner.precision == "int8"
        for a, b in zip(runner(torch.from_numpy(x)), ref):
            assert np.corrcoef(a.numpy().ravel(), b.ravel())[0, 1] > 0.98


@pytest.mark.skipif(importlib.util.find_spec("nncf") is None, reason="nncf not installed (the openvino extra)")
def test_without_onnx_runtimes_quantizer_nncf_quantizes_and_says_what_that_costs(monkeypatch):
    import sys

    import onnx

    torch.manual_seed(0)
    model = build_model(0, 3).eval()
    meta = export_meta(make_meta(model, ["a", "b", "c"], img_size=SIZE), SIZE, False, "int8", "test")
    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)  # importing it raises ImportError
    with pytest.warns(UserWarning, match="quantizing with NNCF, whose graph ONNX Runtime runs in fp32"):
        quantized = quantize_int8(onnx_bytes(model, meta, SIZE, dynamic=False), synthetic_images(2), meta, SIZE)
    graph = onnx.load_from_string(quantized).graph
    assert any(node.op_type == "QuantizeLinear" for node in graph.node)  # NNCF's int8 graph, meta along
    stored = json.loads({p.key: p.value for p in onnx.load_from_string(quantized).metadata_props}["yolo_attn"])
    assert stored["quantizer"] == "nncf mixed" and stored["names"] == ["a", "b", "c"]
