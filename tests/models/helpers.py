"""Helpers shared by the model tests (and the others that need Darknet files)."""
import math
from pathlib import Path
from typing import Sequence

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


class RectangleFinder(nn.Module):
    """A stand-in detector that really looks at its input: per image, the bounding box of the pixels whose red
    channel is above 0.75 (above the grey of letterbox padding), written into the raw stride-16 map (first
    anchor, class 0, objectness ~1) so that Darknet decoding with ``scale_x_y`` gives it back in input pixels.
    Any input size; images with no such pixels give no box. Used to check that geometric transforms (scaling,
    mirroring) are undone exactly."""

    def __init__(self, num_classes: int = 1, anchors=((10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)),
                 anchor_masks=((3, 4, 5), (1, 2, 3)), scale_x_y: float = 1.05):
        super().__init__()
        self.num_classes = num_classes
        self.anchors = [tuple(map(float, a)) for a in anchors]
        self.anchor_masks = [list(m) for m in anchor_masks]
        self.scale_x_y = scale_x_y
        self.dummy = nn.Parameter(torch.zeros(1))  # callers find the device from the parameters

    def level_anchors(self):
        return [[self.anchors[i] for i in mask] for mask in self.anchor_masks]

    def forward(self, x):
        b, _, h, w = x.shape
        na, c, s = len(self.anchor_masks[0]), self.num_classes, self.scale_x_y
        p5 = x.new_full((b, na * (5 + c), h // 32, w // 32), -20.0)
        p4 = x.new_full((b, na, 5 + c, h // 16, w // 16), -20.0)
        logit = lambda p: torch.logit(torch.as_tensor(p).clamp(1e-6, 1 - 1e-6))  # noqa: E731
        for i in range(b):
            ys, xs = torch.nonzero(x[i, 0] > 0.75, as_tuple=True)
            if not len(xs):
                continue
            x1, y1, x2, y2 = xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0
            cx, cy = (x1 + x2) / 32, (y1 + y2) / 32  # centre in stride-16 cells
            gx, gy = int(cx), int(cy)
            aw, ah = self.level_anchors()[1][0]
            p4[i, 0, 0, gy, gx] = logit((cx - gx + 0.5 * (s - 1)) / s)
            p4[i, 0, 1, gy, gx] = logit((cy - gy + 0.5 * (s - 1)) / s)
            p4[i, 0, 2, gy, gx] = math.log((x2 - x1) / aw)
            p4[i, 0, 3, gy, gx] = math.log((y2 - y1) / ah)
            p4[i, 0, 4, gy, gx] = 20.0
            p4[i, 0, 5, gy, gx] = 20.0
        return p5, p4.reshape(b, na * (5 + c), h // 16, w // 16)


def write_wide_darknet(folder: Path, names: Sequence[str]) -> Path:
    """Darknet .weights of a random phi 0 model with a width=192 height=96 cfg and the names beside them."""
    from yolo_attn.models import build_model
    from yolo_attn.models.darknet import save_darknet_weights, write_darknet_cfg

    torch.manual_seed(0)
    model = build_model(0, len(names)).eval()
    weights = folder / "wide.weights"
    save_darknet_weights(model, weights)
    write_darknet_cfg(model, weights.with_suffix(".cfg"), width=192, height=96)
    weights.with_suffix(".names").write_text("\n".join(names) + "\n")
    return weights


def convert_darknet(weights: Path) -> Path:
    """Our checkpoint beside Darknet ``weights``, converted as ``tools/convert.py --from darknet`` does."""
    from yolo_attn.utils.checkpoint import load_model, save_checkpoint

    model, meta = load_model(weights)
    ckpt = weights.with_suffix(".pt")
    save_checkpoint({"meta": meta, "model": model.state_dict(), "ema": None}, ckpt)
    return ckpt
