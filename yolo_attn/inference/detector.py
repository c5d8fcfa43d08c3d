"""The Python API: ``Detector.load(weights)`` then ``det(image)``.

::

    from yolo_attn import Detector

    det = Detector.load("runs/train/exp/best.pt")   # or .weights / .pth (with classes=), .onnx, .torchscript, .xml
    result = det("street.jpg")                       # a path, an RGB numpy array, a PIL image, or a list of them
    for box, score, name in zip(result.boxes, result.scores, result.names):
        print(name, score, box)                      # box: x1, y1, x2, y2 in pixels of the original image

Numpy arrays are taken as RGB (as PIL and matplotlib give them); pass ``bgr=True`` for arrays from OpenCV.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn as nn

from ..data.letterbox import PAD_VALUE, LetterboxInfo, as_hw, check_resize, fit_to_input, unletterbox_boxes
from ..data.records import BadImageError, read_image
from ..models.decode import check_nms, decode_outputs
from ..models.decode import postprocess as nms_postprocess
from ..models.tta import DEFAULT_FLIPS, DEFAULT_SCALES, augmented_decode, check_views
from ..models.yolo import STRIDES, check_input_size
from ..utils.checkpoint import meta_input_shape, meta_nms, meta_resize, missing_weights_message, warn_names_unused
from ..utils.device import resolve_device
from .backends import Backend, create_backend, last_line
from .fastproc import decode_nms, letterbox_batch
from .hardware import AutoChoice, auto_choice, export_for, keep_freed_memory, torch_threads

__all__ = ["Detections", "Detector", "load_image", "missing_weights_message"]

PathLike = Union[str, os.PathLike]
# exported files and the backends that run them, the file's own first
EXPORT_SUFFIXES = {".onnx": ("onnxruntime", "openvino"), ".xml": ("openvino",), ".torchscript": ("torchscript",)}
ImageLike = Union[PathLike, np.ndarray, Any]  # Any: a PIL image

_INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "bilinear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}


@dataclass
class Detections:
    """What was found in one image. Boxes are x1, y1, x2, y2 in pixels of the original image."""

    boxes: np.ndarray  # (K, 4) float32
    scores: np.ndarray  # (K,) float32, objectness * class probability
    labels: np.ndarray  # (K,) int64 class indices
    names: List[str]  # (K,) the class name of each box
    image_shape: Tuple[int, int]  # (h, w) of the original image
    source: Optional[str] = None  # the path, when the image came from a file
    letterbox: Optional[LetterboxInfo] = None
    input_shape: Tuple[int, int] = (0, 0)  # (h, w) the network saw
    maps: Optional[List[np.ndarray]] = None  # raw head maps (A*(5+C), H_l, W_l), with keep_maps=True
    gates: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)  # attention gates, keep_gates=True

    def __len__(self) -> int:
        return len(self.scores)

    def to_records(self) -> List[Dict[str, Any]]:
        """One plain dict per box: label, name, score, box [x1, y1, x2, y2]."""
        return [
            {"label": int(c), "name": n, "score": float(s), "box": [float(v) for v in b]}
            for b, s, c, n in zip(self.boxes, self.scores, self.labels, self.names)
        ]


def load_image(image: ImageLike, bgr: bool = False) -> Tuple[np.ndarray, Optional[str]]:
    """Any supported image input -> (H, W, 3) uint8 RGB, and its path when it came from a file.

    ``bgr`` says how to read numpy arrays (paths and PIL images carry their own channel order).
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        try:
            return read_image(path), str(path)  # the dataset's reader: EXIF orientation, truncation checks
        except BadImageError as e:
            raise ValueError(f"{e}") from None
    if type(image).__module__.startswith("PIL."):
        return _pil_to_rgb(image), getattr(image, "filename", None) or None
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, bgr), None
    raise TypeError(f"cannot read an image from a {type(image).__name__}; give a path, a numpy array or a PIL image")


def _pil_to_rgb(image: Any) -> np.ndarray:
    """A PIL image -> (H, W, 3) uint8 RGB, as :func:`read_image` decodes the same file: turned upright by its
    EXIF orientation, and high bit depths scaled down as OpenCV's IMREAD_COLOR does (16-bit >> 8) instead of
    clipped at 255 as Pillow's ``convert("RGB")`` would (which turns almost every pixel white)."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":  # I;16 (L/B), I (32-bit int), F (32-bit float)
        gray = np.asarray(image).astype(np.float64)
        if image.mode == "F" and gray.size and gray.max() <= 1.0:
            gray = gray * 255.0  # floats in [0, 1], as numpy arrays are taken
        elif image.mode.startswith("I;16") or (gray.size and gray.max() > 255.0):
            gray = np.floor(gray / 256.0)  # the 16-bit range (Pillow opens 16-bit PNGs and TIFFs as I;16)
        # else: I or F in 0..255, which is what Pillow's own convert("I") / convert("F") of an 8-bit image gives
        gray = gray.clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    return np.asarray(image.convert("RGB"))


def _array_to_rgb(array: np.ndarray, bgr: bool) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) image array, got shape {array.shape}")
    if array.dtype == np.uint16:  # cv2.imread(..., IMREAD_UNCHANGED) of a 16-bit file: its top 8 bits, as a path
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and 0.0 <= array.min() and array.max() <= 1.0:
            array = (array * 255.0).round().astype(np.uint8)
        else:
            raise ValueError(f"expected a uint8 or uint16 image (or floats in [0, 1]), got {array.dtype}")
    if array.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(array, 3, axis=2))
    array = array[:, :, :3]  # drop alpha
    return np.ascontiguousarray(array[:, :, ::-1] if bgr else array)


class Detector:
    """Letterbox (or stretch), run a backend, decode, class-aware NMS, map boxes back to the original image.

    Build it with :meth:`load`. Everything needed (class names, anchors, decode settings, input size,
    pre-processing) comes from the weights file.

    ``rect = True`` letterboxes onto the smallest multiple-of-32 canvas that holds the resized image (at the
    same scale) instead of the full square: a 16:9 frame runs at 416x256 instead of 416x416, 38 % less work.
    Boxes differ from the square input's only by the network seeing less padding. The video path uses it.

    ``augment = True`` (or a list of (scale, flip) views) turns on test-time augmentation
    (:mod:`yolo_attn.models.tta`): several views per image, boxes pooled before NMS; slower, finds more.

    ``resize = "stretch"`` resizes every image to the input size without keeping its aspect ratio, as
    Darknet's ``detector test`` does (and OpenCV's ``blobFromImage``); ``"letterbox"`` keeps the aspect ratio
    (what the models trained here saw); ``"darknet-letterbox"`` keeps it as Darknet's ``letter_box=1`` does
    (:func:`~yolo_attn.data.letterbox.darknet_letterbox`). ``rect`` applies to "letterbox" only.

    ``nms = "darknet"`` runs Darknet's greedy DIoU NMS (:func:`~yolo_attn.models.darknet_nms`) and
    ``"darknet-iou"`` Darknet's default IoU NMS, the way Darknet reports detections: every class above ``conf``
    for a box, each kept or dropped on its own; ``"iou"`` keeps each box's best class and runs torchvision's NMS.

    Both default to the weights' own: Darknet ``.weights`` run as their ``.cfg`` tells Darknet to run them
    ("stretch", or "darknet-letterbox" for ``letter_box=1``; ``nms_kind=greedynms`` is "darknet", no ``nms_kind``
    "darknet-iou"; at the cfg's width and height), so their detections are Darknet's; our checkpoints
    letterbox and run "iou".

    ``agnostic = True`` runs any of them over all classes at once (Ultralytics' ``agnostic_nms``): of two
    overlapping boxes of different classes only the higher-scoring one is kept.
    """

    def __init__(
        self,
        backend: Backend,
        meta: Dict[str, Any],
        img_size: Union[int, Tuple[int, int], None] = None,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        keep_classes: Optional[Sequence[Union[int, str]]] = None,
        batch_size: int = 8,
    ):
        keep_freed_memory()
        self.backend = backend
        self.meta = meta
        model = meta["model"]
        self.names: List[str] = list(meta["names"])
        self.level_anchors = [[tuple(model["anchors"][i]) for i in mask] for mask in model["anchor_masks"]]
        self.num_anchors = len(model["anchor_masks"][0])
        self.scale_x_y = float(meta.get("scale_x_y", 1.05))
        pre = meta.get("preprocess") or {}
        self.interpolation = _interpolation(pre.get("interpolation", "linear"))
        self.pad_value = int(pre.get("pad_value", PAD_VALUE))
        self.input_shape = self._input_shape(img_size if img_size is not None else meta_input_shape(meta))
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.keep_classes = keep_classes
        fixed_batch = backend.fixed_shape[0]
        self.batch_size = fixed_batch or max(1, int(batch_size))
        self.choice: Optional[AutoChoice] = None  # set by load() when it chose the backend itself
        self.rect = False
        self._resize = check_resize(meta_resize(meta))
        self._augment: Optional[List[Tuple[float, bool]]] = None
        self._nms = check_nms(meta_nms(meta))
        self.agnostic = False  # one NMS over all classes (a box suppresses overlapping boxes of other classes too)

    @classmethod
    def load(
        cls,
        path: PathLike,
        classes: Union[None, PathLike, Sequence[str]] = None,
        num_classes: Optional[int] = None,
        device: str = "auto",
        backend: Optional[str] = None,
        precision: Optional[str] = None,
        img_size: Union[int, Tuple[int, int], None] = None,
        conf: float = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        keep_classes: Optional[Sequence[Union[int, str]]] = None,
        use_exports: bool = False,
        augment: Union[bool, Sequence[Tuple[float, bool]]] = False,
        nms: Optional[str] = None,
        resize: Optional[str] = None,
        cfg: Optional[PathLike] = None,
        long_run: bool = False,
    ) -> "Detector":
        """Load a detector from any supported weights file.

        Args:
            path: our checkpoint (.pt), Darknet .weights or a port state dict (these two need ``classes``
                or ``num_classes``), an exported .onnx or .torchscript, or an OpenVINO IR (.xml, or a folder
                holding one).
            classes: class names (a list, or a file with one per line) for weights that carry none.
            device: "auto" (the first GPU when CUDA is present, else the CPU), "cpu", "cuda", "cuda:N".
            backend: "torch", "onnxruntime" or "openvino"; by default the one the file is made for, and for
                PyTorch weights the fastest for this machine (:func:`~yolo_attn.inference.hardware.auto_choice`:
                torch in bf16 where bf16 is fast (AMX, or AVX512-BF16 measured faster), fp32 otherwise, fp16 on
                CUDA; ``describe()`` says which and why).
                PyTorch weights run by ONNX Runtime / OpenVINO are converted in memory first.
            precision: "fp32", "bf16", "int8" (or "fp16" for torch on CUDA) where the backend offers it; by
                default the file's own, or the automatic choice for PyTorch weights.
            img_size: network input size (int, or (h, w)), multiples of 32; by default the checkpoint's.
            keep_classes: report only these classes (indices or names).
            use_exports: for PyTorch weights, run the OpenVINO export that ``tools/export.py`` wrote beside
                them when the choice is left open: the calibrated int8 one (``best_openvino_int8/``, 2-4x
                faster, slightly different numbers), else a float one (``best_openvino/``, about 1.3x), unless it
                was exported for a fixed size other than ``img_size`` (``tools/predict.py`` does this; off by
                default so that loading a checkpoint means its own weights).
            augment: test-time augmentation (see the ``augment`` attribute); the automatic choice then passes
                over exports fixed to one input size.
            nms: "iou", "darknet" or "darknet-iou" (see the ``nms`` attribute); by default the weights' own.
            resize: "letterbox", "stretch" or "darknet-letterbox" (see the ``resize`` attribute); by default the
                weights' own.
            cfg: for Darknet .weights, the .cfg that gives their anchors, masks, scale_x_y and input size (by
                default the one beside the weights with their name, else the official yolov4-tiny.cfg's).
            long_run: many images will follow (a video, a webcam, a large folder; ``tools/predict.py`` says so):
                on a CPU with AMX, when the choice is left open and no export is taken, PyTorch weights are
                converted to OpenVINO bf16 in memory (about 2 s once; then about 2x torch bf16) where OpenVINO
                and onnx are installed. A conversion that fails falls back to torch, with a warning (and a word
                in ``describe()``).
        """
        if str(device).strip().lower() in ("", "auto") or str(device).strip().isdigit():
            # "0" is cuda:0 (as in Ultralytics) for every backend; other names are checked by the backend that
            # runs them (ONNX Runtime's CUDA needs no CUDA in torch)
            device = str(resolve_device(device))
        path = _resolve_weights_path(path)
        suffix = path.suffix.lower()
        if cfg is not None and suffix != ".weights":
            raise ValueError(f"{cfg}: a Darknet .cfg goes with Darknet .weights, not with {path}")
        if suffix in EXPORT_SUFFIXES:
            if suffix == ".torchscript" and backend == "torch":  # torch runs it, through its interpreter
                backend = "torchscript"
            kind = backend or EXPORT_SUFFIXES[suffix][0]
            allowed = EXPORT_SUFFIXES[suffix]
            if kind not in allowed:
                raise ValueError(f"{path}: a {suffix} model runs with --backend {' or '.join(allowed)}, not {kind}")
            runner = create_backend(kind, path, precision, device)
            if runner.meta is None:
                raise ValueError(f"{path}: carries no yolo_attn metadata (class names, anchors); "
                                 f"export it with `python tools/export.py`")
            detector = cls(runner, runner.meta, img_size, conf, iou, max_det, keep_classes)
            detector._settle(augment, nms, resize)
            return detector
        # An export stands in only for our checkpoints, which carry all they decode with. Darknet and port weights
        # take names, anchors and decoding from flags and files beside them (--cfg, .names), which an export
        # froze when it was made: it could run other settings than the ones asked for now.
        own = None if suffix == ".weights" else _checkpoint_meta(path)
        ours = own is not None
        if ours:  # it runs with its own names, whichever backend or export runs it
            warn_names_unused(path, own, classes, num_classes)
        choice = _choose(path, backend, precision, device, use_exports and ours, img_size, bool(augment), ours,
                         long_run)
        if choice is not None and choice.weights is not None and img_size is None:
            # the checkpoint's size, not the one the export was made at (a --dynamic 320 export would set it)
            img_size = meta_input_shape(own)
            choice = _choose(path, backend, precision, device, use_exports, img_size, bool(augment), convert=long_run)
        if choice is not None and choice.weights is not None:  # a faster export of this checkpoint
            # run as the checkpoint runs (an export made with --resize / --nms has its own way)
            detector = cls.load(choice.weights, classes, num_classes, device, choice.backend, choice.precision,
                                img_size, conf, iou, max_det, keep_classes, augment=augment,
                                nms=nms or meta_nms(own), resize=resize or meta_resize(own))
            detector.choice = choice
            return detector
        from ..utils.checkpoint import load_model

        model, meta = load_model(path, classes, num_classes, cfg=cfg)
        if choice is not None:
            backend, precision = choice.backend, choice.precision
        try:
            runner = _torch_weights_backend(model, meta, backend or "torch", precision, device, path)
        except Exception as e:  # noqa: BLE001 - only the automatic in-memory conversion falls back
            if choice is None or choice.weights is not None or choice.backend != "openvino":
                raise
            failed = f"converting to OpenVINO in memory failed ({last_line(e)})"
            warnings.warn(f"{path}: {failed}; running torch instead", stacklevel=2)
            choice = _choose(path, None, None, device, use_exports and ours, img_size, bool(augment), ours)
            choice = dataclasses.replace(choice, reason=f"{choice.reason}; {failed}")
            runner = _torch_weights_backend(model, meta, choice.backend, choice.precision, device, path)
        detector = cls(runner, meta, img_size, conf, iou, max_det, keep_classes)
        detector.choice = choice
        detector._settle(augment, nms, resize)
        return detector

    def _settle(self, augment: Union[bool, Sequence[Tuple[float, bool]]], nms: Optional[str],
                resize: Optional[str]) -> None:
        """load()'s choices; an NMS or resize left as None stays the weights' own (set in __init__)."""
        self.augment = augment
        if nms is not None:
            self.nms = nms
        if resize is not None:
            self.resize = resize

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def resize(self) -> str:
        return self._resize

    @resize.setter
    def resize(self, mode: str) -> None:
        self._resize = check_resize(mode)

    @property
    def nms(self) -> str:
        return self._nms

    @nms.setter
    def nms(self, kind: str) -> None:
        self._nms = check_nms(kind)

    @property
    def keep_classes(self) -> Optional[List[int]]:
        return self._keep_classes

    @keep_classes.setter
    def keep_classes(self, classes: Optional[Sequence[Union[int, str]]]) -> None:
        self._keep_classes = None if classes is None else [self._class_index(c) for c in classes]

    @property
    def augment(self) -> Optional[List[Tuple[float, bool]]]:
        """The test-time augmentation views as (scale, flip) pairs, or None when it is off."""
        return self._augment

    @augment.setter
    def augment(self, views: Union[bool, None, Sequence[Tuple[float, bool]]]) -> None:
        """True: the default views; False or None: off; else (scale, flip) pairs."""
        if views is True:
            views = list(zip(DEFAULT_SCALES, DEFAULT_FLIPS))
        if not views:
            self._augment = None
            return
        if not self.backend.accepts_any_size:
            raise ValueError(f"test-time augmentation runs the network at several input sizes; this "
                             f"{self.backend.name} model was exported for a fixed one (re-export it with "
                             f"--dynamic, or use the .pt checkpoint)")
        scales, flips = zip(*views)
        self._augment = check_views(scales, flips)

    def __call__(self, images: Union[ImageLike, Sequence[ImageLike]], bgr: bool = False):
        """Detect objects. One image gives one :class:`Detections`; a list gives a list of them."""
        if isinstance(images, (list, tuple)):
            return self.predict(images, bgr)
        return self.predict([images], bgr)[0]

    def predict(
        self,
        images: Sequence[ImageLike],
        bgr: bool = False,
        keep_maps: bool = False,
        keep_gates: bool = False,
    ) -> List[Detections]:
        """Detect objects in each image; optionally keep the raw head maps (heatmap view) and the
        attention gates (attention view, PyTorch backend only)."""
        if self._augment is not None and (keep_maps or keep_gates):
            raise ValueError("the heatmap and attention views show one network input; turn test-time "
                             "augmentation off for them")
        # torch's own OpenMP workers, woken by post-processing, spin on for a while after it and take a core
        # from another runtime's pool: keep torch at one thread for the whole loop when torch does not run the
        # network (1.4 ms of 8.6 a 720p frame with OpenVINO bf16 on 2 cores)
        with nullcontext() if self.backend.torch_pool else torch_threads(1):
            return self._predict(images, bgr, keep_maps, keep_gates)

    def _predict(self, images: Sequence[ImageLike], bgr: bool, keep_maps: bool,
                 keep_gates: bool) -> List[Detections]:
        results: List[Detections] = []
        for start in range(0, len(images), self.batch_size):
            loaded = [_load_unflipped(im, bgr) for im in images[start : start + self.batch_size]]
            shape = self._canvas([im.shape[:2] for im, _, _ in loaded])
            boxed, infos = letterbox_batch([im for im, _, _ in loaded], shape, self.pad_value,
                                           self.interpolation, [flip for _, _, flip in loaded], self.resize)
            if self._augment is not None:
                results.extend(self._predict_augmented(boxed, infos, [source for _, source, _ in loaded]))
                continue
            maps, gates = self._forward(boxed, keep_gates, self.backend.run_uint8)
            dets = self.postprocess(maps, infos)
            for i, (det, (_, source, _)) in enumerate(zip(dets, loaded)):
                det.source = source
                if keep_maps:
                    det.maps = [m[i].numpy() for m in maps]
                det.gates = {name: {k: g[i].float().cpu().numpy() for k, g in d.items()} for name, d in gates.items()}
            results.extend(dets)
        return results

    def preprocess(self, images: Sequence[np.ndarray]) -> Tuple[torch.Tensor, List[LetterboxInfo]]:
        """RGB uint8 images -> letterboxed (or stretched) float batch (B, 3, H, W) in [0, 1], and how each was
        letterboxed."""
        boxed = [fit_to_input(im, self.input_shape, self.resize, self.pad_value, self.interpolation) for im in images]
        batch = torch.from_numpy(np.stack([b for b, _ in boxed])).permute(0, 3, 1, 2).float().div_(255.0)
        return batch.contiguous(), [info for _, info in boxed]

    def forward(self, batch: torch.Tensor, keep_gates: bool = False):
        """Run the backend on a letterboxed batch. Returns (raw maps, attention gates or {})."""
        return self._forward(batch, keep_gates, self.backend)

    def _forward(self, batch, keep_gates: bool, run):
        """forward() for a float batch (``run`` = the backend) or a uint8 NHWC array (``backend.run_uint8``)."""
        model = self.backend.torch_model
        if keep_gates and model is None:
            raise ValueError(f"the attention view needs the PyTorch model; the {self.backend.name} backend has "
                             f"none (use the .pt checkpoint with --backend torch)")
        n, fixed = batch.shape[0], self.backend.fixed_shape[0]
        if fixed and n != fixed:  # a static export: run it in chunks of its batch size, the last one padded
            chunks = [_run_fixed(run, batch[i : i + fixed], fixed) for i in range(0, n, fixed)]
            return [torch.cat(level)[:n] for level in zip(*chunks)], {}
        if not keep_gates:
            return run(batch), {}
        from ..models.attention import collect_gates, recording_gates

        with recording_gates(model):
            maps = run(batch)
            gates = collect_gates(model)
        return maps, gates

    def postprocess(self, maps: Sequence[torch.Tensor], infos: Sequence[LetterboxInfo]) -> List[Detections]:
        """Decode raw maps, threshold, NMS, and map boxes back to each original image."""
        if self.nms != "iou":  # Darknet's NMS, over every class above the threshold per box as Darknet keeps
            decoded = decode_outputs([m.float() for m in maps], self.level_anchors, STRIDES, self.scale_x_y)
            kept = nms_postprocess(decoded, self.conf, self.iou, self.max_det, classes=self.keep_classes,
                                   multi_label=True, nms=self.nms, nms_scales=[i.image_relative for i in infos],
                                   agnostic=self.agnostic)
        else:
            kept = decode_nms(maps, self.level_anchors, STRIDES, self.scale_x_y, self.conf, self.iou, self.max_det,
                              classes=self.keep_classes, agnostic=self.agnostic)
        return self._detections(kept, infos, (maps[0].shape[2] * STRIDES[0], maps[0].shape[3] * STRIDES[0]))

    def _predict_augmented(self, boxed: np.ndarray, infos: Sequence[LetterboxInfo],
                           sources: Sequence[Optional[str]]) -> List[Detections]:
        """predict() of one letterboxed uint8 batch with test-time augmentation."""
        batch = torch.from_numpy(boxed).permute(0, 3, 1, 2).float().div_(255.0)
        scales, flips = zip(*self._augment)
        decoded = augmented_decode(lambda x: self._forward(x, False, self.backend)[0], batch, self.level_anchors,
                                   STRIDES, self.scale_x_y, scales, flips)
        kept = nms_postprocess(decoded, self.conf, self.iou, self.max_det, classes=self.keep_classes,
                               multi_label=self.nms != "iou", nms=self.nms,
                               nms_scales=[i.image_relative for i in infos], agnostic=self.agnostic)
        dets = self._detections(kept, infos, tuple(batch.shape[2:]))
        for det, source in zip(dets, sources):
            det.source = source
        return dets

    def _detections(self, kept: Sequence[torch.Tensor], infos: Sequence[LetterboxInfo],
                    input_shape: Tuple[int, int]) -> List[Detections]:
        """Per image (K, 6) [x1, y1, x2, y2, score, class] in input pixels -> Detections in its own pixels."""
        results = []
        for det, info in zip(kept, infos):
            det = det.numpy()
            boxes = unletterbox_boxes(det[:, :4], info)  # float32
            labels = det[:, 5].astype(np.int64)
            results.append(Detections(
                boxes=boxes,
                scores=det[:, 4].astype(np.float32),
                labels=labels,
                names=[self.names[i] for i in labels],
                image_shape=info.orig_shape,
                letterbox=info,
                input_shape=input_shape,
            ))
        return results

    def as_module(self) -> nn.Module:
        """This detector's backend as a raw-map ``nn.Module`` with ``num_classes`` and ``level_anchors()``, so
        code written for :class:`YoloV4Tiny` (``yolo_attn.eval.evaluate``) runs exported models as well."""
        return _BackendModule(self)

    def describe(self) -> str:
        """One line: what runs and how."""
        h, w = self.input_shape
        attention = self.meta["model"].get("attention") or "none"
        chosen = f" [{self.choice.describe()}]" if self.choice is not None else ""
        return (f"{self.backend.describe()}{chosen}, input {w}x{h}, {self.num_classes} classes, "
                f"attention {attention}, conf {self.conf}, iou {self.iou}"
                + {"stretch": ", stretched to the input", "darknet-letterbox": ", letterboxed as Darknet does"}.get(
                    self.resize, "")
                + {"darknet": ", Darknet's DIoU NMS", "darknet-iou": ", Darknet's IoU NMS"}.get(self.nms, "")
                + (", class-agnostic NMS" if self.agnostic else ""))

    def _canvas(self, shapes: Sequence[Tuple[int, int]]) -> Tuple[int, int]:
        """The network input for images of these (h, w): the full input size, or with ``rect`` the smallest
        multiple of 32 holding each letterboxed image at the full size's scale."""
        if not self.rect or not self.backend.accepts_any_size or self.resize != "letterbox":
            return self.input_shape
        top_h, top_w = self.input_shape
        stride = STRIDES[0]
        canvas_h, canvas_w = stride, stride
        for h, w in shapes:
            scale = min(top_h / h, top_w / w)
            canvas_h = max(canvas_h, -(-round(h * scale) // stride) * stride)
            canvas_w = max(canvas_w, -(-round(w * scale) // stride) * stride)
        return min(canvas_h, top_h), min(canvas_w, top_w)

    def _input_shape(self, size: Union[int, Sequence[int]]) -> Tuple[int, int]:
        h, w = check_input_size(size, "image size")
        _, fixed_h, fixed_w = self.backend.fixed_shape
        if (fixed_h and fixed_h != h) or (fixed_w and fixed_w != w):
            raise ValueError(f"this model was exported for a fixed {fixed_w}x{fixed_h} input, not {w}x{h}; "
                             f"re-export it with --dynamic to run other sizes")
        return h, w

    def _class_index(self, c: Union[int, str]) -> int:
        if isinstance(c, str) and not c.strip().isdigit():
            if c not in self.names:
                raise ValueError(f"unknown class '{c}'; this model knows {', '.join(self.names)}")
            return self.names.index(c)
        index = int(c)
        if not 0 <= index < len(self.names):
            raise ValueError(f"class index {index} is out of range for a model with {len(self.names)} classes")
        return index


class _BackendModule(nn.Module):
    """See :meth:`Detector.as_module`. Holds one empty parameter so ``next(module.parameters())`` gives the
    device, as callers of a YoloV4Tiny expect."""

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector
        self.num_classes = detector.num_classes
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    def level_anchors(self) -> List[List[Tuple[float, float]]]:
        return [list(level) for level in self.detector.level_anchors]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.detector.forward(x.float())[0])


def _run_fixed(run, chunk, size: int) -> List[torch.Tensor]:
    """Run a static-batch model on a short last chunk, padded with zeros."""
    if chunk.shape[0] < size:
        pad = (size - chunk.shape[0], *chunk.shape[1:])
        if isinstance(chunk, np.ndarray):
            chunk = np.concatenate([chunk, np.zeros(pad, chunk.dtype)])
        else:
            chunk = torch.cat([chunk, chunk.new_zeros(pad)])
    return run(chunk)


def _load_unflipped(image: ImageLike, bgr: bool) -> Tuple[np.ndarray, Optional[str], bool]:
    """load_image(), except that a BGR uint8 frame is returned as it is (flag True) to be converted after
    letterboxing, on the small canvas."""
    if bgr and isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image, None, True
    rgb, source = load_image(image, bgr)
    return rgb, source, False


def _choose(path: Path, backend: Optional[str], precision: Optional[str], device: str, use_exports: bool,
            img_size: Union[int, Tuple[int, int], None], any_size: bool = False,
            ours: bool = True, convert: bool = False) -> Optional[AutoChoice]:
    """The automatic choice for PyTorch weights, where the caller left it open; None where it named both.
    ``ours``: the weights are our checkpoint (else int8, which needs the export beside them, is refused);
    ``convert``: see ``Detector.load``'s ``long_run``."""
    if backend is None and precision is None:
        shape = None if img_size is None else as_hw(img_size)
        return auto_choice(device, path if use_exports else None, input_shape=shape, any_size=any_size,
                           convert=convert)
    if precision == "int8" and backend in (None, "openvino", "torch") and not ours:
        raise ValueError(f"{path}: int8 runs from a calibrated export: make one (python tools/export.py --weights "
                         f"{path} --format openvino --precision int8 --data CONFIG, with the --cfg / class names you "
                         f"use) and pass the export itself as --weights")
    if precision == "int8" and backend in (None, "openvino", "torch"):
        export = export_for(path, "int8")
        if export is not None and backend == "torch":
            raise ValueError(f"{path}: int8 runs with OpenVINO, from the calibrated export beside it ({export}): "
                             f"leave --backend out, or use --backend openvino")
        if export is None:
            raise ValueError(f"{path}: int8 needs a calibrated export: `python tools/export.py --weights {path} "
                             f"--format openvino --precision int8 --data CONFIG` (then found beside the checkpoint)")
        return AutoChoice("openvino", "int8", "the calibrated int8 export of this checkpoint", export)
    if backend is None:
        return AutoChoice("torch", precision, f"--precision {precision} given")
    return None


def _checkpoint_meta(path: Path) -> Optional[Dict[str, Any]]:
    """The meta of our checkpoint at ``path`` (tensors stay unread), or None for other weights."""
    import zipfile

    from ..utils.checkpoint import is_our_checkpoint, load_checkpoint

    try:  # torch's legacy (non-zip) format cannot be mapped: read whole (rare: torch.save writes zip files)
        ckpt = load_checkpoint(path, mmap=zipfile.is_zipfile(path))
    except ValueError:  # not a torch file: load_model says what it is
        return None
    return ckpt["meta"] if is_our_checkpoint(ckpt) else None


def _interpolation(value: Union[str, int]) -> int:
    if isinstance(value, int):
        return value
    if str(value).lower() not in _INTERPOLATIONS:
        raise ValueError(f"unknown interpolation '{value}' in the checkpoint's preprocess settings; "
                         f"expected one of {sorted(_INTERPOLATIONS)}")
    return _INTERPOLATIONS[str(value).lower()]


def _resolve_weights_path(path: Optional[PathLike]) -> Path:
    if path is None or not str(path):
        raise FileNotFoundError(missing_weights_message(None))
    path = Path(path)
    if path.is_dir():  # an OpenVINO export folder
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise FileNotFoundError(f"{path}: is a folder; expected one OpenVINO .xml in it, found {len(xmls)}")
        return xmls[0]
    if not path.is_file():
        raise FileNotFoundError(missing_weights_message(path))
    return path


def _torch_weights_backend(model, meta, kind: str, precision: Optional[str], device: str, path: Path) -> Backend:
    """PyTorch weights on any backend: ONNX Runtime and OpenVINO get an in-memory dynamic export."""
    if kind == "torch":
        return create_backend("torch", model, precision, device)
    if precision == "int8":
        raise ValueError(f"{path}: int8 needs calibration; export it first with "
                         f"`python tools/export.py --weights {path} --format openvino --precision int8 --data "
                         f"CONFIG` (or --calib-images FOLDER), then run the export")
    from .export import export_meta, onnx_bytes, openvino_model

    size = meta_input_shape(meta)
    exported = export_meta(meta, size, dynamic=True, precision="fp32", source=path.name)
    data = onnx_bytes(model, exported, size, dynamic=True)
    if kind == "onnxruntime":
        return create_backend(kind, data, precision, device)
    if kind == "openvino":
        return create_backend(kind, openvino_model(data, exported), precision, device)
    raise ValueError(f"unknown backend '{kind}'; choose torch, onnxruntime or openvino")
