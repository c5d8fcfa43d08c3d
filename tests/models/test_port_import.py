"""Importing the PyTorch port's state dicts (issue 8): keys, shapes, block formulas, converter, errors.

The port's keys and shapes are embedded below, copied from ../shared/reference/SEEDREF.md (20 classes),
so these tests do not need /work/shared; one test compares the copy with that file when it is present.
The reference forward passes re-compute the port's definitions with plain torch ops straight from the
port's tensors, so they check the renaming and the attention options independently of yolo_attn.
"""
from __future__ import annotations

import os
import pickle
import re
import runpy
import sys
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
import torch.nn.functional as F

from yolo_attn.models import build_model
from yolo_attn.models.darknet import save_darknet_weights
from yolo_attn.models.port import convert_port_state_dict, port_state_dict_spec
from yolo_attn.utils.checkpoint import load_model

SEEDREF = Path(__file__).resolve().parents[3] / "shared" / "reference" / "SEEDREF.md"
CONVERT = Path(__file__).resolve().parents[2] / "tools" / "convert.py"
PHIS = (0, 1, 2, 3, 4)

PORT_TABLE_20_CLASSES = """
# phi 0 (no attention), 20 classes: 118 tensors
backbone.conv1.conv.weight (32, 3, 3, 3) float32
backbone.conv1.bn.weight (32,) float32
backbone.conv1.bn.bias (32,) float32
backbone.conv1.bn.running_mean (32,) float32
backbone.conv1.bn.running_var (32,) float32
backbone.conv1.bn.num_batches_tracked () int64
backbone.conv2.conv.weight (64, 32, 3, 3) float32
backbone.conv2.bn.weight (64,) float32
backbone.conv2.bn.bias (64,) float32
backbone.conv2.bn.running_mean (64,) float32
backbone.conv2.bn.running_var (64,) float32
backbone.conv2.bn.num_batches_tracked () int64
backbone.resblock_body1.conv1.conv.weight (64, 64, 3, 3) float32
backbone.resblock_body1.conv1.bn.weight (64,) float32
backbone.resblock_body1.conv1.bn.bias (64,) float32
backbone.resblock_body1.conv1.bn.running_mean (64,) float32
backbone.resblock_body1.conv1.bn.running_var (64,) float32
backbone.resblock_body1.conv1.bn.num_batches_tracked () int64
backbone.resblock_body1.conv2.conv.weight (32, 32, 3, 3) float32
backbone.resblock_body1.conv2.bn.weight (32,) float32
backbone.resblock_body1.conv2.bn.bias (32,) float32
backbone.resblock_body1.conv2.bn.running_mean (32,) float32
backbone.resblock_body1.conv2.bn.running_var (32,) float32
backbone.resblock_body1.conv2.bn.num_batches_tracked () int64
backbone.resblock_body1.conv3.conv.weight (32, 32, 3, 3) float32
backbone.resblock_body1.conv3.bn.weight (32,) float32
backbone.resblock_body1.conv3.bn.bias (32,) float32
backbone.resblock_body1.conv3.bn.running_mean (32,) float32
backbone.resblock_body1.conv3.bn.running_var (32,) float32
backbone.resblock_body1.conv3.bn.num_batches_tracked () int64
backbone.resblock_body1.conv4.conv.weight (64, 64, 1, 1) float32
backbone.resblock_body1.conv4.bn.weight (64,) float32
backbone.resblock_body1.conv4.bn.bias (64,) float32
backbone.resblock_body1.conv4.bn.running_mean (64,) float32
backbone.resblock_body1.conv4.bn.running_var (64,) float32
backbone.resblock_body1.conv4.bn.num_batches_tracked () int64
backbone.resblock_body2.conv1.conv.weight (128, 128, 3, 3) float32
backbone.resblock_body2.conv1.bn.weight (128,) float32
backbone.resblock_body2.conv1.bn.bias (128,) float32
backbone.resblock_body2.conv1.bn.running_mean (128,) float32
backbone.resblock_body2.conv1.bn.running_var (128,) float32
backbone.resblock_body2.conv1.bn.num_batches_tracked () int64
backbone.resblock_body2.conv2.conv.weight (64, 64, 3, 3) float32
backbone.resblock_body2.conv2.bn.weight (64,) float32
backbone.resblock_body2.conv2.bn.bias (64,) float32
backbone.resblock_body2.conv2.bn.running_mean (64,) float32
backbone.resblock_body2.conv2.bn.running_var (64,) float32
backbone.resblock_body2.conv2.bn.num_batches_tracked () int64
backbone.resblock_body2.conv3.conv.weight (64, 64, 3, 3) float32
backbone.resblock_body2.conv3.bn.weight (64,) float32
backbone.resblock_body2.conv3.bn.bias (64,) float32
backbone.resblock_body2.conv3.bn.running_mean (64,) float32
backbone.resblock_body2.conv3.bn.running_var (64,) float32
backbone.resblock_body2.conv3.bn.num_batches_tracked () int64
backbone.resblock_body2.conv4.conv.weight (128, 128, 1, 1) float32
backbone.resblock_body2.conv4.bn.weight (128,) float32
backbone.resblock_body2.conv4.bn.bias (128,) float32
backbone.resblock_body2.conv4.bn.running_mean (128,) float32
backbone.resblock_body2.conv4.bn.running_var (128,) float32
backbone.resblock_body2.conv4.bn.num_batches_tracked () int64
backbone.resblock_body3.conv1.conv.weight (256, 256, 3, 3) float32
backbone.resblock_body3.conv1.bn.weight (256,) float32
backbone.resblock_body3.conv1.bn.bias (256,) float32
backbone.resblock_body3.conv1.bn.running_mean (256,) float32
backbone.resblock_body3.conv1.bn.running_var (256,) float32
backbone.resblock_body3.conv1.bn.num_batches_tracked () int64
backbone.resblock_body3.conv2.conv.weight (128, 128, 3, 3) float32
backbone.resblock_body3.conv2.bn.weight (128,) float32
backbone.resblock_body3.conv2.bn.bias (128,) float32
backbone.resblock_body3.conv2.bn.running_mean (128,) float32
backbone.resblock_body3.conv2.bn.running_var (128,) float32
backbone.resblock_body3.conv2.bn.num_batches_tracked () int64
backbone.resblock_body3.conv3.conv.weight (128, 128, 3, 3) float32
backbone.resblock_body3.conv3.bn.weight (128,) float32
backbone.resblock_body3.conv3.bn.bias (128,) float32
backbone.resblock_body3.conv3.bn.running_mean (128,) float32
backbone.resblock_body3.conv3.bn.running_var (128,) float32
backbone.resblock_body3.conv3.bn.num_batches_tracked () int64
backbone.resblock_body3.conv4.conv.weight (256, 256, 1, 1) float32
backbone.resblock_body3.conv4.bn.weight (256,) float32
backbone.resblock_body3.conv4.bn.bias (256,) float32
backbone.resblock_body3.conv4.bn.running_mean (256,) float32
backbone.resblock_body3.conv4.bn.running_var (256,) float32
backbone.resblock_body3.conv4.bn.num_batches_tracked () int64
backbone.conv3.conv.weight (512, 512, 3, 3) float32
backbone.conv3.bn.weight (512,) float32
backbone.conv3.bn.bias (512,) float32
backbone.conv3.bn.running_mean (512,) float32
backbone.conv3.bn.running_var (512,) float32
backbone.conv3.bn.num_batches_tracked () int64
conv_for_P5.conv.weight (256, 512, 1, 1) float32
conv_for_P5.bn.weight (256,) float32
conv_for_P5.bn.bias (256,) float32
conv_for_P5.bn.running_mean (256,) float32
conv_for_P5.bn.running_var (256,) float32
conv_for_P5.bn.num_batches_tracked () int64
yolo_headP5.0.conv.weight (512, 256, 3, 3) float32
yolo_headP5.0.bn.weight (512,) float32
yolo_headP5.0.bn.bias (512,) float32
yolo_headP5.0.bn.running_mean (512,) float32
yolo_headP5.0.bn.running_var (512,) float32
yolo_headP5.0.bn.num_batches_tracked () int64
yolo_headP5.1.weight (75, 512, 1, 1) float32
yolo_headP5.1.bias (75,) float32
upsample.upsample.0.conv.weight (128, 256, 1, 1) float32
upsample.upsample.0.bn.weight (128,) float32
upsample.upsample.0.bn.bias (128,) float32
upsample.upsample.0.bn.running_mean (128,) float32
upsample.upsample.0.bn.running_var (128,) float32
upsample.upsample.0.bn.num_batches_tracked () int64
yolo_headP4.0.conv.weight (256, 384, 3, 3) float32
yolo_headP4.0.bn.weight (256,) float32
yolo_headP4.0.bn.bias (256,) float32
yolo_headP4.0.bn.running_mean (256,) float32
yolo_headP4.0.bn.running_var (256,) float32
yolo_headP4.0.bn.num_batches_tracked () int64
yolo_headP4.1.weight (75, 256, 1, 1) float32
yolo_headP4.1.bias (75,) float32
# phi 1 (se): the phi-0 tensors plus these 6
feat1_att.fc.0.weight (16, 256) float32
feat1_att.fc.2.weight (256, 16) float32
feat2_att.fc.0.weight (32, 512) float32
feat2_att.fc.2.weight (512, 32) float32
upsample_att.fc.0.weight (8, 128) float32
upsample_att.fc.2.weight (128, 8) float32
# phi 2 (cbam): the phi-0 tensors plus these 9
feat1_att.channelattention.fc1.weight (32, 256, 1, 1) float32
feat1_att.channelattention.fc2.weight (256, 32, 1, 1) float32
feat1_att.spatialattention.conv1.weight (1, 2, 7, 7) float32
feat2_att.channelattention.fc1.weight (64, 512, 1, 1) float32
feat2_att.channelattention.fc2.weight (512, 64, 1, 1) float32
feat2_att.spatialattention.conv1.weight (1, 2, 7, 7) float32
upsample_att.channelattention.fc1.weight (16, 128, 1, 1) float32
upsample_att.channelattention.fc2.weight (128, 16, 1, 1) float32
upsample_att.spatialattention.conv1.weight (1, 2, 7, 7) float32
# phi 3 (eca): the phi-0 tensors plus these 3
feat1_att.conv.weight (1, 1, 5) float32
feat2_att.conv.weight (1, 1, 5) float32
upsample_att.conv.weight (1, 1, 5) float32
# phi 4 (ca): the phi-0 tensors plus these 24
feat1_att.conv_1x1.weight (16, 256, 1, 1) float32
feat1_att.bn.weight (16,) float32
feat1_att.bn.bias (16,) float32
feat1_att.bn.running_mean (16,) float32
feat1_att.bn.running_var (16,) float32
feat1_att.bn.num_batches_tracked () int64
feat1_att.F_h.weight (256, 16, 1, 1) float32
feat1_att.F_w.weight (256, 16, 1, 1) float32
feat2_att.conv_1x1.weight (32, 512, 1, 1) float32
feat2_att.bn.weight (32,) float32
feat2_att.bn.bias (32,) float32
feat2_att.bn.running_mean (32,) float32
feat2_att.bn.running_var (32,) float32
feat2_att.bn.num_batches_tracked () int64
feat2_att.F_h.weight (512, 32, 1, 1) float32
feat2_att.F_w.weight (512, 32, 1, 1) float32
upsample_att.conv_1x1.weight (8, 128, 1, 1) float32
upsample_att.bn.weight (8,) float32
upsample_att.bn.bias (8,) float32
upsample_att.bn.running_mean (8,) float32
upsample_att.bn.running_var (8,) float32
upsample_att.bn.num_batches_tracked () int64
upsample_att.F_h.weight (128, 8, 1, 1) float32
upsample_att.F_w.weight (128, 8, 1, 1) float32
"""

Spec = Dict[str, Tuple[Tuple[int, ...], torch.dtype]]
_LINE = re.compile(r"^(\S+) \(([\d, ]*)\) (float32|int64)$")


def parse_table(text: str) -> Dict[int, Spec]:
    """{phi: {key: (shape, dtype)}} from the table's format: a '# phi N' header, then 'key (shape) dtype'."""
    tables: Dict[int, Spec] = {}
    phi = None
    for line in text.splitlines():
        header = re.match(r"^# phi (\d)", line)
        if header:
            phi = int(header.group(1))
            tables[phi] = dict(tables.get(0, {}))  # each attention table adds to the phi-0 tensors
            continue
        row = _LINE.match(line.strip())
        if row and phi is not None:
            shape = tuple(int(d) for d in row.group(2).replace(" ", "").split(",") if d)
            tables[phi][row.group(1)] = (shape, getattr(torch, row.group(3)))
    return tables


def port_table(phi: int, num_classes: int) -> Spec:
    """The port's keys for phi and a class count (only the two prediction convs depend on it)."""
    table = dict(parse_table(PORT_TABLE_20_CLASSES)[phi])
    for key in ("yolo_headP5.1.weight", "yolo_headP5.1.bias", "yolo_headP4.1.weight", "yolo_headP4.1.bias"):
        shape, dtype = table[key]
        table[key] = ((3 * (5 + num_classes),) + shape[1:], dtype)
    return table


def port_state_dict(phi: int, num_classes: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Distinct random values in every tensor, scaled so a forward pass stays finite and non-trivial."""
    gen = torch.Generator().manual_seed(seed * 100 + phi * 10 + num_classes)
    sd = {}
    for i, (key, (shape, dtype)) in enumerate(port_table(phi, num_classes).items()):
        if dtype == torch.int64:
            sd[key] = torch.tensor(1000 + i)
        elif key.endswith("running_var") or key.endswith("bn.weight"):
            sd[key] = 0.5 + torch.rand(shape, generator=gen)
        elif len(shape) >= 2:
            fan_in = torch.Size(shape[1:]).numel()
            sd[key] = torch.randn(shape, generator=gen) * (1.5 / fan_in**0.5)
        else:
            sd[key] = torch.randn(shape, generator=gen) * 0.1
    return sd


# --- the port's definitions (SEEDREF.md), with plain torch ops on the port's own tensors ---------------

def ref_conv(x, sd, p, stride=1):
    """The port's BasicConv: conv (no bias, pad k//2), BN (eps 1e-5), LeakyReLU(0.1)."""
    w = sd[f"{p}.conv.weight"]
    x = F.conv2d(x, w, stride=stride, padding=w.shape[-1] // 2)
    x = F.batch_norm(x, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"],
                     sd[f"{p}.bn.bias"], training=False, eps=1e-5)
    return F.leaky_relu(x, 0.1)


def ref_resblock(x, sd, p):
    x = ref_conv(x, sd, f"{p}.conv1")
    route = x
    x = ref_conv(x[:, x.shape[1] // 2:], sd, f"{p}.conv2")  # the second channel half
    route1 = x
    x = ref_conv(torch.cat([ref_conv(x, sd, f"{p}.conv3"), route1], 1), sd, f"{p}.conv4")
    return F.max_pool2d(torch.cat([route, x], 1), 2, 2), x


def ref_se(x, sd, p):
    y = F.relu(F.linear(x.mean((2, 3)), sd[f"{p}.fc.0.weight"]))
    return x * torch.sigmoid(F.linear(y, sd[f"{p}.fc.2.weight"]))[:, :, None, None]


def ref_cbam(x, sd, p):
    def mlp(v):  # ratio 8: fc1 C -> C/8, ReLU, fc2 C/8 -> C, 1x1 convs without bias
        return F.conv2d(F.relu(F.conv2d(v, sd[f"{p}.channelattention.fc1.weight"])),
                        sd[f"{p}.channelattention.fc2.weight"])

    x = x * torch.sigmoid(mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1)))
    pooled = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True)[0]], 1)
    return x * torch.sigmoid(F.conv2d(pooled, sd[f"{p}.spatialattention.conv1.weight"], padding=3))


def ref_eca(x, sd, p):
    c = x.shape[1]
    k = int(abs((torch.tensor(float(c)).log2().item() + 1) / 2))
    k = k if k % 2 else k + 1
    assert k == 5 == sd[f"{p}.conv.weight"].shape[-1]
    y = F.conv1d(x.mean((2, 3))[:, None, :], sd[f"{p}.conv.weight"], padding=(k - 1) // 2)  # over channels
    return x * torch.sigmoid(y)[:, 0, :, None, None]


def ref_ca(x, sd, p):
    # The port's layout: both pooled maps as rows (B, C, 1, H) and (B, C, 1, W), concatenated along the last axis.
    h, w = x.shape[2:]
    x_h = x.mean(3, keepdim=True).permute(0, 1, 3, 2)
    x_w = x.mean(2, keepdim=True)
    y = F.conv2d(torch.cat([x_h, x_w], 3), sd[f"{p}.conv_1x1.weight"])
    y = F.relu(F.batch_norm(y, sd[f"{p}.bn.running_mean"], sd[f"{p}.bn.running_var"], sd[f"{p}.bn.weight"],
                            sd[f"{p}.bn.bias"], training=False, eps=1e-5))
    y_h, y_w = y.split([h, w], 3)
    s_h = torch.sigmoid(F.conv2d(y_h.permute(0, 1, 3, 2), sd[f"{p}.F_h.weight"]))
    s_w = torch.sigmoid(F.conv2d(y_w, sd[f"{p}.F_w.weight"]))
    return x * s_h * s_w


REF_ATTENTION = {1: ref_se, 2: ref_cbam, 3: ref_eca, 4: ref_ca}


def ref_forward(x, sd, phi):
    """The port's YoloBody forward."""
    attend = REF_ATTENTION.get(phi, lambda v, sd, p: v)
    x = ref_conv(ref_conv(x, sd, "backbone.conv1", 2), sd, "backbone.conv2", 2)
    x, _ = ref_resblock(x, sd, "backbone.resblock_body1")
    x, _ = ref_resblock(x, sd, "backbone.resblock_body2")
    x, feat1 = ref_resblock(x, sd, "backbone.resblock_body3")
    feat2 = ref_conv(x, sd, "backbone.conv3")
    feat1, feat2 = attend(feat1, sd, "feat1_att"), attend(feat2, sd, "feat2_att")
    p5 = ref_conv(feat2, sd, "conv_for_P5")
    out0 = F.conv2d(ref_conv(p5, sd, "yolo_headP5.0"), sd["yolo_headP5.1.weight"], sd["yolo_headP5.1.bias"])
    up = attend(F.interpolate(ref_conv(p5, sd, "upsample.upsample.0"), scale_factor=2, mode="nearest"),
                sd, "upsample_att")
    p4 = ref_conv(torch.cat([up, feat1], 1), sd, "yolo_headP4.0")
    return out0, F.conv2d(p4, sd["yolo_headP4.1.weight"], sd["yolo_headP4.1.bias"])


# --- where each port tensor must land, read back through our module attributes -------------------------

OUR_MODULE = {
    "backbone.conv1": lambda m: m.backbone.stem[0],
    "backbone.conv2": lambda m: m.backbone.stem[1],
    "backbone.resblock_body1": lambda m: m.backbone.stage1,
    "backbone.resblock_body2": lambda m: m.backbone.stage2,
    "backbone.resblock_body3": lambda m: m.backbone.stage3,
    "backbone.conv3": lambda m: m.backbone.conv_out,
    "conv_for_P5": lambda m: m.lateral_p5,
    "yolo_headP5.0": lambda m: m.head_p5.conv,
    "yolo_headP5.1": lambda m: m.head_p5.pred,
    "upsample.upsample.0": lambda m: m.lateral_p4,
    "yolo_headP4.0": lambda m: m.head_p4.conv,
    "yolo_headP4.1": lambda m: m.head_p4.pred,
    "feat1_att": lambda m: m.attn_p4,
    "feat2_att": lambda m: m.attn_p5,
    "upsample_att": lambda m: m.attn_up,
}
OUR_BLOCK_PART = {
    "fc.0": lambda b: b.fc[0],
    "fc.2": lambda b: b.fc[2],
    "channelattention.fc1": lambda b: b.channel.fc1,
    "channelattention.fc2": lambda b: b.channel.fc2,
    "spatialattention.conv1": lambda b: b.spatial.conv,
    "conv": lambda b: b.conv,
    "conv_1x1": lambda b: b.conv,
    "bn": lambda b: b.bn,
    "F_h": lambda b: b.conv_h,
    "F_w": lambda b: b.conv_w,
}


def our_tensor(model, port_key: str) -> torch.Tensor:
    prefix = max((p for p in OUR_MODULE if port_key.startswith(p + ".")), key=len)
    module = OUR_MODULE[prefix](model)
    path, _, tensor = port_key[len(prefix) + 1:].rpartition(".")
    if prefix.endswith("_att"):
        module = OUR_BLOCK_PART[path](module)
    else:
        for name in filter(None, path.split(".")):
            module = getattr(module, name)
    return getattr(module, tensor)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """(phi, classes) -> (port state dict, its file, model loaded from the file, meta), built once each."""
    cache = {}

    def get(phi: int, num_classes: int):
        if (phi, num_classes) not in cache:
            sd = port_state_dict(phi, num_classes)
            path = tmp_path_factory.mktemp("port") / f"port_phi{phi}_{num_classes}.pth"
            torch.save(sd, path)
            model, meta = load_model(path, num_classes=num_classes)
            cache[phi, num_classes] = sd, path, model, meta
        return cache[phi, num_classes]

    return get


def run_convert(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["convert.py", *map(str, args)])
    runpy.run_path(str(CONVERT), run_name="__main__")


# --- tests ----------------------------------------------------------------------------------------------

def test_embedded_table_is_seedref():
    if not SEEDREF.is_file():
        pytest.skip(f"{SEEDREF} not present")
    assert parse_table(SEEDREF.read_text(encoding="utf-8")) == parse_table(PORT_TABLE_20_CLASSES)
    assert [len(parse_table(PORT_TABLE_20_CLASSES)[phi]) for phi in PHIS] == [118, 124, 127, 121, 142]


@pytest.mark.parametrize("num_classes", [20, 80])
@pytest.mark.parametrize("phi", PHIS)
def test_spec_is_the_ports(phi, num_classes):
    expected = {key: shape for key, (shape, _) in port_table(phi, num_classes).items()}
    assert port_state_dict_spec(phi, num_classes) == expected


@pytest.mark.parametrize("num_classes", [20, 80])
@pytest.mark.parametrize("phi", PHIS)
def test_every_tensor_lands_under_our_name(imported, phi, num_classes):
    sd, _, model, meta = imported(phi, num_classes)
    assert model.phi == phi and model.num_classes == num_classes
    landed = {key: our_tensor(model, key) for key in sd}
    for key, tensor in sd.items():
        assert torch.equal(landed[key], tensor), key
    # one port tensor per model tensor: none left at its initial value, none loaded twice
    assert len({id(t) for t in landed.values()}) == len(model.state_dict()) == len(sd)
    assert meta["source"] == "port" and meta["scale_x_y"] == 1.0
    assert meta["preprocess"] == {"interpolation": "bicubic", "pad_value": 128}
    assert meta["names"] == [f"class{i}" for i in range(num_classes)]


def test_attention_options_recorded_are_the_ports(imported):
    """SEEDREF.md: SE C/16, CBAM ratio 8, CA ReLU C/16 without biases; ECA's kernel is in the key shapes."""
    kw = {phi: imported(phi, 20)[3]["model"]["attention_kw"] for phi in PHIS}
    assert kw[0] == {}
    assert kw[1]["reduction"] == 16 and kw[1]["act"] == "relu"
    assert kw[2]["reduction"] == 8 and kw[2]["kernel_size"] == 7
    assert kw[4]["reduction"] == 16 and kw[4]["act"] == "relu" and kw[4]["bias"] is False
    rebuilt = build_model(4, 20, attention_kw=kw[4])  # what a checkpoint rebuilds: no biases to fill
    assert rebuilt.attn_p4.conv_h.bias is None and isinstance(rebuilt.attn_p4.act, torch.nn.ReLU)


@pytest.mark.parametrize("phi", [1, 2, 3, 4])
def test_attention_blocks_compute_the_ports_formulas(imported, phi):
    sd, _, model, _ = imported(phi, 20)
    sd = {k: v.double() for k, v in sd.items()}
    model = model.double()
    gen = torch.Generator().manual_seed(phi)
    for port_name, block, channels in (("feat1_att", model.attn_p4, 256), ("feat2_att", model.attn_p5, 512),
                                       ("upsample_att", model.attn_up, 128)):
        x = torch.randn(2, channels, 5, 7, generator=gen, dtype=torch.float64)  # H != W: catches transposes
        with torch.no_grad():
            torch.testing.assert_close(block(x), REF_ATTENTION[phi](x, sd, port_name), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("num_classes", [20, 80])
@pytest.mark.parametrize("phi", PHIS)
def test_forward_matches_the_ports_network(imported, phi, num_classes):
    sd, _, model, _ = imported(phi, num_classes)
    sd = {k: v.double() for k, v in sd.items()}
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ours, ref = model.double()(x), ref_forward(x, sd, phi)
    for o, r in zip(ours, ref):
        assert o.shape == r.shape and r.std() > 0.1  # a live network, not one saturated to constants
        torch.testing.assert_close(o, r, rtol=1e-9, atol=1e-9)
    model.float()


@pytest.mark.parametrize("phi", PHIS)
def test_converted_checkpoint_gives_the_same_outputs(imported, tmp_path, monkeypatch, phi):
    sd, port_path, _, _ = imported(phi, 20)
    names = tmp_path / "voc_classes.txt"
    names.write_text("\n".join(f"name{i}" for i in range(20)) + "\n")
    out = tmp_path / "ours.pt"
    run_convert(monkeypatch, "--from", "port", "--weights", port_path, "--classes", names, "--out", out)
    direct, direct_meta = load_model(port_path, classes=names)
    converted, meta = load_model(out)  # carries everything: no class or phi flags
    assert meta == direct_meta
    assert meta["names"] == [f"name{i}" for i in range(20)] and meta["model"]["attention"] == direct.attention
    assert meta["scale_x_y"] == 1.0 and meta["preprocess"]["interpolation"] == "bicubic"
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for a, b in zip(converted(x), direct(x)):
            assert torch.equal(a, b)


def test_darknet_weights_convert_too(tmp_path, monkeypatch):
    weights = tmp_path / "tiny.weights"
    save_darknet_weights(build_model(0, 3), weights)
    names = tmp_path / "three.names"
    names.write_text("cat\ndog\nbird\n")
    out = tmp_path / "tiny.pt"
    run_convert(monkeypatch, "--from", "darknet", "--weights", weights, "--classes", names, "--out", out)
    direct, _ = load_model(weights, classes=names)
    converted, meta = load_model(out)
    assert meta["source"] == "darknet" and meta["scale_x_y"] == 1.05 and meta["names"] == ["cat", "dog", "bird"]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(converted(x), direct(x)))
    # --phi takes an attention name as well as a number
    run_convert(monkeypatch, "--from", "darknet", "--weights", weights, "--classes", names, "--phi", "cbam",
                "--out", out)
    assert load_model(out)[0].phi == 2


def test_converter_never_writes_over_its_inputs_or_a_training_checkpoint(tmp_path, monkeypatch, capsys):
    """--out equal to the weights (or their cfg) replaced them with a checkpoint and the Darknet file was lost;
    --out run/best.pt lost the run's checkpoint. An earlier conversion is still replaced."""
    from yolo_attn.utils.checkpoint import make_meta, save_checkpoint

    weights = tmp_path / "tiny.weights"
    save_darknet_weights(build_model(0, 3), weights)
    cfg = tmp_path / "other.cfg"  # not the one of the weights' name, which would be read for the conversions below
    cfg.write_text("not read before --out is checked")
    trained = tmp_path / "best.pt"
    model = build_model(0, 3)
    save_checkpoint({"meta": make_meta(model, ["a", "b", "c"], 64), "model": model.state_dict(), "epoch": 9}, trained)
    kept = {path: path.read_bytes() for path in (weights, cfg, trained)}
    for out, message in ((weights, "our checkpoints are .pt files"), (cfg, "our checkpoints are .pt files"),
                         (tmp_path / "x.onnx", "our checkpoints are .pt files"),
                         (trained, "exists and is not an earlier conversion")):
        with pytest.raises(SystemExit):
            run_convert(monkeypatch, "--from", "darknet", "--weights", weights, "--cfg", cfg, "--num-classes", 3,
                        "--out", out)
        assert f"--out {out}: {message}" in capsys.readouterr().err
    assert all(path.read_bytes() == data for path, data in kept.items()) and not (tmp_path / "x.onnx").exists()
    converted = tmp_path / "tiny.pt"
    for phi in ("0", "cbam"):  # converting again over an earlier conversion replaces it
        run_convert(monkeypatch, "--from", "darknet", "--weights", weights, "--num-classes", 3, "--phi", phi,
                    "--out", converted)
    assert load_model(converted)[0].phi == 2


def test_converter_names_an_unknown_attention(tmp_path, monkeypatch, capsys):
    weights = tmp_path / "tiny.weights"
    save_darknet_weights(build_model(0, 3), weights)
    with pytest.raises(SystemExit):
        run_convert(monkeypatch, "--from", "darknet", "--weights", weights, "--num-classes", 3, "--phi", "cbma",
                    "--out", tmp_path / "x.pt")
    assert "unknown attention 'cbma'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_convert(monkeypatch, "--from", "darknet", "--weights", tmp_path / "none.weights",
                    "--out", tmp_path / "x.pt")
    assert "none.weights: no such file (a Darknet .weights file to convert)" in capsys.readouterr().err


def test_converter_refuses_a_file_of_the_other_kind(imported, tmp_path, monkeypatch, capsys):
    _, port_path, _, _ = imported(0, 20)
    weights = tmp_path / "tiny.weights"
    save_darknet_weights(build_model(0, 20), weights)
    for source, path in (("port", weights), ("darknet", port_path)):
        with pytest.raises(SystemExit):
            run_convert(monkeypatch, "--from", source, "--weights", path, "--num-classes", 20,
                        "--out", tmp_path / "x.pt")
        assert str(path) in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_convert(monkeypatch, "--from", "port", "--weights", port_path, "--num-classes", 20, "--phi", "cbam",
                    "--out", tmp_path / "x.pt")
    assert "phi 0" in capsys.readouterr().err
    for extra, message in ((["--out", tmp_path], "is a folder; give the checkpoint's file name"),  # a traceback
                           (["--out", tmp_path / "x.pt", "--img-size", 100], "--img-size 100: ")):  # unusable file
        with pytest.raises(SystemExit):
            run_convert(monkeypatch, "--from", "port", "--weights", port_path, "--num-classes", 20, *extra)
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


def _one_line_error(path, **kw) -> str:
    with pytest.raises(ValueError) as err:
        load_model(path, **kw)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_wrong_class_count_names_the_head_and_the_files_count(imported):
    _, port_path, _, _ = imported(2, 20)
    message = _one_line_error(port_path, num_classes=80)
    assert "'yolo_headP5.1.weight' has shape (75, 512, 1, 1), expected (255, 512, 1, 1)" in message
    assert "20-class" in message


def test_foreign_state_dict_names_the_first_mismatch(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, path)
    message = _one_line_error(path, num_classes=20)
    assert "not a state dict of the YOLOv4-tiny PyTorch port" in message
    assert "'backbone.conv1.conv.weight' (32, 3, 3, 3) is missing" in message
    assert "first key is 'conv1.weight' (64, 3, 7, 7)" in message


@pytest.mark.parametrize("change, expected", [
    (lambda sd: sd.__setitem__("backbone.resblock_body2.conv3.conv.weight", torch.zeros(64, 64, 1, 1)),
     "'backbone.resblock_body2.conv3.conv.weight' has shape (64, 64, 1, 1), expected (64, 64, 3, 3)"),
    (lambda sd: sd.pop("feat2_att.F_w.weight"), "'feat2_att.F_w.weight' (512, 32, 1, 1) is missing"),
    (lambda sd: sd.__setitem__("extra.weight", torch.zeros(3)), "'extra.weight' (3,) is not in the port's model"),
    (lambda sd: sd.__setitem__("feat1_att.conv_1x1.weight", torch.zeros(32, 256, 1, 1)),
     "'feat1_att.conv_1x1.weight' has shape (32, 256, 1, 1), expected (16, 256, 1, 1)"),
])
def test_altered_port_state_dict_names_the_key(imported, change, expected):
    sd = dict(imported(4, 20)[0])
    change(sd)
    with pytest.raises(ValueError, match=re.escape(expected)):
        convert_port_state_dict(sd, 20, source="altered.pth")


def test_unknown_attention_layout_is_refused():
    sd = port_state_dict(0, 20)
    sd["feat1_att.query.weight"] = torch.zeros(8, 256)
    with pytest.raises(ValueError, match=r"'feat1_att.query.weight' \(8, 256\) matches none of the port's blocks"):
        convert_port_state_dict(sd, 20)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_are_accepted(imported, tmp_path, prefix):
    """DataParallel / DDP save keys as module.*, torch.compile as _orig_mod.*; training's class count from a
    port file's head (--weights without a class list) missed them and asked for the class list."""
    from yolo_attn.engine.trainer import _num_classes_in

    sd = imported(3, 20)[0]
    phi, ours = convert_port_state_dict({f"{prefix}{k}": v for k, v in sd.items()}, 20)
    assert phi == 3 and torch.equal(ours["attn_up.conv.weight"], sd["upsample_att.conv.weight"])
    path = tmp_path / "wrapped.pth"
    torch.save({f"{prefix}{k}": v for k, v in sd.items()}, path)
    assert _num_classes_in(str(path)) == 20


def test_a_file_without_batchnorm_step_counters_converts(imported):
    """PyTorch before 0.4.1 (and some converters) wrote no num_batches_tracked; it was refused as missing."""
    sd = imported(2, 20)[0]
    phi, ours = convert_port_state_dict({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, 20)
    assert phi == 2 and set(ours) == set(convert_port_state_dict(sd, 20)[1])


def test_an_export_given_as_pytorch_weights_is_named(tmp_path):
    """train.py --weights best.onnx said the file 'holds pickled data ... refused to unpickle it'."""
    path = tmp_path / "best.onnx"
    path.write_bytes(b"\x08\x07onnx")
    with pytest.raises(ValueError, match="best.onnx: an exported model .* use the checkpoint it was exported"):
        load_model(path)


def test_a_bare_state_dict_of_our_model_says_to_use_the_checkpoint(tmp_path):
    """It was read as a port file and refused for a missing port key."""
    path = tmp_path / "mine.pt"
    torch.save({f"module.{k}": v for k, v in build_model(1, 4).state_dict().items()}, path)
    with pytest.raises(ValueError, match="mine.pt: the bare state dict of a yolo_attn model, .* weights/best.pt"):
        load_model(path, num_classes=4)


class _RunsCode:
    """A pickle that runs a shell command when unpickled freely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_that_runs_code_is_refused_without_running(tmp_path, writer):
    marker, path = tmp_path / "ran", tmp_path / "evil.pth"
    payload = {"backbone.conv1.conv.weight": _RunsCode(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # what torch.save writes
    message = _one_line_error(path, num_classes=20)
    assert "refused to unpickle" in message
    assert not marker.exists()


def test_files_that_are_not_state_dicts_get_one_line(tmp_path):
    text, listing = tmp_path / "notes.pth", tmp_path / "list.pth"
    text.write_text("not a checkpoint")
    torch.save([torch.zeros(1)], listing)
    assert "not a loadable PyTorch checkpoint" in _one_line_error(text, num_classes=20)
    assert "found list" in _one_line_error(listing, num_classes=20)
