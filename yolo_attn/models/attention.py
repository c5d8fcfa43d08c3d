"""Channel and spatial attention blocks for the YOLOv4-tiny neck.

Every block has the constructor signature ``(channels, **kw)``, keeps the input shape, and is built by
name through :func:`build_attention` (as timm's ``create_attn``). Papers:

- ``se``   Squeeze-and-Excitation. Hu, Shen, Sun. "Squeeze-and-Excitation Networks", CVPR 2018,
           arXiv:1709.01507.
- ``cbam`` Convolutional Block Attention Module. Woo, Park, Lee, Kweon. "CBAM: Convolutional Block
           Attention Module", ECCV 2018, arXiv:1807.06521.
- ``eca``  Efficient Channel Attention. Wang, Wu, Zhu, Li, Zuo, Hu. "ECA-Net: Efficient Channel Attention
           for Deep Convolutional Neural Networks", CVPR 2020, arXiv:1910.03151.
- ``ca``   Coordinate Attention. Hou, Zhou, Feng. "Coordinate Attention for Efficient Mobile Network
           Design", CVPR 2021, arXiv:2103.02907.
- ``gc``   Global Context block. Cao, Xu, Lin, Wei, Hu. "GCNet: Non-local Networks Meet Squeeze-Excitation
           Networks and Beyond", ICCV Workshops 2019, arXiv:1904.11492.

Defaults follow the papers. The options (``reduction``, ``act``, ``bias``, ``min_channels``) also let a
block reproduce the variants of the popular PyTorch port (CBAM with ratio 8, CoordAtt with ReLU and C/16,
no biases); see ``yolo_attn/models/port.py``.

Each block can keep its last gates for inspection: set ``block.keep_gates = True`` and read
``block.gates`` (a dict of detached tensors) after a forward.
"""
from __future__ import annotations

import inspect
import math
import numbers
from contextlib import contextmanager
from typing import Dict, Iterator, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "ATTENTION_BY_PHI",
    "SqueezeExcite",
    "CBAM",
    "ECA",
    "CoordAtt",
    "GlobalContext",
    "build_attention",
    "collect_gates",
    "constant_channel_gates",
    "recording_gates",
    "resolve_attention",
]

ATTENTION_BY_PHI = {0: None, 1: "se", 2: "cbam", 3: "eca", 4: "ca", 5: "gc"}

_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "hswish": lambda: nn.Hardswish(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
}


def _make_act(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


def _hidden(channels: int, reduction: int, min_channels: int) -> int:
    """Width of a bottleneck: channels // reduction, but never zero and never below min_channels
    (capped at channels, so a block on 8 channels stays 8 wide rather than 0)."""
    return max(channels // reduction, min(min_channels, channels), 1)


class _MeanFunction(torch.autograd.Function):
    """``x.mean(dims, keepdim=True)`` whose backward returns the gradient, divided by the count, as an expanded
    view. mean's own backward divides the expanded view, which writes a dense tensor in NCHW order. Every
    block also multiplies x by its gate, whose gradient is channels-last in a channels-last model, and adding
    gradients of mixed layouts is slow: bf16 on 2 cores, 1.5 ms at 8x256x26x26 against 0.13 ms for adding the
    expanded view. The values are the same forward and backward; CBAM's forward and backward at that shape,
    bf16 channels-last: 11.4 -> 7.9 ms (13.0 -> 9.9 in another run)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dims: Tuple[int, ...]) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.count = math.prod(x.shape[d] for d in dims)
        return x.mean(dim=dims, keepdim=True)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (grad / ctx.count).expand(ctx.shape), None


def _train_mean(x: torch.Tensor, dims: Tuple[int, ...]) -> torch.Tensor:
    """``x.mean(dims, keepdim=True)`` for training (see :class:`_MeanFunction`). The blocks keep their own
    pooling in eval mode, so that every export's graph stays as it was."""
    return _MeanFunction.apply(x, dims)


def _mean(x: torch.Tensor, dims: Tuple[int, ...], training: bool) -> torch.Tensor:
    """``x.mean(dims, keepdim=True)``, through :func:`_train_mean` in training."""
    return _train_mean(x, dims) if training else x.mean(dim=dims, keepdim=True)


def _channel_means(x: torch.Tensor, training: bool) -> torch.Tensor:
    """x averaged over height and width: (B, C)."""
    return _train_mean(x, (2, 3))[:, :, 0, 0] if training else x.mean(dim=(2, 3))


class _Attention(nn.Module):
    """Base class: optional recording of the gates of the last forward."""

    keep_gates: bool = False

    def _keep(self, **gates: torch.Tensor) -> None:
        if self.keep_gates:
            self.gates = {name: g.detach() for name, g in gates.items()}


class SqueezeExcite(_Attention):
    """SE: global average pool, FC C -> C/r (no bias), ReLU, FC C/r -> C (no bias), sigmoid, scale."""

    def __init__(self, channels: int, reduction: int = 16, min_channels: int = 8, act: str = "relu"):
        super().__init__()
        hidden = _hidden(channels, reduction, min_channels)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            _make_act(act),
            nn.Linear(hidden, channels, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(_channel_means(x, self.training)))[:, :, None, None]
        self._keep(channel=gate)
        return x * gate


class ChannelAttention(nn.Module):
    """CBAM's channel half: a shared MLP over average- and max-pooled descriptors, summed, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16, min_channels: int = 8, act: str = "relu"):
        super().__init__()
        hidden = _hidden(channels, reduction, min_channels)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.act = _make_act(act)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = _train_mean(x, (2, 3)) if self.training else F.adaptive_avg_pool2d(x, 1)
        avg = self.fc2(self.act(self.fc1(pooled)))
        mx = self.fc2(self.act(self.fc1(F.adaptive_max_pool2d(x, 1))))
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM's spatial half: [mean, max] over channels -> k x k conv -> sigmoid."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        if kernel_size not in (3, 7):
            raise ValueError(f"CBAM spatial kernel must be 3 or 7, got {kernel_size}")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([_mean(x, (1,), self.training), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))


class CBAM(_Attention):
    """CBAM: channel attention, then spatial attention, each multiplied in (paper order)."""

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        kernel_size: int = 7,
        min_channels: int = 8,
        act: str = "relu",
    ):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction, min_channels, act)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel_gate = self.channel(x)
        x = x * channel_gate
        spatial_gate = self.spatial(x)
        self._keep(channel=channel_gate, spatial=spatial_gate)
        return x * spatial_gate


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA's adaptive kernel: k = int(|(log2(C) + b) / gamma|), made odd by adding 1 when even."""
    k = int(abs((math.log2(channels) + b) / gamma))
    return k if k % 2 else k + 1


class ECA(_Attention):
    """ECA: global average pool, 1-D conv across channels (adaptive odd kernel), sigmoid, scale."""

    def __init__(self, channels: int, gamma: int = 2, b: int = 1, kernel_size: Optional[int] = None):
        super().__init__()
        k = kernel_size or eca_kernel_size(channels, gamma, b)
        if k % 2 == 0:  # an even kernel cannot be padded symmetrically: the channel count would change
            raise ValueError(f"ECA kernel_size must be odd, got {k}")
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _channel_means(x, self.training)[:, None, :]  # (B, 1, C): channels become the 1-D sequence
        gate = torch.sigmoid(self.conv(y))[:, 0, :, None, None]
        self._keep(channel=gate)
        return x * gate


class CoordAtt(_Attention):
    """Coordinate attention: pool along W and along H, a shared 1x1 conv + BN + act on both, then one
    1x1 conv + sigmoid per direction; the input is multiplied by both directional gates.

    Paper defaults: hidden width max(8, C / 32), h-swish, convs with bias (``bias`` applies to the two
    output convs; the shared conv has none, since BN follows it).
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 32,
        min_channels: int = 8,
        act: str = "hswish",
        bias: bool = True,
    ):
        super().__init__()
        hidden = _hidden(channels, reduction, min_channels)
        # No bias before BN: BN subtracts the batch mean, so that bias could never learn (zero gradient).
        self.conv = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.act = _make_act(act)
        self.conv_h = nn.Conv2d(hidden, channels, 1, bias=bias)
        self.conv_w = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        pooled_h = _mean(x, (3,), self.training)  # (B, C, H, 1)
        pooled_w = _mean(x, (2,), self.training).transpose(2, 3)  # (B, C, W, 1)
        y = self.act(self.bn(self.conv(torch.cat([pooled_h, pooled_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        gate_h = torch.sigmoid(self.conv_h(y_h))  # (B, C, H, 1)
        gate_w = torch.sigmoid(self.conv_w(y_w.transpose(2, 3)))  # (B, C, 1, W)
        self._keep(height=gate_h, width=gate_w)
        return x * gate_h * gate_w


class GlobalContext(_Attention):
    """GC block: softmax attention pooling to one context vector, bottleneck transform
    (1x1 conv -> LayerNorm -> ReLU -> 1x1 conv), added to every position.

    As the reference code: the last conv starts at zero (the block starts as the identity) and keeps its bias.
    The mask conv's bias is left out: softmax over H*W ignores a constant, so it could never learn.
    With ``keep_gates``: ``spatial`` is the softmax map (the gate); ``context`` is the vector added to every
    position (not a gate: unbounded).
    """

    def __init__(self, channels: int, reduction: int = 16, min_channels: int = 8):
        super().__init__()
        hidden = _hidden(channels, reduction, min_channels)
        self.conv_mask = nn.Conv2d(channels, 1, 1, bias=False)
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.LayerNorm([hidden, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        nn.init.zeros_(self.transform[3].weight)
        nn.init.zeros_(self.transform[3].bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the last conv had a bias: a zero bias computes what they computed.
        weight, bias = f"{prefix}transform.3.weight", f"{prefix}transform.3.bias"
        if weight in state_dict and bias not in state_dict:
            state_dict[bias] = state_dict[weight].new_zeros(state_dict[weight].shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weights = torch.softmax(self.conv_mask(x).reshape(b, 1, h * w), dim=-1)  # (B, 1, HW)
        if x.is_contiguous(memory_format=torch.channels_last):
            # x as (B, HW, C) is a view here, where (B, C, HW) would be a copy, whose gradient in NCHW order
            # is then added slowly to the residual's channels-last one (bf16 forward + backward at 8x256x26x26:
            # 3.7 -> 2.9 ms)
            context = torch.bmm(weights, x.permute(0, 2, 3, 1).reshape(b, h * w, c)).transpose(1, 2)  # (B, C, 1)
        else:
            context = torch.bmm(x.reshape(b, c, h * w), weights.transpose(1, 2))  # (B, C, 1)
        delta = self.transform(context[..., None])
        self._keep(spatial=weights.reshape(b, 1, h, w), context=delta)
        return x + delta


_BLOCKS = {"se": SqueezeExcite, "cbam": CBAM, "eca": ECA, "ca": CoordAtt, "gc": GlobalContext}
_ALIASES = {"none": None, "coordatt": "ca", "coord": "ca", "gcnet": "gc", "squeeze_excite": "se"}


def resolve_attention(phi_or_name: Union[int, str, None]) -> Optional[str]:
    """Map a phi (0-5, as int or digit string) or an attention name to a canonical name (None: no block)."""
    if phi_or_name is None:
        return None
    if isinstance(phi_or_name, str) and phi_or_name.strip().isdigit():
        phi_or_name = int(phi_or_name)
    if isinstance(phi_or_name, numbers.Integral) and not isinstance(phi_or_name, bool):  # numpy ints too
        phi_or_name = int(phi_or_name)
        if phi_or_name not in ATTENTION_BY_PHI:
            raise ValueError(f"phi must be one of {sorted(ATTENTION_BY_PHI)} ({_phi_table()}), got {phi_or_name}")
        return ATTENTION_BY_PHI[phi_or_name]
    name = str(phi_or_name).strip().lower()
    name = _ALIASES.get(name, name)
    if name is not None and name not in _BLOCKS:
        raise ValueError(f"unknown attention '{phi_or_name}'; use a phi ({_phi_table()}) or one of {sorted(_BLOCKS)}")
    return name


def phi_of(name: Optional[str]) -> int:
    """The phi number of a canonical attention name."""
    return {v: k for k, v in ATTENTION_BY_PHI.items()}[name]


def _phi_table() -> str:
    return ", ".join(f"{k} {v or 'none'}" for k, v in ATTENTION_BY_PHI.items())


def build_attention(name: Union[int, str, None], channels: int, **kw) -> nn.Module:
    """Build an attention block by name or phi; no attention gives ``nn.Identity``."""
    name = resolve_attention(name)
    if name is None:
        return nn.Identity()
    options = [k for k in inspect.signature(_BLOCKS[name]).parameters if k != "channels"]
    unknown = sorted(set(kw) - set(options))
    if unknown:
        raise ValueError(f"attention '{name}' has no option {', '.join(map(repr, unknown))}; "
                         f"its options are {', '.join(options)}")
    return _BLOCKS[name](channels, **kw)


def collect_gates(model: nn.Module) -> Dict[str, Dict[str, torch.Tensor]]:
    """Gates recorded by every attention block of ``model`` with ``keep_gates`` set, keyed by module name."""
    return {name: m.gates for name, m in model.named_modules() if isinstance(m, _Attention) and hasattr(m, "gates")}


@contextmanager
def recording_gates(model: nn.Module) -> Iterator[None]:
    """Within the block, every attention block of ``model`` keeps the gates of each forward (read them with
    :func:`collect_gates`); after it, the blocks' ``keep_gates`` and ``gates`` are as they were (a caller's own
    settings stay, no stale gates are left behind)."""
    blocks = [m for m in model.modules() if isinstance(m, _Attention)]
    saved = [{k: m.__dict__[k] for k in ("keep_gates", "gates") if k in m.__dict__} for m in blocks]
    try:
        for m in blocks:
            m.keep_gates = True
        yield
    finally:
        for m, state in zip(blocks, saved):
            m.__dict__.pop("keep_gates", None)
            m.__dict__.pop("gates", None)
            m.__dict__.update(state)


def constant_channel_gates(model: nn.Module, images: torch.Tensor, atol: float = 1e-6) -> Dict[str, float]:
    """The attention blocks of ``model`` (by module name) whose channel gate is one value on every channel of
    every image in ``images``, with that value.

    An SE or CBAM MLP whose hidden units are all off gives sigmoid(0) = 0.5 everywhere: the block then scales
    its input by a constant, which the next convolution and BatchNorm absorb, so its channel half does nothing.
    Runs ``model`` once in eval mode and restores its mode and the blocks' ``keep_gates``.
    """
    training = model.training
    try:
        with recording_gates(model), torch.no_grad():
            model.eval()(images)
            gates = collect_gates(model)
    finally:
        model.train(training)
    constant = {}
    for name, kept in gates.items():
        gate = kept.get("channel")
        if gate is not None and float(gate.max() - gate.min()) <= atol:
            constant[name] = float(gate.reshape(-1)[0])
    return constant
