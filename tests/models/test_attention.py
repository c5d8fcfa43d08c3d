"""Attention blocks: shapes, gates, each paper's formula re-computed by hand, and the factory."""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from yolo_attn.models.attention import (
    ATTENTION_BY_PHI,
    CBAM,
    ECA,
    CoordAtt,
    GlobalContext,
    SqueezeExcite,
    build_attention,
    collect_gates,
    constant_channel_gates,
    eca_kernel_size,
    resolve_attention,
)

from .helpers import randomize_bn

NAMES = ["se", "cbam", "eca", "ca", "gc"]
CHANNELS = [8, 128, 256, 512]
# Which recorded gates are probabilities, per block (GC's gate is its softmax over positions; it also keeps
# "context", the vector it adds, which is not a gate).
GATE_KEYS = {"se": ["channel"], "cbam": ["channel", "spatial"], "eca": ["channel"], "ca": ["height", "width"],
             "gc": ["spatial"]}
KEPT = {**GATE_KEYS, "gc": ["spatial", "context"]}


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("name", NAMES)
def test_block_keeps_shape(name, channels):
    torch.manual_seed(0)
    block = build_attention(name, channels).eval()
    if name == "gc":  # it starts as the identity (tested below); give its last conv some weights
        nn.init.normal_(block.transform[3].weight, 0, 0.1)
    x = torch.randn(2, channels, 6, 5)  # non-square, so H and W mix-ups show
    with torch.no_grad():
        y = block(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert not torch.equal(y, x)


@pytest.mark.parametrize("name", NAMES)
def test_small_channel_count_has_no_zero_width_layer(name):
    block = build_attention(name, 8)
    for pname, p in block.named_parameters():
        assert p.numel() > 0 and min(p.shape) > 0, f"{name}: {pname} has shape {tuple(p.shape)}"
    block.train()(torch.randn(2, 8, 4, 4)).sum().backward()  # and it trains


@pytest.mark.parametrize("name", NAMES)
def test_gates_lie_strictly_between_zero_and_one(name):
    torch.manual_seed(1)
    block = build_attention(name, 128)
    block.keep_gates = True
    block.eval()
    with torch.no_grad():
        block(torch.randn(2, 128, 7, 9) * 3)
    assert set(block.gates) == set(KEPT[name])
    for key in GATE_KEYS[name]:
        gate = block.gates[key]
        assert gate.min() > 0 and gate.max() < 1, f"{name}.{key} in [{gate.min()}, {gate.max()}]"
    if name == "gc":
        sums = block.gates["spatial"].sum(dim=(2, 3))
        torch.testing.assert_close(sums, torch.ones_like(sums))


def test_gates_are_not_kept_unless_asked():
    block = build_attention("se", 16)
    block(torch.randn(1, 16, 4, 4))
    assert not hasattr(block, "gates")


def test_collect_gates_names_blocks_by_module():
    from yolo_attn.models import build_model

    model = build_model("cbam", num_classes=2).eval()
    for m in (model.attn_p4, model.attn_p5, model.attn_up):
        m.keep_gates = True
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    gates = collect_gates(model)
    assert set(gates) == {"attn_p4", "attn_p5", "attn_up"}
    assert gates["attn_p4"]["channel"].shape == (1, 256, 1, 1)
    assert gates["attn_p4"]["spatial"].shape == (1, 1, 4, 4)


def test_se_formula():
    torch.manual_seed(2)
    block = SqueezeExcite(256).eval()
    assert block.fc[0].weight.shape == (16, 256) and block.fc[0].bias is None  # C / 16, no bias
    assert SqueezeExcite(64).fc[0].out_features == 8  # but never narrower than 8
    x = torch.randn(2, 256, 5, 7)
    w1, w2 = block.fc[0].weight, block.fc[2].weight
    pooled = x.mean(dim=(2, 3))
    gate = torch.sigmoid(torch.relu(pooled @ w1.T) @ w2.T)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x * gate[:, :, None, None])


@pytest.mark.parametrize("kernel_size", [7, 3])
def test_cbam_formula_avg_and_max_through_one_mlp_then_spatial(kernel_size):
    torch.manual_seed(3)
    block = CBAM(64, reduction=8, kernel_size=kernel_size).eval()
    assert block.channel.fc1.weight.shape == (8, 64, 1, 1)
    assert block.spatial.conv.weight.shape == (1, 2, kernel_size, kernel_size)
    x = torch.randn(2, 64, 9, 6)
    w1 = block.channel.fc1.weight[:, :, 0, 0]
    w2 = block.channel.fc2.weight[:, :, 0, 0]

    def mlp(v):
        return torch.relu(v @ w1.T) @ w2.T

    avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
    channel_gate = torch.sigmoid(mlp(avg) + mlp(mx))[:, :, None, None]
    x1 = x * channel_gate
    pooled = torch.cat([x1.mean(dim=1, keepdim=True), x1.amax(dim=1, keepdim=True)], dim=1)
    spatial_gate = torch.sigmoid(F.conv2d(pooled, block.spatial.conv.weight, padding=kernel_size // 2))
    with torch.no_grad():
        torch.testing.assert_close(block(x), x1 * spatial_gate)
        gate = block.channel(x)
    torch.testing.assert_close(gate, channel_gate)
    # the max-pooled path matters here: an average-only gate would differ
    assert not torch.allclose(gate, torch.sigmoid(2 * mlp(avg))[:, :, None, None], atol=1e-3)


@pytest.mark.parametrize("name", ["se", "cbam", "eca", "ca"])
def test_training_means_give_the_same_values_and_gradients_as_mean(name, monkeypatch):
    """In training the blocks average through _train_mean, whose backward differs from mean's only in layout."""
    import yolo_attn.models.attention as attention

    torch.manual_seed(4)
    block = build_attention(name, 32).double().train()
    x = torch.randn(2, 32, 9, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(2, 32, 9, 6, dtype=torch.float64)

    def output_and_gradient():
        inp = x.clone().requires_grad_()
        out = block(inp)
        (out * weight).sum().backward()
        return out.detach(), inp.grad

    out, grad = output_and_gradient()
    calls = []
    monkeypatch.setattr(attention, "_train_mean", lambda t, dims: calls.append(dims) or t.mean(dim=dims, keepdim=True))
    plain_out, plain_grad = output_and_gradient()
    assert calls  # the block averages through it in training
    torch.testing.assert_close(out, plain_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, plain_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dims", [(2, 3), (1,), (2,), (3,)])
def test_training_mean_passes_back_an_expanded_view(dims):
    """mean's backward writes a dense NCHW gradient, slow to add to a channels-last one; _train_mean's
    backward hands back the gradient over the averaged dimensions as a view (stride 0 there)."""
    from yolo_attn.models.attention import _train_mean

    x = torch.randn(2, 16, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    inner = x * 1  # a non-leaf: its hook sees the gradient as it arrives
    seen = []
    inner.register_hook(lambda g: seen.append(g))
    _train_mean(inner, dims).sum().backward()
    assert all(seen[0].stride(d) == 0 for d in dims)
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / math.prod(x.shape[d] for d in dims)))


def test_cbam_rejects_other_spatial_kernels():
    with pytest.raises(ValueError, match="3 or 7"):
        CBAM(64, kernel_size=5)


@pytest.mark.parametrize("channels, k", [(8, 3), (16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5),
                                         (1024, 5), (2048, 7)])
def test_eca_kernel_size(channels, k):
    t = int(abs((math.log2(channels) + 1) / 2))  # the paper's formula, b = 1, gamma = 2
    assert eca_kernel_size(channels) == (t if t % 2 else t + 1) == k
    assert ECA(channels).conv.kernel_size == (k,)


def test_eca_explicit_kernel_must_be_odd():
    assert ECA(64, kernel_size=7).conv.kernel_size == (7,)
    with pytest.raises(ValueError, match="odd"):
        ECA(64, kernel_size=4)


def test_eca_formula():
    torch.manual_seed(4)
    block = ECA(128).eval()
    k = block.conv.kernel_size[0]
    x = torch.randn(2, 128, 4, 6)
    w = block.conv.weight[0, 0]
    y = x.mean(dim=(2, 3))
    padded = F.pad(y, (k // 2, k // 2))  # zero padding at both ends of the channel axis
    gate = torch.stack([(padded[:, c : c + k] * w).sum(dim=1) for c in range(128)], dim=1).sigmoid()
    with torch.no_grad():
        torch.testing.assert_close(block(x), x * gate[:, :, None, None])


def test_coordatt_formula():
    torch.manual_seed(5)
    block = CoordAtt(64)
    randomize_bn(block)
    block.eval()
    hidden = max(8, 64 // 32)
    assert block.conv.weight.shape == (hidden, 64, 1, 1)
    assert isinstance(block.act, nn.Hardswish)
    x = torch.randn(2, 64, 5, 7)
    bn = block.bn
    w, wh, ww = block.conv.weight[:, :, 0, 0], block.conv_h.weight[:, :, 0, 0], block.conv_w.weight[:, :, 0, 0]

    def shared(v):  # v: (B, C, L) -> conv 1x1, BN (eval), h-swish
        z = torch.einsum("oc,bcl->bol", w, v)
        z = (z - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps)
        z = z * bn.weight[:, None] + bn.bias[:, None]
        return z * torch.clamp(z + 3, 0, 6) / 6

    along_h, along_w = shared(x.mean(dim=3)), shared(x.mean(dim=2))  # (B, hidden, H), (B, hidden, W)
    gate_h = torch.sigmoid(torch.einsum("oc,bcl->bol", wh, along_h) + block.conv_h.bias[:, None])
    gate_w = torch.sigmoid(torch.einsum("oc,bcl->bol", ww, along_w) + block.conv_w.bias[:, None])
    expected = x * gate_h[:, :, :, None] * gate_w[:, :, None, :]
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)


def test_coordatt_port_variant_options():
    block = CoordAtt(128, reduction=16, act="relu", bias=False)
    assert block.conv.out_channels == 8 and isinstance(block.act, nn.ReLU)
    assert block.conv_h.bias is None and block.conv_w.bias is None


def test_gc_formula():
    torch.manual_seed(6)
    block = GlobalContext(64).eval()
    with torch.no_grad():  # LayerNorm's affine starts at (1, 0), the last conv at 0; move them so they count
        block.transform[1].weight.uniform_(0.5, 1.5)
        block.transform[1].bias.normal_(0, 0.2)
        block.transform[3].weight.normal_(0, 0.3)
        block.transform[3].bias.normal_(0, 0.2)
    x = torch.randn(2, 64, 5, 3)
    b, c, h, w = x.shape
    logits = torch.einsum("c,bchw->bhw", block.conv_mask.weight[0, :, 0, 0], x).reshape(b, h * w)
    weights = torch.softmax(logits, dim=1)
    context = torch.einsum("bcn,bn->bc", x.reshape(b, c, h * w), weights)
    conv1, ln, conv2 = block.transform[0], block.transform[1], block.transform[3]
    t = context @ conv1.weight[:, :, 0, 0].T + conv1.bias
    t = (t - t.mean(dim=1, keepdim=True)) / torch.sqrt(t.var(dim=1, unbiased=False, keepdim=True) + ln.eps)
    t = torch.relu(t * ln.weight[:, 0, 0] + ln.bias[:, 0, 0])
    delta = t @ conv2.weight[:, :, 0, 0].T + conv2.bias
    block.keep_gates = True
    with torch.no_grad():
        torch.testing.assert_close(block(x), x + delta[:, :, None, None])
    torch.testing.assert_close(block.gates["spatial"], weights.reshape(b, 1, h, w))
    torch.testing.assert_close(block.gates["context"], delta[:, :, None, None])
    with torch.no_grad():  # channels-last input: pooled through the other view of x
        torch.testing.assert_close(block(x.contiguous(memory_format=torch.channels_last)), x + delta[:, :, None, None])


class _MixedLayoutAdds(TorchDispatchMode):
    """Counts additions of a channels-last tensor and an NCHW one (both dense, 4-D): slow on a CPU."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor):
            dense = [a for a in args if isinstance(a, torch.Tensor) and a.dim() == 4 and 0 not in a.stride()]
            channels_last = {a.is_contiguous(memory_format=torch.channels_last) for a in dense}
            self.count += channels_last == {True, False}
        return func(*args, **(kwargs or {}))


def _mixed_layout_adds(block: nn.Module) -> int:
    x = torch.randn(2, 16, 5, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    out = block(x.requires_grad_())
    with _MixedLayoutAdds() as adds:
        out.backward(torch.randn_like(out))
    return adds.count


@pytest.mark.parametrize("name", NAMES)
def test_training_backward_adds_no_gradients_of_mixed_layouts(name, monkeypatch):
    """A channels-last block in training hands back gradients that add up in one layout (mean's backward and
    GC's pooling through x as (B, C, HW) gave NCHW ones)."""
    import yolo_attn.models.attention as attention

    torch.manual_seed(7)
    block = build_attention(name, 16).double().train().to(memory_format=torch.channels_last)
    assert _mixed_layout_adds(block) == 0
    if name == "cbam":  # the check sees the slow case: with mean's own backward
        monkeypatch.setattr(attention, "_train_mean", lambda t, dims: t.mean(dim=dims, keepdim=True))
        assert _mixed_layout_adds(block) > 0


@pytest.mark.parametrize("phi, cls", [(1, SqueezeExcite), (2, CBAM), (3, ECA), (4, CoordAtt), (5, GlobalContext)])
def test_build_attention_by_phi_and_by_name(phi, cls):
    name = ATTENTION_BY_PHI[phi]
    assert isinstance(build_attention(phi, 64), cls)
    assert isinstance(build_attention(str(phi), 64), cls)
    assert isinstance(build_attention(name, 64), cls)
    assert isinstance(build_attention(name.upper(), 64), cls)
    assert resolve_attention(phi) == resolve_attention(name) == name


@pytest.mark.parametrize("none", [0, "0", "none", None])
def test_no_attention_is_identity(none):
    assert isinstance(build_attention(none, 64), nn.Identity)
    assert resolve_attention(none) is None


def test_aliases_and_keyword_arguments():
    assert resolve_attention("coordatt") == "ca" and resolve_attention("gcnet") == "gc"
    assert build_attention("cbam", 64, reduction=8).channel.fc1.out_channels == 8
    assert build_attention("se", 64, reduction=4).fc[0].out_features == 16
    assert resolve_attention(np.int64(2)) == "cbam"  # a phi read with numpy (a config array) counts too
    with pytest.raises(ValueError, match="attention 'eca' has no option 'reduction'; its options are gamma"):
        build_attention(3, 64, reduction=8)


@pytest.mark.parametrize("bad, match", [("sel", "unknown attention 'sel'"), (6, "phi must be one of"),
                                        (-1, "phi must be one of"), ("transformer", "cbam")])
def test_bad_names_give_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        build_attention(bad, 64)


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        SqueezeExcite(64, act="gelu")


def test_gc_starts_as_identity_and_loads_checkpoints_without_the_last_bias():
    """As GCNet's code: the last conv starts at zero, so the block adds nothing until it learns; a state dict
    from before that conv had a bias loads with a zero bias and computes what it did."""
    torch.manual_seed(7)
    block = GlobalContext(32).eval()
    x = torch.randn(2, 32, 5, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
        block.transform[3].weight.normal_(0, 0.3)
    old = {k: v for k, v in block.state_dict().items() if k != "transform.3.bias"}
    loaded = GlobalContext(32).eval()
    loaded.load_state_dict(old)  # strict
    assert torch.equal(loaded.transform[3].bias, torch.zeros(32))
    with torch.no_grad():
        delta = block(x) - x
        torch.testing.assert_close(loaded(x), block(x))
    assert delta.abs().max() > 0


@pytest.mark.parametrize("phi", [1, 2])
def test_constant_channel_gates_finds_a_gate_that_does_not_vary(phi):
    from yolo_attn.models import build_model

    torch.manual_seed(0)
    model = build_model(phi, num_classes=3).train()
    images = torch.rand(2, 3, 64, 64)
    assert constant_channel_gates(model, images) == {}  # at init every block's gate varies
    block = model.attn_p5
    last = block.channel.fc2 if phi == 2 else block.fc[2]
    with torch.no_grad():  # the MLP's output is 0 whatever its input: what hidden units all off give
        last.weight.zero_()
    model.attn_p4.keep_gates = True  # a caller's own setting survives
    assert constant_channel_gates(model, images) == {"attn_p5": pytest.approx(0.5)}
    assert model.training  # the mode is restored, and the blocks' gate recording
    assert model.attn_p4.keep_gates and not hasattr(model.attn_p4, "gates")
    assert not block.keep_gates and not hasattr(block, "gates")
