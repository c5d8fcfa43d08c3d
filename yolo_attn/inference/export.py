"""Export to ONNX and OpenVINO IR, with the checkpoint meta inside, and a parity check against PyTorch.

An exported model carries the checkpoint's meta (class names, anchors, masks, scale_x_y, input size,
pre-processing) as JSON under the key ``yolo_attn`` in ONNX ``metadata_props`` / OpenVINO ``rt_info``, so
``Detector.load("model.onnx")`` needs nothing else. Its outputs are the raw head maps ``p5, p4``; decoding and
NMS stay in :class:`~yolo_attn.inference.detector.Detector`, identical for every backend.

- fp32: the graph as is (ONNX opset 17 by default; 13 up to the newest the installed torch exports).
- bf16 (OpenVINO): fp32 weights with a bf16 inference-precision hint (OpenVINO runs bf16 on AMX / AVX512-BF16).
- int8: post-training quantization, calibrated on training images prepared as the model runs them
  (letterboxed, or stretched). OpenVINO: NNCF's performance preset (symmetric weights and activations), each
  CSP split quantized once (:func:`share_slice_quantizers`), the input on the pixels' own grid
  (:func:`quantize_input_on_pixels`); ONNX: ONNX Runtime's own quantizer (QDQ around
  every convolution, which ONNX Runtime runs as QLinearConv), or NNCF's mixed preset without ONNX Runtime.
- Darknet (phi 0 only): ``.weights`` with its ``.cfg`` and ``.names`` beside it, for Darknet itself and OpenCV's
  DNN; the parity check reads them back as ``--weights x.weights`` does.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import io
import json
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..data.letterbox import PAD_VALUE, as_hw, fit_to_input
from ..models.yolo import check_input_size
from ..utils.checkpoint import meta_input_shape, meta_nms, meta_resize
from .backends import META_KEY, TORCHSCRIPT_META_FILE
from .hardware import weights_fingerprint

__all__ = [
    "CalibrationImages",
    "FORMATS",
    "ParityReport",
    "calibration_images",
    "check_data_config",
    "check_opset",
    "check_parity",
    "default_output",
    "export_meta",
    "export_model",
    "max_opset",
    "onnx_bytes",
    "openvino_model",
    "quantize_input_on_pixels",
    "quantize_int8",
    "run_export",
    "share_slice_quantizers",
    "synthetic_images",
]

FORMATS = ("onnx", "openvino", "torchscript", "darknet")
PRECISIONS = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8"), "torchscript": ("fp32",),
              "darknet": ("fp32",)}
INT8_PRESETS = ("performance", "mixed")  # NNCF's QuantizationPreset values
_ONNX_EXPORT_LOCK = threading.Lock()
DEFAULT_OPSET = 17
MIN_OPSET = 13
# files that an OpenVINO --output of this name would be taken for (a folder named model.onnx holding the IR)
_OTHER_MODEL_SUFFIXES = (".onnx", ".pt", ".pth", ".ckpt", ".safetensors", ".weights", ".bin", ".cfg", ".names",
                        ".engine", ".tflite", ".pb", ".torchscript")
PathLike = Union[str, os.PathLike]


def export_meta(meta: Dict[str, Any], img_size: Union[int, Tuple[int, int]], dynamic: bool, precision: str,
                source: str) -> Dict[str, Any]:
    """The checkpoint meta as stored in an exported model (input size, shape policy and precision added; a
    non-square input as ``input_shape``, see :func:`~yolo_attn.utils.checkpoint.meta_input_shape`)."""
    exported = {k: v for k, v in meta.items() if k not in ("training", "input_shape")}
    h, w = as_hw(img_size)
    exported.update(img_size=max(h, w), dynamic=bool(dynamic), precision=precision, exported_from=source)
    if h != w:
        exported["input_shape"] = [h, w]
    return exported


def max_opset() -> Optional[int]:
    """The newest ONNX opset the installed torch exports (None where torch does not say)."""
    try:
        from torch.onnx import _constants
    except ImportError:  # a private module: a torch without it leaves the bound to the exporter
        return None
    newest = getattr(_constants, "ONNX_MAX_OPSET", None)
    return newest if isinstance(newest, int) else None


def check_opset(opset: int) -> None:
    """Refuse an ONNX opset the installed torch cannot export, before any export work."""
    newest = max_opset()
    supported = f"use {MIN_OPSET} to {newest}" if newest is not None else f"use {MIN_OPSET} or newer"
    if opset < MIN_OPSET:
        raise ValueError(f"--opset {opset}: ONNX opset {opset} is too old; {supported} ({DEFAULT_OPSET} by default)")
    if newest is not None and opset > newest:
        raise ValueError(f"--opset {opset}: ONNX opset {opset} is newer than the installed torch "
                         f"{torch.__version__.split('+')[0]} exports; {supported} ({DEFAULT_OPSET} by default)")


def check_data_config(data: Union[None, PathLike, Mapping[str, Any]], hint: str = "") -> None:
    """Refuse a folder given as a data config (the YAML reader would call it missing); ``hint``: what to do
    instead, in the caller's words."""
    if data is None or isinstance(data, Mapping) or str(data) in ("shapes", "default"):  # the embedded set
        return
    if Path(data).is_dir():
        raise ValueError(f"--data {data}: is a folder, not a data config; give the dataset's YAML config "
                         f"(format, root, train, val, names; configs/shapes.yaml is one){hint}")


def onnx_bytes(model: nn.Module, meta: Dict[str, Any], img_size: Union[int, Tuple[int, int]],
               dynamic: bool = False, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialize ``model`` to ONNX (input ``images`` (B, 3, H, W) RGB [0, 1]; outputs ``p5``, ``p4``) with
    ``meta`` in its metadata. Static: batch 1 at img_size (one int, or (h, w)); dynamic: batch, height and
    width free."""
    import onnx

    check_opset(opset)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {
            "images": {0: "batch", 2: "height", 3: "width"},
            "p5": {0: "batch", 2: "height_32", 3: "width_32"},
            "p4": {0: "batch", 2: "height_16", 3: "width_16"},
        }
    example = torch.zeros(1, 3, *as_hw(img_size))
    buf = io.BytesIO()
    # one export at a time: torch.onnx.export keeps module-wide state, and warnings.catch_warnings is not
    # thread-safe (two video runs in threads each convert their weights in memory)
    with _ONNX_EXPORT_LOCK, warnings.catch_warnings():  # its deprecation notices are not for our users
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model.eval(), (example,), buf, dynamo=False, opset_version=opset, input_names=["images"],
                output_names=["p5", "p4"], dynamic_axes=dynamic_axes, do_constant_folding=True,
            )
        except RuntimeError as e:  # a torch whose newest opset max_opset could not read
            if "Unsupported onnx_opset_version" not in str(e):
                raise
            raise ValueError(f"--opset {opset}: the installed torch {torch.__version__.split('+')[0]} cannot export "
                             f"ONNX opset {opset}; use an older one ({DEFAULT_OPSET} by default)") from None
    proto = onnx.load_from_string(buf.getvalue())
    _set_onnx_meta(proto, meta)
    return proto.SerializeToString()


def torchscript_bytes(model: nn.Module, meta: Dict[str, Any], img_size: Union[int, Tuple[int, int]]) -> bytes:
    """``model`` traced (BatchNorm folded, channels-last, fp32) into a TorchScript archive with ``meta`` inside.
    The trace records no input size: the archive runs at any size and batch (multiples of 32)."""
    model = copy.deepcopy(model).float().eval()
    if hasattr(model, "fuse"):
        model.fuse()
    model = model.to(memory_format=torch.channels_last)
    example = torch.rand(1, 3, *as_hw(img_size)).contiguous(memory_format=torch.channels_last)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the shape check, skipped while tracing
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 points to torch.export; LibTorch reads these
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_META_FILE: json.dumps(meta, default=str)})
    return buffer.getvalue()


def _set_onnx_meta(proto: Any, meta: Dict[str, Any]) -> None:
    import onnx

    props = {p.key: p.value for p in proto.metadata_props}
    props[META_KEY] = json.dumps(meta, default=str)
    onnx.helper.set_model_props(proto, props)


def openvino_model(onnx_model: bytes, meta: Dict[str, Any]) -> Any:
    """An ``openvino.Model`` from ONNX bytes, with ``meta`` in its rt_info (and the bf16 hint when asked)."""
    import openvino as ov

    model = ov.convert_model(io.BytesIO(onnx_model))
    _set_openvino_meta(model, meta)
    return model


def _set_openvino_meta(model: Any, meta: Dict[str, Any]) -> None:
    model.set_rt_info(json.dumps(meta, default=str), [META_KEY])
    if meta.get("precision") == "bf16":  # read by OpenVINO's compile_model, so other OpenVINO tools honour it too
        model.set_rt_info("bf16", ["runtime_options", "INFERENCE_PRECISION_HINT"])


class CalibrationImages(Sequence[np.ndarray]):
    """Calibration images, read one at a time: ``images[i]`` reads image ``i`` (RGB uint8; an unreadable one
    raises :class:`~yolo_attn.data.records.BadImageError`), and iterating reads them in turn, reporting an
    unreadable one through ``log`` and skipping it (reported once: later passes, such as a second quantizer's,
    skip it quietly). Quantization keeps each image only as the model's input (a 416x416 letterbox holds 0.5 MB;
    a 1080p original 6.2 MB), so 300 large images no longer sit in memory at once. ``describe`` names where
    they come from."""

    def __init__(self, read: Callable[[int], np.ndarray], count: int, describe: str, log: Callable[[str], None]):
        self._read, self._count, self.describe, self._log = read, count, describe, log
        self._unreadable: Set[int] = set()  # reported already

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._read(i) for i in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(f"calibration image {index} of {self._count}")
        return self._read(index % self._count)

    def __iter__(self) -> Iterator[np.ndarray]:
        from ..data.records import BadImageError

        read = 0
        for i in range(self._count):
            if i in self._unreadable:
                continue
            try:
                image = self._read(i)
            except (BadImageError, OSError) as e:  # the image's fault; anything else is a bug to see
                self._unreadable.add(i)
                self._log(f"warning: skipping {e}")
                continue
            read += 1
            yield image
        if not read:
            raise ValueError(f"{self.describe}: no readable images to calibrate with")


def calibration_images(
    data: Union[None, PathLike, Dict[str, Any]] = None,
    folder: Optional[PathLike] = None,
    count: int = 300,
    log: Callable[[str], None] = print,
) -> CalibrationImages:
    """Up to ``count`` RGB uint8 images for int8 calibration: from the training split of a data config (a
    YAML path, a mapping, or "shapes" for the embedded set), or from a folder of images. Evenly spread over
    the set, so no one sequence dominates. They are read when used (:class:`CalibrationImages`); a missing
    split or an empty folder is an error here."""
    from ..data.records import read_image

    if data is not None:
        try:
            from ..data import build_dataset, load_data_config
        except ImportError:
            raise ValueError("reading a data config needs yolo_attn.data (load_data_config, build_dataset); "
                             "pass --calib-images FOLDER instead") from None
        try:
            dataset = build_dataset(load_data_config(data), "train")
        except KeyError as e:  # a config without a train split
            raise ValueError(f"{data}: {e.args[0]}") from None
        if len(dataset) == 0:
            raise ValueError(f"{data}: its training split has no images to calibrate with")
        indices = _evenly_spread(len(dataset), count)
        log(f"calibrating on {len(indices)} training images from {data}")
        return CalibrationImages(lambda i: dataset.load_record(int(indices[i])).image, len(indices), str(data), log)
    if folder is not None:
        from .sources import list_images

        files = list_images(folder)
        picked = [files[i] for i in _evenly_spread(len(files), count)]
        log(f"calibrating on {len(picked)} images from {folder}")
        return CalibrationImages(lambda i: read_image(picked[i]), len(picked), str(folder), log)
    raise ValueError("int8 needs calibration images: pass --data CONFIG (its training set is used) "
                     "or --calib-images FOLDER")


def _evenly_spread(total: int, count: int) -> np.ndarray:
    """Up to ``count`` distinct indices into ``total`` items, evenly spread from the first to the last."""
    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))


def quantize_int8(model: Any, images: Iterable[np.ndarray], meta: Dict[str, Any],
                  img_size: Union[int, Tuple[int, int]], preset: Optional[str] = None,
                  log: Callable[[str], None] = lambda message: None) -> Any:
    """Post-training quantization of an ``openvino.Model`` or ONNX bytes, on ``images`` letterboxed (or
    stretched, for Darknet's weights) exactly as :class:`Detector` prepares its input; they are read once, in
    turn (:class:`CalibrationImages` reads each as it comes), and only their letterboxed uint8 forms are kept.
    Returns the same kind it was given. OpenVINO models: NNCF, then :func:`share_slice_quantizers` and
    :func:`quantize_input_on_pixels`. ONNX: ONNX Runtime's own quantizer (:func:`_quantize_for_onnxruntime`), or
    NNCF where ONNX Runtime is not installed.

    ``preset`` (NNCF's; ONNX Runtime's quantizer takes none): "performance" (symmetric activations; the default
    for OpenVINO: 4.4 against 5.3 ms for "mixed" at 416 on 2 AMX cores, the same mAP) or "mixed" (asymmetric
    activations; the default for ONNX through NNCF). The quantizer used goes to ``log`` and into the meta
    (``quantizer``: "onnxruntime", or "nncf" and the preset)."""
    onnx_input = isinstance(model, bytes)
    preset = preset or ("mixed" if onnx_input else "performance")
    if preset not in INT8_PRESETS:
        raise ValueError(f"int8 preset must be one of {', '.join(INT8_PRESETS)}, not '{preset}'")
    from .detector import _interpolation

    pre = meta.get("preprocess") or {}
    interpolation = _interpolation(pre.get("interpolation", "linear"))
    pad = int(pre.get("pad_value", PAD_VALUE))
    resize = meta_resize(meta)
    # the letterboxed uint8 images only (a quarter of their float size); each becomes a float batch when used
    inputs = [fit_to_input(im, img_size, resize, pad, interpolation)[0] for im in images]
    if onnx_input:
        try:
            importlib.import_module("onnxruntime.quantization")
        except ImportError as e:
            warnings.warn(f"int8 ONNX: ONNX Runtime's quantizer is not available ({e}); quantizing with NNCF, whose "
                          f"graph ONNX Runtime runs in fp32 (slower than the fp32 model; OpenVINO runs it in int8). "
                          f"Install onnxruntime (the export extra) for a graph ONNX Runtime runs in int8", stacklevel=2)
        else:
            log(f"int8: ONNX Runtime's quantizer (QDQ) on {len(inputs)} images")
            return _quantize_for_onnxruntime(model, inputs, {**meta, "quantizer": "onnxruntime"})
    import nncf

    log(f"int8: NNCF, {preset} preset, on {len(inputs)} images")
    meta = {**meta, "quantizer": f"nncf {preset}"}

    if onnx_input:
        import onnx

        model = onnx.load_from_string(model)
        dataset = nncf.Dataset(inputs, lambda im: {"images": _as_batch(im)})
    else:
        dataset = nncf.Dataset(inputs, _as_batch)
    quantized = nncf.quantize(model, dataset, preset=nncf.QuantizationPreset(preset), subset_size=len(inputs))
    if onnx_input:
        _set_onnx_meta(quantized, meta)
        return quantized.SerializeToString()
    share_slice_quantizers(quantized)
    quantize_input_on_pixels(quantized)
    _set_openvino_meta(quantized, meta)
    return quantized


def _as_batch(image: np.ndarray) -> np.ndarray:
    """A letterboxed (H, W, 3) uint8 image -> the model's (1, 3, H, W) float32 input in [0, 1]."""
    return image.transpose(2, 0, 1)[None].astype(np.float32) / 255.0


def _quantize_for_onnxruntime(model: bytes, inputs: Sequence[np.ndarray], meta: Dict[str, Any]) -> bytes:
    """ONNX Runtime's own static quantization (QDQ; per-channel int8 weights, uint8 activations, min-max
    calibration on ``inputs``, letterboxed uint8 images), after its pre-processing (ONNX shape inference,
    constants folded into initializers, which its convolution fusion needs for the biases). It quantizes each
    convolution's output before its activation as well as after, which ONNX Runtime needs to run convolutions
    in int8 (QLinearConv); NNCF quantizes after the activation only (what OpenVINO fuses), and ONNX Runtime then ran
    every convolution in fp32 between DequantizeLinear and QuantizeLinear: 43.7 ms against 10.4-11.7 at 416 on 2
    AMX cores (fp32: 24.2; the phi 2 checkpoint of the README's Speed section, mAP@0.5 -0.23 points). The two
    output convolutions stay float, as NNCF leaves them: their maps (box offsets and sizes, before exp) are not
    rounded to 256 levels."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self._left = iter(inputs)

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            image = next(self._left, None)
            return None if image is None else {"images": _as_batch(image)}

    with tempfile.TemporaryDirectory() as tmp, _root_logger_untouched():
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(model)
        # symbolic shape inference cannot follow a --dynamic export's free sizes (and, failing, leaves files in
        # the working directory); ONNX's own is enough here
        quant_pre_process(str(source), str(source), skip_symbolic_shape=True)
        graph = onnx.load(str(source)).graph
        outputs = {o.name for o in graph.output}
        heads = [n.name for n in graph.node if n.op_type == "Conv" and set(n.output) & outputs]
        quantize_static(str(source), str(target), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=heads)
        quantized = onnx.load(str(target))
    consumers: Dict[str, List[str]] = {}
    for node in quantized.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    floats = [n.name for n in quantized.graph.node if n.op_type == "Conv" and n.name not in heads
              and consumers.get(n.output[0]) != ["QuantizeLinear"]]
    if floats:  # ONNX Runtime would run these in fp32 (its pre-processing logs a failure and goes on)
        warnings.warn(f"int8 ONNX: {len(floats)} convolutions were left in float ({', '.join(floats[:3])}, ...); "
                      f"ONNX Runtime runs them in fp32", stacklevel=2)
    _set_onnx_meta(quantized, meta)
    return quantized.SerializeToString()


@contextlib.contextmanager
def _root_logger_untouched() -> Iterator[None]:
    """ONNX Runtime's quantizer logs through ``logging.info()``, which gives a handler-less root logger a stderr
    handler of its own (``logging.basicConfig``): a user's later basicConfig would then do nothing. A
    NullHandler stands in while it runs; the root logger's handlers and level are put back after."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    if not handlers:
        root.addHandler(logging.NullHandler())
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def share_slice_quantizers(model: Any) -> int:
    """Quantize a CSP block's split once: ``x -> FQ_a -> Concat`` (or ``-> MaxPool``, the route's half pooled
    before the concatenation) beside ``x -> Slice -> FQ_b -> Conv`` becomes ``x -> FQ_a -> {Concat, Slice ->
    Conv}``. Returns how many splits changed.

    NNCF gives the two branches their own quantizers, since FQ_a shares its scale with the Concat's other
    input; ``x`` then leaves its convolution in float, and OpenVINO runs both quantizers, a rescale and the
    slice in fp32 (about a fifth of the int8 model's time at 416 on 2 cores). Written here because NNCF has no
    option for it. FQ_a's range was calibrated on ``x`` (and the other Concat input), so it covers the slice:
    the slice's values move to FQ_a's grid, which the mAP check of the benchmark measures."""
    def kind(port: Any) -> str:
        return port.get_node().get_type_name()

    shared = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "FakeQuantize" or kind(node.input_value(0)) not in ("Slice", "StridedSlice"):
            continue
        split = node.input_value(0).get_node()
        if len(split.output(0).get_target_inputs()) != 1:  # the slice feeds this quantizer only
            continue
        # the route's quantizer: the one other quantizer of the slice's input, feeding the Concat alone
        siblings = [t.get_node() for t in split.input_value(0).get_target_inputs() if kind(t) == "FakeQuantize"]
        if len(siblings) != 1:
            continue
        route = siblings[0]
        if ([kind(t) for t in route.output(0).get_target_inputs()] not in (["Concat"], ["MaxPool"])
                or route.get_attributes()["levels"] != node.get_attributes()["levels"]):
            continue
        split.input(0).replace_source_output(route.output(0))
        node.output(0).replace(split.output(0))
        shared += 1
    if shared:
        model.validate_nodes_and_infer_types()
    return shared


def quantize_input_on_pixels(model: Any) -> int:
    """Give the input's quantizer the range [0, 1] in 256 levels: the grid of 8-bit pixels divided by 255, on
    which it changes nothing. Returns how many quantizers changed (one per model input at most).

    NNCF calibrates the input's range like any activation's: on the embedded data its maximum came out at
    0.955, so every pixel brighter than 243 was clipped to 243. On the pixels' grid the quantizer is exact, and
    OpenVINO drops it when the input is uint8 (:meth:`OpenVinoBackend.run_uint8`): the first convolution then
    reads the image's bytes directly. Written here because NNCF has no option for an input's range."""
    import openvino as ov

    changed = 0
    for parameter in model.get_parameters():
        for target in parameter.output(0).get_target_inputs():
            node = target.get_node()
            if node.get_type_name() != "FakeQuantize" or node.get_attributes()["levels"] != 256:
                continue
            bounds = [node.input_value(i).get_node() for i in range(1, 5)]
            if not all(b.get_type_name() == "Constant" and b.get_data().size == 1 for b in bounds):
                continue  # a range per channel: not the pixels' grid
            low, high, out_low, out_high = (float(b.get_data().ravel()[0]) for b in bounds)
            if (low, high) != (out_low, out_high) or (low, high) == (0.0, 1.0):
                continue  # a quantizer that also rescales (not one to move), or one on the grid already
            like = bounds[0].get_data()
            for port, value in ((1, 0.0), (2, 1.0), (3, 0.0), (4, 1.0)):
                node.input(port).replace_source_output(ov.op.Constant(np.full_like(like, value)).output(0))
            changed += 1
    if changed:
        model.validate_nodes_and_infer_types()
    return changed


def default_output(weights: Path, fmt: str, precision: str) -> Path:
    """best.pt -> best.onnx, best_int8.onnx, best_openvino/best.xml, best_openvino_bf16/best.xml,
    best.torchscript, best_darknet/best.weights."""
    tag = "" if precision == "fp32" else f"_{precision}"
    if fmt in ("onnx", "torchscript"):
        return weights.with_name(f"{weights.stem}{tag}.{fmt}")
    if fmt == "darknet":
        return weights.parent / f"{weights.stem}_darknet" / f"{weights.stem}.weights"
    return weights.parent / f"{weights.stem}_openvino{tag}" / f"{weights.stem}.xml"


def export_model(
    weights: PathLike,
    format: str = "onnx",
    output: Optional[PathLike] = None,
    img_size: Optional[int] = None,
    dynamic: bool = False,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    data: Optional[PathLike] = None,
    calib_images: Optional[PathLike] = None,
    calib_count: int = 300,
    classes: Union[None, PathLike, Sequence[str]] = None,
    num_classes: Optional[int] = None,
    log: Callable[[str], None] = print,
    cfg: Optional[PathLike] = None,
    resize: Optional[str] = None,
    nms: Optional[str] = None,
) -> Path:
    """Export PyTorch weights (our .pt, Darknet .weights or a port state dict) to ONNX, OpenVINO IR, TorchScript
    or Darknet.

    Returns the written file (.onnx, the IR's .xml with its .bin beside it, .torchscript, or the .weights with its
    .cfg and .names beside it). ``cfg``: the .cfg of Darknet ``weights`` (see
    :func:`~yolo_attn.utils.checkpoint.load_model`).
    ``resize`` / ``nms``: how the export runs by default, where not the weights' own way (a Darknet export's cfg
    says ``letter_box`` and ``nms_kind``; int8 calibrates on images fitted so).
    """
    from ..utils.checkpoint import load_model, warn_names_unused, with_pipeline
    from .detector import EXPORT_SUFFIXES, _resolve_weights_path

    if format not in FORMATS:
        raise ValueError(f"unknown export format '{format}'; choose {' or '.join(FORMATS)}")
    if precision not in PRECISIONS[format]:
        hint = "; bf16 is an OpenVINO runtime setting: use --format openvino" if precision == "bf16" else ""
        raise ValueError(f"{format} export supports {', '.join(PRECISIONS[format])}, not '{precision}'{hint}")
    if precision == "int8" and calib_count < 1:
        raise ValueError(f"--calib-count {calib_count}: int8 calibration needs at least 1 image (300 by default)")
    if precision == "int8":
        check_data_config(data, "; to calibrate on a folder of images, pass it as --calib-images")
    if format != "darknet":
        check_opset(opset)
    weights = _resolve_weights_path(weights)
    if weights.suffix.lower() in EXPORT_SUFFIXES:
        raise ValueError(f"{weights}: is already exported; export from the PyTorch checkpoint (.pt)")
    if format == "darknet" and dynamic:
        raise ValueError("--dynamic: a Darknet .cfg fixes the input size (Darknet reads it at load; edit its "
                         "width and height to run at another)")
    # of the file as loaded (one rewritten meanwhile is another); Darknet files record no source
    fingerprint = weights_fingerprint(weights) if format != "darknet" else None
    model, meta = load_model(weights, classes, num_classes, cfg=cfg)
    warn_names_unused(weights, meta, classes, num_classes)
    meta = with_pipeline(meta, resize, nms)
    size = check_input_size(meta_input_shape(meta) if img_size is None else img_size, "image size")  # (h, w)
    if format == "darknet":
        return export_darknet(model, meta, weights, output, size, log)
    out = Path(output) if output else default_output(weights, format, precision)
    single_file = {"onnx": "an ONNX export is a .onnx file", "torchscript": "a TorchScript export is a "
                   ".torchscript file (a .pt would be taken for a checkpoint)"}
    if format in single_file and (out.is_dir() or not out.suffix):  # a folder to export into: named as beside them
        out = out / default_output(weights, format, precision).name
    elif format in single_file and out.suffix.lower() != f".{format}":
        raise ValueError(f"--output {output}: {single_file[format]} (or give a folder to write it into)")
    if format == "openvino" and out.suffix.lower() in _OTHER_MODEL_SUFFIXES and not out.is_dir():
        raise ValueError(f"--output {output}: an OpenVINO export is an .xml file (its .bin goes beside it), not a "
                         f"{out.suffix} file; give an .xml file name or a folder to write it into")
    if format == "openvino" and out.suffix.lower() != ".xml":  # a folder, dots in its name or not (exports/v1.2)
        out = out / f"{weights.stem}.xml"
    elif format == "openvino":  # model.XML -> model.xml: OpenVINO writes (and finds its .bin by) a lower-case .xml
        out = out.with_suffix(".xml")
    if out.parent.exists() and not out.parent.is_dir():
        raise ValueError(f"--output {output}: {out.parent} is a file, not a folder; give a folder or an "
                         f"{dict(openvino='.xml', torchscript='.torchscript').get(format, '.onnx')} file name")
    # a trace takes any size: recorded as dynamic, whatever --dynamic says
    exported_meta = dict(export_meta(meta, size, dynamic or format == "torchscript", precision, weights.name),
                         weights_source=fingerprint)
    if format == "torchscript":
        from ..utils.paths import write_atomic

        write_atomic(out, torchscript_bytes(model, exported_meta, size))
        log(f"exported {weights} -> {out} (torchscript fp32, any batch and size; {size[1]}x{size[0]} by default)")
        return out

    onnx_model = onnx_bytes(model, exported_meta, size, dynamic, opset)
    calib = calibration_images(data, calib_images, calib_count, log) if precision == "int8" else None
    if format == "onnx":
        if calib is not None:
            onnx_model = quantize_int8(onnx_model, calib, exported_meta, size, log=log)
        from ..utils.paths import write_atomic

        write_atomic(out, onnx_model)
    else:
        ov_model = openvino_model(onnx_model, exported_meta)
        if calib is not None:
            ov_model = quantize_int8(ov_model, calib, exported_meta, size, log=log)
        _save_openvino_atomic(ov_model, out)
    shape = "dynamic batch and size" if dynamic else f"batch 1, {size[1]}x{size[0]}"
    log(f"exported {weights} -> {out} ({format} {precision}, {shape})")
    return out


def _save_openvino_atomic(model: Any, out: Path) -> None:
    """save_model under temp names on the same file system, then into place: a kill leaves the old IR or none,
    never an old .xml over a new .bin.

    A folder that does not exist yet is written whole under a temp name, then renamed into place. An existing
    folder (an earlier export's, the current folder, a mount point) is never renamed or removed (the caller's
    shell may be in it, its parent may be read-only): the old .xml goes first, then the new .bin and .xml
    move in."""
    import openvino as ov

    folder = out.parent
    new_folder = not folder.exists()
    if new_folder:
        folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent if new_folder else folder,
                                prefix=f".{folder.name if new_folder else out.stem}."))
    try:
        # compress_to_fp16=False: fp16 weights would cost fp32 parity (bf16 runs convert them anyway)
        ov.save_model(model, str(tmp / out.name), compress_to_fp16=False)
        for written in tmp.iterdir():
            os.chmod(written, 0o644)  # as write_atomic writes every other result (meant to be shared)
        if new_folder:
            os.chmod(tmp, 0o755)  # mkdtemp's is owner-only, and this folder becomes the export folder
            os.replace(tmp, folder)
        else:
            out.unlink(missing_ok=True)  # first: a kill from here on leaves no .xml, never the old one
            os.replace(tmp / out.with_suffix(".bin").name, out.with_suffix(".bin"))
            os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_darknet(model: nn.Module, meta: Dict[str, Any], weights: Path, output: Optional[PathLike],
                   size: Union[int, Tuple[int, int]], log: Callable[[str], None] = print) -> Path:
    """Darknet's own files for ``model``: ``<stem>.weights``, and beside it the ``<stem>.cfg`` (input size
    ``size``, one int or (h, w), the model's anchors, masks and ``scale_x_y``) and ``<stem>.names``, which
    Darknet, OpenCV's DNN (4.x) and ``--weights <stem>.weights`` here read. phi 0 only: Darknet has no layer
    for an attention block."""
    from ..models.darknet import darknet_cfg_text, save_darknet_weights
    from ..utils.paths import write_atomic

    if model.attention is not None:
        raise ValueError(f"{weights}: a phi {model.phi} ({model.attention}) model; Darknet has no layer for its "
                         f"attention blocks, so only phi 0 models export to Darknet")
    out = Path(output) if output else default_output(weights, "darknet", "fp32")
    if out.is_dir() or not out.suffix:  # a folder to export into
        out = out / f"{weights.stem}.weights"
    elif out.suffix != ".weights":
        raise ValueError(f"--output {output}: a Darknet export is a .weights file (its .cfg and .names go beside "
                         f"it), or give a folder to write it into")
    if out.parent.exists() and not out.parent.is_dir():
        raise ValueError(f"--output {output}: {out.parent} is a file, not a folder")
    if out.exists() and out.resolve() == weights.resolve():
        raise ValueError(f"--output {output}: would write over the weights being exported, {weights}")
    # the cfg tells Darknet (and --weights here) to run the model as it runs now
    height, width = as_hw(size)
    sides = {out.with_suffix(".cfg"): darknet_cfg_text(model, width, height, meta["scale_x_y"],
                                                       meta_resize(meta) != "stretch", meta_nms(meta)),
             out.with_suffix(".names"): "\n".join(meta["names"]) + "\n"}
    # a folder of the user's (the default one is this export's own): their cfg or names are kept, unless the
    # cfg there is an earlier export's, unedited (re-exported, say at another size)
    earlier = output is not None and _is_unedited_export(out.with_suffix(".cfg"))
    for side, text in sides.items():
        if side.exists() and not side.is_file():
            raise ValueError(f"--output {output}: {side} is a folder, where the export's {side.suffix} goes")
        ours = earlier and side.suffix == ".cfg"
        if output and not ours and side.is_file() and _text_bytes(side) != text.encode():
            raise ValueError(f"--output {output}: {side} exists, and is not what this export writes there; "
                             f"move it or export into another folder")
    own_way = {k: v for k, v in (meta.get("preprocess") or {}).items() if k != "resize"}
    if own_way:
        log(f"warning: {weights} resizes and pads its input its own way ({own_way}); Darknet's .cfg cannot "
            f"say so, and Darknet resizes bilinearly, letterboxing with grey 0.5")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_darknet_weights(model, out)
    for side, text in sides.items():
        write_atomic(side, text.encode())
    log(f"exported {weights} -> {out} (darknet fp32, {width}x{height}; {out.with_suffix('.cfg').name} and "
        f"{out.with_suffix('.names').name} beside it)")
    return out


@dataclass
class ParityReport:
    """How an exported model compares with the PyTorch one on the same letterboxed inputs."""

    max_rel: List[float]  # per head map: max |exported - torch| / max |torch|
    images: int
    same_boxes: bool  # after NMS at the detectors' conf: the same boxes (any order), classes, within box_tol
    box_tol: float  # pixels of the network input (not of the original image, whose scale varies per image)
    detail: str  # where the first difference is, when there is one

    def failures(self, rel_tol: float = 1e-4) -> List[str]:
        """Each check that failed, in words (empty when the export matches)."""
        failed = []
        worst = max(self.max_rel)
        if worst > rel_tol:
            failed.append(f"raw maps differ by up to {worst:.2e} relative (tolerance {rel_tol:.0e})")
        if not self.same_boxes:
            failed.append(f"boxes after NMS differ ({self.detail})")
        return failed

    def ok(self, rel_tol: float = 1e-4) -> bool:
        return not self.failures(rel_tol)

    def summary(self) -> str:
        rel = ", ".join(f"{r:.2e}" for r in self.max_rel)
        boxes = (f"identical (within {self.box_tol:g} px of the network input)" if self.same_boxes
                 else f"DIFFER ({self.detail})")
        return f"parity on {self.images} images: raw maps max relative difference [p5, p4] = [{rel}]; boxes {boxes}"


def _text_bytes(path: Path) -> bytes:
    return path.read_bytes().replace(b"\r\n", b"\n")


def _is_unedited_export(cfg: Path) -> bool:
    """Whether ``cfg`` is exactly what a Darknet export writes for the model, input size, letter_box and NMS it
    describes: an earlier export's, which a new export into the same folder may replace."""
    from ..models import build_model
    from ..models.darknet import darknet_cfg_text, read_darknet_cfg

    if not cfg.is_file():
        return False
    try:
        read = read_darknet_cfg(cfg)
        model = build_model(0, read.num_classes, read.anchors, read.anchor_masks)
    except (OSError, ValueError):  # not a cfg we could have written
        return False
    text = darknet_cfg_text(model, read.width, read.height, read.scale_x_y, read.resize != "stretch", read.nms)
    return _text_bytes(cfg) == text.encode()


def check_parity(
    weights: PathLike,
    exported: PathLike,
    images: Optional[Sequence[np.ndarray]] = None,
    conf: float = 0.25,
    box_tol: float = 0.05,
    classes: Union[None, PathLike, Sequence[str]] = None,
    num_classes: Optional[int] = None,
    score_tol: float = 1e-4,
    cfg: Optional[PathLike] = None,
) -> ParityReport:
    """Compare ``exported`` with the eager PyTorch model of ``weights`` on ``images`` (RGB uint8; a few
    synthetic ones by default): raw maps on identical input, then detections after NMS at ``conf``.

    Boxes are paired by class and position in any order (see :func:`_compare_detections`); ``box_tol`` is in
    pixels of the network input (fp32 exports land within about 0.005 at 416); ``score_tol`` is how close two
    scores must be for a box that only one side kept to count as rounding (at ``conf``, or a tie in NMS)."""
    from ..utils.checkpoint import load_model
    from .backends import TorchBackend
    from .detector import Detector

    if Path(exported).suffix == ".weights":  # a Darknet export, read back with its .cfg and .names, in fp32
        target = Detector.load(exported, conf=conf, backend="torch", precision="fp32", device="cpu")
    else:  # on the CPU, as the reference below runs (a GPU's fp16 or TF32 would differ by design)
        target = Detector.load(exported, conf=conf, device="cpu")
    model, meta = load_model(weights, classes, num_classes, cfg=cfg)
    reference = Detector(TorchBackend(model, fuse=False), meta, target.input_shape, conf=conf)
    target.nms = reference.nms  # the same NMS on both sides (a Darknet export's cfg may name another)
    images = list(images) if images is not None else synthetic_images()
    max_rel = [0.0, 0.0]
    mismatch = ""
    for i, image in enumerate(images):
        batch, infos = reference.preprocess([image])
        ref_maps, _ = reference.forward(batch)
        out_maps, _ = target.forward(batch)
        for level, (r, o) in enumerate(zip(ref_maps, out_maps)):
            rel = float((o - r).abs().max() / r.abs().max().clamp_min(1e-12))
            max_rel[level] = max(max_rel[level], rel)
        ref_det = reference.postprocess(ref_maps, infos)[0]
        out_det = target.postprocess(out_maps, infos)[0]
        if not mismatch:
            mismatch = _compare_detections(ref_det, out_det, box_tol, score_tol, conf, f"image {i}",
                                           functools.partial(_before_nms, reference, ref_maps, infos),
                                           functools.partial(_before_nms, target, out_maps, infos))
    return ParityReport(max_rel, len(images), not mismatch, box_tol, mismatch)


def _before_nms(detector: Any, maps: Sequence[torch.Tensor], infos: Sequence[Any]) -> Any:
    """Every box above the confidence threshold: NMS that suppresses nothing (no IoU exceeds 1), no max_det."""
    loose = copy.copy(detector)
    loose.iou, loose.max_det = 1.0, 1 << 30
    return loose.postprocess(maps, infos)[0]


def _compare_detections(ref, out, box_tol: float, score_tol: float, conf: float, where: str,
                        ref_all: Optional[Callable[[], Any]] = None,
                        out_all: Optional[Callable[[], Any]] = None) -> str:
    """'' when two sets of detections agree, else where the first difference is.

    Not position by position: boxes whose scores tie to within float rounding may come out of NMS in either
    order. Each box is paired with one of the same class whose corners are within ``box_tol`` pixels of the
    network input (original-image pixels would make the tolerance shrink with the letterbox scale). A box
    left unpaired still agrees where rounding decided whether it was kept: its score is within ``score_tol``
    of ``conf``, or the other side computed the same box with the same score but dropped it (``ref_all`` /
    ``out_all`` give each side's boxes before NMS and max_det: a tie in NMS kept a rival instead)."""
    sx, sy = ref.letterbox.scales if ref.letterbox is not None else (1.0, 1.0)
    scale = np.array([sx, sy, sx, sy])

    def gaps(boxes, labels, y) -> np.ndarray:
        """Largest corner difference between each of these boxes and each of y's, in input pixels (inf across
        classes)."""
        gap = (np.abs(boxes[:, None, :].astype(np.float64) - y.boxes[None, :, :]) * scale).max(axis=2)
        gap[labels[:, None] != y.labels[None, :]] = np.inf
        return gap

    left_ref, left_out = set(range(len(ref))), set(range(len(out)))
    if len(ref) and len(out):
        gap = gaps(ref.boxes, ref.labels, out)
        close_i, close_j = np.nonzero(gap <= box_tol)
        for n in np.argsort(gap[close_i, close_j], kind="stable"):  # closest pairs first
            i, j = int(close_i[n]), int(close_j[n])
            if i in left_ref and j in left_out:
                left_ref.discard(i)
                left_out.discard(j)

    def rounding(det, unpaired: set, other_all: Optional[Callable[[], Any]]) -> set:
        """The boxes of ``unpaired`` that were kept or dropped by rounding alone (see the docstring)."""
        near_conf = {k for k in unpaired if abs(float(det.scores[k]) - conf) <= score_tol}
        rest = unpaired - near_conf
        if not rest or other_all is None:
            return near_conf
        others = other_all()
        if not len(others):
            return near_conf
        rest = sorted(rest)
        gap = gaps(det.boxes[rest], det.labels[rest], others)
        tied = {k for k, row in zip(rest, gap)
                if (np.abs(others.scores[row <= box_tol] - det.scores[k]) <= score_tol).any()}
        return near_conf | tied

    left_ref -= rounding(ref, left_ref, out_all)
    left_out -= rounding(out, left_out, ref_all)
    if not left_ref and not left_out:
        return ""
    side, det, k, other = ("PyTorch", ref, min(left_ref), out) if left_ref else ("the export", out, min(left_out), ref)
    same = other.labels == det.labels[k]
    nearest = ""
    if same.any():
        gap = float((np.abs(other.boxes[same] - det.boxes[k]) * scale).max(axis=1).min())
        nearest = f"; the nearest {det.names[k]} box on the other side is {gap:.3g} input px away"
    box = ", ".join(f"{v:.1f}" for v in det.boxes[k])
    return (f"{where}: {side} has a {det.names[k]} box at [{box}] (score {float(det.scores[k]):.4f}) that the other "
            f"does not, within {box_tol:g} px of the network input{nearest} "
            f"({len(ref)} boxes from PyTorch, {len(out)} exported)")


def synthetic_images(count: int = 4, seed: int = 0) -> List[np.ndarray]:
    """Reproducible test pictures (shapes on noise, several aspect ratios) for parity checks."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        h, w = [(480, 640), (640, 480), (360, 360), (300, 700)][i % 4]
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        for _ in range(6):
            x, y = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            color = tuple(int(c) for c in rng.integers(0, 255, 3))
            cv2.rectangle(image, (x, y), (x + int(rng.integers(20, w // 2)), y + int(rng.integers(20, h // 2))),
                          color, -1)
        images.append(image)
    return images


def run_export(
    weights: Optional[str],
    format: str = "onnx",
    output: Optional[str] = None,
    img_size: Optional[int] = None,
    dynamic: bool = False,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    data: Optional[str] = None,
    calib_images: Optional[str] = None,
    calib_count: int = 300,
    classes_file: Optional[str] = None,
    num_classes: Optional[int] = None,
    cfg: Optional[str] = None,
    no_check: bool = False,
    resize: Optional[str] = None,
    nms: Optional[str] = None,
    log: Callable[[str], None] = print,
) -> int:
    """The command line: export, then check parity (fp32 must match; bf16 / int8 differences are reported).
    Returns the exit status."""
    import sys

    try:
        out = export_model(weights, format, output, img_size, dynamic, precision, opset, data, calib_images,
                           calib_count, classes_file, num_classes, log, cfg, resize, nms)
        if no_check:
            return 0
        report = check_parity(weights, out, classes=classes_file, num_classes=num_classes, cfg=cfg)
    except (OSError, ValueError) as e:  # OSError: a folder that cannot be written (permissions, disk full)
        print(f"error: {e}", file=sys.stderr)
        return 1
    log(report.summary())
    if precision == "fp32" and not report.ok():
        print(f"error: {out} does not match PyTorch: {'; '.join(report.failures())}; please report this",
              file=sys.stderr)
        return 1
    return 0
