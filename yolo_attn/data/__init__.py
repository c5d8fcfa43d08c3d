"""Datasets (VOC, COCO, YOLO txt, the embedded shapes set), transforms and loaders.

    from yolo_attn.data import load_data_config, build_dataset, build_train_loader
    cfg = load_data_config("configs/voc.yaml")      # None: the embedded shapes dataset (generated once)
    ds = build_dataset(cfg, split="train")          # records: image, boxes xyxy, labels, difficult, ...
    loader = build_train_loader(ds, img_size=416, batch_size=8, workers=2)
"""
from .config import FORMATS, build_dataset, load_data_config
from .coco import COCODataset
from .dataset import DetectionDataset
from .letterbox import PAD_VALUE, LetterboxInfo, letterbox, letterbox_boxes, unletterbox_boxes
from .loader import (
    EpochSampler, EvalDataset, TrainDataset, build_eval_loader, build_train_loader, collate_eval, collate_train,
    measure_loader,
)
from .records import BadImageError, DataProblem, ProblemLog, Record, read_image
from .shapes import SHAPE_CLASSES, cache_dir, ensure_shapes_dataset, generate_shapes
from .transforms import DEFAULT_AUG, TrainTransform
from .voc import VOC_CLASSES, VOCDataset
from .yolo_txt import YOLOTxtDataset

__all__ = [
    "BadImageError",
    "COCODataset",
    "DEFAULT_AUG",
    "DataProblem",
    "DetectionDataset",
    "EpochSampler",
    "EvalDataset",
    "FORMATS",
    "LetterboxInfo",
    "PAD_VALUE",
    "ProblemLog",
    "Record",
    "SHAPE_CLASSES",
    "TrainDataset",
    "TrainTransform",
    "VOCDataset",
    "VOC_CLASSES",
    "YOLOTxtDataset",
    "build_dataset",
    "build_eval_loader",
    "build_train_loader",
    "cache_dir",
    "collate_eval",
    "collate_train",
    "ensure_shapes_dataset",
    "generate_shapes",
    "letterbox",
    "letterbox_boxes",
    "load_data_config",
    "measure_loader",
    "read_image",
    "unletterbox_boxes",
]
