"""Networks: YOLOv4-tiny, its backbone, the attention blocks, decoding and Darknet weight I/O."""
from .attention import ATTENTION_BY_PHI, build_attention, resolve_attention
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
    "postprocess",
    "resolve_attention",
]
