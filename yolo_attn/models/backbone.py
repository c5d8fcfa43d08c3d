"""CSPDarknet53-tiny: layers 0-26 of Darknet's yolov4-tiny.cfg."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from .common import ConvBNAct

__all__ = ["CSPTinyBlock", "CSPDarknet53Tiny"]


class CSPTinyBlock(nn.Module):
    """One CSP stage of yolov4-tiny (e.g. cfg layers 2-9), from C input channels to 2C output channels.

    conv1 (3x3, C) -> second half of its channels (``[route] groups=2 group_id=1``) -> conv2 (3x3, C/2)
    -> conv3 (3x3, C/2) -> concat [conv3, conv2] -> conv4 (1x1, C) -> concat [conv1, conv4] -> maxpool 2/2.
    Returns (pooled output, conv4 output); the latter is the stage's feature before pooling. The two halves are
    pooled apart and then concatenated: the same values (max-pooling works channel by channel), with a quarter
    of the concatenation's copying (OpenVINO bf16 4.96 -> 4.74 ms at 416 with AMX; torch bf16 12.1 -> 12.0).
    """

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = ConvBNAct(channels, channels, 3)
        self.conv2 = ConvBNAct(half, half, 3)
        self.conv3 = ConvBNAct(half, half, 3)
        self.conv4 = ConvBNAct(channels, channels, 1)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x)
        # In training both halves are views of one split, whose backward joins their gradients in one copy;
        # slicing's builds a zero-filled gradient of all of x and adds it to the pooling's (bf16 training step
        # at 416, batch 8: 287 -> 276 ms). Inference keeps Darknet's route, a slice, which the int8 graph's
        # quantizer sharing expects (export.share_slice_quantizers); the values are the same either way.
        halves = x.chunk(2, dim=1) if self.training else None
        feat = self.conv2(halves[1] if halves is not None else x[:, x.shape[1] // 2 :])
        feat = self.conv4(torch.cat([self.conv3(feat), feat], dim=1))
        pooled = [self.pool(half) for half in halves] if halves is not None else [self.pool(x)]
        return torch.cat([*pooled, self.pool(feat)], dim=1), feat


class CSPDarknet53Tiny(nn.Module):
    """Backbone. Input (B, 3, H, W); returns feat1 (B, 256, H/16, W/16), taken before the last maxpool
    (cfg layer 23), and feat2 (B, 512, H/32, W/32) (cfg layer 26)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(ConvBNAct(3, 32, 3, 2), ConvBNAct(32, 64, 3, 2))
        self.stage1 = CSPTinyBlock(64)
        self.stage2 = CSPTinyBlock(128)
        self.stage3 = CSPTinyBlock(256)
        self.conv_out = ConvBNAct(512, 512, 3)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        x, _ = self.stage1(x)
        x, _ = self.stage2(x)
        x, feat1 = self.stage3(x)
        return feat1, self.conv_out(x)

    def darknet_convs(self):
        """(conv, bn) pairs in the order Darknet stores them in a .weights file (cfg layers 0-26)."""
        layers = [self.stem[0], self.stem[1]]
        for stage in (self.stage1, self.stage2, self.stage3):
            layers += [stage.conv1, stage.conv2, stage.conv3, stage.conv4]
        layers.append(self.conv_out)
        return [(m.conv, m.bn) for m in layers]
