"""Helpers shared by the model tests."""
import torch
import torch.nn as nn


def randomize_bn(model: nn.Module) -> nn.Module:
    """BN affine parameters and running statistics away from (1, 0, 0, 1), so that eval-mode BN (folded,
    exported or read by another implementation) really matters in a comparison."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model
