"""The fast paths (issue 7): automatic choice per machine, every backend and precision agreeing with the fp32
eager model, the lean pre/post-processing giving the reference pipeline's boxes, the threaded video pipeline,
the benchmark tool and the reference-style training loss. No timings are asserted here: speed is shown by
tools/benchmark.py."""
from __future__ import annotations

import copy
import importlib.util
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from yolo_attn.data.letterbox import letterbox
from yolo_attn.inference import Detector
from yolo_attn.inference.backends import OpenVinoBackend, _matching_precision, _uint8_nhwc_input, create_backend
from yolo_attn.inference.fastproc import decode_nms, letterbox_batch
from yolo_attn.inference.hardware import (BF16_MIN_SPEEDUP, CpuFeatures, auto_choice, bf16_speedup, cpu_features,
                                          keep_freed_memory, torch_threads)
from yolo_attn.inference.video import BackgroundWriter, pipelined
from yolo_attn.models import build_model
from yolo_attn.models.decode import decode_outputs, postprocess
from yolo_attn.utils.checkpoint import load_model

from .helpers import IMG_SIZE, NAMES, FakeCapture, make_checkpoint, write_video

has_openvino = importlib.util.find_spec("openvino") is not None
has_onnxruntime = importlib.util.find_spec("onnxruntime") is not None
needs_openvino = pytest.mark.skipif(not has_openvino, reason="openvino not installed (the openvino extra)")
ANCHORS = [[(81, 82), (135, 169), (344, 319)], [(23, 27), (37, 58), (81, 82)]]
AMX = CpuFeatures(avx512=True, avx512_bf16=True, amx_bf16=True, amx_int8=True, vnni=True)
BF16_NO_AMX = CpuFeatures(avx512=True, avx512_bf16=True, vnni=True, bf16_faster=False)  # an Intel Xeon VM
BF16_FAST_NO_AMX = CpuFeatures(avx512=True, avx512_bf16=True, vnni=True, bf16_faster=True)  # AMD Zen 4
PLAIN = CpuFeatures()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Other jobs share these cores: torch's OpenMP barriers stall for whole time slices when a core is busy,
    which makes multi-threaded tests crawl; one thread is immune (and the numbers are the same)."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("speed") / "cbam.pt", phi=2)


@pytest.fixture(scope="module")
def batch():
    return torch.rand(2, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(0))


def _reference_maps(ckpt, batch):
    model, _ = load_model(ckpt)
    with torch.no_grad():
        return [m.float() for m in model(batch)]


def _max_rel(out, ref):
    return max(float((o - r).abs().max() / r.abs().max()) for o, r in zip(out, ref))


# --- automatic choice -------------------------------------------------------------------------------------

@pytest.mark.parametrize("features, precision", [(AMX, "bf16"), (BF16_NO_AMX, "fp32"), (BF16_FAST_NO_AMX, "bf16"),
                                                 (PLAIN, "fp32")])
def test_auto_choice_follows_the_cpu(features, precision):
    choice = auto_choice("cpu", features=features, installed=lambda m: True)
    assert (choice.backend, choice.precision) == ("torch", precision)
    assert choice.describe().startswith(f"auto: torch {precision}")
    assert auto_choice("cuda:0", features=features).precision == "fp16"


@pytest.fixture
def unread_exports(monkeypatch):
    """The fake IRs below are not OpenVINO files: read as exports that carry no weights fingerprint (made before
    one was recorded), which are judged by file time."""
    import yolo_attn.inference.hardware as hardware

    monkeypatch.setattr(hardware, "_export_meta", lambda xml: {})


def test_auto_choice_uses_a_fresh_int8_export_beside_the_weights(tmp_path, unread_exports):
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"x")
    export = tmp_path / "best_openvino_int8" / "best.xml"
    export.parent.mkdir()
    export.write_text("<net/>")
    export.with_suffix(".bin").write_bytes(b"")
    choice = auto_choice("cpu", weights, features=BF16_NO_AMX, installed=lambda m: True)
    assert (choice.backend, choice.precision, choice.weights) == ("openvino", "int8", export)
    assert auto_choice("cpu", weights, needs_torch=True, features=BF16_NO_AMX).backend == "torch"
    plain = auto_choice("cpu", weights, features=PLAIN, installed=lambda m: True)  # no VNNI: int8 still wins
    assert (plain.backend, plain.precision, plain.weights) == ("openvino", "int8", export)
    assert auto_choice("cpu", weights, features=BF16_NO_AMX, installed=lambda m: False).backend == "torch"
    old = time.time() - 100
    os.utime(export, (old, old))  # retrained since the export: stale
    stale = auto_choice("cpu", weights, features=BF16_NO_AMX, installed=lambda m: True)
    assert stale.backend == "torch"
    assert f"{export} is passed over: it is not an export of these weights" in stale.describe()  # said, not silent


def _fake_export(weights: Path, folder: str) -> Path:
    export = weights.parent / folder / f"{weights.stem}.xml"
    export.parent.mkdir()
    export.write_text("<net/>")
    export.with_suffix(".bin").write_bytes(b"")
    return export


@pytest.mark.parametrize("features, precision", [(AMX, "bf16"), (BF16_NO_AMX, "fp32"), (BF16_FAST_NO_AMX, "bf16"),
                                                 (PLAIN, "fp32")])
def test_auto_choice_prefers_int8_then_a_float_export_then_torch(tmp_path, features, precision, unread_exports):
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"x")
    float_export = _fake_export(weights, "best_openvino")
    choice = auto_choice("cpu", weights, features=features, installed=lambda m: True)
    assert (choice.backend, choice.precision, choice.weights) == ("openvino", precision, float_export)
    int8_export = _fake_export(weights, "best_openvino_int8")
    choice = auto_choice("cpu", weights, features=features, installed=lambda m: True)
    assert (choice.backend, choice.precision, choice.weights) == ("openvino", "int8", int8_export)
    old = time.time() - 100
    for export in (float_export, int8_export):
        os.utime(export, (old, old))  # both stale: back to torch
    assert auto_choice("cpu", weights, features=features, installed=lambda m: True).backend == "torch"


def test_a_long_run_with_amx_and_no_export_converts_to_openvino(tmp_path, unread_exports):
    def convert(features=AMX, **kw):
        return auto_choice("cpu", features=features, convert=True, **{"installed": lambda m: True, **kw})

    choice = convert()
    assert (choice.backend, choice.precision, choice.weights) == ("openvino", "bf16", None)
    assert "converted in memory" in choice.describe()
    # what it cannot serve stays on torch: the PyTorch module (attention view), several sizes (augmentation),
    # a missing runtime or exporter, another device; and CPUs without AMX, where OpenVINO gained 5-19 %
    for kw in ({"needs_torch": True}, {"any_size": True}, {"installed": lambda m: m != "openvino"},
               {"installed": lambda m: m != "onnx"}, {"features": BF16_FAST_NO_AMX}, {"features": BF16_NO_AMX},
               {"features": PLAIN}):
        assert convert(**kw).backend == "torch", kw
    assert auto_choice("cuda:0", features=AMX, convert=True).backend == "torch"
    assert auto_choice("mps", features=AMX, convert=True, installed=lambda m: True).backend == "torch"
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"x")
    export = _fake_export(weights, "best_openvino_int8")
    assert convert(weights=weights).weights == export  # an export beside the weights comes first


def test_cpu_features_match_the_kernel_flags():
    flags = set()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    features = cpu_features()
    if flags:
        assert features.avx512_bf16 == ("avx512_bf16" in flags)
        assert features.amx_bf16 <= ("amx_bf16" in flags)  # listed is necessary, not sufficient
    if features.amx_bf16 or not features.avx512_bf16:  # the flags decide
        assert features.fast_bf16 == features.amx_bf16
    else:  # AVX512-BF16 without AMX: the probe does
        assert features.fast_bf16 == (bf16_speedup() >= BF16_MIN_SPEEDUP)


def test_bf16_probe_runs_only_where_the_flags_cannot_decide(monkeypatch):
    import yolo_attn.inference.hardware as hardware

    def no_probe():
        raise AssertionError("probed although the flags decide")

    monkeypatch.setattr(hardware, "bf16_speedup", no_probe)
    assert AMX.fast_bf16 and not PLAIN.fast_bf16 and not BF16_NO_AMX.fast_bf16
    unknown = CpuFeatures(avx512=True, avx512_bf16=True)
    with pytest.raises(AssertionError, match="probed"):
        unknown.fast_bf16
    monkeypatch.setattr(hardware, "bf16_speedup", lambda: 1.9)
    assert unknown.fast_bf16
    assert "bf16 measured 1.90x fp32" in auto_choice("cpu", features=unknown, installed=lambda m: False).reason
    monkeypatch.setattr(hardware, "bf16_speedup", lambda: 1.1)  # a near tie stays on exact fp32
    assert not unknown.fast_bf16
    assert auto_choice("cpu", features=unknown, installed=lambda m: False).precision == "fp32"


def test_bf16_probe_measures_a_positive_ratio():
    speedup = bf16_speedup()
    assert 0 < speedup < 100 and bf16_speedup() == speedup  # measured once per process


def test_bf16_probe_measures_on_while_a_busy_neighbour_blurs_the_ratio():
    """Each layer keeps its best time over the rounds; rounds go on while the ratio sits near the threshold.
    Scripted: bf16 is 2x fp32 (1 s against 2 s a layer), but a neighbour slows one bf16 layer or the other in
    every round up to the seventh; no single round measures 2x, the layers' best times do from round 7."""
    import yolo_attn.inference.hardware as hardware

    quiet = ([2.0, 2.0], [1.0, 1.0])
    slow = ([2.0, 2.0], [2.0, 2.0])
    busy = [slow, slow, ([2.0, 2.0], [1.0, 2.0]), slow, slow, slow, ([2.0, 2.0], [2.0, 1.0])]
    rounds = iter(busy + [quiet] * 50)
    calls = []

    def time_round():
        calls.append(1)
        return next(rounds)

    ratio = hardware._settled_ratio(time_round, clock=lambda: 0.0)
    assert ratio == pytest.approx(2.0)
    assert len(calls) == 7  # 4/3 from round 3 is near the threshold: it measured on
    calls.clear()
    rounds = iter([quiet] * 50)
    assert hardware._settled_ratio(time_round, clock=lambda: 0.0) == pytest.approx(2.0) and len(calls) == 5
    calls.clear()
    rounds = iter([([1.0], [0.8])] * 100)  # a true near tie (1.25x) measures on, until the round limit
    assert hardware._settled_ratio(time_round, clock=lambda: 0.0) == pytest.approx(1.25) and len(calls) == 40
    calls.clear()
    rounds = iter([([1.0], [0.8])] * 100)  # or until its time budget (a second a round here)
    hardware._settled_ratio(time_round, budget_s=7.5, clock=lambda: float(len(calls)))
    assert len(calls) == 8


def test_detector_load_says_what_it_chose(ckpt):
    det = Detector.load(ckpt)
    assert det.choice is not None and "auto:" in det.describe()
    assert det.backend.name == "torch" and det.backend.precision == det.choice.precision
    assert Detector.load(ckpt, backend="torch", precision="fp32").choice is None
    with pytest.raises(ValueError, match="int8 needs a calibrated export"):
        Detector.load(ckpt, precision="int8")


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_run_uint8_converts_on_one_torch_thread_for_a_runtime_with_its_own_pool(monkeypatch):
    """The default uint8 path (ONNX Runtime's, OpenCV's) converts with torch held at one thread: its woken OpenMP
    workers would spin on and take the runtime's cores. Backends on torch's own pool keep its threads."""
    from yolo_attn.inference.backends import Backend

    class Recording(Backend):
        name, precisions, torch_pool = "recording", ("fp32",), False

        def __call__(self, batch):
            self.got = batch
            return [batch]

    threads_while_converting = []
    from_numpy = torch.from_numpy

    def recording_from_numpy(array):
        threads_while_converting.append(torch.get_num_threads())
        return from_numpy(array)

    monkeypatch.setattr(torch, "from_numpy", recording_from_numpy)
    pixels = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    with torch_threads(2):
        own_pool = Recording()
        own_pool.run_uint8(pixels)
        torch_pool = Recording()
        torch_pool.torch_pool = True
        torch_pool.run_uint8(pixels)
        assert torch.get_num_threads() == 2
    assert threads_while_converting == [1, 2]
    expected = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(own_pool.got, expected) and own_pool.got.is_contiguous()


# Allocates, touches and frees a 64 MiB tensor seven times in a fresh process and prints the page faults of the
# last five (glibc settles in the first two); YOLO_ATTN_MALLOC decides whether keep_freed_memory() applies
# (a per-process setting).
_FAULTS = """
import resource, torch
from yolo_attn.inference.hardware import keep_freed_memory
torch.set_num_threads(1)  # no pool threads contending for malloc's main arena (which moves the caller elsewhere)
applied = keep_freed_memory()
for i in range(12):
    if i == 2:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_freeing_64mib(keep: bool):
    env = {**os.environ, "YOLO_ATTN_MALLOC": "1" if keep else "0"}
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_stops_large_buffers_faulting_in_again():
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.is_file() and "[always]" in thp.read_text():
        pytest.skip("transparent huge pages always on: a 64 MiB buffer faults in 2 MiB at a time, too few to count")
    applied, kept = _faults_freeing_64mib(keep=True)
    not_applied, default = _faults_freeing_64mib(keep=False)
    assert applied and not not_applied
    assert default > 10 * 2**14 / 2  # glibc unmaps 64 MiB on free: its 4 KiB pages fault in every time
    # kept: none after the first; a margin for a rare fresh mapping (a busy machine, another arena)
    assert kept < default / 4


@pytest.mark.parametrize("env", [{"YOLO_ATTN_MALLOC": "0"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}])
def test_keep_freed_memory_leaves_a_users_choice_alone(monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    keep_freed_memory.cache_clear()
    try:
        assert keep_freed_memory() is False
    finally:
        keep_freed_memory.cache_clear()


# --- backends agree with the fp32 eager model --------------------------------------------------------------

@pytest.mark.parametrize("options, tol", [
    (dict(precision="fp32"), 1e-4),
    (dict(precision="fp32", channels_last=False), 1e-4),
    (dict(precision="fp32", fuse=False), 1e-4),
    (dict(precision="bf16"), 5e-2),
])
def test_torch_variants_agree_with_eager_fp32(ckpt, batch, options, tol):
    reference = _reference_maps(ckpt, batch)
    model, _ = load_model(ckpt)
    backend = create_backend("torch", model, options.pop("precision"), "cpu", **options)
    out = backend(batch)
    assert all(o.dtype == torch.float32 for o in out)
    assert _max_rel(out, reference) < tol
    u8 = (batch.permute(0, 2, 3, 1) * 255).round().byte().numpy()
    from_uint8 = backend.run_uint8(u8)
    assert _max_rel(from_uint8, backend(torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255)) < max(tol, 1e-5)


@pytest.mark.skipif(not has_onnxruntime, reason="onnxruntime not installed")
def test_onnxruntime_in_memory_agrees_and_restores_torch_threads(ckpt, batch):
    det = Detector.load(ckpt, backend="onnxruntime")
    threads = torch.get_num_threads()
    assert _max_rel(det.backend(batch), _reference_maps(ckpt, batch)) < 1e-4
    assert torch.get_num_threads() == threads


def _onnx_data(ckpt) -> bytes:
    from yolo_attn.inference.export import export_meta, onnx_bytes

    model, meta = load_model(ckpt)
    return onnx_bytes(model, export_meta(meta, IMG_SIZE, True, "fp32", "cbam.pt"), IMG_SIZE, dynamic=True)


@pytest.mark.skipif(not has_onnxruntime, reason="onnxruntime not installed")
def test_onnxruntime_says_where_it_really_runs(ckpt, monkeypatch, caplog):
    """Without a CUDA execution provider ONNX Runtime runs on the CPU; describe() must not say cuda."""
    import onnxruntime as ort

    data = _onnx_data(ckpt)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with caplog.at_level("WARNING", logger="yolo_attn.inference"):
        backend = create_backend("onnxruntime", data, device="cuda")
    assert backend.device == "cpu" and backend.providers == ["CPUExecutionProvider"]
    assert "on cpu (CPUExecutionProvider; asked for cuda" in backend.describe()
    assert "running on the CPU" in caplog.text
    assert create_backend("onnxruntime", data).describe() == "onnxruntime fp32 on cpu (CPUExecutionProvider)"
    with pytest.raises(ValueError, match="unknown device 'foo'"):
        create_backend("onnxruntime", data, device="foo")


@pytest.mark.skipif(not has_onnxruntime, reason="onnxruntime not installed")
def test_onnxruntime_precision_advice_names_what_works(ckpt):
    """ONNX export refuses bf16 (tools/export.py), so the advice must not be to export with it."""
    fp32 = create_backend("onnxruntime", _onnx_data(ckpt))
    with pytest.raises(ValueError) as bf16:
        _matching_precision(fp32, "bf16")
    assert "--precision bf16" not in str(bf16.value) and "--backend openvino" in str(bf16.value)
    with pytest.raises(ValueError, match=r"--format onnx --precision int8 --data CONFIG"):
        _matching_precision(fp32, "int8")


@needs_openvino
def test_openvino_on_a_device_it_lacks_is_one_clear_error(ckpt):
    from yolo_attn.inference.export import openvino_model

    model = openvino_model(_onnx_data(ckpt), {"precision": "fp32"})
    with pytest.raises(ValueError, match=r"OpenVINO has no FOO device here \(from --device foo; this machine "
                                         r"offers .*CPU.*\); use --device cpu"):
        create_backend("openvino", model, device="foo")


def _chain(model, length=3):
    """The op types after the model's input, in order (each node with one consumer)."""
    chain, node = [], model.get_parameters()[0]
    for _ in range(length):
        (target,) = node.output(0).get_target_inputs()
        node = target.get_node()
        chain.append(node.get_type_name())
    return chain


@needs_openvino
def test_openvino_uint8_graph_converts_in_nhwc_and_transposes_last(ckpt):
    """For a fixed input shape, conversion and scaling run on the NHWC input, then a transpose hands NCHW to
    the model (by hand: OpenVINO's PrePostProcessor graph, Multiply in place of Divide, compiles to a uint8
    transpose and a reorder back, 0.2 ms at 416 in bf16). A free input size keeps the PrePostProcessor's graph,
    the faster one there."""
    import openvino as ov
    from yolo_attn.inference.export import openvino_model

    model = openvino_model(_onnx_data(ckpt), {"precision": "fp32"})
    dynamic = _uint8_nhwc_input(model.clone())
    assert dynamic.get_parameters()[0].get_partial_shape().is_dynamic
    assert _chain(dynamic) == ["Convert", "Multiply", "Transpose"]
    model.reshape({model.inputs[0]: ov.PartialShape([1, 3, 96, 128])})
    fixed = _uint8_nhwc_input(model)
    images = fixed.get_parameters()[0]
    assert images.get_element_type() == ov.Type.u8 and list(images.get_partial_shape().to_shape()) == [1, 96, 128, 3]
    assert images.output(0).get_tensor().get_names() == {"images"}  # the input keeps its name
    assert _chain(fixed) == ["Convert", "Divide", "Transpose"]


@needs_openvino
def test_a_dynamic_openvino_model_gets_graphs_fixed_to_the_shapes_it_keeps_seeing(ckpt, batch, monkeypatch):
    from yolo_attn.inference.export import openvino_model

    backend = create_backend("openvino", openvino_model(_onnx_data(ckpt), {"precision": "fp32"}))
    assert backend.fixed_shape == (None, None, None)
    u8 = (batch.permute(0, 2, 3, 1) * 255).round().byte().numpy()
    first = backend.run_uint8(u8)  # the general graph
    for _ in range(OpenVinoBackend.STATIC_AFTER - 1):
        backend.run_uint8(u8)
    assert [key for key in backend._variants if key[1] is not None] == [(True, u8.shape)]
    assert _max_rel(backend.run_uint8(u8), first) < 1e-5
    as_float = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255
    for _ in range(OpenVinoBackend.STATIC_AFTER):
        backend(as_float)
    assert (False, tuple(as_float.shape)) in backend._variants
    assert _max_rel(backend(as_float), first) < 1e-5
    monkeypatch.setattr(OpenVinoBackend, "MAX_STATIC", 2)  # full: another shape stays on the general graph
    for _ in range(OpenVinoBackend.STATIC_AFTER + 1):
        out = backend.run_uint8(u8[:1, :64])
    assert out[0].shape[2:] == (2, IMG_SIZE // 32) and len(backend._variants) == 4
    assert _max_rel(out, backend(as_float[:1, :, :64])) < 1e-5
    clone = backend.with_hint("THROUGHPUT", 2)  # starts afresh: its own counts and graphs
    assert list(clone._variants) == [(False, None)] and clone._shape_calls == {}
    clone.run_uint8(u8)
    again = backend.with_hint("THROUGHPUT", 2)  # the next video: the same copy, its graphs built
    assert again is clone and (True, None) in again._variants and again._hinted == {}
    assert backend.with_hint("THROUGHPUT", 1) is not clone


@needs_openvino
def test_a_fixed_graph_that_fails_to_build_leaves_the_general_one_running(ckpt, batch, monkeypatch, caplog):
    from yolo_attn.inference.export import openvino_model

    backend = create_backend("openvino", openvino_model(_onnx_data(ckpt), {"precision": "fp32"}))
    u8 = (batch.permute(0, 2, 3, 1) * 255).round().byte().numpy()
    expected = backend.run_uint8(u8)

    def refuse(uint8, shape):
        raise RuntimeError("Exception from src/core/src/model.cpp:\nno memory for this shape")

    monkeypatch.setattr(backend, "_graph", refuse)
    with caplog.at_level("WARNING", logger="yolo_attn.inference"):
        for _ in range(OpenVinoBackend.STATIC_AFTER + 3):
            out = backend.run_uint8(u8)
    assert _max_rel(out, expected) == 0 and list(backend._variants) == [(False, None), (True, None)]
    assert [r.getMessage() for r in caplog.records] == [
        f"OpenVINO could not fix the graph to input shape {u8.shape} (no memory for this shape); the general "
        f"graph runs on"]


@needs_openvino
def test_threads_reaching_the_threshold_at_once_build_one_fixed_graph_and_all_get_right_maps(ckpt, batch,
                                                                                             monkeypatch):
    """Four threads call a dynamic model at once while its fixed graph compiles slowly: one of them builds it,
    the others run the general graph meanwhile (none waits on the lock, none builds a second copy), and every
    call gives the same maps."""
    from yolo_attn.inference.export import openvino_model

    backend = create_backend("openvino", openvino_model(_onnx_data(ckpt), {"precision": "fp32"}))
    u8 = (batch[:1].permute(0, 2, 3, 1) * 255).round().byte().numpy()
    expected = backend.run_uint8(u8)  # the general uint8 graph, compiled before the threads start
    compile_graph, fixed_builds = backend._compile, []

    def slow_compile(model):
        fixed_builds.append(threading.get_ident())
        time.sleep(0.3)  # the other threads pass the threshold meanwhile
        return compile_graph(model)

    monkeypatch.setattr(backend, "_compile", slow_compile)
    results, errors = [], []

    def run():
        try:
            for _ in range(OpenVinoBackend.STATIC_AFTER + 4):
                results.append(backend.run_uint8(u8))
        except BaseException as e:  # surfaced in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4 * (OpenVinoBackend.STATIC_AFTER + 4)
    assert len(fixed_builds) == 1 and (True, u8.shape) in backend._variants
    assert max(_max_rel(out, expected) for out in results) < 1e-5


@needs_openvino
def test_a_fixed_size_openvino_model_counts_no_shapes(ckpt, batch):
    from yolo_attn.inference.export import export_meta, onnx_bytes, openvino_model

    model, meta = load_model(ckpt)
    static = onnx_bytes(model, export_meta(meta, IMG_SIZE, False, "fp32", "x.pt"), IMG_SIZE, dynamic=False)
    backend = create_backend("openvino", openvino_model(static, {"precision": "fp32"}))
    u8 = (batch[:1].permute(0, 2, 3, 1) * 255).round().byte().numpy()
    for _ in range(OpenVinoBackend.STATIC_AFTER + 1):
        backend.run_uint8(u8)
    assert backend._shape_calls == {} and list(backend._variants) == [(False, None), (True, None)]


@needs_openvino
def test_openvino_uint8_input_and_throughput_streams_agree(ckpt, batch):
    det = Detector.load(ckpt, backend="openvino")
    backend = det.backend
    reference = _reference_maps(ckpt, batch)
    assert _max_rel(backend(batch), reference) < 1e-4
    u8 = (batch.permute(0, 2, 3, 1) * 255).round().byte().numpy()
    as_float = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255
    assert _max_rel(backend.run_uint8(u8), backend(as_float)) < 1e-5  # conversion inside the graph
    streams = backend.with_hint("THROUGHPUT", 2)
    assert "throughput" in streams.describe() and streams.hint == "THROUGHPUT"
    results = {}

    def run(i):  # two threads at once: each gets its own infer request
        results[i] = streams.run_uint8(u8[i : i + 1])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    expected = backend(as_float)
    for i in range(2):
        assert _max_rel(results[i], [m[i : i + 1] for m in expected]) < 1e-4
    with pytest.raises(ValueError, match="LATENCY or THROUGHPUT"):
        OpenVinoBackend(backend._model, hint="FAST")


@needs_openvino
@pytest.mark.parametrize("backend, threads_in_post", [("openvino", 1), ("torch", 2)])
def test_predict_holds_torch_to_one_thread_beside_another_runtime(ckpt, rng, monkeypatch, backend, threads_in_post):
    """torch's OpenMP workers spin after post-processing and take a core from OpenVINO's pool; with the torch
    backend its threads run the network and stay as they are."""
    det = Detector.load(ckpt, backend=backend, precision="fp32")
    seen = []
    postprocess = det.postprocess

    def recording(maps, infos):
        seen.append(torch.get_num_threads())
        return postprocess(maps, infos)

    monkeypatch.setattr(det, "postprocess", recording)
    image = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    with torch_threads(2):
        det.predict([image])
        assert torch.get_num_threads() == 2  # restored
    assert seen == [threads_in_post]


@needs_openvino
def test_int8_export_beside_the_checkpoint_is_used_by_predict_only(tmp_path):
    from yolo_attn.inference.export import export_model, synthetic_images

    ckpt = make_checkpoint(tmp_path / "m.pt", phi=0)
    folder = tmp_path / "calib"
    folder.mkdir()
    for i, image in enumerate(synthetic_images(2)):
        cv2.imwrite(str(folder / f"{i}.png"), image)
    out = export_model(ckpt, "openvino", precision="int8", calib_images=folder, calib_count=2, log=lambda s: None)
    assert out.parent.name == "m_openvino_int8"
    assert Detector.load(ckpt).backend.name == "torch"  # the API loads what it is given
    chosen = Detector.load(ckpt, use_exports=True)
    assert chosen.backend.name == "openvino" and chosen.backend.precision == "int8"
    assert "int8" in chosen.describe() and str(out) in chosen.describe()
    assert Detector.load(ckpt, precision="int8").backend.precision == "int8"
    with pytest.raises(ValueError, match="int8 runs with OpenVINO, from the calibrated export beside it"):
        Detector.load(ckpt, backend="torch", precision="int8")  # it said: make that export
    # the export itself runs int8 whatever a --precision says: it refuses to run under a float name
    for precision in ("fp32", "bf16"):
        with pytest.raises(ValueError, match=f"quantized and runs as int8, not as {precision}"):
            Detector.load(out, precision=precision)
    # --device 0 is cuda:0 here too (it reached OpenVINO as a device named '0')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device '0': CUDA is not available"):
            Detector.load(ckpt, device="0", use_exports=True)


@needs_openvino
def test_long_runs_convert_pytorch_weights_to_openvino_in_memory(ckpt, batch, tmp_path, monkeypatch):
    """With AMX (stood in for on other CPUs: OpenVINO then runs its bf16 hint as it can), a long run converts;
    tools/predict.py says which runs are long from a listing that opens no capture."""
    import yolo_attn.inference.export as export
    import yolo_attn.inference.hardware as hardware
    import yolo_attn.inference.predict as predict_module
    from yolo_attn.inference.predict import run_predict

    monkeypatch.setattr(hardware, "cpu_features", lambda: AMX)
    converted = Detector.load(ckpt, device="cpu", long_run=True)
    assert (converted.backend.name, converted.backend.precision) == ("openvino", "bf16")
    assert converted.choice.weights is None and "converted in memory" in converted.describe()
    assert Detector.load(ckpt, device="cpu").backend.name == "torch"  # not a long run
    assert Detector.load(ckpt, device="cpu", long_run=True, precision="fp32").backend.name == "torch"  # as asked
    plain = Detector.load(ckpt, device="cpu", backend="torch", precision="fp32")
    forced = Detector.load(ckpt, device="cpu", backend="openvino", precision="fp32")
    assert _max_rel(forced.forward(batch)[0], plain.forward(batch)[0]) < 1e-4  # the conversion: the same network
    # a conversion that fails (a model the exporter cannot take, a broken runtime) falls back to torch, and says so
    with monkeypatch.context() as patch:
        patch.setattr(export, "openvino_model", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("no CPU plugin")))
        with pytest.warns(UserWarning, match=r"converting to OpenVINO in memory failed \(no CPU plugin\)"):
            fallback = Detector.load(ckpt, device="cpu", long_run=True)
    assert fallback.backend.name == "torch" and "in memory failed (no CPU plugin)" in fallback.describe()

    monkeypatch.setattr(predict_module, "LONG_RUN_IMAGES", 3)
    image = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), image)
    video = write_video(tmp_path / "clip.mp4", frames=3)
    cases = [(video, {}, "openvino"), (video, {"vid_stride": 2}, "torch"), (folder, {}, "torch"),
             ("0", {"capture_factory": FakeCapture(frames=2)}, "openvino")]  # a webcam has no end
    for source, kw, backend in cases:
        lines = []
        assert run_predict(str(ckpt), str(source), device="cpu", project=str(tmp_path / "runs"),
                           log=lines.append, **kw) == 0
        assert lines[0].startswith(f"{backend} "), (source, kw, lines[0])
    cv2.imwrite(str(folder / "c.png"), image)
    assert predict_module._long_run(str(folder), 1)  # three images now


@needs_openvino
def test_float_export_beside_the_checkpoint_is_chosen_and_gives_the_same_boxes(tmp_path, rng):
    from yolo_attn.inference.export import export_model

    ckpt = make_checkpoint(tmp_path / "m.pt", phi=2)
    out = export_model(ckpt, "openvino", dynamic=True, log=lambda s: None)
    assert out.parent.name == "m_openvino"
    own = Detector.load(ckpt, backend="torch", precision="fp32", conf=0.05, device="cpu")  # where OpenVINO runs
    chosen = Detector.load(ckpt, use_exports=True, conf=0.05)
    assert chosen.backend.name == "openvino" and str(out) in chosen.describe()
    assert chosen.backend.precision == ("bf16" if cpu_features().fast_bf16 else "fp32")
    images = [rng.integers(0, 255, (IMG_SIZE + 16, IMG_SIZE - 8, 3), dtype=np.uint8) for _ in range(2)]
    exact = chosen if chosen.backend.precision == "fp32" else Detector.load(out, precision="fp32", conf=0.05)
    for ref, got in zip(own(images), exact(images)):
        assert len(ref) == len(got) and len(ref) > 0
        assert np.abs(ref.boxes - got.boxes).max() < 0.05
    if chosen.backend.precision == "bf16":  # bf16 reorders near-tied scores of this untrained model, moves boxes
        for ref, got in zip(own(images), chosen(images)):
            assert abs(len(ref) - len(got)) <= max(2, len(ref) // 5) and len(ref) > 0
            assert _share_matched(ref.boxes, got.boxes, 0.06 * max(images[0].shape)) >= 0.8


def _share_matched(ref: np.ndarray, got: np.ndarray, tol: float) -> float:
    """The share of ``ref`` boxes with a box in ``got`` whose corners all lie within ``tol`` pixels."""
    distance = np.abs(ref[:, None, :] - got[None, :, :]).max(-1)
    return float((distance.min(1) < tol).mean()) if len(got) else 0.0


@needs_openvino
def test_an_export_fixed_to_another_size_is_passed_over(tmp_path):
    from yolo_attn.inference.export import export_model

    ckpt = make_checkpoint(tmp_path / "m.pt", phi=0)
    out = export_model(ckpt, "openvino", log=lambda s: None)  # static: batch 1 at the checkpoint's size
    assert Detector.load(ckpt, use_exports=True).backend.name == "openvino"
    assert Detector.load(ckpt, use_exports=True, img_size=IMG_SIZE).backend.name == "openvino"
    other = Detector.load(ckpt, use_exports=True, img_size=IMG_SIZE + 32)  # would fail on the export
    assert other.backend.name == "torch" and other.input_shape == (IMG_SIZE + 32, IMG_SIZE + 32)
    assert f"{out} is fixed to {IMG_SIZE}x{IMG_SIZE}" in other.describe()
    image = np.random.default_rng(0).integers(0, 255, (IMG_SIZE, IMG_SIZE - 16, 3), dtype=np.uint8)
    torch_own = Detector.load(ckpt, backend="torch", precision=other.backend.precision, img_size=IMG_SIZE + 32)
    np.testing.assert_allclose(other([image])[0].boxes, torch_own([image])[0].boxes, atol=1e-3)
    with pytest.raises(ValueError, match="re-export it with --dynamic"):  # named explicitly: no fallback
        Detector.load(out, img_size=IMG_SIZE + 32)
    # test-time augmentation runs several sizes: the static export is passed over as well, and named, refused
    augmented = Detector.load(ckpt, use_exports=True, augment=True)
    assert augmented.backend.name == "torch" and augmented.augment == [(1.0, False), (1.3, True), (0.83, False)]
    assert f"{out} is fixed to {IMG_SIZE}x{IMG_SIZE}, test-time augmentation runs several sizes" in augmented.describe()
    with pytest.raises(ValueError, match="exported for a fixed one"):
        Detector.load(out, augment=True)


@needs_openvino
def test_an_export_is_used_only_for_the_weights_it_was_made_from(tmp_path):
    """Only file times were compared: another checkpoint copied over best.pt keeping its own (older) time, or
    one rewritten while the export ran, kept running the export of the old weights. The export records what
    it was made from; a new time on the same weights (a run folder copied elsewhere) keeps it. A torn IR (a
    new .bin under an old .xml) was picked and crashed the load."""
    import shutil

    from yolo_attn.inference.export import export_model
    from yolo_attn.inference.hardware import export_for

    ckpt = make_checkpoint(tmp_path / "run" / "best.pt", phi=0)
    other = make_checkpoint(tmp_path / "other" / "best.pt", phi=0, seed=1)
    os.utime(other, (1, 1))  # older than anything
    out = export_model(ckpt, "openvino", dynamic=True, log=lambda s: None)
    assert export_for(ckpt, "fp32") == out
    later = time.time() + 100
    os.utime(ckpt, (later, later))  # the same weights, newer than their export (cp without -p)
    assert export_for(ckpt, "fp32") == out
    shutil.copy2(other, ckpt)  # another checkpoint, its own old time kept (cp -p, rsync -a, an archive)
    assert export_for(ckpt, "fp32") is None
    assert Detector.load(ckpt, use_exports=True).backend.name == "torch"
    out = export_model(ckpt, "openvino", dynamic=True, log=lambda s: None)  # again, into the same folder
    assert export_for(ckpt, "fp32") == out
    assert sorted(p.name for p in out.parent.parent.iterdir()) == ["best.pt", "best_openvino"]  # swapped whole
    out.with_suffix(".bin").write_bytes(b"\0" * 1000)  # torn: this .xml over another .bin
    assert export_for(ckpt, "fp32") is None


@needs_openvino
def test_an_export_made_at_another_size_runs_at_the_checkpoints(tmp_path):
    """An export made with --dynamic --img-size 96 beside a checkpoint trained at IMG_SIZE set the input size
    of every later run that gave none; a fixed one made at 96 is passed over, as at any other size."""
    from yolo_attn.inference.export import export_model

    ckpt = make_checkpoint(tmp_path / "m.pt", phi=0)
    out = export_model(ckpt, "openvino", img_size=96, dynamic=True, log=lambda s: None)
    chosen = Detector.load(ckpt, use_exports=True)
    assert chosen.backend.name == "openvino" and chosen.input_shape == (IMG_SIZE, IMG_SIZE) != (96, 96)
    assert Detector.load(out).input_shape == (96, 96)  # the export itself, named: its own size
    export_model(ckpt, "openvino", img_size=96, log=lambda s: None)  # replaced by a static one
    fixed = Detector.load(ckpt, use_exports=True)
    assert fixed.backend.name == "torch" and fixed.input_shape == (IMG_SIZE, IMG_SIZE)
    assert f"is fixed to 96x96, not {IMG_SIZE}x{IMG_SIZE}" in fixed.describe()


# --- lean pre- and post-processing -------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("conf", [0.001, 0.25, 0.6])
def test_decode_nms_gives_the_reference_boxes(batch_size, conf):
    g = torch.Generator().manual_seed(batch_size)
    maps = [torch.randn(batch_size, 3 * 8, s, s, generator=g) * 2 for s in (4, 8)]
    for classes in (None, [0, 2]):
        expected = postprocess(decode_outputs(maps, ANCHORS, (32, 16), 1.05), conf, 0.45, 300, classes=classes)
        got = decode_nms(maps, ANCHORS, (32, 16), 1.05, conf, 0.45, 300, classes=classes)
        assert len(got) == batch_size
        for e, o in zip(expected, got):
            assert e.shape == o.shape and o.dtype == torch.float32
            torch.testing.assert_close(o, e, atol=1e-4, rtol=1e-5)
    empty = decode_nms([m - 100 for m in maps], ANCHORS, (32, 16), 1.05, conf, 0.45, 300)
    assert all(e.shape == (0, 6) and e.dtype == torch.float32 for e in empty)


@pytest.mark.parametrize("options", [dict(agnostic=True), dict(max_det=3), dict(max_candidates=5)])
def test_decode_nms_options_match_the_reference(options):
    g = torch.Generator().manual_seed(5)
    maps = [torch.randn(2, 3 * 8, s, s, generator=g) * 2 for s in (4, 8)]
    args = (0.1, 0.45, options.get("max_det", 300))
    keywords = dict(agnostic=options.get("agnostic", False), max_candidates=options.get("max_candidates", 30000))
    expected = postprocess(decode_outputs(maps, ANCHORS, (32, 16), 1.05), *args, **keywords)
    got = decode_nms(maps, ANCHORS, (32, 16), 1.05, *args, **keywords)
    for e, o in zip(expected, got):
        assert e.shape == o.shape and len(o) > 0
        torch.testing.assert_close(o, e, atol=1e-4, rtol=1e-5)


def test_decode_nms_takes_huge_logits_quietly():
    """exp() overflows to inf in float32, as in torch: no NumPy warning, the reference's boxes."""
    import warnings

    g = torch.Generator().manual_seed(6)
    maps = [torch.randn(1, 3 * 8, s, s, generator=g) * 60 for s in (4, 8)]
    expected = postprocess(decode_outputs(maps, ANCHORS, (32, 16), 1.05), 0.25, 0.45, 300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = decode_nms(maps, ANCHORS, (32, 16), 1.05, 0.25, 0.45, 300)
    assert got[0].shape == expected[0].shape and len(got[0]) > 0
    torch.testing.assert_close(got[0], expected[0], atol=1e-4, rtol=1e-5)


def test_letterbox_batch_converts_bgr_after_resizing(rng):
    rgb = [rng.integers(0, 255, (50, 90, 3), dtype=np.uint8), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)]
    bgr = [np.ascontiguousarray(im[:, :, ::-1]) for im in rgb]
    from_rgb, infos = letterbox_batch(rgb, (64, 64), 128, 1)
    from_bgr, _ = letterbox_batch(bgr, (64, 64), 128, 1, bgr=True)
    mixed, _ = letterbox_batch([bgr[0], rgb[1]], (64, 64), 128, 1, bgr=[True, False])
    assert from_rgb.shape == (2, 64, 64, 3) and from_rgb.dtype == np.uint8
    np.testing.assert_array_equal(from_rgb[0], letterbox(rgb[0], 64)[0])
    np.testing.assert_array_equal(from_bgr, from_rgb)
    np.testing.assert_array_equal(mixed, from_rgb)
    assert infos[0] == letterbox(rgb[0], 64)[1]


# --- threaded video pipeline ---------------------------------------------------------------------------------

def test_pipelined_keeps_order_and_overlaps_work():
    def slow(i):
        time.sleep(0.02 * (i % 3))  # later items often finish first
        return i * i

    assert [r for _, r in pipelined(range(12), slow, workers=3)] == [i * i for i in range(12)]
    assert [r for _, r in pipelined(range(5), slow, workers=1)] == [0, 1, 4, 9, 16]


def test_pipelined_finishes_read_items_before_a_read_error():
    def frames():
        yield from range(4)
        raise KeyboardInterrupt

    seen = []
    with pytest.raises(KeyboardInterrupt):
        for item, _ in pipelined(frames(), lambda i: i, workers=2):
            seen.append(item)
    assert seen == [0, 1, 2, 3]


def test_pipelined_stops_its_reader_when_left_early():
    produced = []

    def frames():
        for i in range(1000):
            produced.append(i)
            yield i

    results = pipelined(frames(), lambda i: i, workers=2, read_ahead=2)
    for item, _ in results:
        if item == 3:
            break
    results.close()
    time.sleep(0.1)
    count = len(produced)
    time.sleep(0.1)
    assert count == len(produced) < 20  # nothing read after the consumer left


def test_pipelined_left_early_near_the_end_returns_at_once():
    """The reader had read everything and waited to hand over its end marker into a full buffer: leaving
    early must not wait out the reader's join timeout (it took 10 s)."""
    def slow(i):
        time.sleep(0.2)
        return i

    start = time.perf_counter()
    for item, _ in pipelined(range(7), slow, workers=2):
        if item == 1:
            break
    assert time.perf_counter() - start < 3.0


def test_pipelined_raises_a_failed_call_in_frame_order():
    def fails_first(i):
        time.sleep(0.05)
        if i == 0:
            raise RuntimeError("boom")
        return i

    seen = []
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="boom"):
        for item, _ in pipelined(range(7), fails_first, workers=2):
            seen.append(item)
    assert seen == [] and time.perf_counter() - start < 3.0  # no later frame yielded before the error


def test_background_writer_writes_in_order_and_reports_errors():
    class Sink:
        def __init__(self, fail_at=None):
            self.frames, self.closed, self.fail_at = [], False, fail_at

        def write(self, frame):
            if frame == self.fail_at:
                raise OSError("disk full")
            self.frames.append(frame)

        def close(self):
            self.closed = True

    sink = Sink()
    with BackgroundWriter(sink) as writer:
        for i in range(20):
            writer.write(i)
    assert sink.frames == list(range(20)) and sink.closed
    failing = Sink(fail_at=2)
    writer = BackgroundWriter(failing)
    with pytest.raises(OSError, match="disk full"):
        for i in range(5):
            writer.write(i)
        writer.close()
    writer.close()  # idempotent, and the sink is closed either way
    assert failing.closed


def test_a_ctrl_c_while_the_writer_drains_still_closes_the_video(monkeypatch):
    """The KeyboardInterrupt landed in close()'s join: the sink, whose close puts the video in place, was
    never closed (only .name.part.mp4 was left). Now the rest of the queue is dropped and the sink closed.
    The Ctrl-C is raised by the first join itself: a real SIGINT from a timer thread did not arrive before the
    queue drained (0.4 s, then 2 s) in two full-suite CI runs, never when run alone."""
    class SlowSink:
        def __init__(self):
            self.frames, self.closed = [], False

        def write(self, frame):
            time.sleep(0.05)
            self.frames.append(frame)

        def close(self):
            self.closed = True

    sink = SlowSink()
    writer = BackgroundWriter(sink)
    for i in range(8):
        writer.write(i)
    join, joins = writer._thread.join, []

    def interrupted_join(timeout=None):
        joins.append(timeout)
        if len(joins) == 1:  # Ctrl-C while close() waits for the queue
            raise KeyboardInterrupt
        return join(timeout)

    monkeypatch.setattr(writer._thread, "join", interrupted_join)
    with pytest.raises(KeyboardInterrupt):
        writer.close()
    assert len(joins) == 2  # close() waited again, for the thread to drop the rest
    assert sink.closed and len(sink.frames) < 8 and sink.frames == list(range(len(sink.frames)))
    assert not writer._thread.is_alive()  # closed after the thread stopped, not while it writes


def test_the_video_sink_writes_gray_and_bgra_frames_and_no_empty_file(tmp_path):
    """mp4v skipped gray and BGRA frames with only a log line; a sink closed before any frame left a
    header-only .mp4 that nothing plays."""
    from yolo_attn.inference.sources import VideoSink

    from .helpers import count_frames

    sink = VideoSink(tmp_path / "mixed.mp4", 10.0, (64, 48))
    for frame in (np.zeros((48, 64, 3), np.uint8), np.zeros((48, 64), np.uint8), np.zeros((48, 64, 4), np.uint8)):
        sink.write(frame)
    sink.close()
    assert count_frames(tmp_path / "mixed.mp4") == 3
    empty = VideoSink(tmp_path / "empty.mp4", 10.0, (64, 48))
    empty.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.mp4"]


# --- benchmark tool ------------------------------------------------------------------------------------------

def test_benchmark_times_variants_and_writes_csv(tmp_path):
    from yolo_attn.inference.benchmark import build_variants, format_table, time_variants, write_csv
    from yolo_attn.utils.checkpoint import make_meta

    model = build_model(0, len(NAMES)).eval()
    meta = make_meta(model, NAMES, img_size=64)
    groups = ("torch", "openvino") if has_openvino else ("torch",)
    keep = ("baseline", "channels-last BN folded", "2 workers", "openvino fp32")
    variants = [v for v in build_variants(model, meta, 64, groups) if any(k in v.name for k in keep)
                and "int8" not in v.name]
    images = [np.full((48, 80, 3), 90, np.uint8)]
    frame = np.zeros((72, 128, 3), np.uint8)
    results = time_variants(variants, images, meta, 64, (1, 2), rounds=1, warmup=1, frame=frame, log=lambda s: None)
    assert not [r.error for r in results if r.error]
    assert {r.batch for r in results} == {1, 2}
    assert results[0].variant.endswith("(baseline)") and all(r.times_ms for r in results)
    assert all(r.e2e_ms for r in results if r.batch == 1 and "workers" not in r.variant)
    assert all(bool(r.uint8_ms) == ("workers" not in r.variant) for r in results)  # what the detector runs
    table = format_table(results, 0.2)
    assert table.count("\n") == len(results) + 1 and "| 1.00 |" in table
    assert all(line.count("|") == table.splitlines()[0].count("|") for line in table.splitlines())
    path = write_csv(results, 0.2, tmp_path / "bench.csv", "test machine")
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# test machine") and lines[1].startswith("variant,precision,batch,ms_median")
    assert len(lines) == len(results) + 2


def test_benchmark_times_a_turn_after_its_settling_calls():
    """A variant's turn starts untimed: the slow first call after another variant is not among the timed."""
    from yolo_attn.inference.benchmark import _time_calls

    started = []

    def call():  # the first call is slow, as a variant's first after another's
        started.append(time.perf_counter())
        if len(started) == 1:
            time.sleep(0.05)

    timed = []
    _time_calls(call, 3, timed, settle_s=0.01)
    assert len(started) == 4 and len(timed) == 3 and max(timed) < 50  # the slow call settled it, untimed
    started.clear()
    timed.clear()
    _time_calls(call, 3, timed)  # no settling: the slow call is the first timed one
    assert len(started) == 3 and timed[0] >= 50 > max(timed[1:])


def test_benchmark_reports_a_variant_that_fails_to_run_and_times_the_rest():
    from yolo_attn.inference.benchmark import Variant, build_variants, time_variants
    from yolo_attn.utils.checkpoint import make_meta

    model = build_model(0, len(NAMES)).eval()
    meta = make_meta(model, NAMES, img_size=64)
    baseline = [v for v in build_variants(model, meta, 64, ("torch",)) if v.baseline]

    working = baseline[0].make()

    class Broken(type(working)):  # builds, then fails on every call, as OpenCV 5's DNN does on our graph
        def __call__(self, batch):
            raise RuntimeError("convInferShape: assertion failed")

    broken = copy.copy(working)
    broken.__class__ = Broken
    variants = baseline + [Variant("broken fp32", "opencv", "fp32", lambda: broken)]
    results = time_variants(variants, [np.full((48, 80, 3), 90, np.uint8)], meta, 64, (1,), rounds=1, warmup=1,
                            frame=np.zeros((72, 128, 3), np.uint8), log=lambda s: None)
    timed = [r for r in results if not r.error]
    assert [r.variant for r in timed] == [baseline[0].name] and timed[0].times_ms
    assert [r.error for r in results if r.error] == ["batch 1: convInferShape: assertion failed"]


def test_benchmark_tool_runs_end_to_end(tmp_path, capsys):
    import runpy

    tool = runpy.run_path(str(Path(__file__).resolve().parents[2] / "tools" / "benchmark.py"))
    ckpt = make_checkpoint(tmp_path / "m.pt", phi=0)
    csv = tmp_path / "out.csv"
    argv = ["--weights", str(ckpt), "--img-size", "64", "--batch", "1", "--rounds", "1", "--backends", "torch",
            "--csv", str(csv)]
    assert tool["main"](argv) == 0
    out = capsys.readouterr().out
    assert "load average" in out and "GFLOP" in out and csv.is_file()
    # mistakes are one line each (they were tracebacks, and --video without weights was ignored)
    assert tool["main"](argv[:2] + ["--img-size", "100"]) == 1
    assert capsys.readouterr().err.startswith("error: --img-size 100: ")
    assert tool["main"](["--weights", str(tmp_path / "missing.pt")]) == 1
    assert "missing.pt: no such weights file" in capsys.readouterr().err
    for bad, message in ((["--rounds", "0"], "--rounds must be at least 1"),
                         (["--batch", "1", "0"], "--batch must be at least 1"),
                         (["--video"], "--video predicts with trained weights: give --weights")):
        with pytest.raises(SystemExit):
            tool["main"](bad)
        assert message in capsys.readouterr().err


def test_benchmark_runs_darknet_weights_at_their_own_cfg_shape(tmp_path, monkeypatch):
    """Without --img-size, weights whose cfg is 192x96 are timed and fitted at 192x96, as they run; before,
    at a 416 square."""
    from yolo_attn.inference.backends import TorchBackend
    from yolo_attn.inference.benchmark import run_benchmark
    from yolo_attn.models.darknet import save_darknet_weights, write_darknet_cfg

    weights = tmp_path / "wide.weights"
    save_darknet_weights(build_model(0, len(NAMES)).eval(), weights)
    write_darknet_cfg(build_model(0, len(NAMES)), weights.with_suffix(".cfg"), width=192, height=96)
    weights.with_suffix(".names").write_text("\n".join(NAMES) + "\n")
    shapes = set()
    real_call = TorchBackend.__call__
    monkeypatch.setattr(TorchBackend, "__call__", lambda self, batch: shapes.add(tuple(batch.shape[2:]))
                        or real_call(self, batch))
    lines = []
    assert run_benchmark(str(weights), None, (1,), ("torch",), rounds=1, csv_path=None, log=lines.append) == 0
    assert shapes == {(96, 192)}
    assert any("GFLOP per image at 192x96" in line for line in lines)
    shapes.clear()
    assert run_benchmark(str(weights), 64, (1,), ("torch",), rounds=1, csv_path=None, log=lines.append) == 0
    assert shapes == {(64, 64)}  # --img-size still decides


def test_benchmark_times_readable_training_images_when_one_is_broken(ckpt, tmp_path):
    """The benchmark's timing images are the first 8 readable calibration images: a broken training image is
    reported and skipped, as calibration skips it (before, it ended the run)."""
    from yolo_attn.inference.benchmark import run_benchmark

    from .helpers import write_images

    paths = write_images(tmp_path / "images" / "train", 3)
    write_images(tmp_path / "images" / "val", 1, seed=1)
    paths[0].write_bytes(paths[0].read_bytes()[:200])  # truncated: the listing reads its header, decoding fails
    config = tmp_path / "data.yaml"
    config.write_text(f"format: yolo\nroot: {tmp_path}\ntrain: [images/train]\nval: [images/val]\n"
                      f"names: {list(NAMES)}\n")
    lines = []
    assert run_benchmark(str(ckpt), IMG_SIZE, (1,), ("torch",), data=str(config), rounds=1, csv_path=None,
                         log=lines.append) == 0
    assert any(line.startswith("warning: skipping ") and paths[0].name in line for line in lines), lines
    assert any("| torch fp32 eager NCHW (baseline) | 1 |" in line for line in lines)


# --- the reference-style training loss -----------------------------------------------------------------------


def test_reference_loss_assigns_like_darknet():
    """The loop-built targets put each box where our vectorized Darknet assigner does (same best anchor,
    same cell), so the --train comparison times the same work done two ways; a small box whose best anchor
    is Darknet's unused (10, 14) gets no positive in either, as in Darknet."""
    from benchmarks.reference_loss import ReferenceYoloLoss
    from yolo_attn.engine.loss import YoloLoss

    model = build_model(0, 5)
    images = torch.rand(2, 3, 128, 128)
    targets = torch.tensor([[0, 1, 10, 12, 40, 60], [0, 3, 50, 50, 120, 110], [0, 0, 64, 20, 90, 44],
                            [1, 4, 5, 5, 125, 125], [1, 2, 70, 80, 92, 100], [1, 1, 30, 90, 60, 110],
                            [1, 0, 100, 8, 109, 21]],  # 9 x 13: best anchor 10 x 14, in no head
                           dtype=torch.float32)
    with torch.no_grad():
        outputs = model(images)
    config = model.config()
    reference = ReferenceYoloLoss(config["anchors"], config["anchor_masks"], 5)
    ours = YoloLoss(model.level_anchors(), 5, "darknet", all_anchors=model.anchors)
    t_xywh = torch.cat([(targets[:, 2:4] + targets[:, 4:6]) / 2, targets[:, 4:6] - targets[:, 2:4]], 1)
    preds = [o.reshape(2, 3, -1, o.shape[2], o.shape[3]).permute(0, 1, 3, 4, 2) for o in outputs]
    ours_cells = set()
    for level, (b, a, gj, gi, *_rest) in enumerate(ours._assign_darknet(preds, targets, t_xywh)):
        ours_cells |= {(level, *map(int, c)) for c in zip(b, a, gj, gi)}
    ref_cells = set()
    per_image = []
    for i in range(2):
        t = targets[targets[:, 0] == i]
        per_image.append(torch.stack([(t[:, 2] + t[:, 4]) / 2 / 128, (t[:, 3] + t[:, 5]) / 2 / 128,
                                      (t[:, 4] - t[:, 2]) / 128, (t[:, 5] - t[:, 3]) / 128, t[:, 1]], 1))
    for level, out in enumerate(outputs):
        h, w = out.shape[2:]
        scaled = [(aw / reference.strides[level], ah / reference.strides[level]) for aw, ah in reference.anchors]
        y_true, _, _ = reference._get_target(level, per_image, scaled, h, w, 2, 3)
        ref_cells |= {(level, *map(int, c)) for c in (y_true[..., 4] == 1).nonzero().tolist()}
    assert ref_cells and ref_cells == ours_cells
    loss = reference(outputs, targets)
    assert torch.isfinite(loss) and loss > 0


def test_the_reference_steps_csp_stages_compute_ours_the_ports_way():
    """The reference step's model (as_port: split, concatenate, pool) trains the same function as ours."""
    from benchmarks.train_step import as_port

    torch.manual_seed(0)
    ours = build_model(2, 3).double().train()
    port = as_port(copy.deepcopy(ours))
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    grads = []
    for model in (ours, port):
        outputs = model(x)
        sum(o.square().sum() for o in outputs).backward()
        grads.append([p.grad for p in model.parameters()] + [o.detach() for o in outputs])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    stages = [port.backbone.stage1, port.backbone.stage2, port.backbone.stage3]
    assert all(stage.forward.__func__.__name__ == "_port_csp_stage" for stage in stages)


def test_train_benchmark_runs(tmp_path):
    from benchmarks.train_step import run_train_benchmark

    lines = []
    assert run_train_benchmark(64, 2, rounds=1, csv_path=str(tmp_path / "t.csv"), log=lines.append) == 0
    text = "\n".join(lines)
    assert "reference: fp32 eager NCHW, loop-built targets" in text and "| 1.00 |" in text
    assert (tmp_path / "t.csv").read_text().count("\n") == 7  # comment, header, 5 variants
    phases = next(line for line in lines if line.startswith("ours, bf16 autocast channels-last, by phase"))
    assert all(f"{name} " in phases for name in ("forward", "loss", "backward", "clip + SGD", "EMA"))


# --- rectangular letterboxing (the video path) ----------------------------------------------------------------

def test_rect_runs_the_smallest_canvas_at_the_same_scale(ckpt, rng):
    det = Detector.load(ckpt, backend="torch", precision="fp32", conf=0.05)
    image = rng.integers(0, 255, (60, 128, 3), dtype=np.uint8)  # 2.13:1 -> 128x60, padded to 128x64
    square = det(image)
    det.rect = True
    rect = det(image)
    assert square.input_shape == (IMG_SIZE, IMG_SIZE) and rect.input_shape == (64, IMG_SIZE)
    assert rect.letterbox.scale == square.letterbox.scale and rect.letterbox.pad_y == 2
    assert len(rect) and (rect.boxes[:, [1, 3]] <= 60).all() and (rect.boxes[:, [0, 2]] <= 128).all()
    tall = det(rng.integers(0, 255, (200, 50, 3), dtype=np.uint8))
    assert tall.input_shape == (IMG_SIZE, 32)


@pytest.mark.skipif(not has_onnxruntime, reason="onnxruntime not installed")
def test_rect_needs_a_backend_that_takes_any_size(ckpt, tmp_path, rng):
    from yolo_attn.inference.export import export_model

    static = Detector.load(export_model(ckpt, "onnx", tmp_path / "m.onnx", log=lambda s: None), conf=0.05,
                           device="cpu")
    dynamic = Detector.load(ckpt, backend="onnxruntime", conf=0.05, device="cpu")  # in memory: dynamic axes
    # on the CPU, as onnxruntime runs here (a GPU's convolutions differ in the last bits)
    reference = Detector.load(ckpt, backend="torch", precision="fp32", conf=0.05, device="cpu")
    image = rng.integers(0, 255, (60, 128, 3), dtype=np.uint8)
    for det in (static, dynamic, reference):
        det.rect = True
    assert not static.backend.accepts_any_size and static(image).input_shape == (IMG_SIZE, IMG_SIZE)
    got, expected = dynamic(image), reference(image)
    assert got.input_shape == expected.input_shape == (64, IMG_SIZE) and len(got) == len(expected) > 0
    np.testing.assert_allclose(got.boxes, expected.boxes, atol=1e-2)


@needs_openvino
def test_an_export_replaced_in_place_with_its_times_kept_is_read_again(tmp_path):
    """Exports of two checkpoints of one architecture have the same sizes; one copied over the other keeping its
    file times (cp -p) was taken, within one process, for the export read before it: the other weights ran."""
    import shutil

    from yolo_attn.inference.export import export_model
    from yolo_attn.inference.hardware import export_for

    ckpt = make_checkpoint(tmp_path / "a" / "best.pt", phi=0)
    other = make_checkpoint(tmp_path / "b" / "best.pt", phi=0, seed=1)
    out = export_model(ckpt, "openvino", log=lambda s: None)
    replacement = export_model(other, "openvino", log=lambda s: None)
    size = max(out.stat().st_size, replacement.stat().st_size)  # the graphs' texts differ by a few bytes:
    for xml in (out, replacement):  # padded with spaces after the root element, the sizes match too
        xml.write_bytes(xml.read_bytes().ljust(size, b" "))
    assert export_for(ckpt, "fp32") == out  # read, and remembered
    for suffix in (".xml", ".bin"):
        old, new = out.with_suffix(suffix), replacement.with_suffix(suffix)
        assert old.stat().st_size == new.stat().st_size
        times = (old.stat().st_atime_ns, old.stat().st_mtime_ns)
        shutil.copyfile(new, old)
        os.utime(old, ns=times)
    assert export_for(ckpt, "fp32") is None  # the digest it now records is the other checkpoint's


def test_our_checkpoint_in_torchs_legacy_format_is_still_ours(tmp_path):
    import torch

    from yolo_attn.inference.detector import _checkpoint_meta
    from yolo_attn.utils.checkpoint import load_checkpoint

    ckpt = make_checkpoint(tmp_path / "zip.pt", phi=0)
    torch.save(load_checkpoint(ckpt), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert _checkpoint_meta(tmp_path / "legacy.pt") == _checkpoint_meta(ckpt)
    assert _checkpoint_meta(ckpt)["img_size"] == IMG_SIZE
