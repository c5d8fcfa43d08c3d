"""model_info: Darknet's parameter and FLOP counts, without touching the model."""
import torch

from yolo_attn.models import build_model
from yolo_attn.models.info import model_info, model_info_table


def test_phi0_matches_darknets_figures():
    info = model_info(build_model(0, num_classes=80), 416)
    assert info["params"] == info["trainable"] == 6_056_606
    assert round(info["gflops"], 3) == 6.908  # Darknet prints 6.908 BFLOPs at 416


def test_flops_scale_with_the_input_and_attention_adds_some():
    plain = build_model(0, num_classes=20)
    square, wide = model_info(plain, 320)["gflops"], model_info(plain, (320, 640))["gflops"]
    assert abs(wide - 2 * square) < 1e-6 * square  # convolutions only: linear in the pixel count
    assert model_info(build_model("cbam", num_classes=20), 320)["gflops"] > square


def test_model_is_left_untouched():
    model = build_model("ca", num_classes=3).train()
    for p in model.head_p4.pred.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = model_info(model, 64)
    assert model.training and next(model.parameters()).device.type == "cpu"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert info["params"] - info["trainable"] == sum(p.numel() for p in model.head_p4.pred.parameters())


def test_table_lists_every_phi():
    lines = model_info_table(img_size=64, num_classes=1).splitlines()
    assert len(lines) == 2 + 6
    assert [line.split("|")[2].strip() for line in lines[2:]] == ["none", "se", "cbam", "eca", "ca", "gc"]
