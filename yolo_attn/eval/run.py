"""Evaluate a weights file on a data config's split: what ``tools/eval.py`` does, callable from Python."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from ..data.config import build_dataset, load_data_config
from ..inference.detector import EXPORT_SUFFIXES, Detector
from ..inference.hardware import keep_freed_memory
from ..models.tta import DEFAULT_FLIPS, DEFAULT_SCALES
from ..utils.checkpoint import load_model, meta_input_shape, meta_nms, meta_resize, warn_names_unused
from ..utils.device import resolve_device
from ..utils.paths import increment_path, remove_if_empty
from .coco import load_coco_ground_truth
from .evaluator import METRICS, evaluate
from .report import print_report

__all__ = ["run_eval"]

PathLike = Union[str, os.PathLike]


_AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast of each --precision


def run_eval(
    weights: PathLike,
    data: Optional[PathLike] = None,
    root: Optional[PathLike] = None,
    split: str = "val",
    metric: Sequence[str] = ("all",),
    img_size: Optional[int] = None,
    conf: float = 0.001,
    iou: float = 0.5,
    batch_size: int = 16,
    device: str = "auto",
    workers: int = 2,
    precision: str = "fp32",
    max_det: int = 300,
    nms: Optional[str] = None,
    resize: Optional[str] = None,
    save_json: bool = True,
    classes_file: Optional[PathLike] = None,
    num_classes: Optional[int] = None,
    phi: Union[int, str, None] = None,
    darknet_cfg: Optional[PathLike] = None,
    project: PathLike = "runs/eval",
    name: str = "exp",
    augment: bool = False,
    augment_scales: Sequence[float] = DEFAULT_SCALES,
    augment_flips: Sequence[bool] = DEFAULT_FLIPS,
    single_cls: bool = False,
) -> Dict[str, Any]:
    """Load ``weights`` (our .pt, Darknet .weights, port state dict, or an ONNX / OpenVINO / TorchScript export),
    evaluate on ``split`` of the data config ``data`` (None: the embedded shapes dataset; ``root``: its dataset
    folder in place of the config's), print the per-class table and summary, and write the results into
    ``project/name`` (made unique: exp, exp2, ...). ``precision``: fp32, or bf16 / fp16 (CUDA only) autocast.
    ``augment``: test-time augmentation with the given views (:mod:`yolo_attn.models.tta`). ``single_cls``: every
    box of the data as one class, as a model trained with ``--single-cls`` saw them. Returns
    :func:`~yolo_attn.eval.evaluate`'s dict, with ``save_dir``. ``nms`` and ``resize`` default to the weights'
    own (Darknet .weights: their cfg's, as Darknet's ``detector map`` runs them; see
    :class:`~yolo_attn.inference.Detector`)."""
    keep_freed_memory()
    device = str(resolve_device(device))  # a clear error now, not a traceback after the dataset has loaded
    if precision not in _AMP_DTYPES:
        raise ValueError(f"precision '{precision}': use {', '.join(_AMP_DTYPES)}")
    if precision == "fp16" and not device.startswith("cuda"):  # CPUs emulate fp16: many times slower
        raise ValueError(f"precision fp16 runs on CUDA, and the device is {device}; on a CPU use --precision "
                         f"fp32 or bf16")
    cfg = load_data_config(data, {"root": str(root)} if root else None)
    dataset = build_dataset(cfg, split)
    if single_cls:
        dataset.as_single_class()
    if Path(weights).suffix.lower() in EXPORT_SUFFIXES or Path(weights).is_dir():
        # an export (ONNX, OpenVINO IR or its folder, TorchScript) runs through its own backend, as predict runs it
        detector = Detector.load(weights, device=device, precision=None if precision == "fp32" else precision,
                                 img_size=img_size, cfg=darknet_cfg)
        model, meta = detector.as_module(), detector.meta
    else:
        # Weights without class names (Darknet, the port) take the dataset's unless told otherwise.
        classes = classes_file if classes_file is not None else (None if num_classes is not None else dataset.names)
        model, meta = load_model(weights, classes=classes, num_classes=num_classes, phi=phi, cfg=darknet_cfg)
        warn_names_unused(weights, meta, classes_file, num_classes)
    ours, theirs = list(meta["names"]), list(dataset.names)
    if len(ours) == 1 and len(theirs) > 1:
        raise ValueError(f"{weights}: the model has one class ({ours[0]}) and the data {len(theirs)}: a model "
                         f"trained with --single-cls is evaluated with --single-cls")
    if ours != theirs and sorted(ours) == sorted(theirs) and len(set(ours)) == len(ours):
        # the same classes in another order (a COCO JSON lists them by category id): scored by name
        print("note: the model's classes are the dataset's in another order; each is scored as the dataset's "
              "class of its name", file=sys.stderr)
        model = _ClassesByName(model, [ours.index(name) for name in theirs])
    elif ours != theirs and len(ours) == len(theirs):  # a differing count is refused by evaluate
        print(f"warning: the model's classes {ours[:5]}... differ from the dataset's {theirs[:5]}...; AP is "
              f"reported under the dataset's names", file=sys.stderr)
    metrics = METRICS if "all" in metric else tuple(metric)
    coco_gt = None
    if cfg["format"] == "coco" and "coco" in metrics and not single_cls:  # the JSON keeps its categories
        # Score COCO data against its own JSONs (merged when the split has several): crowd regions and mask
        # areas give the official numbers.
        coco_gt = load_coco_ground_truth(dataset.annotation_files, dataset.id_prefixes)
    save_dir = increment_path(Path(project) / name, mkdir=True)
    try:
        result = evaluate(
            model, dataset,
            img_size=img_size or meta_input_shape(meta),
            batch_size=batch_size, conf_threshold=conf, iou_threshold=iou, metrics=metrics, device=device,
            workers=workers, amp_dtype=_AMP_DTYPES[precision], max_det=max_det,
            nms=nms or meta_nms(meta), resize=resize or meta_resize(meta),
            scale_x_y=float(meta.get("scale_x_y", 1.05)), preprocess=meta.get("preprocess"),
            coco_gt=coco_gt, output_dir=save_dir, save_json=save_json, verbose=True,
            augment=augment, augment_scales=augment_scales, augment_flips=augment_flips,
        )
    except BaseException:  # a bad argument (or Ctrl-C) before any output: the folder is not left behind empty
        remove_if_empty(save_dir)
        raise
    views = (f", test-time augmentation: scales {' '.join(f'{s:g}' for s in augment_scales)}, flips "
             f"{' '.join(str(int(bool(f))) for f in augment_flips)}" if augment else "")
    print(f"{weights} on {cfg.get('path', cfg['root'])} [{split}], {len(dataset)} images{views}")
    print_report(result)
    print(f"results saved to {save_dir}")
    result["save_dir"] = save_dir
    return result


class _ClassesByName(nn.Module):
    """``model`` with the class channels of its raw maps put in the dataset's order: the dataset's class ``k``
    is the model's ``order[k]``."""

    def __init__(self, model: nn.Module, order: Sequence[int]):
        super().__init__()
        self.model = model
        self.num_classes = model.num_classes
        self.order = list(order)
        self.train(model.training)

    def level_anchors(self) -> List[List[Tuple[float, float]]]:
        return self.model.level_anchors()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        reordered = []
        for raw in self.model(x):
            b, _, h, w = raw.shape
            per_anchor = raw.reshape(b, -1, 5 + self.num_classes, h, w)
            classes = per_anchor[:, :, 5:][:, :, self.order]
            reordered.append(torch.cat([per_anchor[:, :, :5], classes], 2).reshape(b, -1, h, w))
        return tuple(reordered)
