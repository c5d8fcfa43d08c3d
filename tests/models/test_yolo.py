"""YOLOv4-tiny: output shapes per phi and size, Darknet's parameter count, gradients, decoding, NMS, fusing."""
import math

import pytest
import torch
import torch.nn as nn

from yolo_attn.models import DEFAULT_ANCHORS, build_model, check_input_size, decode_outputs, postprocess
from yolo_attn.models.common import ConvBNAct
from yolo_attn.models.decode import Decoder

from .helpers import randomize_bn

PHIS = [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("phi", PHIS)
def test_output_shapes_for_every_size(phi):
    torch.manual_seed(0)
    model = build_model(phi, num_classes=80).eval()
    assert model.phi == phi
    for h, w in [(320, 320), (416, 416), (320, 416)]:
        with torch.no_grad():
            p5, p4 = model(torch.rand(1, 3, h, w))
        assert p5.shape == (1, 3 * 85, h // 32, w // 32), (h, w)
        assert p4.shape == (1, 3 * 85, h // 16, w // 16), (h, w)
        assert torch.isfinite(p5).all() and torch.isfinite(p4).all()


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_a_size_that_is_not_a_multiple_of_32_is_named():
    """A raw forward at 400 px failed in torch.cat deep in the neck ("Sizes of tensors must match")."""
    model = build_model(2, num_classes=3).eval()
    for (h, w), hint in [((400, 416), "416x416"), ((416, 200), "224x416"), ((16, 32), "32x32")]:
        message = rf"input {w}x{h} \(width x height\): .* multiples of 32 \(e.g. {hint}\)"
        with pytest.raises(ValueError, match=message):
            model(torch.rand(1, 3, h, w))
    with pytest.raises(ValueError, match=r"img_size 400: .* \(e.g. 416\)"):
        check_input_size(400, "img_size")
    with pytest.raises(ValueError, match="img_size 0: "):
        check_input_size(0, "img_size")
    assert check_input_size(416) == (416, 416) and check_input_size((320, 640)) == (320, 640)
    traced = torch.jit.trace(model, torch.rand(1, 3, 64, 96))  # the check stays out of traced graphs
    p5, _ = traced(torch.rand(1, 3, 64, 96))
    assert p5.shape == (1, 24, 2, 3)


def test_output_channels_follow_classes_and_anchors():
    model = build_model("se", num_classes=3, anchor_masks=[[2, 3, 4, 5], [0, 1, 2, 3]]).eval()
    with torch.no_grad():
        p5, p4 = model(torch.rand(2, 3, 64, 96))
    assert model.num_anchors == 4
    assert p5.shape == (2, 4 * 8, 2, 3) and p4.shape == (2, 4 * 8, 4, 6)


def test_phi0_has_darknet_parameter_count():
    model = build_model(0, num_classes=80)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 6_056_606
    # the BN running statistics complete Darknet's 6,062,814 stored values
    buffers = sum(b.numel() for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))
    assert sum(p.numel() for p in model.parameters()) + buffers == 6_062_814


def test_attention_adds_parameters_only_in_the_neck():
    base = {n: p.shape for n, p in build_model(0).named_parameters()}
    for phi in PHIS[1:]:
        params = dict(build_model(phi).named_parameters())
        extra = {n for n in params if n not in base}
        assert extra and all(n.split(".")[0] in {"attn_p4", "attn_p5", "attn_up"} for n in extra), phi
        assert all(params[n].shape == s for n, s in base.items())


@pytest.mark.parametrize("phi", PHIS)
def test_gradients_reach_every_parameter(phi):
    torch.manual_seed(phi)
    model = build_model(phi, num_classes=4).train()
    # GC's last conv starts at zero (as GCNet's code): nothing behind it gets a gradient until it has moved
    absorbed = set()
    if model.attention == "gc":
        for block in (model.attn_p4, model.attn_p5, model.attn_up):
            torch.nn.init.normal_(block.transform[3].weight, 0, 0.1)
        # attn_p5 feeds a 1x1 conv + train-mode BN, which removes any per-channel constant: that bias cannot
        # learn there (the reference has it; at the two blocks before the 3x3 conv its gradient is not zero)
        absorbed = {"attn_p5.transform.3.bias"}
    outputs = model(torch.rand(2, 3, 64, 96))
    # random weights: a plain sum would have zero gradient through train-mode BN by symmetry
    loss = sum((o * torch.randn_like(o)).sum() for o in outputs)
    loss.backward()
    for name, p in model.named_parameters():
        if name in absorbed:
            continue
        assert p.grad is not None, f"phi {phi}: {name} got no gradient"
        assert p.grad.abs().max() > 1e-4, f"phi {phi}: {name} has a zero gradient"


def test_config_rebuilds_the_same_network():
    model = build_model("ca", num_classes=5, anchors=[(5, 6)] + list(DEFAULT_ANCHORS[1:]))
    rebuilt = build_model(phi=model.config()["attention"], **{k: v for k, v in model.config().items()
                                                               if k != "attention"})
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.config() == model.config()
    assert model.level_anchors() == [[(81, 82), (135, 169), (344, 319)], [(23, 27), (37, 58), (81, 82)]]


def test_bad_anchor_masks_are_rejected():
    with pytest.raises(ValueError, match="index past"):
        build_model(0, anchor_masks=[[3, 4, 6], [1, 2, 3]])
    with pytest.raises(ValueError, match="two lists of equal length"):
        build_model(0, anchor_masks=[[3, 4, 5], [1, 2]])


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


@pytest.mark.parametrize("scale_x_y", [1.05, 1.0])
def test_decode_matches_a_hand_computation(scale_x_y):
    """Darknet (yolo_layer.c): bx = (i + sigmoid(tx) * s - (s - 1) / 2) / W, bw = exp(tw) * anchor_w / net_w;
    here both in input pixels. Rows ordered per head, then (y * W + x) * A + a."""
    torch.manual_seed(0)
    na, nc = 2, 3
    anchors = [[(10.0, 14.0), (23.0, 27.0)], [(4.0, 5.0), (6.0, 7.0)]]
    strides = (32, 16)
    maps = [torch.randn(1, na * (5 + nc), 2, 3), torch.randn(1, na * (5 + nc), 4, 6)]
    decoded = decode_outputs(maps, anchors, strides, scale_x_y=scale_x_y)
    assert decoded.shape == (1, (2 * 3 + 4 * 6) * na, 5 + nc)
    s = scale_x_y
    row = 0
    for raw, level_anchors, stride in zip(maps, anchors, strides):
        _, _, h, w = raw.shape
        for y in range(h):
            for x in range(w):
                for a in range(na):
                    t = [float(v) for v in raw[0, a * (5 + nc) : (a + 1) * (5 + nc), y, x]]
                    cx = (x + _sigmoid(t[0]) * s - 0.5 * (s - 1)) * stride
                    cy = (y + _sigmoid(t[1]) * s - 0.5 * (s - 1)) * stride
                    bw = math.exp(t[2]) * level_anchors[a][0]
                    bh = math.exp(t[3]) * level_anchors[a][1]
                    expected = [cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2] + [_sigmoid(v) for v in t[4:]]
                    assert row == (y * w + x) * na + a + (0 if stride == 32 else 2 * 3 * na)
                    torch.testing.assert_close(decoded[0, row], torch.tensor(expected), rtol=1e-5, atol=1e-4)
                    row += 1


def test_decode_centre_of_a_zero_map_and_scale_effect():
    raw = torch.zeros(1, 3 * 6, 2, 2)
    decoded = decode_outputs([raw], [[(8.0, 8.0)] * 3], strides=(32,), scale_x_y=1.05)
    # sigmoid(0) = 0.5 sits in the cell centre whatever the scale; the box is the anchor
    torch.testing.assert_close(decoded[0, 0, :4], torch.tensor([12.0, 12.0, 20.0, 20.0]))
    # an extreme logit reaches past the cell edge only with scale_x_y > 1
    raw[0, 0] = 20.0
    x_edge = decode_outputs([raw], [[(8.0, 8.0)] * 3], strides=(32,), scale_x_y=1.05)[0, 0, 0] + 4
    x_plain = decode_outputs([raw], [[(8.0, 8.0)] * 3], strides=(32,), scale_x_y=1.0)[0, 0, 0] + 4
    assert x_plain == pytest.approx(32.0) and x_edge == pytest.approx(32.8)


def test_decoder_module_equals_function():
    model = build_model(0, num_classes=2).eval()
    with torch.no_grad():
        outputs = model(torch.rand(1, 3, 64, 64))
    dec = Decoder(model.level_anchors())
    torch.testing.assert_close(dec(outputs), decode_outputs(outputs, model.level_anchors()))


def _det(box, obj, cls_probs):
    return torch.tensor(list(box) + [obj] + list(cls_probs), dtype=torch.float32)


def test_postprocess_thresholds_scores_and_nms_per_class():
    decoded = torch.stack([
        _det((0, 0, 10, 10), 0.9, (0.9, 0.1)),  # score 0.81, class 0
        _det((1, 0, 11, 10), 0.8, (0.9, 0.1)),  # overlaps the first, same class: suppressed
        _det((1, 1, 10, 10), 0.8, (0.1, 0.9)),  # overlaps, but class 1: kept
        _det((50, 50, 60, 60), 0.5, (0.4, 0.1)),  # score 0.2: under the threshold
        _det((80, 80, 90, 90), 0.2, (1.0, 1.0)),  # objectness 0.2: dropped by the cheap cut
    ])[None]
    (out,) = postprocess(decoded, conf_threshold=0.25, iou_threshold=0.45)
    assert out.shape == (2, 6)
    torch.testing.assert_close(out[:, 4], torch.tensor([0.81, 0.72]))
    torch.testing.assert_close(out[:, 5], torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(out[0, :4], torch.tensor([0.0, 0.0, 10.0, 10.0]))

    (agnostic,) = postprocess(decoded, 0.25, 0.45, agnostic=True)
    assert agnostic.shape == (1, 6)
    (only_1,) = postprocess(decoded, 0.25, 0.45, classes=[1])
    assert only_1[:, 5].tolist() == [1.0]
    (top,) = postprocess(decoded, 0.25, 0.45, max_det=1)
    assert top[:, 4].tolist() == pytest.approx([0.81])


def test_postprocess_multi_label_keeps_every_class_above_threshold():
    decoded = _det((0, 0, 10, 10), 0.9, (0.8, 0.7, 0.1))[None, None]
    (single,) = postprocess(decoded, 0.25, 0.45)
    (multi,) = postprocess(decoded, 0.25, 0.45, multi_label=True)
    assert single[:, 5].tolist() == [0.0]
    assert sorted(multi[:, 5].tolist()) == [0.0, 1.0]


def test_postprocess_empty_and_batched():
    decoded = torch.zeros(3, 10, 7)
    decoded[1, 0] = _det((0, 0, 5, 5), 0.9, (0.9, 0.0))
    results = postprocess(decoded, 0.25, 0.45)
    assert [r.shape for r in results] == [(0, 6), (1, 6), (0, 6)]


@pytest.mark.parametrize("phi", PHIS)
def test_fuse_gives_the_same_outputs(phi):
    torch.manual_seed(phi)
    model = build_model(phi, num_classes=20)
    randomize_bn(model)
    model.eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        reference = model(x)
        fused = model.fuse()(x)
    assert all(isinstance(m.bn, nn.Identity) for m in model.modules() if isinstance(m, ConvBNAct))
    for ref, out in zip(reference, fused):
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("uses", ["both", "feature only"])
def test_csp_block_trains_through_one_pool_and_route_and_infers_through_darknets_slice_alike(layout, uses):
    """Training runs the pooling and the route as one function with one backward (_PoolAndRoute), inference
    as Darknet's slice (which exports keep): the same outputs and the same gradients, also when the stage's
    pooled output goes unused (its gradient is None there)."""
    from yolo_attn.models.backbone import CSPTinyBlock

    torch.manual_seed(0)
    block = CSPTinyBlock(16).double().eval().to(memory_format=layout)  # BN on its running statistics in both runs
    x = torch.randn(2, 16, 12, 12, dtype=torch.float64).contiguous(memory_format=layout)
    runs = []
    for training in (False, True):
        block.training = training  # the block's own formulation only: its BNs stay in eval mode
        block.zero_grad()
        inp = x.clone().requires_grad_(True)
        out, feat = block(inp)
        (feat.sum() if uses == "feature only" else out.square().sum() + feat.sum()).backward()
        runs.append([out.detach(), feat.detach(), inp.grad, block.conv1.conv.weight.grad.clone()])
    for inference, training in zip(*runs):
        torch.testing.assert_close(training, inference, rtol=1e-12, atol=1e-12)
