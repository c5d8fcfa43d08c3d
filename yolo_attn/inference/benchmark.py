"""Every way to run the network, timed side by side: ``tools/benchmark.py``.

Each *variant* is a backend and precision built from the same weights (PyTorch eager, fused, channels-last,
bf16, compiled; ONNX Runtime fp32 / int8; OpenVINO fp32 / bf16 / int8; OpenCV DNN), timed on the same
letterboxed inputs:

- forward: a float batch in, raw head maps out (what the issue's "forward" figures mean);
- forward from uint8: the same batch as letterboxed uint8 pixels (N, H, W, 3), converted and scaled inside
  the backend: what :class:`Detector` runs (OpenVINO's uint8 graph, which also takes the int8 input
  quantizer out of the graph);
- end to end: a 1280x720 BGR frame in (already decoded), final boxes out: letterbox, forward, decode, NMS;
- warm-up first, then rounds that visit every variant in turn (so load from other processes spreads over
  all of them), and medians with min-max over every timed call. Each turn starts with untimed calls (for
  :data:`SETTLE_S`, at least one), so the timed ones see the variant as a long run of it does, not in the
  wake of the variant before;
- achieved GFLOP/s (the model's FLOPs per image, Darknet's count, over the median time) and the speed-up over
  the plain fp32 eager baseline (the model as built: BN not folded, NCHW, fp32);
- with a dataset, mAP@0.5 on its val split per variant and the change against the baseline.

"2 workers" variants split a batch into single images run by two threads at once (one core each): sustained
throughput, as the video pipeline runs.

On a GPU (``--device cuda``) the PyTorch variants run there (fp32, channels-last, fp16, bf16; compiled), each
call including the copy of the batch in and of the maps out, as :class:`~.backends.TorchBackend` does for
the detector; the CPU-only runtimes (ONNX Runtime without its CUDA provider, OpenVINO, OpenCV) are skipped.
"""
from __future__ import annotations

import copy
import csv
import io
import itertools
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn as nn

from ..data.letterbox import as_hw
from ..utils.checkpoint import meta_input_shape, meta_nms, meta_resize
from .backends import OnnxRuntimeBackend, OpenVinoBackend, TorchBackend, available_backends
from .detector import Detector
from .hardware import cpu_features, keep_freed_memory, torch_threads

__all__ = [
    "BACKEND_GROUPS",
    "Result",
    "Variant",
    "benchmark_video",
    "build_variants",
    "check_csv_path",
    "format_table",
    "machine_summary",
    "make_test_video",
    "measure_map",
    "run_benchmark",
    "time_variants",
    "write_csv",
]

BACKEND_GROUPS = ("torch", "compile", "onnxruntime", "openvino", "opencv")
# Untimed seconds at the start of each variant's turn in a round. A call right after another variant runs
# slow, and the next few calls too: OpenVINO bf16 at 416 on 2 AMX cores, after 8 calls of a PyTorch fp32
# convolution stack, took 6.8, 4.7, 4.2, 4.1, 4.0 ... ms (medians of 20 such turns), and 3.8-3.9 from about the
# tenth call (40 ms in), as in a run of it alone.
SETTLE_S = 0.05
Log = Callable[[str], None]
Size = Union[int, Tuple[int, int]]  # an input side, or (height, width)


@dataclass
class Variant:
    """One way to run the network. ``backend`` is built on first use (compiling or quantizing takes time,
    recorded in ``setup_s``)."""

    name: str
    group: str
    precision: str
    make: Callable[[], Any]  # -> a Backend, or any callable (float batch) -> maps
    workers: int = 1
    baseline: bool = False
    backend: Any = None
    setup_s: float = 0.0
    error: str = ""

    def build(self) -> bool:
        if self.backend is None and not self.error:
            start = time.perf_counter()
            try:
                self.backend = self.make()
            except Exception as e:  # one variant that cannot be built (missing runtime, ISA) must not stop the rest
                self.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
            self.setup_s = time.perf_counter() - start
        return self.backend is not None

    def forward(self, batch: torch.Tensor) -> Any:
        if self.workers <= 1:
            return self.backend(batch)
        return _in_workers(self.backend, batch, self.workers)


def _in_workers(backend: Callable, batch: torch.Tensor, workers: int) -> None:
    """Single images of ``batch`` through ``workers`` threads at once (torch at one thread per worker)."""
    chunks = [list(range(i, len(batch), workers)) for i in range(workers)]
    errors: List[BaseException] = []

    def run(indices: List[int]) -> None:
        try:
            for i in indices:
                backend(batch[i : i + 1])
        except BaseException as e:  # surfaced below, in the caller's thread
            errors.append(e)

    with torch_threads(1):
        threads = [threading.Thread(target=run, args=(c,)) for c in chunks if c]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


@dataclass
class Result:
    """Timings of one variant at one batch size."""

    variant: str
    group: str
    precision: str
    batch: int
    times_ms: List[float] = field(default_factory=list)  # per call (a whole batch)
    uint8_ms: List[float] = field(default_factory=list)  # per call from uint8 pixels, single-worker variants
    e2e_ms: List[float] = field(default_factory=list)  # per frame, batch 1 only
    setup_s: float = 0.0
    map50: Optional[float] = None
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def per_image_ms(self) -> float:
        return self.median / self.batch

    @property
    def images_per_s(self) -> float:
        return 1000.0 * self.batch / self.median if self.times_ms else float("nan")


def machine_summary(device: Union[str, torch.device] = "cpu") -> str:
    """CPU, features, cores, load, library versions and the malloc setting (and the GPU, for a CUDA
    ``device``): the line every table is quoted with. Like every tool it lets malloc keep freed memory
    (:func:`~.hardware.keep_freed_memory`)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    versions = [f"torch {torch.__version__.split('+')[0]}"]
    for module in ("onnxruntime", "openvino"):
        try:
            versions.append(f"{module} {__import__(module).__version__.split('-')[0]}")
        except ImportError:
            pass
    gpu = ""
    if torch.device(device).type == "cuda":
        gpu = (f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, cuDNN "
               f"{torch.backends.cudnn.version()}); ")
    return (f"{gpu}{cpu}, {os.cpu_count()} cores, {cpu_features().summary()}; load average {load}; "
            f"{', '.join(versions)}; torch threads {torch.get_num_threads()}; "
            f"malloc {'keeps freed memory' if keep_freed_memory() else 'as is'}")


def _onnx(model: nn.Module, meta: Dict[str, Any], img_size: Size) -> bytes:
    from .export import export_meta, onnx_bytes

    return onnx_bytes(copy.deepcopy(model), export_meta(meta, img_size, True, "fp32", "benchmark"), img_size,
                      dynamic=True)


def build_variants(
    model: nn.Module,
    meta: Dict[str, Any],
    img_size: Size,
    groups: Sequence[str] = BACKEND_GROUPS,
    calibration: Optional[Sequence[np.ndarray]] = None,
    device: str = "cpu",
    log: Log = print,
) -> List[Variant]:
    """The variants to time, baseline first. ``calibration``: RGB images for int8 (training images). On a CUDA
    ``device``, the PyTorch variants there (see the module's docstring)."""
    from .export import export_meta, quantize_int8

    if torch.device(device).type == "cuda":
        return _cuda_variants(model, img_size, groups, device, log)

    fresh = lambda: copy.deepcopy(model).eval()  # noqa: E731 - every torch variant changes its own copy
    installed = set(available_backends())
    onnx_cache: Dict[str, Any] = {}

    def onnx_model() -> bytes:
        if "fp32" not in onnx_cache:
            onnx_cache["fp32"] = _onnx(model, meta, img_size)
        return onnx_cache["fp32"]

    def int8_meta() -> Dict[str, Any]:
        return export_meta(meta, img_size, True, "int8", "benchmark")

    def needs_calibration() -> Sequence[np.ndarray]:
        if not calibration:
            raise ValueError("int8 needs calibration images")
        return calibration

    v = [Variant("torch fp32 eager NCHW (baseline)", "torch", "fp32",
                 lambda: TorchBackend(fresh(), "fp32", fuse=False, channels_last=False), baseline=True)]
    if "torch" in groups:
        v += [
            Variant("torch fp32 BN folded", "torch", "fp32",
                    lambda: TorchBackend(fresh(), "fp32", channels_last=False)),
            Variant("torch fp32 channels-last BN folded", "torch", "fp32", lambda: TorchBackend(fresh(), "fp32")),
            Variant("torch fp32 channels-last, 2 workers", "torch", "fp32", lambda: TorchBackend(fresh(), "fp32"),
                    workers=2),
            Variant("torch bf16 channels-last BN folded", "torch", "bf16", lambda: TorchBackend(fresh(), "bf16")),
        ]
    if "compile" in groups:
        v += [
            Variant("torch.compile fp32 (frozen)", "compile", "fp32",
                    lambda: _compiled(TorchBackend(fresh(), "fp32", compile=True), img_size)),
            Variant("torch.compile bf16 (frozen)", "compile", "bf16",
                    lambda: _compiled(TorchBackend(fresh(), "bf16", compile=True), img_size)),
        ]
    if "onnxruntime" in groups and "onnxruntime" in installed:
        v += [
            Variant("onnxruntime fp32", "onnxruntime", "fp32", lambda: OnnxRuntimeBackend(onnx_model())),
            Variant("onnxruntime int8 QDQ (its quantizer)", "onnxruntime", "int8", lambda: OnnxRuntimeBackend(
                quantize_int8(onnx_model(), needs_calibration(), int8_meta(), img_size))),
        ]
    if "openvino" in groups and "openvino" in installed:
        from .export import openvino_model

        def ov(precision: str, **options: Any) -> OpenVinoBackend:
            if precision == "int8":
                if "int8" not in onnx_cache:
                    onnx_cache["int8"] = quantize_int8(openvino_model(onnx_model(), int8_meta()), needs_calibration(),
                                                       int8_meta(), img_size)
                return OpenVinoBackend(onnx_cache["int8"], "int8", **options)
            return OpenVinoBackend(openvino_model(onnx_model(), meta), precision, **options)

        v += [
            Variant("openvino fp32", "openvino", "fp32", lambda: ov("fp32")),
            Variant("openvino fp32 THROUGHPUT, 2 workers", "openvino", "fp32",
                    lambda: ov("fp32", hint="THROUGHPUT", streams=2), workers=2),
            Variant("openvino bf16", "openvino", "bf16", lambda: ov("bf16")),
            Variant("openvino int8 (NNCF)", "openvino", "int8", lambda: ov("int8")),
            Variant("openvino int8 THROUGHPUT, 2 workers", "openvino", "int8",
                    lambda: ov("int8", hint="THROUGHPUT", streams=2), workers=2),
        ]
    if "opencv" in groups:
        v.append(Variant("opencv dnn fp32", "opencv", "fp32", lambda: _OpenCvDnn(onnx_model())))
    return v


def _cuda_variants(model: nn.Module, img_size: Size, groups: Sequence[str], device: str,
                   log: Log) -> List[Variant]:
    """The PyTorch variants on a GPU: fp32 as built (the baseline), BN folded and channels-last, fp16 (the
    detector's choice there), bf16; with the compile group, fp16 compiled."""
    fresh = lambda: copy.deepcopy(model).eval()  # noqa: E731 - every torch variant changes its own copy
    skipped = sorted(set(groups) - {"torch", "compile"})
    if skipped:
        log(f"on {device}: {', '.join(skipped)} skipped (they run on the CPU: time them with --device cpu)")
    v = [Variant("torch fp32 eager NCHW (baseline)", "torch", "fp32",
                 lambda: TorchBackend(fresh(), "fp32", device, fuse=False, channels_last=False), baseline=True)]
    if "torch" in groups:
        v += [Variant(f"torch {precision} channels-last BN folded", "torch", precision,
                      lambda precision=precision: TorchBackend(fresh(), precision, device))
              for precision in ("fp32", "fp16", "bf16")]
    if "compile" in groups:
        v.append(Variant("torch.compile fp16 (frozen)", "compile", "fp16",
                         lambda: _compiled(TorchBackend(fresh(), "fp16", device, compile=True), img_size)))
    return v


def _compiled(backend: TorchBackend, img_size: Size) -> TorchBackend:
    """Trigger compilation now, so that setup_s holds the compile time, at both timed batch sizes."""
    backend(torch.rand(1, 3, *as_hw(img_size)))
    return backend


class _OpenCvDnn:
    """OpenCV's DNN module on the ONNX export (fp32): a common way to run YOLO on a CPU, for comparison."""

    name, precision, device, fixed_shape, torch_model = "opencv", "fp32", "cpu", (None, None, None), None
    torch_pool = False

    def __init__(self, onnx_model: bytes):
        self.net = cv2.dnn.readNetFromONNX(np.frombuffer(onnx_model, np.uint8))
        self.outputs = self.net.getUnconnectedOutLayersNames()

    def __call__(self, batch: torch.Tensor) -> List[torch.Tensor]:
        self.net.setInput(np.ascontiguousarray(batch.numpy()))
        return [torch.from_numpy(o) for o in self.net.forward(self.outputs)]

    def run_uint8(self, images: np.ndarray) -> List[torch.Tensor]:
        return self(torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous())

    def describe(self) -> str:
        return "opencv dnn fp32 on cpu"


def time_variants(
    variants: Sequence[Variant],
    images: Sequence[np.ndarray],
    meta: Dict[str, Any],
    img_size: Size = 416,
    batches: Sequence[int] = (1, 8),
    rounds: int = 10,
    warmup: int = 3,
    frame: Optional[np.ndarray] = None,
    log: Log = print,
    settle_s: float = SETTLE_S,
) -> List[Result]:
    """Time every variant at every batch size in interleaved rounds, on ``images`` (RGB, cycled to the batch)
    fitted to the input as the weights' Detector does; end to end at batch 1 on ``frame`` (a BGR image; a
    1280x720 test frame by default). Each turn of a variant in a round runs untimed for ``settle_s`` seconds
    (at least one call) before its timed calls."""
    frame = frame if frame is not None else _test_frame()
    results: List[Result] = []
    for v in variants:
        log(f"building {v.name} ...")
        if not v.build():
            log(f"  skipped: {v.error}")
    live = [v for v in variants if v.backend is not None]
    detectors = {v.name: Detector(v.backend, meta, img_size) for v in live}
    for batch in batches:
        if not live:
            break
        x = detectors[live[0].name].preprocess([images[i % len(images)] for i in range(batch)])[0]
        pixels = np.ascontiguousarray(x.mul(255.0).round_().byte().permute(0, 2, 3, 1).numpy())  # exact: x = u8/255
        rows = {v.name: Result(v.name, v.group, v.precision, batch, setup_s=v.setup_s) for v in live}
        calls = max(1, 8 // batch)  # calls per variant per round: a round costs about the same at any batch
        log(f"batch {batch}: warm-up, then {rounds} interleaved rounds of {calls} call(s) per variant")
        with torch.inference_mode():
            for v in list(live):
                # a dynamic OpenVINO model compiles a graph fixed to a shape after STATIC_AFTER calls of it
                # (with room for each batch size, float and uint8, and the end-to-end input): warm up past that,
                # so the timed calls see the graph a long run uses
                settle = warmup
                if getattr(v.backend, "_dynamic", False):
                    v.backend.MAX_STATIC = max(v.backend.MAX_STATIC, 2 * len(batches) + 1)
                    settle = max(warmup, v.backend.STATIC_AFTER)
                try:
                    for _ in range(settle):
                        v.forward(x)
                    if _from_uint8(v):
                        for _ in range(settle):
                            v.backend.run_uint8(pixels)
                except Exception as e:  # built but cannot run this model (OpenCV 5's DNN on our ONNX graph)
                    v.error = f"batch {batch}: {str(e).strip().splitlines()[-1][:200]}"
                    log(f"  {v.name} skipped: {v.error}")
                    live.remove(v)
                    del rows[v.name]
                    continue
                if batch == 1 and v.name in detectors and v.workers == 1:
                    for _ in range(settle):
                        detectors[v.name].predict([frame], bgr=True)
            for _ in range(rounds):
                for v in live:
                    _time_calls(lambda: v.forward(x), calls, rows[v.name].times_ms, settle_s)
                    if _from_uint8(v):
                        _time_calls(lambda: v.backend.run_uint8(pixels), calls, rows[v.name].uint8_ms, settle_s)
                    if batch == 1 and v.name in detectors and v.workers == 1:
                        # end to end runs the uint8 graph of the frame's shape: the settling calls take the
                        # switch of graphs that a video never makes
                        _time_calls(lambda: detectors[v.name].predict([frame], bgr=True), calls, rows[v.name].e2e_ms,
                                    settle_s)
        results.extend(rows[v.name] for v in live)
    results.extend(Result(v.name, v.group, v.precision, 0, error=v.error) for v in variants if v.error)
    return results


def _time_calls(call: Callable[[], Any], count: int, into: List[float], settle_s: float = 0.0) -> None:
    """``call`` run untimed for ``settle_s`` seconds (at least once when positive), then ``count`` times, each
    timed call's milliseconds appended to ``into``."""
    if settle_s > 0:
        end = time.perf_counter() + settle_s
        call()
        while time.perf_counter() < end:
            call()
    for _ in range(count):
        start = time.perf_counter()
        call()
        into.append((time.perf_counter() - start) * 1000.0)


def _from_uint8(v: Variant) -> bool:
    """Whether ``v`` is also timed from uint8 pixels (single-worker variants of backends that take them)."""
    return v.workers == 1 and hasattr(v.backend, "run_uint8")


def _test_frame(seed: int = 0) -> np.ndarray:
    """A 1280x720 BGR frame of shapes on a blurred background."""
    from .export import synthetic_images

    base = synthetic_images(1, seed)[0]
    return cv2.resize(base, (1280, 720))


def measure_map(
    variants: Sequence[Variant],
    results: List[Result],
    dataset: Any,
    meta: Dict[str, Any],
    img_size: Size,
    log: Log = print,
) -> None:
    """mAP@0.5 (VOC area AP, the embedded set's metric) of each variant on ``dataset``, into ``results``."""
    from ..eval import evaluate

    scores: Dict[str, float] = {}
    for v in variants:
        if v.backend is None or v.error or v.workers > 1 or not hasattr(v.backend, "run_uint8"):
            continue
        module = Detector(v.backend, meta, img_size).as_module()
        with torch_threads(torch.get_num_threads()):
            result = evaluate(module, dataset, img_size=img_size, batch_size=8, metrics=["voc12"],
                              scale_x_y=float(meta.get("scale_x_y", 1.05)), preprocess=meta.get("preprocess"),
                              nms=meta_nms(meta), resize=meta_resize(meta), verbose=False)
        scores[v.name] = float(result["voc12_map50"])
        log(f"  mAP@0.5 {100 * scores[v.name]:.2f}  {v.name}")
    for r in results:
        r.map50 = scores.get(r.variant)


def _baseline_ms(results: Sequence[Result], batch: int) -> Optional[float]:
    base = next((r for r in results if r.batch == batch and "baseline" in r.variant and r.times_ms), None)
    return base.per_image_ms if base else None


COLUMNS = ["variant", "precision", "batch", "ms_median", "ms_min", "ms_max", "ms_per_image", "img_per_s",
           "gflops_per_s", "speedup_vs_baseline", "uint8_ms_median", "uint8_ms_min", "uint8_ms_max",
           "e2e_ms_median", "e2e_ms_min", "e2e_ms_max", "setup_s", "map50", "map50_delta_points", "error"]


def _rows(results: Sequence[Result], gflops: float) -> List[Dict[str, Any]]:
    rows = []
    base_map = next((r.map50 for r in results if "baseline" in r.variant and r.map50 is not None), None)
    for r in results:
        base = _baseline_ms(results, r.batch)
        has = bool(r.times_ms)
        rows.append({
            "variant": r.variant, "precision": r.precision, "batch": r.batch,
            "ms_median": r.median if has else None, "ms_min": min(r.times_ms) if has else None,
            "ms_max": max(r.times_ms) if has else None, "ms_per_image": r.per_image_ms if has else None,
            "img_per_s": r.images_per_s if has else None,
            "gflops_per_s": gflops * r.images_per_s if has else None,
            "speedup_vs_baseline": base / r.per_image_ms if has and base else None,
            "uint8_ms_median": statistics.median(r.uint8_ms) if r.uint8_ms else None,
            "uint8_ms_min": min(r.uint8_ms) if r.uint8_ms else None,
            "uint8_ms_max": max(r.uint8_ms) if r.uint8_ms else None,
            "e2e_ms_median": statistics.median(r.e2e_ms) if r.e2e_ms else None,
            "e2e_ms_min": min(r.e2e_ms) if r.e2e_ms else None, "e2e_ms_max": max(r.e2e_ms) if r.e2e_ms else None,
            "setup_s": r.setup_s if has else None,
            "map50": 100 * r.map50 if r.map50 is not None else None,
            "map50_delta_points": 100 * (r.map50 - base_map) if r.map50 is not None and base_map is not None else None,
            "error": r.error,
        })
    return rows


def format_table(results: Sequence[Result], gflops: float) -> str:
    """A markdown table: one row per variant and batch size. "ms" is the forward of a float batch (img/s,
    GFLOP/s and the ratio to the baseline come from it), "from uint8" the forward of the same batch as
    letterboxed uint8 pixels (what the detector runs), both medians with min-max."""
    header = ("| variant | batch | ms (median) | min-max | from uint8 ms | img/s | GFLOP/s | x baseline | "
              "end to end ms | setup s | mAP@0.5 | delta |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda x, f: "" if x is None else format(x, f)  # noqa: E731
    for row in _rows(results, gflops):
        if row["error"]:
            lines.append(f"| {row['variant']} | | not available: {row['error']} | | | | | | | | | |")
            continue
        lines.append(
            f"| {row['variant']} | {row['batch']} | {row['ms_median']:.1f} | {row['ms_min']:.1f}-{row['ms_max']:.1f} | "
            f"{_spread(row, 'uint8_ms')} | {row['img_per_s']:.1f} | {row['gflops_per_s']:.0f} | "
            f"{fmt(row['speedup_vs_baseline'], '.2f')} | {_spread(row, 'e2e_ms')} | {row['setup_s']:.1f} | "
            f"{fmt(row['map50'], '.2f')} | {fmt(row['map50_delta_points'], '+.2f')} |")
    return "\n".join(lines)


def _spread(row: Dict[str, Any], key: str) -> str:
    """"median (min-max)" of a row's ``key`` timings, or "" where it has none."""
    if row[f"{key}_median"] is None:
        return ""
    return f"{row[f'{key}_median']:.1f} ({row[f'{key}_min']:.1f}-{row[f'{key}_max']:.1f})"


def check_csv_path(path: Union[str, os.PathLike]) -> None:
    """Refuse a CSV path that could not be written (a folder, under a file, in a folder not writable) before
    anything is timed, rather than after."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--csv {path}: is a folder; give a file name (e.g. {path / 'results.csv'})")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:  # the folder write_csv would create it in
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--csv {path}: {existing} is a file, not a folder; give a path in a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--csv {path}: cannot write into {existing} (permission denied); give a path in a "
                         f"writable folder, or --csv '' for no CSV")


def write_csv(results: Sequence[Result], gflops: float, path: Path, machine: str) -> Path:
    """The table as CSV (one ``# machine`` comment line first), written atomically."""
    from ..utils.paths import write_atomic

    buf = io.StringIO()
    buf.write(f"# {machine}; {gflops:.3f} GFLOP per image\n")
    writer = csv.DictWriter(buf, COLUMNS)
    writer.writeheader()
    for row in _rows(results, gflops):
        writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_atomic(Path(path), buf.getvalue())
    return Path(path)


def make_test_video(path: Path, frames: int = 300, size=(1280, 720), fps: float = 30.0, seed: int = 0) -> Path:
    """A video of coloured shapes moving over a textured background (mp4v), for the video benchmark."""
    w, h = size
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 8)
    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0), (0, 255, 255), (255, 0, 255), (255, 255, 0)]
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    try:
        for i in range(frames):
            image = background.copy()
            for k, colour in enumerate(colours):
                x = int((i * (3 + k) + k * 200) % (w - 120))
                y = int(h * (k + 1) / (len(colours) + 1) + 40 * np.sin(i / 20 + k))
                if k % 3 == 0:
                    cv2.circle(image, (x + 50, y), 40 + 10 * (k % 2), colour, -1)
                elif k % 3 == 1:
                    cv2.rectangle(image, (x, y - 40), (x + 90, y + 40), colour, -1)
                else:
                    cv2.fillPoly(image, [np.array([[x, y + 40], [x + 45, y - 40], [x + 90, y + 40]])], colour)
            writer.write(image)
    finally:
        writer.release()
    return path


def benchmark_video(weights: str, video: Path, out_dir: Path, backend: Optional[str] = None,
                    precision: Optional[str] = None, device: str = "auto", log: Log = print) -> Dict[str, float]:
    """Predict on ``video`` exactly as ``tools/predict.py`` does (decode, inference, drawing, encode, threads
    overlapping) and return frames and frames per second; plus each stage alone, for the note."""
    from .predict import run_predict

    lines: List[str] = []
    start = time.perf_counter()
    status = run_predict(weights, str(video), backend=backend, precision=precision, device=device,
                         project=str(out_dir), name="video", log=lambda s: (lines.append(s), log(s)))
    elapsed = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"prediction on {video} failed (exit {status})")
    fps_line = next((ln for ln in lines if "FPS end to end" in ln), "")
    fps = float(fps_line.rsplit(",", 1)[1].split("FPS")[0]) if fps_line else float("nan")
    capture = cv2.VideoCapture(str(video))
    frames, t0 = 0, time.perf_counter()
    last = None
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames, last = frames + 1, image
    decode_ms = (time.perf_counter() - t0) * 1000.0 / max(frames, 1)
    capture.release()
    encode_ms = float("nan")
    if last is not None:
        sink_path = out_dir / "encode_only.mp4"
        writer = cv2.VideoWriter(str(sink_path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (last.shape[1], last.shape[0]))
        t0 = time.perf_counter()
        for _ in range(min(frames, 100)):
            writer.write(last)
        writer.release()
        encode_ms = (time.perf_counter() - t0) * 1000.0 / min(frames, 100)
        sink_path.unlink(missing_ok=True)
    return {"frames": frames, "fps": fps, "wall_s": elapsed, "decode_ms": decode_ms, "encode_ms": encode_ms}


def run_benchmark(
    weights: Optional[str] = None,
    img_size: Optional[Size] = None,
    batch: Sequence[int] = (1, 8),
    backends: Sequence[str] = ("all",),
    data: Optional[str] = None,
    rounds: int = 10,
    calib_count: int = 300,
    csv_path: Optional[str] = "benchmarks/results.csv",
    video: bool = False,
    device: str = "cpu",
    log: Log = print,
) -> int:
    """The command line's inference benchmark, at ``img_size`` (an int, (h, w), or None for the weights' own
    input shape: a converted Darknet cfg's width and height, 416 without weights), on ``device`` (the CPU, or
    a GPU for the PyTorch variants). Returns the exit status."""
    from ..models.info import model_info
    from ..utils.device import resolve_device
    from .export import calibration_images, check_data_config, synthetic_images

    device = str(resolve_device(device))  # a clear error before anything is built
    if csv_path:
        check_csv_path(csv_path)
    check_data_config(data, "; its train split calibrates int8 and its val split measures mAP")
    model, meta = _load_or_build(weights, log)
    groups = BACKEND_GROUPS if "all" in backends else tuple(backends)
    unknown = set(groups) - set(BACKEND_GROUPS)
    if unknown:
        log(f"error: unknown backend group(s) {sorted(unknown)}; choose from all, {', '.join(BACKEND_GROUPS)}")
        return 1
    img_size = as_hw(img_size) if img_size is not None else meta_input_shape(meta)
    gflops = model_info(model, img_size)["gflops"]
    machine = machine_summary(device)
    log(f"machine: {machine}")
    log(f"model: {meta['model'].get('attention') or 'no attention'}, {len(meta['names'])} classes, "
        f"{gflops:.3f} GFLOP per image at {img_size[1]}x{img_size[0]}")
    if data is not None:
        calibration = calibration_images(data, count=calib_count, log=log)
    else:
        calibration = synthetic_images(32)
        log("no --data: int8 is calibrated on synthetic pictures (timings are valid, accuracy is not measured)")
    variants = build_variants(model, meta, img_size, groups, calibration, device, log)
    # the first 8 readable ones (iterating skips an unreadable image with a warning; indexing would raise)
    results = time_variants(variants, list(itertools.islice(calibration, 8)), meta, img_size, batch, rounds,
                            log=log)
    if data is not None:
        from ..data import build_dataset, load_data_config

        log("mAP@0.5 on the val split, per variant:")
        measure_map(variants, results, build_dataset(load_data_config(data), "val"), meta, img_size, log)
    log("")
    log(f"{machine}; {gflops:.3f} GFLOP per image")
    log(format_table(results, gflops))
    if csv_path:
        log(f"written {write_csv(results, gflops, Path(csv_path), machine)}")
    if video and weights:
        clip = make_test_video(Path("runs/benchmark/clip720.mp4"))
        stats = benchmark_video(weights, clip, Path("runs/benchmark"), device=device, log=log)
        log(f"video 1280x720, {stats['frames']} frames: {stats['fps']:.1f} FPS end to end; the whole run "
            f"{stats['wall_s']:.1f} s with loading the weights (decode alone {stats['decode_ms']:.1f} ms/frame, "
            f"encode alone {stats['encode_ms']:.1f} ms/frame)")
    return 0


def _load_or_build(weights: Optional[str], log: Log):
    """The checkpoint's model and meta; without weights, a random YOLOv4-tiny (80 classes) whose objectness
    is pushed down so that end-to-end times are not dominated by NMS over thousands of random boxes."""
    if weights:
        from ..utils.checkpoint import load_model

        if Path(weights).is_dir():
            exported = sorted(Path(weights).glob("*.xml"))
            if len(exported) == 1:
                raise ValueError(f"--weights {weights}: is an OpenVINO export folder ({exported[0].name}); the "
                                 f"benchmark builds every backend and precision from PyTorch weights: give the "
                                 f"checkpoint (.pt) it was exported from")
            raise ValueError(f"--weights {weights}: is a folder; give a weights file: our checkpoint (.pt), Darknet "
                             f".weights or a port state dict (.pth)")
        return load_model(weights)
    from ..models import build_model
    from ..utils.checkpoint import make_meta

    torch.manual_seed(0)
    model = build_model(0, 80).eval()
    with torch.no_grad():
        for head in (model.head_p5.pred, model.head_p4.pred):
            head.bias.view(model.num_anchors, -1)[:, 4] = -8.0
    log("no --weights: timing a randomly initialised YOLOv4-tiny (80 classes)")
    return model, make_meta(model, [f"class{i}" for i in range(80)], img_size=416)
