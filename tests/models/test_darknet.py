"""Darknet .weights and .cfg interop: exact round trip, both headers, the partial backbone file, bad lengths,
other class counts and attention models, and the written cfg against the official one."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from yolo_attn.models import build_model
from yolo_attn.models.darknet import load_darknet_weights, save_darknet_weights, write_darknet_cfg

OFFICIAL_CFG = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "yolov4-tiny.cfg"

# Darknet's convolutional layers in file order (cfg layers 0, 1, 2, 4, 5, 7, 10, ... 36), written out here
# rather than taken from model.darknet_convs(), so the test does not trust the code it checks.
DARKNET_ORDER = (
    ["backbone.stem.0", "backbone.stem.1"]
    + [f"backbone.stage{s}.conv{i}" for s in (1, 2, 3) for i in (1, 2, 3, 4)]
    + ["backbone.conv_out", "lateral_p5", "head_p5.conv", "head_p5.pred", "lateral_p4", "head_p4.conv",
       "head_p4.pred"]
)
PARTIAL_LAYERS = 17  # yolov4-tiny.conv.29 = cfg layers 0-28
FULL_80_BYTES = 20 + 6_062_814 * 4  # official yolov4-tiny.weights


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter and BN statistic random, so a value landing in the wrong slot shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("num_batches_tracked"):
                continue
            values = torch.rand(t.shape, generator=gen)
            t.copy_(values + 0.5 if name.endswith("running_var") else values - 0.5)
    return model


def _darknet_layer_bytes(model: nn.Module, names) -> bytes:
    """Darknet's per-layer layout, written by hand: biases (BN beta), [scales, mean, variance], weights."""
    modules = dict(model.named_modules())
    parts = []
    for name in names:
        m = modules[name]
        if isinstance(m, nn.Conv2d):
            tensors = [m.bias, m.weight]
        else:
            tensors = [m.bn.bias, m.bn.weight, m.bn.running_mean, m.bn.running_var, m.conv.weight]
        parts += [t.detach().numpy().astype("<f4").tobytes() for t in tensors]
    return b"".join(parts)


def _header(major: int, minor: int, revision: int, seen: int) -> bytes:
    seen_type = "<u8" if major * 10 + minor >= 2 else "<u4"
    return np.array([major, minor, revision], "<i4").tobytes() + np.array([seen], seen_type).tobytes()


def _conv_state(model: nn.Module, names) -> dict:
    modules = dict(model.named_modules())
    return {f"{n}.{k}": v.clone() for n in names for k, v in modules[n].state_dict().items()
            if not k.endswith("num_batches_tracked")}


def _assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def source():
    """A random phi=0, 80-class model and its .weights file."""
    return _randomize(build_model(0, num_classes=80), seed=1)


@pytest.fixture
def weights_80(source, tmp_path):
    path = tmp_path / "yolov4-tiny.weights"
    save_darknet_weights(source, path, seen=64_000)
    return path


def test_save_writes_darknets_layout(source, weights_80):
    data = weights_80.read_bytes()
    assert len(data) == FULL_80_BYTES
    assert data == _header(0, 2, 5, 64_000) + _darknet_layer_bytes(source, DARKNET_ORDER)


def test_round_trip_is_bit_exact(source, weights_80):
    target = _randomize(build_model(0, num_classes=80), seed=2)
    report = load_darknet_weights(target, weights_80)
    _assert_state_equal(source.state_dict(), target.state_dict())
    assert report.version == (0, 2, 5) and report.seen == 64_000
    assert report.layers_in_file == 21 and report.num_classes_in_file == 80
    assert len(report.loaded) == 21 and report.skipped == [] and report.not_initialized == []


@pytest.mark.parametrize("version, seen", [((0, 1, 0), 123_456), ((0, 2, 0), 2**40), ((1, 0, 0), 7)])
def test_both_header_versions(source, tmp_path, version, seen):
    path = tmp_path / "old.weights"
    path.write_bytes(_header(*version, seen) + _darknet_layer_bytes(source, DARKNET_ORDER))
    assert path.stat().st_size == FULL_80_BYTES - (4 if version[0] * 10 + version[1] < 2 else 0)
    target = build_model(0, num_classes=80)
    report = load_darknet_weights(target, path)
    assert report.version == version and report.seen == seen
    _assert_state_equal(source.state_dict(), target.state_dict())


def test_partial_conv29_loads_only_its_layers(source, tmp_path):
    path = tmp_path / "yolov4-tiny.conv.29"
    path.write_bytes(_header(0, 2, 5, 0) + _darknet_layer_bytes(source, DARKNET_ORDER[:PARTIAL_LAYERS]))
    target = _randomize(build_model(0, num_classes=20), seed=3)  # the class count plays no part
    before = _conv_state(target, DARKNET_ORDER[PARTIAL_LAYERS:])
    report = load_darknet_weights(target, path)
    _assert_state_equal(_conv_state(target, DARKNET_ORDER[:PARTIAL_LAYERS]),
                        _conv_state(source, DARKNET_ORDER[:PARTIAL_LAYERS]))
    _assert_state_equal(_conv_state(target, DARKNET_ORDER[PARTIAL_LAYERS:]), before)
    assert report.layers_in_file == PARTIAL_LAYERS and report.num_classes_in_file is None
    assert len(report.loaded) == PARTIAL_LAYERS
    assert set(report.not_initialized) == {"lateral_p4.conv", "lateral_p4.bn", "head_p4.conv.conv",
                                           "head_p4.conv.bn", "head_p5.pred", "head_p4.pred"}


@pytest.mark.parametrize("change", [-4, -1, -4 * 1000, +4, +1, +4 * 1000])
def test_wrong_length_is_rejected_naming_the_file(weights_80, tmp_path, change):
    data = weights_80.read_bytes()
    bad = tmp_path / "damaged.weights"
    bad.write_bytes(data[:change] if change < 0 else data + b"\0" * change)
    with pytest.raises(ValueError, match="damaged.weights"):
        load_darknet_weights(build_model(0, num_classes=80), bad)
    if change == -4:  # training a 10-class model from it: COCO's size is named too, not only the model's
        full = len(data) - 20  # bytes after the version-2 header
        with pytest.raises(ValueError, match=f"or {full // 4:,} with 80 classes"):
            load_darknet_weights(build_model(0, num_classes=10), bad)


@pytest.mark.parametrize("size", [0, 10, 20])
def test_header_only_or_shorter_is_rejected(tmp_path, size):
    bad = tmp_path / "stub.weights"
    bad.write_bytes(_header(0, 2, 5, 0)[:size])
    with pytest.raises(ValueError, match="stub.weights"):
        load_darknet_weights(build_model(0, num_classes=80), bad)


@pytest.mark.parametrize("model_classes", [20, 1])
def test_other_class_count_loads_all_but_the_heads(source, weights_80, model_classes):
    target = _randomize(build_model(0, num_classes=model_classes), seed=4)
    heads_before = _conv_state(target, ["head_p5.pred", "head_p4.pred"])
    report = load_darknet_weights(target, weights_80)
    body = [n for n in DARKNET_ORDER if not n.endswith("pred")]
    _assert_state_equal(_conv_state(target, body), _conv_state(source, body))
    _assert_state_equal(_conv_state(target, ["head_p5.pred", "head_p4.pred"]), heads_before)
    assert report.num_classes_in_file == 80 and len(report.loaded) == 19
    assert [s.split()[0] for s in report.skipped] == ["head_p5.pred", "head_p4.pred"]
    assert "80 classes" in report.skipped[0]
    assert report.not_initialized == ["head_p5.pred", "head_p4.pred"]


def test_fewer_classes_in_the_file_than_in_the_model(tmp_path):
    small = _randomize(build_model(0, num_classes=3), seed=5)
    path = tmp_path / "three.weights"
    save_darknet_weights(small, path)
    report = load_darknet_weights(build_model(0, num_classes=80), path)
    assert report.num_classes_in_file == 3 and len(report.skipped) == 2


def test_a_model_to_run_needs_the_files_heads(source, weights_80, tmp_path):
    """load_model (predict, eval, export, convert) returned a model with random heads, with only a log line,
    for another class count (eval with a 20-class data config) or a backbone-only .conv.29 file."""
    from yolo_attn.utils.checkpoint import load_model

    model, meta = load_model(weights_80, num_classes=80)
    _assert_state_equal(_conv_state(model, DARKNET_ORDER), _conv_state(source, DARKNET_ORDER))
    with pytest.raises(ValueError, match=r"holds a 80-class model, but 20 classes were given: .* --num-classes 80"):
        load_model(weights_80, classes=[f"c{i}" for i in range(20)])
    partial = tmp_path / "yolov4-tiny.conv.29"
    partial.write_bytes(_header(0, 2, 5, 0) + _darknet_layer_bytes(source, DARKNET_ORDER[:PARTIAL_LAYERS]))
    with pytest.raises(ValueError, match=r"conv.29: holds only the backbone .* tools/train.py --weights"):
        load_model(partial, num_classes=80)
    attention, _ = load_model(weights_80, num_classes=80, phi=2)  # asked for: the blocks start untrained
    assert attention.attention == "cbam"


@pytest.mark.parametrize("phi", [1, 2, 3, 4, 5])
def test_attention_model_loads_the_matching_convs(source, weights_80, phi):
    target = build_model(phi, num_classes=80)
    report = load_darknet_weights(target, weights_80)
    _assert_state_equal(_conv_state(target, DARKNET_ORDER), _conv_state(source, DARKNET_ORDER))
    assert len(report.loaded) == 21 and report.skipped == []
    assert report.not_initialized
    assert all(n.split(".")[0] in {"attn_p4", "attn_p5", "attn_up"} for n in report.not_initialized)
    with_params = {n.split(".")[0] for n, _ in target.named_parameters() if n.startswith("attn_")}
    assert {n.split(".")[0] for n in report.not_initialized} == with_params


def test_attention_model_saves_the_plain_network(tmp_path, caplog):
    model = _randomize(build_model("cbam", num_classes=80), seed=6)
    path = tmp_path / "cbam.weights"
    save_darknet_weights(model, path)
    assert "attention blocks are not written" in caplog.text
    assert path.stat().st_size == FULL_80_BYTES
    plain = build_model(0, num_classes=80)
    load_darknet_weights(plain, path)
    _assert_state_equal(_conv_state(plain, DARKNET_ORDER), _conv_state(model, DARKNET_ORDER))


def test_fused_model_is_refused(weights_80, tmp_path):
    fused = build_model(0, num_classes=80).eval().fuse()
    with pytest.raises(ValueError, match="fused"):
        load_darknet_weights(fused, weights_80)
    with pytest.raises(ValueError, match="fused"):
        save_darknet_weights(fused, tmp_path / "fused.weights")


def _parse_cfg(text: str):
    """[(section, {key: value})] with whitespace and number spelling normalized ('.3' == '0.3')."""
    sections = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            sections.append((line, {}))
            continue
        key, value = (s.strip() for s in line.split("=", 1))
        items = [v.strip() for v in value.split(",")]
        try:
            sections[-1][1][key] = tuple(float(v) for v in items)
        except ValueError:
            sections[-1][1][key] = tuple(items)
    return sections


def _layer_channels_and_values(sections, in_channels=3):
    """Follow a cfg as Darknet's parser does: each layer's output channels and the float32 values that
    its convolutional layers store in a .weights file."""
    channels, values = [], 0
    for kind, opts in sections[1:]:
        prev = channels[-1] if channels else in_channels
        if kind == "[convolutional]":
            n, k = int(opts["filters"][0]), int(opts["size"][0])
            values += n * (4 if opts.get("batch_normalize", (0,))[0] else 1) + n * prev * k * k
            channels.append(n)
        elif kind == "[route]":
            idx = [int(i) if i >= 0 else len(channels) + int(i) for i in opts["layers"]]
            channels.append(sum(channels[i] for i in idx) // int(opts.get("groups", (1,))[0]))
        else:  # maxpool, upsample, yolo keep the channel count
            channels.append(prev)
    return channels, values


def test_written_cfg_structure(tmp_path):
    model = build_model(0, num_classes=20)
    cfg, weights = tmp_path / "voc.cfg", tmp_path / "voc.weights"
    write_darknet_cfg(model, cfg, width=320, height=416)
    save_darknet_weights(model, weights)
    sections = _parse_cfg(cfg.read_text())
    net, layers = sections[0], sections[1:]
    assert net[0] == "[net]" and net[1]["width"] == (320,) and net[1]["height"] == (416,)
    assert len(layers) == 38
    convs = [i for i, (kind, _) in enumerate(layers) if kind == "[convolutional]"]
    assert convs == [0, 1, 2, 4, 5, 7, 10, 12, 13, 15, 18, 20, 21, 23, 26, 27, 28, 29, 32, 35, 36]
    for i in (29, 36):
        assert layers[i][1]["filters"] == (75,) and layers[i][1]["activation"] == ("linear",)
        assert "batch_normalize" not in layers[i][1]
    assert [kind for kind, _ in (layers[30], layers[37])] == ["[yolo]", "[yolo]"]
    assert layers[30][1]["mask"] == (3, 4, 5) and layers[37][1]["mask"] == (1, 2, 3)
    assert layers[30][1]["classes"] == (20,) and layers[30][1]["scale_x_y"] == (1.05,)
    assert layers[3][1] == {"layers": (-1,), "groups": (2,), "group_id": (1,)}
    assert layers[34][1]["layers"] == (-1, 23)
    channels, values = _layer_channels_and_values(sections)
    assert channels[23] == 256 and channels[26] == 512 and channels[34] == 384
    # the cfg and the .weights file written for the same model describe the same network
    assert 20 + 4 * values == weights.stat().st_size


def test_written_cfg_carries_the_models_anchors_and_decoding(tmp_path):
    anchors = [(17, 17), (28, 28), (44, 43), (65, 64), (91, 93), (119, 119)]  # fitted ones, all six in use
    model = build_model(0, num_classes=3, anchors=anchors, anchor_masks=[[3, 4, 5], [0, 1, 2]])
    path = tmp_path / "fitted.cfg"
    write_darknet_cfg(model, path, scale_x_y=2.0)
    yolo = [opts for kind, opts in _parse_cfg(path.read_text())[1:] if kind == "[yolo]"]
    assert [opts["mask"] for opts in yolo] == [(3, 4, 5), (0, 1, 2)]
    assert all(opts["anchors"] == tuple(v for a in anchors for v in a) and opts["num"] == (6,) for opts in yolo)
    assert all(opts["scale_x_y"] == (2.0,) for opts in yolo)


def test_cfg_is_refused_for_attention_models(tmp_path):
    with pytest.raises(ValueError, match="only phi=0"):
        write_darknet_cfg(build_model("eca"), tmp_path / "eca.cfg")


@pytest.mark.skipif(not OFFICIAL_CFG.exists(), reason=f"official cfg not found at {OFFICIAL_CFG}")
def test_written_cfg_equals_the_official_one(tmp_path):
    path = tmp_path / "yolov4-tiny.cfg"
    write_darknet_cfg(build_model(0, num_classes=80), path)
    ours, official = _parse_cfg(path.read_text()), _parse_cfg(OFFICIAL_CFG.read_text())
    assert len(ours) == len(official)
    for i, (mine, theirs) in enumerate(zip(ours, official)):
        assert mine == theirs, f"section {i - 1}: {mine} != {theirs}"
    assert 20 + 4 * _layer_channels_and_values(official)[1] == FULL_80_BYTES
