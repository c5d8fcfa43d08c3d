"""Command-line flags that several tools share."""
from __future__ import annotations

import argparse

from ..data.letterbox import RESIZE_MODES
from ..models.decode import NMS_KINDS

__all__ = ["add_pipeline_flags", "fraction", "positive_int"]


def fraction(text: str) -> float:
    """argparse type of a threshold (``--conf``, ``--iou``): a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not 0.0 <= value <= 1.0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def positive_int(text: str) -> int:
    """argparse type of a count (``--max-det``): a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def add_pipeline_flags(parser: argparse.ArgumentParser, darknet_command: str, stored_in: str = "") -> None:
    """``--nms`` and ``--resize``, left as None by default: the weights' own then (Darknet ``.weights`` their
    cfg's, see :func:`~yolo_attn.utils.checkpoint.meta_resize`). ``darknet_command`` names the Darknet command
    that stretches alike ("detector test", "detector map"). ``stored_in``: for tools that write weights, what
    keeps the choice as its own default ("the checkpoint", "the export")."""
    stored = f"; kept in {stored_in} as the way it runs" if stored_in else ""
    parser.add_argument("--nms", choices=NMS_KINDS, help="iou: torchvision's NMS on each box's best class; "
                        "darknet: Darknet's greedy DIoU NMS (nms_kind=greedynms), darknet-iou: Darknet's default "
                        "IoU NMS, both over every class above --conf, as Darknet reports (default: the weights' "
                        f"own: for Darknet .weights their cfg's nms_kind; else iou{stored})")
    parser.add_argument("--resize", choices=RESIZE_MODES, help="letterbox: keep the aspect ratio; stretch: to the "
                        f"input size, as Darknet's {darknet_command}; darknet-letterbox: as it does with letter_box=1 "
                        "(default: the weights' own: Darknet .weights stretch unless their cfg sets letter_box=1 "
                        f"(then darknet-letterbox); others letterbox{stored})")
