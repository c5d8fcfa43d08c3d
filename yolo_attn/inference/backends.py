"""Network execution behind one small interface: PyTorch (eager, or a TorchScript export), ONNX Runtime and OpenVINO.

Every backend takes a float batch ``(B, 3, H, W)`` RGB in [0, 1] and returns the raw head maps
``[p5, p4]`` as float32 CPU tensors, exactly what :class:`~yolo_attn.models.YoloV4Tiny` returns. Prediction
calls ``run_uint8`` (letterboxed uint8 NHWC in) so that the conversion happens where it is cheapest.
Letterboxing, decoding and NMS stay in :class:`~yolo_attn.inference.detector.Detector`, so every backend gets
the same pre- and post-processing. New variants (bf16, int8, compiled graphs, automatic choice) register a class here::

    @register_backend
    class MyBackend(Backend):
        name = "mine"
        precisions = ("fp32", "bf16")
        ...
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
import logging
import os
import re
import threading
import warnings
from abc import ABC, abstractmethod
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Type, Union

import numpy as np
import torch
import torch.nn as nn

from ..utils.device import resolve_device
from .hardware import cpu_features, torch_threads

__all__ = [
    "BACKENDS",
    "META_KEY",
    "Backend",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "TorchBackend",
    "TorchScriptBackend",
    "available_backends",
    "create_backend",
    "last_line",
    "register_backend",
]

LOGGER = logging.getLogger("yolo_attn.inference")
META_KEY = "yolo_attn"  # ONNX metadata_props key / OpenVINO rt_info key holding the checkpoint meta as JSON
TORCHSCRIPT_META_FILE = "yolo_attn.json"  # the same JSON, as an extra file of a TorchScript archive
PathLike = Union[str, os.PathLike]
BACKENDS: Dict[str, Type["Backend"]] = {}


def register_backend(cls: Type["Backend"]) -> Type["Backend"]:
    """Class decorator: make a backend available by its ``name`` to :func:`create_backend`."""
    BACKENDS[cls.name] = cls
    return cls


class Backend(ABC):
    """Runs the network. Subclasses set ``name``, ``precisions`` and ``requires`` (module names to import).

    Attributes:
        precision: the precision it runs in ("fp32", "bf16", "int8").
        device: where it runs, as given ("cpu", "cuda:0", ...).
        fixed_shape: (batch, height, width) the model requires, each None where any is accepted (a static
            export fixes all three; a dynamic one none).
        meta: the checkpoint meta carried by an exported file, or None (torch models get theirs from the
            checkpoint).
    """

    name: ClassVar[str]
    precisions: ClassVar[Tuple[str, ...]] = ("fp32",)
    requires: ClassVar[Tuple[str, ...]] = ()
    torch_pool: ClassVar[bool] = True  # runs on torch's intra-op threads; False: on a pool of its own

    precision: str = "fp32"
    device: str = "cpu"
    fixed_shape: Tuple[Optional[int], Optional[int], Optional[int]] = (None, None, None)
    meta: Optional[Dict[str, Any]] = None

    @classmethod
    def is_available(cls) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in cls.requires)

    @abstractmethod
    def __call__(self, batch: torch.Tensor) -> List[torch.Tensor]:
        """(B, 3, H, W) float RGB in [0, 1] -> raw maps [p5, p4], float32 on the CPU."""

    def run_uint8(self, images: np.ndarray) -> List[torch.Tensor]:
        """(B, H, W, 3) uint8 RGB letterboxed images -> raw maps. The lean path of prediction: backends that
        convert inside their graph (OpenVINO) or straight to their layout (torch) override it. A runtime with a
        pool of its own has the conversion done on one torch thread: torch's workers, woken by it, spin on and
        take that pool's cores (ONNX Runtime fp32 at 416 on 2 cores: 22.4-24.9 against 20.5-21.3 ms)."""
        with nullcontext() if self.torch_pool else torch_threads(1):
            batch = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        return self(batch)

    @property
    def torch_model(self) -> Optional[nn.Module]:
        """The PyTorch module when there is one (needed for the attention view), else None."""
        return None

    @property
    def accepts_any_size(self) -> bool:
        """Whether inputs of any height and width (multiples of 32) run, as rectangular letterboxing needs."""
        return self.fixed_shape[1] is None and self.fixed_shape[2] is None

    def describe(self) -> str:
        return f"{self.name} {self.precision} on {self.device}"

    def _check_precision(self, precision: str) -> str:
        if precision not in self.precisions:
            raise ValueError(f"the {self.name} backend runs {', '.join(self.precisions)}, not '{precision}'")
        return precision


@register_backend
class TorchBackend(Backend):
    """PyTorch: BatchNorm folded into the convolutions, channels-last, in fp32, bf16 (CPUs where bf16 is fast) or
    fp16 (CUDA); optionally compiled with ``torch.compile`` (inductor, weights frozen as constants).

    Args:
        fuse: fold BatchNorm (inference only; the model is changed in place).
        channels_last: NHWC memory layout, which oneDNN's and cuDNN's fastest convolutions use.
        compile: compile on the first call (tens of seconds; worth it for long videos on CPUs with AMX).
    """

    name = "torch"
    precisions = ("fp32", "bf16", "fp16")
    _DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

    def __init__(self, model: nn.Module, precision: str = "fp32", device: str = "cpu", fuse: bool = True,
                 channels_last: bool = True, compile: bool = False):
        self.precision = self._check_precision(precision)
        self.device = str(resolve_device(device))
        if precision == "fp16" and not self.device.startswith("cuda"):  # CPUs emulate it: 20-50x slower
            raise ValueError("fp16 runs on CUDA; on a CPU use --precision fp32 or bf16")
        self.dtype = self._DTYPES[precision]
        self.fused = fuse and hasattr(model, "fuse")
        self.channels_last = channels_last
        self.compiled = compile
        self.model = model.to(self.device).eval()
        if self.fused:
            self.model.fuse()
        self.model.to(self.dtype)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._forward = self.model
        if compile:
            import torch._inductor.config as inductor_config

            compiled = torch.compile(self.model, mode="max-autotune-no-cudagraphs")

            def frozen(x: torch.Tensor):
                # weights become constants (folded, pre-packed for oneDNN); set per call, not process-wide,
                # since compilation happens on the first call of each new input shape
                with inductor_config.patch(freezing=True):
                    return compiled(x)

            self._forward = frozen

    @property
    def torch_model(self) -> Optional[nn.Module]:
        return None if self.compiled else self.model  # a compiled graph keeps no attention gates

    def describe(self) -> str:
        how = [w for w, on in (("channels-last", self.channels_last), ("BN folded", self.fused),
                               ("compiled", self.compiled)) if on]
        return f"torch {self.precision} ({', '.join(how) or 'eager'}) on {self.device}"

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> List[torch.Tensor]:
        batch = batch.to(self.device, self.dtype, non_blocking=True)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return [o.float().cpu() for o in self._forward(batch)]

    @torch.inference_mode()
    def run_uint8(self, images: np.ndarray) -> List[torch.Tensor]:
        # an NHWC array seen as NCHW *is* channels-last: one conversion, no layout copy
        batch = torch.from_numpy(images).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        batch = batch.to(self.dtype).div_(255.0)
        if not self.channels_last:
            batch = batch.contiguous()
        return [o.float().cpu() for o in self._forward(batch)]


@register_backend
class TorchScriptBackend(Backend):
    """A TorchScript export (``.torchscript``, ``tools/export.py --format torchscript``): the model traced with
    BatchNorm folded, run by torch's own interpreter (as LibTorch runs it from C++), channels-last, in fp32 or,
    on CUDA, fp16. The checkpoint meta travels inside the archive (``yolo_attn.json``). A traced convolutional
    network takes any input size and batch, so every export runs at any size."""

    name = "torchscript"
    precisions = ("fp32", "fp16")

    def __init__(self, model: PathLike, precision: Optional[str] = None, device: str = "cpu"):
        self.device = str(resolve_device(device))
        self.precision = self._check_precision(precision or "fp32")
        if self.precision == "fp16" and not self.device.startswith("cuda"):
            raise ValueError("fp16 runs on CUDA; on a CPU a TorchScript export runs in fp32")
        extra = {TORCHSCRIPT_META_FILE: ""}
        try:
            # a TorchScript archive holds tensors and a graph of torch operations, unpickled by torch's own
            # restricted reader: no Python of the file's runs
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 points to torch.export
                module = torch.jit.load(str(model), map_location=self.device, _extra_files=extra)
        except Exception as e:  # RuntimeError / ValueError from the archive reader: torn, or not TorchScript
            raise ValueError(f"{model}: not a TorchScript file torch can read ({_first_line(e)})") from None
        self.meta = _parse_meta(extra[TORCHSCRIPT_META_FILE], model)
        self.dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.module = module.eval().to(self.dtype)

    def describe(self) -> str:
        return f"torchscript {self.precision} (channels-last) on {self.device}"

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> List[torch.Tensor]:
        batch = batch.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=torch.channels_last)
        return [o.float().cpu() for o in self.module(batch)]


@register_backend
class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on an exported ``.onnx`` file (or its bytes). The precision is the file's own."""

    name = "onnxruntime"
    precisions = ("fp32", "int8")
    requires = ("onnxruntime",)
    torch_pool = False

    def __init__(self, model: Union[PathLike, bytes], precision: Optional[str] = None, device: str = "cpu",
                 threads: Optional[int] = None):
        import onnxruntime as ort

        cuda_index = _cuda_index(device)
        providers: List[Any] = ["CPUExecutionProvider"]
        if cuda_index is not None and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": cuda_index}))
        source = model if isinstance(model, bytes) else str(model)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as e:  # ONNX Runtime's own exception types: corrupt file, unsupported op, ...
            raise ValueError(f"{_label(model)}: not a loadable ONNX model ({_first_line(e)})") from None
        # what the session really runs on: ONNX Runtime falls back to the CPU, silently, where CUDA is missing
        self.providers: List[str] = list(self.session.get_providers())
        self.device = device if "CUDAExecutionProvider" in self.providers else "cpu"
        self.fallback = ""
        if cuda_index is not None and self.device == "cpu":
            self.fallback = f"asked for {device}: no usable CUDAExecutionProvider in this ONNX Runtime"
            LOGGER.warning("onnxruntime: asked for %s, but this ONNX Runtime has no usable CUDAExecutionProvider; "
                           "running on the CPU (onnxruntime-gpu with a matching CUDA runs on the GPU)", device)
        self.meta = _parse_meta(self.session.get_modelmeta().custom_metadata_map.get(META_KEY), model)
        self.precision = _matching_precision(self, precision)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.fixed_shape = _fixed_shape(inp.shape)

    def describe(self) -> str:
        fallback = f"; {self.fallback}" if self.fallback else ""
        return f"onnxruntime {self.precision} on {self.device} ({self.providers[0]}{fallback})"

    def __call__(self, batch: torch.Tensor) -> List[torch.Tensor]:
        array = np.ascontiguousarray(batch.detach().cpu().float().numpy())
        with torch_threads(1):
            outputs = self.session.run(None, {self.input_name: array})
        return [torch.from_numpy(o) for o in outputs]


@register_backend
class OpenVinoBackend(Backend):
    """OpenVINO on an IR (``.xml``), an ``.onnx`` file or an in-memory ``openvino.Model``.

    fp32 is forced explicitly: on CPUs with bf16 support OpenVINO would otherwise run in bf16. uint8 input
    (:meth:`run_uint8`) goes through a second compiled graph that converts and scales inside OpenVINO. A model
    with a free input size (``--dynamic``, or weights converted in memory) also gets a graph compiled for one
    input shape once that shape has come :attr:`STATIC_AFTER` times, for up to :attr:`MAX_STATIC` shapes:
    OpenVINO runs a fixed shape faster (bf16 at 256x416, a 720p frame's letterbox, 3.22 against 3.50 ms for
    the graph on 2 AMX cores), and compiling one takes about 0.1 s. Calls are thread-safe (one infer request
    per thread); with ``hint="THROUGHPUT"`` and ``streams=N``, N threads calling at once run in parallel, one
    core each (the video pipeline does this).

    Args:
        hint: OpenVINO's PERFORMANCE_HINT: "LATENCY" (one stream using every core; best for one caller)
            or "THROUGHPUT" (several streams; best for several callers at once).
        streams: NUM_STREAMS with the THROUGHPUT hint (default: OpenVINO's choice, one per core here).
    """

    name = "openvino"
    precisions = ("fp32", "bf16", "int8")
    requires = ("openvino",)
    torch_pool = False
    _HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 models: layers left in float run f32
    STATIC_AFTER = 16  # calls of one input shape before a dynamic model gets a graph fixed to it
    MAX_STATIC = 4  # fixed-shape graphs kept per backend (each holds its own copy of the weights)

    def __init__(self, model: Any, precision: Optional[str] = None, device: str = "cpu", hint: str = "LATENCY",
                 streams: Optional[int] = None):
        self._core = _openvino_core()
        meta_text = None
        if isinstance(model, (str, os.PathLike)):
            path = str(model)
            weights = Path(path).with_suffix(".bin")
            if path.lower().endswith(".xml") and not weights.is_file():
                raise ValueError(f"{path}: its weights, {weights.name}, are not beside it (an OpenVINO IR is the "
                                 f".xml and the .bin of its name; copy both)")
            try:
                model = self._core.read_model(path)
            except Exception as e:  # OpenVINO raises RuntimeError with the whole C++ context, its cause last
                raise ValueError(f"{path}: not a loadable OpenVINO/ONNX model ({last_line(e)})") from None
            if path.lower().endswith(".onnx"):  # OpenVINO's ONNX reader drops metadata_props
                meta_text = _onnx_metadata(path)
        self.device = device
        self.meta = _parse_meta(meta_text or _ov_rt_info(model), model.get_friendly_name() or "OpenVINO model")
        file_precision = (self.meta or {}).get("precision", "fp32")
        if precision is None:
            precision = file_precision
        elif precision == "int8" and file_precision != "int8":
            raise ValueError("this OpenVINO model is not quantized; export it with --precision int8")
        elif precision != "int8" and file_precision == "int8":  # it would run int8 under another name
            raise ValueError(f"this OpenVINO model is quantized and runs as int8, not as {precision}; leave "
                             "--precision out, or run the float export (or the checkpoint) for float")
        self.precision = self._check_precision(precision)
        if hint not in ("LATENCY", "THROUGHPUT"):
            raise ValueError(f"OpenVINO performance hint must be LATENCY or THROUGHPUT, not '{hint}'")
        self.hint, self.streams = hint, streams
        self._ov_device = {"cpu": "CPU", "cuda": "GPU", "gpu": "GPU"}.get(device.split(":")[0].lower(), device.upper())
        if self.precision == "int8" and self._ov_device == "CPU" and cpu_features().amx_int8:
            model = _thin_convolutions_off_amx(model, self._core)
        self._model = model
        self.compiled = self._compile(model)
        self.fixed_shape = _fixed_shape(list(self.compiled.inputs[0].get_partial_shape()))
        self._hinted: Dict[Tuple[str, Optional[int]], "OpenVinoBackend"] = {}  # with_hint's copies
        self._reset()

    def _reset(self) -> None:
        # (uint8 input or not, the input shape a graph is fixed to or None) -> compiled model
        self._variants: Dict[Tuple[bool, Optional[Tuple[int, ...]]], Any] = {(False, None): self.compiled}
        self._shape_calls: Dict[Tuple[bool, Tuple[int, ...]], int] = {}
        self._dynamic = None in self.fixed_shape
        self._fixing = self._dynamic  # False once MAX_STATIC graphs exist (or one failed to build)
        self._local = threading.local()
        self._lock = threading.Lock()

    def with_hint(self, hint: str, streams: Optional[int] = None) -> "OpenVinoBackend":
        """The same model compiled for another performance hint / stream count (e.g. THROUGHPUT for several
        callers at once). Kept: asked again, it returns the same backend with the graphs it has built (each
        video of a folder would otherwise compile its graphs again, about 0.3 s)."""
        clone = self._hinted.get((hint, streams))
        if clone is None:
            # compiled without the lock, which calls of this backend take to build their graphs: two threads
            # asking at once compile twice, and the first one's copy is kept
            clone = copy.copy(self)
            clone.hint, clone.streams = hint, streams
            clone.compiled = clone._compile(self._model)
            clone._hinted = {}
            clone._reset()
            with self._lock:
                clone = self._hinted.setdefault((hint, streams), clone)
        return clone

    def _compile(self, model: Any) -> Any:
        config = {"INFERENCE_PRECISION_HINT": self._HINTS[self.precision], "PERFORMANCE_HINT": self.hint}
        if self.hint == "THROUGHPUT" and self.streams:
            config["NUM_STREAMS"] = str(int(self.streams))
        try:
            return self._core.compile_model(model, self._ov_device, config)
        except RuntimeError as e:  # a page of OpenVINO's C++ context; an absent device is the usual cause
            available = list(self._core.available_devices)
            if self._ov_device.split(".")[0] not in {d.split(".")[0] for d in available}:
                raise ValueError(f"OpenVINO has no {self._ov_device} device here (from --device {self.device}; "
                                 f"this machine offers {', '.join(available) or 'none'}); use --device cpu") from None
            raise ValueError(f"OpenVINO cannot compile this model for {self._ov_device}: {last_line(e)}") from None

    def describe(self) -> str:
        streams = f", {self.compiled.get_property('NUM_STREAMS')} streams" if self.hint == "THROUGHPUT" else ""
        return f"openvino {self.precision} ({self.hint.lower()}{streams}) on {self.device}"

    def _compiled_for(self, uint8: bool, shape: Tuple[int, ...]) -> Tuple[Tuple[bool, Any], Any]:
        """(key, compiled model) for float NCHW input, or for uint8 NHWC input converted inside the graph, of
        this ``shape``: the graph fixed to it where there is one or it is time to build one, else the general
        graph (each built and compiled on first use)."""
        if self._dynamic:
            fixed = (uint8, tuple(shape))
            compiled = self._variants.get(fixed)
            if compiled is not None:
                return fixed, compiled
            if self._fixing:
                # counted without the lock: a lost update only delays the fixed graph by a call
                calls = self._shape_calls[fixed] = self._shape_calls.get(fixed, 0) + 1
                # a thread that finds another one building runs the general graph meanwhile
                if calls >= self.STATIC_AFTER and self._lock.acquire(blocking=False):
                    try:
                        compiled = self._build_fixed(fixed)
                    finally:
                        self._lock.release()
                    if compiled is not None:
                        return fixed, compiled
        general = (uint8, None)
        compiled = self._variants.get(general)
        if compiled is None:
            with self._lock:
                if general not in self._variants:
                    self._variants[general] = self._compile(self._graph(*general))
                compiled = self._variants[general]
        return general, compiled

    def _build_fixed(self, key: Tuple[bool, Tuple[int, ...]]) -> Any:
        """The graph fixed to ``key``'s shape, built now if there is room (call with the lock held; every
        insertion holds it, so counting the keys is safe). A failure only costs the speed-up: it is logged
        once, and the general graph runs on."""
        if key not in self._variants:
            if sum(shape is not None for _, shape in self._variants) >= self.MAX_STATIC:
                self._fixing = False
                return None
            try:
                self._variants[key] = self._compile(self._graph(*key))
            except Exception as e:  # OpenVINO raises RuntimeError with its C++ context: the last line says why
                self._fixing = False
                LOGGER.warning("OpenVINO could not fix the graph to input shape %s (%s); the general graph "
                               "runs on", key[1], last_line(e))
                return None
        return self._variants[key]

    def _graph(self, uint8: bool, shape: Optional[Tuple[int, ...]]) -> Any:
        """A copy of the model for uint8 NHWC input or float NCHW input, fixed to ``shape`` (in that layout)
        when given."""
        model = self._model.clone()
        if shape is not None:
            import openvino as ov

            nchw = (shape[0], shape[3], shape[1], shape[2]) if uint8 else shape
            model.reshape({model.inputs[0]: ov.PartialShape(list(nchw))})
        return _uint8_nhwc_input(model) if uint8 else model

    def __call__(self, batch: torch.Tensor) -> List[torch.Tensor]:
        return self._infer(False, np.ascontiguousarray(batch.detach().cpu().float().numpy()))

    def run_uint8(self, images: np.ndarray) -> List[torch.Tensor]:
        return self._infer(True, np.ascontiguousarray(images))

    def _infer(self, uint8: bool, array: np.ndarray) -> List[torch.Tensor]:
        key, compiled = self._compiled_for(uint8, array.shape)
        requests = self._local.__dict__.setdefault("requests", {})  # an InferRequest is not shared by threads
        request = requests.get(key)
        if request is None:
            request = requests[key] = compiled.create_infer_request()
        with torch_threads(1):
            request.infer(array, share_inputs=True)
        return [torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in range(len(compiled.outputs))]


def _uint8_nhwc_input(model: Any) -> Any:
    """``model`` (float NCHW input in [0, 1]) taking uint8 NHWC images instead: convert, divide by 255, then
    transpose. For a fixed input shape, written by hand rather than with OpenVINO's PrePostProcessor, whose
    compiled graph transposes the uint8 input to NCHW first and reorders it back to the channels-last layout
    the convolutions use, 0.2 ms of the 4.5 ms bf16 forward at 416 on AMX. Here the transpose only relabels the
    axes, and the conversion writes the convolution's layout directly. With a free input size OpenVINO keeps
    that transpose as a copy of the float input, and the PrePostProcessor's graph is the faster (3.50 against
    4.14 ms at 256x416)."""
    import openvino as ov

    if model.get_parameters()[0].get_partial_shape().is_dynamic:
        from openvino.preprocess import PrePostProcessor

        ppp = PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.input().preprocess().convert_element_type(ov.Type.f32).scale(255.0)
        return ppp.build()
    try:
        import openvino.opset13 as ops
    except ImportError:  # OpenVINO 2024.x (setup.py allows it) has its opsets under openvino.runtime only
        import openvino.runtime.opset13 as ops

    old = model.get_parameters()[0]
    n, c, h, w = old.get_partial_shape()
    images = ops.parameter(ov.PartialShape([n, h, w, c]), ov.Type.u8)
    images.set_friendly_name(old.get_friendly_name())
    images.output(0).get_tensor().set_names(old.output(0).get_tensor().get_names())
    scaled = ops.divide(ops.convert(images, ov.Type.f32), ops.constant(np.float32(255.0)))
    nchw = ops.transpose(scaled, ops.constant(np.array([0, 3, 1, 2], np.int64)))
    for target in list(old.output(0).get_target_inputs()):
        target.replace_source_output(nchw.output(0))
    model.replace_parameter(0, images)
    model.validate_nodes_and_infer_types()
    return model


def _thin_convolutions_off_amx(model: Any, core: Any) -> Any:
    """``model`` with its convolutions of at most 4 input channels (the first one: RGB) asking OpenVINO's CPU
    plugin for an AVX-512 kernel rather than an AMX one. AMX pads each kernel tap's 3 channels to a full
    tile row: in int8 the first convolution took 0.34 ms of a 3.0 ms forward at 416 on 2 AMX cores, for 1%
    of the model's operations, and 0.23 ms with AVX-512 VNNI (the same integer sums, identical outputs).
    bf16 is left alone: there the AVX-512 kernel wants NCHW input, and the reorders cost more than it saves.

    OpenVINO reads this choice only from a node's ``primitives_priority`` run-time attribute, which the Python
    API cannot create (it stores strings, and the plugin rejects a string there): the IR reader can, so the
    model goes through an IR written to a temporary folder, with the attribute added to those layers. Where
    OpenVINO or the file system fails there, or a layer is not found once in the IR, the model is returned
    unchanged (logged at INFO): only the speed-up is lost."""
    import tempfile

    import openvino as ov

    def thin(op: Any) -> bool:
        shape = op.get_input_partial_shape(0)
        return shape.rank.is_static and shape[1].is_static and shape[1].get_length() <= 4

    names = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_type_name() == "Convolution" and thin(op)]
    if not names:
        return model
    try:
        with tempfile.TemporaryDirectory() as folder:
            xml = os.path.join(folder, "model.xml")
            ov.save_model(model, xml, compress_to_fp16=False)
            text = Path(xml).read_text(encoding="utf-8")
            for name in names:
                text, found = _with_kernel_priority(text, name, "cpu:brgconv_avx512,cpu:jit_avx512")
                if found != 1:
                    LOGGER.info("OpenVINO: the first convolution keeps its AMX kernel (layer %s found %d times in "
                                "the IR)", name, found)
                    return model
            weights = np.fromfile(os.path.join(folder, "model.bin"), np.uint8)
            return core.read_model(text, ov.Tensor(weights))
    except (RuntimeError, OSError) as e:  # OpenVINO raises RuntimeError with its C++ context, its cause last
        LOGGER.info("OpenVINO: the first convolution keeps its AMX kernel (%s)", last_line(e))
        return model


def _with_kernel_priority(text: str, name: str, priority: str) -> Tuple[str, int]:
    """An IR's ``text`` with the convolution layer ``name`` given the CPU kernel ``priority``, and how many
    layers matched (the text is changed only for exactly one). The attribute goes into the layer's own
    ``<rt_info>`` where it has one (before its ports): OpenVINO's reader takes a layer's first block only."""
    from xml.sax.saxutils import escape

    quoted = escape(name, {'"': "&quot;"})
    layers = [m.end() for m in re.finditer(re.escape(f'name="{quoted}" type="Convolution" version="opset1">'), text)]
    if len(layers) != 1:
        return text, len(layers)
    start = layers[0]
    ports = re.compile(r"<input>|<output>|</layer>").search(text, start)
    head = text[start : ports.start() if ports else len(text)]
    attribute = f'<attribute name="primitives_priority" version="0" value="{priority}"/>'
    if "<rt_info>" in head:
        at = start + head.index("<rt_info>") + len("<rt_info>")
        return text[:at] + attribute + text[at:], 1
    return f"{text[:start]}<rt_info>{attribute}</rt_info>{text[start:]}", 1


@functools.lru_cache(maxsize=None)
def _openvino_core() -> Any:
    """One OpenVINO Core per process, shared by every backend (as OpenVINO advises). A Core per backend
    crashed the process: after two had been created and one freed, the next SIGCHLD that reached a
    Python signal handler (torch's DataLoader installs one) segfaulted."""
    import openvino as ov

    return ov.Core()


def available_backends() -> List[str]:
    """Names of the registered backends whose libraries are installed."""
    return [name for name, cls in BACKENDS.items() if cls.is_available()]


def create_backend(name: str, model: Any, precision: Optional[str] = None, device: str = "cpu",
                   **options: Any) -> Backend:
    """Build backend ``name`` on ``model``: an ``nn.Module`` for "torch", a file path (or bytes) otherwise.

    ``options`` go to the backend's constructor (torch: fuse, channels_last, compile; onnxruntime: threads;
    openvino: hint, streams)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend '{name}'; choose one of {sorted(BACKENDS)}")
    cls = BACKENDS[name]
    if not cls.is_available():
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        raise ValueError(f"the {name} backend needs {', '.join(missing)}: pip install -e \".[export,openvino]\"")
    if name == "torch":
        return cls(model, precision or "fp32", device, **options)
    return cls(model, precision, device, **options)


def _label(model: Any) -> str:
    return str(model) if isinstance(model, (str, os.PathLike)) else "in-memory model"


def last_line(e: Exception) -> str:
    """The last non-empty line of an error: where OpenVINO says what is wrong, after its C++ call stack."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1][:200] if lines else type(e).__name__


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _parse_meta(text: Optional[str], where: Any) -> Optional[Dict[str, Any]]:
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"{_label(where)}: its '{META_KEY}' metadata is not valid JSON; re-export it") from None


def _onnx_metadata(path: str) -> Optional[str]:
    import onnx

    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    return props.get(META_KEY)


def _ov_rt_info(model: Any) -> Optional[str]:
    if not model.has_rt_info([META_KEY]):
        return None
    return model.get_rt_info([META_KEY]).astype(str)


def _matching_precision(backend: Backend, precision: Optional[str]) -> str:
    file_precision = (backend.meta or {}).get("precision", "fp32")
    if precision is not None and precision != file_precision:
        if precision in ("bf16", "fp16"):  # ONNX export writes fp32 and int8 only (tools/export.py refuses bf16)
            todo = ("run bf16 from the checkpoint (or with OpenVINO: tools/predict.py --backend openvino runs this "
                    "file with a bf16 inference hint)" if precision == "bf16" else "fp16 runs from the checkpoint, "
                    "on CUDA")
        elif precision == "int8":
            todo = ("export a quantized model: `python tools/export.py --weights CKPT --format onnx "
                    "--precision int8 --data CONFIG`")
        else:
            todo = "export it without --precision int8 (fp32 is the default), or leave --precision out"
        raise ValueError(f"this ONNX model holds {file_precision} weights and ONNX Runtime runs them as they "
                         f"are, not as {precision}; {todo}")
    return backend._check_precision(file_precision)


def _cuda_index(device: str) -> Optional[int]:
    """The CUDA device index that "cuda" / "cuda:N" names; None for "cpu". A clear error for anything else."""
    text = str(device).strip().lower()
    if text == "cpu":
        return None
    if text.isdigit():  # a bare index names a GPU, as for torch
        return int(text)
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise ValueError(f"unknown device '{device}'; use cpu, cuda or cuda:N")
    return int(match.group(1) or 0)


def _fixed_shape(shape: List[Any]) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    """(batch, height, width) of a model input, each None where it is dynamic."""
    dims = []
    for d in (shape[0], shape[2], shape[3]):
        if isinstance(d, int):
            dims.append(d)
        elif hasattr(d, "is_static") and d.is_static:
            dims.append(d.get_length())
        else:
            dims.append(None)
    return tuple(dims)

