"""Networks: YOLOv4-tiny, its backbone, the attention blocks, decoding and Darknet weight I/O."""
from .attention import ATTENTION_BY_PHI, build_attention, resolve_attention
from .darknet import load_darknet_weights, read_darknet_cfg, save_darknet_weights, write_darknet_cfg
from .decode import Decoder, darknet_nms, decode_outputs, postprocess
from .tta import augmented_decode
from .yolo import DEFAULT_ANCHOR_MASKS, DEFAULT_ANCHORS, STRIDES, YoloV4Tiny, build_model, check_input_size

__all__ = [
    "ATTENTION_BY_PHI",
    "DEFAULT_ANCHORS",
    "DEFAULT_ANCHOR_MASKS",
    "STRIDES",
    "Decoder",
    "YoloV4Tiny",
    "augmented_decode",
    "build_attention",
    "build_model",
    "check_input_size",
    "darknet_nms",
    "decode_outputs",
    "load_darknet_weights",
    "postprocess",
    "read_darknet_cfg",
    "resolve_attention",
    "save_darknet_weights",
    "write_darknet_cfg",
]
