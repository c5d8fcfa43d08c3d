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


def _fp32_model(phi: int = 0, precision: str = "int8"):
    """A float model and the meta of its ``precision``'s export (int8: the one to quantize)."""
    torch.manual_seed(0)
    model = build_model(phi, 3).eval()
    meta = export_meta(make_meta(model, ["a", "b", "c"], img_size=SIZE), SIZE, False, precision, "test")
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


def _first_conv(model):
    return next(op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution")


def _kernels(compiled):
    """The CPU plugin's kernel for each convolution, by layer name."""
    return {op.get_friendly_name(): op.get_rt_info()["primitiveType"].astype(str)
            for op in compiled.get_runtime_model().get_ordered_ops()
            if op.get_rt_info()["layerType"].astype(str) == "Convolution"}


def test_the_rgb_convolution_asks_for_an_avx512_kernel(fp32_model):
    from yolo_attn.inference.backends import _openvino_core, _thin_convolutions_off_amx
    from yolo_attn.inference.hardware import cpu_features

    model, meta = fp32_model
    quantized = quantize_int8(model.clone(), synthetic_images(2), meta, SIZE)
    marked = _thin_convolutions_off_amx(quantized, _openvino_core())
    assert marked is not quantized
    first = _first_conv(marked).get_friendly_name()
    priorities = {op.get_friendly_name(): op.get_rt_info()["primitives_priority_0"].astype(str)
                  for op in marked.get_ordered_ops() if "primitives_priority_0" in op.get_rt_info()}
    assert priorities == {first: "cpu:brgconv_avx512,cpu:jit_avx512"}  # only the 3-channel one
    assert json.loads(marked.get_rt_info(["yolo_attn"]).astype(str)) == json.loads(
        quantized.get_rt_info(["yolo_attn"]).astype(str))
    x = np.random.default_rng(3).random((1, 3, SIZE, SIZE), dtype=np.float32)
    for a, b in zip(_run(marked, x), _run(quantized, x)):  # the same integer sums
        np.testing.assert_array_equal(a, b)
    if cpu_features().amx_int8:
        compile_ = _openvino_core().compile_model
        before, after = _kernels(compile_(quantized, "CPU")), _kernels(compile_(marked, "CPU"))
        assert "amx" in before[first] and "amx" not in after[first], (before[first], after[first])
        assert {k: v for k, v in before.items() if k != first} == {k: v for k, v in after.items() if k != first}
        # the uint8 graph Detector runs (its input quantizer dropped) keeps the choice
        from yolo_attn.inference.backends import OpenVinoBackend

        backend = OpenVinoBackend(quantized)
        backend.run_uint8(np.zeros((1, SIZE, SIZE, 3), np.uint8))
        assert "amx" not in _kernels(backend._variants[(True, None)])[first]


def test_the_kernel_priority_joins_a_layers_own_rt_info(tmp_path):
    """OpenVINO's IR reader takes a layer's first <rt_info> block only: the priority goes into the one there is."""
    import openvino as ov
    import openvino.opset13 as ops

    from yolo_attn.inference.backends import _openvino_core, _with_kernel_priority

    x = ops.parameter([1, 3, 8, 8], ov.Type.f32, name="x")
    conv = ops.convolution(x, ops.constant(np.ones((2, 3, 3, 3), np.float32)), [1, 1], [1, 1], [1, 1], [1, 1])
    conv.set_friendly_name('conv "a"')
    ov.save_model(ov.Model([conv], [x]), tmp_path / "m.xml", compress_to_fp16=False)
    text = (tmp_path / "m.xml").read_text(encoding="utf-8")
    ports = text.index("<input>", text.index('type="Convolution"'))
    names = '<rt_info><attribute name="fused_names" version="0" value="a,b"/></rt_info>'
    with_names = text[:ports] + names + text[ports:]
    weights = ov.Tensor(np.fromfile(tmp_path / "m.bin", np.uint8))
    for source, keys in ((text, {"primitives_priority_0"}), (with_names, {"primitives_priority_0", "fused_names_0"})):
        marked, found = _with_kernel_priority(source, 'conv "a"', "cpu:jit_avx512")
        assert found == 1
        (op,) = [op for op in _openvino_core().read_model(marked, weights).get_ordered_ops()
                 if op.get_type_name() == "Convolution"]
        assert set(op.get_rt_info().keys()) == keys
        assert op.get_rt_info()["primitives_priority_0"].astype(str) == "cpu:jit_avx512"
    assert _with_kernel_priority(text, "another", "cpu:jit_avx512") == (text, 0)


def test_the_backend_marks_int8_models_on_amx_cpus_only(fp32_model, monkeypatch):
    import openvino as ov

    from yolo_attn.inference import backends
    from yolo_attn.inference.hardware import CpuFeatures

    model, meta = fp32_model
    quantized = quantize_int8(model.clone(), synthetic_images(2), meta, SIZE)

    def marked(backend):
        return "primitives_priority_0" in _first_conv(backend._model).get_rt_info()

    monkeypatch.setattr(backends, "cpu_features", lambda: CpuFeatures(avx512=True, vnni=True, amx_int8=True))
    assert marked(backends.OpenVinoBackend(quantized))
    float_model = _fp32_model(precision="fp32")[0]
    for precision in ("fp32", "bf16"):  # float models: the AVX-512 bf16 kernel is the slower
        assert not marked(backends.OpenVinoBackend(float_model, precision))
    monkeypatch.setattr(backends, "cpu_features", lambda: CpuFeatures(avx512=True, vnni=True))
    assert not marked(backends.OpenVinoBackend(quantized))
    # a model the IR round trip cannot take runs unchanged
    monkeypatch.setattr(backends, "cpu_features", lambda: CpuFeatures(avx512=True, vnni=True, amx_int8=True))
    monkeypatch.setattr(ov, "save_model", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))
    backend = backends.OpenVinoBackend(quantized)
    assert backend._model is quantized and not marked(backend)


def _input_quantizer(model):
    (target,) = model.get_parameters()[0].output(0).get_target_inputs()
    return target.get_node()


def test_the_input_is_quantized_on_the_pixels_grid(fp32_model):
    from yolo_attn.inference.backends import OpenVinoBackend
    from yolo_attn.inference.export import quantize_input_on_pixels

    model, meta = fp32_model
    nncf_range = _quantized(fp32_model, "performance")
    fq = _input_quantizer(nncf_range)
    assert fq.get_type_name() == "FakeQuantize"
    assert float(fq.input_value(2).get_node().get_data()) < 1.0  # calibrated on random images: below white
    assert quantize_input_on_pixels(nncf_range) == 1
    assert [float(fq.input_value(i).get_node().get_data()) for i in range(1, 5)] == [0.0, 1.0, 0.0, 1.0]
    assert quantize_input_on_pixels(nncf_range) == 0  # already there

    # on the grid it changes nothing: the same outputs as with no input quantizer at all
    without = nncf_range.clone()
    _input_quantizer(without).output(0).replace(without.get_parameters()[0].output(0))
    pixels = np.random.default_rng(4).integers(0, 256, (1, SIZE, SIZE, 3), dtype=np.uint8)
    pixels[:, : SIZE // 4] = 255  # white, which NNCF's range clipped
    x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32) / 255
    for a, b in zip(_run(nncf_range, x), _run(without, x)):
        np.testing.assert_array_equal(a, b)

    # quantize_int8 does it, and OpenVINO then reads uint8 images without a quantizer of its own
    quantized = quantize_int8(model.clone(), synthetic_images(2), meta, SIZE)
    assert float(_input_quantizer(quantized).input_value(2).get_node().get_data()) == 1.0
    backend = OpenVinoBackend(quantized)
    backend.run_uint8(pixels)
    kinds = [op.get_rt_info()["layerType"].astype(str)
             for op in backend._variants[(True, None)].get_runtime_model().get_ordered_ops()]
    before_conv = kinds[:kinds.index("Convolution")]
    assert "FakeQuantize" not in before_conv and "Subgraph" not in before_conv, before_conv
