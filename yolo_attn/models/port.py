"""Import state dicts of the popular PyTorch port of YOLOv4-tiny with attention.

The port's checkpoints are plain ``state_dict`` files. Its layers are ours under other names
(``backbone.resblock_body2`` is our ``backbone.stage2``, ``feat1_att`` our ``attn_p4``, ...), and its
attention variants differ from the papers: CBAM with ratio 8, CoordAtt with ReLU, C/16 and no biases.
:data:`PORT_ATTENTION_KW` records those options; they travel in the model's ``config()``, so an
imported model computes what it computed in the port. Its decoding has no scale_x_y (1.0), and it
resizes with PIL's bicubic filter, letterboxing with grey 128 (:data:`PORT_SCALE_X_Y`,
:data:`PORT_PREPROCESS`).

Nothing here reads files; ``yolo_attn.utils.checkpoint.load_model`` loads the file (``weights_only``)
and builds the meta.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from .attention import ATTENTION_BY_PHI
from .yolo import YoloV4Tiny, build_model

__all__ = [
    "PORT_ATTENTION_KW",
    "PORT_PREPROCESS",
    "PORT_SCALE_X_Y",
    "build_port_architecture",
    "build_port_model",
    "convert_port_state_dict",
    "detect_port_phi",
    "port_state_dict_spec",
    "strip_wrapper_prefixes",
]

PORT_PHIS = (0, 1, 2, 3, 4)  # the port has no GC block
PORT_SCALE_X_Y = 1.0
PORT_PREPROCESS = {"interpolation": "bicubic", "pad_value": 128}

# Exactly the port's blocks; min_channels=1 because the port takes C // r with no floor.
PORT_ATTENTION_KW: Dict[str, Dict[str, Any]] = {
    "se": {"reduction": 16, "min_channels": 1, "act": "relu"},
    "cbam": {"reduction": 8, "min_channels": 1, "act": "relu", "kernel_size": 7},
    "eca": {"gamma": 2, "b": 1},
    "ca": {"reduction": 16, "min_channels": 1, "act": "relu", "bias": False},
}

# (port prefix, our prefix), tried in order; the first that matches a key renames it.
_MODULE_RENAMES: Tuple[Tuple[str, str], ...] = (
    ("backbone.conv1.", "backbone.stem.0."),
    ("backbone.conv2.", "backbone.stem.1."),
    ("backbone.conv3.", "backbone.conv_out."),
    ("backbone.resblock_body1.", "backbone.stage1."),
    ("backbone.resblock_body2.", "backbone.stage2."),
    ("backbone.resblock_body3.", "backbone.stage3."),
    ("conv_for_P5.", "lateral_p5."),
    ("yolo_headP5.0.", "head_p5.conv."),
    ("yolo_headP5.1.", "head_p5.pred."),
    ("upsample.upsample.0.", "lateral_p4."),
    ("yolo_headP4.0.", "head_p4.conv."),
    ("yolo_headP4.1.", "head_p4.pred."),
    ("feat1_att.", "attn_p4."),
    ("feat2_att.", "attn_p5."),
    ("upsample_att.", "attn_up."),
)
_ATTENTION_PORT_PREFIXES = ("feat1_att.", "feat2_att.", "upsample_att.")
# Inside an attention block, by block (SE's fc.0 / fc.2 and ECA's conv keep their names).
_BLOCK_RENAMES: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "se": (),
    "cbam": (("channelattention.", "channel."), ("spatialattention.conv1.", "spatial.conv.")),
    "eca": (),
    "ca": (("conv_1x1.", "conv."), ("F_h.", "conv_h."), ("F_w.", "conv_w.")),
}
_MODULE_RENAMES_BACK = tuple((new, old) for old, new in _MODULE_RENAMES)
_BLOCK_RENAMES_BACK = {name: tuple((new, old) for old, new in pairs) for name, pairs in _BLOCK_RENAMES.items()}
# The first tensor of feat1_att tells the block apart.
_PHI_MARKERS = {
    1: "feat1_att.fc.0.weight",
    2: "feat1_att.channelattention.fc1.weight",
    3: "feat1_att.conv.weight",
    4: "feat1_att.conv_1x1.weight",
}
_HEAD_KEYS = ("yolo_headP5.1.weight", "yolo_headP5.1.bias", "yolo_headP4.1.weight", "yolo_headP4.1.bias")


def _rename(key: str, renames: Tuple[Tuple[str, str], ...]) -> Optional[str]:
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old):]
    return None


def _port_to_ours(key: str, attention: Optional[str]) -> str:
    """Our name for a key of the port's model (keys are checked against the spec before this)."""
    ours = _rename(key, _MODULE_RENAMES)
    if key.startswith(_ATTENTION_PORT_PREFIXES):
        block, rest = ours.split(".", 1)
        ours = f"{block}.{_rename(rest, _BLOCK_RENAMES[attention]) or rest}"
    return ours


def _ours_to_port(key: str, attention: Optional[str]) -> str:
    port = _rename(key, _MODULE_RENAMES_BACK)
    if port.startswith(_ATTENTION_PORT_PREFIXES):
        block, rest = port.split(".", 1)
        port = f"{block}.{_rename(rest, _BLOCK_RENAMES_BACK[attention]) or rest}"
    return port


def build_port_architecture(phi: int, num_classes: int) -> YoloV4Tiny:
    """Our network laid out as the port's model for ``phi`` (0-4), its attention options included."""
    if phi not in PORT_PHIS:
        raise ValueError(f"the PyTorch port has phi 0-4 (none, se, cbam, eca, ca), got {phi}")
    name = ATTENTION_BY_PHI[phi]
    return build_model(phi, num_classes, attention_kw=PORT_ATTENTION_KW.get(name))


def port_state_dict_spec(phi: int, num_classes: int) -> Dict[str, Tuple[int, ...]]:
    """The port's state-dict keys and shapes for ``phi`` and ``num_classes`` (in our module order)."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = build_port_architecture(phi, num_classes)
    return {_ours_to_port(k, model.attention): tuple(v.shape) for k, v in model.state_dict().items()}


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``state_dict`` without the prefix a wrapper put on every key: "module." (DataParallel / DDP) and
    "_orig_mod." (torch.compile), in any nesting."""
    state = dict(state_dict)
    while state:
        prefix = next((p for p in ("module.", "_orig_mod.") if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def detect_port_phi(state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> int:
    """The phi (0-4) of a port state dict, read off the names of its ``feat1_att`` tensors."""
    state_dict = strip_wrapper_prefixes(state_dict)
    attention_keys = [k for k in state_dict if k.startswith(_ATTENTION_PORT_PREFIXES)]
    if not attention_keys:
        return 0
    for phi, marker in _PHI_MARKERS.items():
        if marker in state_dict:
            return phi
    key = attention_keys[0]
    raise ValueError(f"{source}: attention tensor '{key}' {tuple(state_dict[key].shape)} matches none of the "
                     f"port's blocks (expected one of {', '.join(_PHI_MARKERS.values())})")


def _classes_from_head(shape: Tuple[int, ...], num_anchors: int = 3) -> Optional[int]:
    outputs = shape[0] if shape else 0
    if outputs % num_anchors or outputs // num_anchors <= 5:
        return None
    return outputs // num_anchors - 5


def _first_difference(
    state_dict: Mapping[str, torch.Tensor], spec: Dict[str, Tuple[int, ...]]
) -> Tuple[List[str], Optional[str]]:
    """Keys that differ from ``spec`` (in spec order, then unexpected keys) and a description of the first."""
    differing, first = [], None
    for key, shape in spec.items():
        if key not in state_dict:
            differing.append(key)
            first = first or f"key '{key}' {shape} is missing"
        elif tuple(state_dict[key].shape) != shape:
            differing.append(key)
            first = first or f"key '{key}' has shape {tuple(state_dict[key].shape)}, expected {shape}"
    for key in state_dict:
        if key not in spec:
            differing.append(key)
            first = first or f"key '{key}' {tuple(state_dict[key].shape)} is not in the port's model"
    return differing, first


def convert_port_state_dict(
    state_dict: Mapping[str, torch.Tensor], num_classes: int, source: str = "state dict"
) -> Tuple[int, Dict[str, torch.Tensor]]:
    """Check a port state dict key by key and rename it to ours.

    Returns (phi, state dict for ``build_port_architecture(phi, num_classes)``). Raises one ValueError
    naming the first key that is missing, extra or of the wrong shape; when only the heads differ, it
    says how many classes the file holds.
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{source}: expected a state dict (names -> tensors), got {type(state_dict).__name__}")
    state_dict = strip_wrapper_prefixes(state_dict)
    phi = detect_port_phi(state_dict, source)
    spec = port_state_dict_spec(phi, num_classes)
    # BatchNorm's step counter: absent from files of PyTorch before 0.4.1 and of some converters; unused in eval
    state_dict.update({k: torch.tensor(0) for k in spec if k.endswith(".num_batches_tracked") and k not in state_dict})
    differing, first = _first_difference(state_dict, spec)
    if differing:
        head = state_dict.get(_HEAD_KEYS[0])
        file_classes = _classes_from_head(tuple(head.shape)) if head is not None else None
        if set(differing) <= set(_HEAD_KEYS) and file_classes is not None:
            raise ValueError(f"{source}: {first} for {num_classes} classes; the file holds a {file_classes}-class "
                             f"model: pass its own class list ({file_classes} names) or --num-classes {file_classes}")
        named = f"phi {phi} ({ATTENTION_BY_PHI[phi] or 'no attention'}), {num_classes} classes"
        if first.endswith("is missing"):  # the file's own first key hints at what it is instead
            key = next(iter(state_dict))
            first += f"; the file's first key is '{key}' {tuple(state_dict[key].shape)}"
        raise ValueError(f"{source}: not a state dict of the YOLOv4-tiny PyTorch port ({named}): {first} "
                         f"({len(differing)} keys differ in all)")
    attention = ATTENTION_BY_PHI[phi]
    return phi, {_port_to_ours(k, attention): v for k, v in state_dict.items()}


def build_port_model(
    state_dict: Mapping[str, torch.Tensor], num_classes: int, source: str = "state dict"
) -> YoloV4Tiny:
    """Our model holding a port state dict's weights, with the port's attention options (phi detected)."""
    phi, ours = convert_port_state_dict(state_dict, num_classes, source)
    model = build_port_architecture(phi, num_classes)
    model.load_state_dict(ours)
    return model
