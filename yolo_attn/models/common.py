"""Building blocks shared by the backbone and the neck."""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["ConvBNAct", "fuse_conv_bn"]


class ConvBNAct(nn.Module):
    """Darknet's ``[convolutional] batch_normalize=1``: conv (no bias, pad k//2), BN (eps 1e-5), LeakyReLU(0.1)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 1, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.03)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fuse(self) -> None:
        """Fold BN into the conv for inference (the module keeps its names; ``bn`` becomes Identity)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True,
    ).to(conv.weight.device, conv.weight.dtype)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused.weight.copy_(conv.weight * scale[:, None, None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused
