"""YOLOv4-tiny with a selectable attention block in the neck (cfg layers 27-37 plus attention)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import build_attention, phi_of, resolve_attention
from .backbone import CSPDarknet53Tiny
from .common import ConvBNAct

__all__ = ["DEFAULT_ANCHORS", "DEFAULT_ANCHOR_MASKS", "STRIDES", "YoloHead", "YoloV4Tiny", "build_model",
           "check_input_size"]

DEFAULT_ANCHORS = ((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319))
DEFAULT_ANCHOR_MASKS = ((3, 4, 5), (1, 2, 3))  # stride-32 head, stride-16 head (official cfg)
STRIDES = (32, 16)


def check_input_size(size: Union[int, Sequence[int]], what: str = "input") -> Tuple[int, int]:
    """(height, width) of an input size given as one int or as (h, w); a ValueError naming ``what`` unless both
    are positive multiples of 32 (the stride-32 map, upsampled, is concatenated with the stride-16 one)."""
    square = not isinstance(size, (tuple, list))  # an int, or a numpy / 0-d tensor integer
    h, w = (int(size), int(size)) if square else (int(size[0]), int(size[1]))
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        def up(v: int) -> int:
            return max(32, -(-v // 32) * 32)
        shown, hint = (f"{h}", f"{up(h)}") if square else (f"{w}x{h} (width x height)", f"{up(w)}x{up(h)}")
        raise ValueError(f"{what} {shown}: YOLOv4-tiny needs a width and height that are positive multiples "
                         f"of 32 (e.g. {hint})")
    return h, w


def _tracing() -> bool:
    """True while ONNX export, jit tracing or torch.compile records the forward: a Python check of the shape
    would be baked into the graph (or break it) there."""
    compiling = getattr(torch.compiler, "is_compiling", None)
    return torch.jit.is_tracing() or bool(compiling is not None and compiling())


class YoloHead(nn.Module):
    """3x3 ConvBNAct, then a linear 1x1 conv with bias to A * (5 + C) channels (cfg layers 28-29, 35-36)."""

    def __init__(self, c_in: int, c_mid: int, c_out: int):
        super().__init__()
        self.conv = ConvBNAct(c_in, c_mid, 3)
        self.pred = nn.Conv2d(c_mid, c_out, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pred(self.conv(x))


class YoloV4Tiny(nn.Module):
    """YOLOv4-tiny, Darknet's layer order, with attention on feat1, feat2 and the upsampled path.

    Forward contract:
        x: (B, 3, H, W) float RGB in [0, 1], H and W multiples of 32.
        returns, in training and in eval alike, the raw head maps ``(p5, p4)``:
        p5 (B, A * (5 + C), H/32, W/32) and p4 (B, A * (5 + C), H/16, W/16), Darknet's channel layout
        (for each anchor: tx, ty, tw, th, obj, class logits). Decoding is :func:`decode_outputs`.
    """

    def __init__(
        self,
        num_classes: int = 80,
        attention: Union[int, str, None] = 0,
        attention_kw: Optional[Dict[str, Any]] = None,
        anchors: Optional[Sequence[Sequence[float]]] = None,
        anchor_masks: Optional[Sequence[Sequence[int]]] = None,
    ):
        super().__init__()
        self.num_classes = int(num_classes)
        self.attention = resolve_attention(attention)
        self.attention_kw = dict(attention_kw or {})
        self.anchors = [tuple(float(v) for v in a) for a in (anchors or DEFAULT_ANCHORS)]
        self.anchor_masks = [tuple(int(i) for i in m) for m in (anchor_masks or DEFAULT_ANCHOR_MASKS)]
        if len(self.anchor_masks) != 2 or len(set(map(len, self.anchor_masks))) != 1:
            raise ValueError(f"anchor_masks must be two lists of equal length, got {self.anchor_masks}")
        if max(max(m) for m in self.anchor_masks) >= len(self.anchors):
            raise ValueError(f"anchor_masks {self.anchor_masks} index past the {len(self.anchors)} anchors")
        na = len(self.anchor_masks[0])
        out = na * (5 + self.num_classes)

        self.backbone = CSPDarknet53Tiny()
        self.attn_p4 = build_attention(self.attention, 256, **self.attention_kw)
        self.attn_p5 = build_attention(self.attention, 512, **self.attention_kw)
        self.lateral_p5 = ConvBNAct(512, 256, 1)
        self.head_p5 = YoloHead(256, 512, out)
        self.lateral_p4 = ConvBNAct(256, 128, 1)
        self.attn_up = build_attention(self.attention, 128, **self.attention_kw)
        self.head_p4 = YoloHead(384, 256, out)

    @property
    def phi(self) -> int:
        return phi_of(self.attention)

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_masks[0])

    def level_anchors(self) -> List[List[Tuple[float, float]]]:
        """Anchors (w, h) in input pixels for each head, in output order."""
        return [[self.anchors[i] for i in mask] for mask in self.anchor_masks]

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not _tracing():  # else torch.cat's size mismatch deep in the neck is all a caller sees
            check_input_size(x.shape[-2:])
        feat1, feat2 = self.backbone(x)
        feat1 = self.attn_p4(feat1)
        p5 = self.lateral_p5(self.attn_p5(feat2))
        out_p5 = self.head_p5(p5)
        up = F.interpolate(self.lateral_p4(p5), scale_factor=2.0, mode="nearest")
        up = self.attn_up(up)
        out_p4 = self.head_p4(torch.cat([up, feat1], dim=1))
        return out_p5, out_p4

    def darknet_convs(self):
        """(conv, bn or None) pairs in Darknet's file order (cfg convolutional layers 0-36)."""
        return self.backbone.darknet_convs() + [
            (self.lateral_p5.conv, self.lateral_p5.bn),
            (self.head_p5.conv.conv, self.head_p5.conv.bn),
            (self.head_p5.pred, None),
            (self.lateral_p4.conv, self.lateral_p4.bn),
            (self.head_p4.conv.conv, self.head_p4.conv.bn),
            (self.head_p4.pred, None),
        ]

    def fuse(self) -> "YoloV4Tiny":
        """Fold every BatchNorm that follows a conv into it (inference only); returns self."""
        for m in self.modules():
            if isinstance(m, ConvBNAct):
                m.fuse()
        return self

    def config(self) -> Dict[str, Any]:
        """What is needed to rebuild this network (stored in checkpoints)."""
        return {
            "num_classes": self.num_classes,
            "attention": self.attention,
            "attention_kw": dict(self.attention_kw),
            "anchors": [list(a) for a in self.anchors],
            "anchor_masks": [list(m) for m in self.anchor_masks],
        }


def build_model(
    phi: Union[int, str, None] = 0,
    num_classes: int = 80,
    anchors: Optional[Sequence[Sequence[float]]] = None,
    anchor_masks: Optional[Sequence[Sequence[int]]] = None,
    attention_kw: Optional[Dict[str, Any]] = None,
) -> YoloV4Tiny:
    """Build YOLOv4-tiny; ``phi`` is 0-5 or an attention name (none, se, cbam, eca, ca, gc)."""
    return YoloV4Tiny(num_classes, phi, attention_kw, anchors, anchor_masks)
