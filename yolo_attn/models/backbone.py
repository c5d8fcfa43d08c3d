"""CSPDarknet53-tiny: layers 0-26 of Darknet's yolov4-tiny.cfg."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from .common import ConvBNAct

__all__ = ["CSPTinyBlock", "CSPDarknet53Tiny"]


class _PoolAndRoute(torch.autograd.Function):
    """Training's start of a CSP stage: (x max-pooled 2/2, x's second half of channels as a dense copy), with
    one backward for both uses of x: the pooling's gradient, into which the route's is added in place.

    As two autograd operations, x's gradient is assembled from pieces: a slice's backward writes a zero-filled
    gradient of all of x and adds it to the pooling's; a split's (the halves pooled apart, one also the route)
    pools strided views and joins the halves' gradients in a copy. Here the pooling runs on x itself (dense), and
    the route's copy is what the convolution would have made of a strided view anyway. bf16, channels-last,
    forward and backward of the first stage at 8x64x104x104: 72.4 -> 68.6 ms; a training step at 416, batch 8,
    alternating: 288 -> 281 ms. The same values and gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        pooled, indices = F.max_pool2d(x, 2, 2, return_indices=True)
        ctx.save_for_backward(x, indices)
        ctx.set_materialize_grads(False)  # an unused output's gradient comes as None, not as zeros
        return pooled, x[:, x.shape[1] // 2 :].clone(memory_format=torch.preserve_format)

    @staticmethod
    @once_differentiable  # the pooling's backward kernel has no derivative of its own
    def backward(ctx, grad_pooled: torch.Tensor, grad_route: torch.Tensor) -> torch.Tensor:
        x, indices = ctx.saved_tensors
        if grad_pooled is None:
            grad = torch.zeros_like(x)
        else:
            grad = torch.ops.aten.max_pool2d_with_indices_backward(grad_pooled, x, [2, 2], [2, 2], [0, 0], [1, 1],
                                                                   False, indices)
        if grad_route is not None:
            grad[:, x.shape[1] // 2 :] += grad_route
        return grad


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
        if self.training:  # one backward for both uses of x (see _PoolAndRoute)
            pooled, route = _PoolAndRoute.apply(x)
        else:  # Darknet's route, a slice, which the int8 graph's quantizer sharing expects
            pooled, route = self.pool(x), x[:, x.shape[1] // 2 :]  # (export.share_slice_quantizers)
        feat = self.conv2(route)
        feat = self.conv4(torch.cat([self.conv3(feat), feat], dim=1))
        return torch.cat([pooled, self.pool(feat)], dim=1), feat


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
