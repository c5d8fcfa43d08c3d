"""Command-line flags that several tools share."""
from __future__ import annotations

import argparse

from ..data.letterbox import RESIZE_MODES
from ..models.decode import NMS_KINDS

__all__ = ["add_pipeline_flags"]


def add_pipeline_flags(parser: argparse.ArgumentParser, darknet_command: str) -> None:
    """``--nms`` and ``--resize``, left as None by default: the weights' own then (Darknet ``.weights`` their
    cfg's, see :func:`~yolo_attn.utils.checkpoint.meta_resize`). ``darknet_command`` names the Darknet command
    that stretches alike ("detector test", "detector map")."""
    parser.add_argument("--nms", choices=NMS_KINDS, help="iou: torchvision's NMS on each box's best class; "
                        "darknet: Darknet's greedy DIoU NMS (nms_kind=greedynms), darknet-iou: Darknet's default "
                        "IoU NMS, both over every class above --conf, as Darknet reports (default: the weights' "
                        "own: for Darknet .weights their cfg's nms_kind; else iou)")
    parser.add_argument("--resize", choices=RESIZE_MODES, help="letterbox: keep the aspect ratio; stretch: to the "
                        f"input size, as Darknet's {darknet_command}; darknet-letterbox: as it does with letter_box=1 "
                        "(default: the weights' own: Darknet .weights stretch unless their cfg sets letter_box=1 "
                        "(then darknet-letterbox); others letterbox)")
