"""Reading a Darknet .cfg: the official file, Darknet's syntax, other networks refused naming the line, and
`.weights` loaded with the anchors, masks, scale_x_y and input size of their .cfg (given, or found beside)."""
import re
from pathlib import Path

import pytest
import torch

from yolo_attn.models import build_model
from yolo_attn.models.darknet import (darknet_cfg_beside, darknet_cfg_text, read_darknet_cfg, save_darknet_weights,
                                      write_darknet_cfg)
from yolo_attn.utils.checkpoint import load_model, meta_input_shape, meta_nms, meta_resize

from .helpers import randomize_bn

OFFICIAL_CFG = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "yolov4-tiny.cfg"
CUSTOM_ANCHORS = [(12, 16), (19, 36), (40, 28), (36, 75), (76, 55), (72, 146)]
CUSTOM_MASKS = [(3, 4, 5), (0, 1, 2)]  # the stride-16 head on 0-2, where the official cfg uses 1-3


def _custom_model(num_classes: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(build_model(0, num_classes, CUSTOM_ANCHORS, CUSTOM_MASKS)).eval()


def _custom_text(**kw) -> str:
    return darknet_cfg_text(_custom_model(), **kw)


def _write(tmp_path: Path, text: str, name: str = "custom.cfg") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.skipif(not OFFICIAL_CFG.exists(), reason="needs ../shared/reference/yolov4-tiny.cfg")
def test_official_cfg():
    cfg = read_darknet_cfg(OFFICIAL_CFG)
    assert (cfg.width, cfg.height, cfg.num_classes, cfg.scale_x_y) == (416, 416, 80, 1.05)
    assert cfg.anchors == [(10, 14), (23, 27), (37, 58), (81, 82), (135, 169), (344, 319)]
    assert cfg.anchor_masks == [(3, 4, 5), (1, 2, 3)]
    assert (cfg.resize, cfg.nms) == ("stretch", "darknet")  # no letter_box; nms_kind=greedynms


def test_how_darknet_runs_it_letter_box_and_nms_kind(tmp_path, caplog):
    """[net] letter_box and the last [yolo]'s nms_kind, as Darknet's detector reads them: greedynms is our
    "darknet" NMS, no nms_kind (or a word Darknet does not know) its default IoU NMS, "darknet-iou"; diounms and
    another beta_nms run as greedynms, said."""
    def settings(text):
        cfg = read_darknet_cfg(_write(tmp_path, text))
        return cfg.resize, cfg.nms

    text = _custom_text()
    assert settings(text) == ("stretch", "darknet")
    assert settings(_custom_text(letter_box=True)) == ("darknet-letterbox", "darknet")
    assert settings(_custom_text(letter_box=True, nms="iou")) == ("darknet-letterbox", "darknet-iou")
    assert "nms_kind" not in _custom_text(nms="iou") and "letter_box" not in text
    assert settings(text.replace("letter_box", "x").replace("scales=.1,.1", "scales=.1,.1\nletter_box=0")) == (
        "stretch", "darknet")
    assert settings(text.replace("nms_kind=greedynms", "nms_kind=greedy")) == ("stretch", "darknet-iou")
    last = text.rindex("nms_kind=greedynms")  # Darknet's detector takes the last [yolo] layer's
    assert settings(text[:last] + "nms_kind=default" + text[last + len("nms_kind=greedynms"):]) == (
        "stretch", "darknet-iou")
    # greedynms is box_diou, whose exponent is 0.6 whatever beta_nms says; diounms takes beta_nms (0.6: the same)
    assert settings(text.replace("beta_nms=0.6", "beta_nms=0.8")) == ("stretch", "darknet")
    assert settings(text.replace("beta_nms=0.6", "beta_nms=x")) == ("stretch", "darknet")
    assert settings(text.replace("nms_kind=greedynms", "nms_kind=diounms")) == ("stretch", "darknet")
    for word in ("true", "", "0.9"):  # atoi: 0
        assert settings(text.replace("scales=.1,.1", f"scales=.1,.1\nletter_box={word}")) == ("stretch", "darknet")
    assert not caplog.text
    assert settings(text.replace("nms_kind=greedynms", "nms_kind=diounms").replace("beta_nms=0.6", "beta_nms=.8")) == (
        "stretch", "darknet")
    assert "nms_kind=diounms with beta_nms=0.8 runs as greedynms here (beta_nms 0.6)" in caplog.text


def test_written_cfg_reads_back(tmp_path):
    path = _write(tmp_path, _custom_text(width=608, height=320, scale_x_y=2.0))
    cfg = read_darknet_cfg(path)
    assert (cfg.width, cfg.height, cfg.img_size, cfg.num_classes, cfg.scale_x_y) == (608, 320, 608, 3, 2.0)
    assert cfg.anchors == CUSTOM_ANCHORS and cfg.anchor_masks == CUSTOM_MASKS


def test_darknet_syntax(tmp_path):
    """What Darknet's reader takes: comments, spaces anywhere, [conv] / [max] aliases, absolute route indices,
    pad=0 with the same explicit padding, a defaulted key written out, numbers as atoi reads them (``3.0``, a
    trailing comment), anchors beyond num (ignored), dilation on a 1x1 convolution (ignored), CRLF line ends."""
    text = _custom_text()
    text = text.replace("[convolutional]", "# a comment\n; another\n[conv]", 1)
    text = text.replace("[maxpool]", "[max]", 1)
    text = text.replace("layers = -1, 23", "layers=33, 23")  # route 34: -1 is layer 33
    text = text.replace("filters=64\nsize=3\nstride=2\npad=1", "filters = 64\nsize=3\nstride=2\npad=0\npadding=1", 1)
    text = text.replace("batch_normalize=1", "batch_normalize=1  # with BN", 1)
    text = text.replace("classes=3", "classes=3.0")
    text = text.replace("72,146", "72,146, 400,400")
    text = text.replace("size=1\nstride=1\npad=1", "size=1\nstride=1\ndilation=2\npad=1", 1)
    text = text.replace("[upsample]\nstride=2", "[upsample]\n")  # Darknet's default stride is 2
    cfg = read_darknet_cfg(_write(tmp_path, text.replace("\n", "\r\n")))
    assert cfg.anchors == CUSTOM_ANCHORS and cfg.num_classes == 3


@pytest.mark.parametrize("change, message", [
    (lambda t: t.replace("activation=leaky", "activation=mish", 1), r"line 20: layer 0 \[convolutional\] has "
     r"activation=mish, where yolov4-tiny has activation=leaky"),
    (lambda t: t.replace("filters=24", "filters=255", 1), r"the convolution before the \[yolo\] at line \d+ has "
     r"filters=255; with classes=3 and 3 anchors per head it must be 3 x \(5 \+ 3\) = 24"),
    (lambda t: t.replace("activation=leaky", "activation=leaky  # as the paper", 1),
     r"has activation=leaky#asthepaper, where yolov4-tiny has activation=leaky"),
    (lambda t: t.replace("activation=leaky", "activation=LEAKY", 1), r"activation=LEAKY, where"),
    (lambda t: t.replace("[convolutional]", "[Convolutional]", 1), r"layer 0 is \[Convolutional\], where"),
    (lambda t: t.replace("scale_x_y = 1.05", "scale_x_y = 1.05\nscale_x_y = 2.0", 1),
     r"line \d+: scale_x_y is given again in this \[yolo\] \(first at line \d+\); Darknet reads the first"),
    (lambda t: t.replace("batch_normalize=1", "batch_normalize=1\ndontload=1", 1),
     r"dontload=1 changes how Darknet reads or runs this layer"),
    (lambda t: t.replace("[upsample]\nstride=2", "[upsample]\nstride=2\nscale=0.5"), r"scale=0.5, where yolov4-tiny "
     r"has scale=1.0"),
    (lambda t: t.replace("classes=3", "classes=3\nmap=data/map.txt", 1), r"map=data/map.txt changes how Darknet"),
    (lambda t: t.replace("num=6", "num=0", 1), r"num=0; a \[yolo\] layer needs at least one anchor"),
    (lambda t: t.replace("scale_x_y = 1.05", "scale_x_y = nan"), r"scale_x_y=nan is not a number"),
    (lambda t: t.replace("width=416\n", ""), r"\[net\] at line 1: no width= line"),
    (lambda t: "\0\0\0\x02" + t, r"not a text .cfg file \(it holds NUL bytes"),
    (lambda t: t.replace("layers = -6,-1", "layers = -5,-1", 1), r"layer 8 \[route\] has layers=\(3, 7\), where "
     r"yolov4-tiny has layers=\(2, 7\)"),
    (lambda t: t.replace("[maxpool]", "[convolutional]", 1), r"layer 9 is \[convolutional\], where yolov4-tiny has "
     r"\[maxpool\]"),
    (lambda t: t + "\n[convolutional]\nfilters=8\n", r"39 layers after \[net\]; yolov4-tiny has 38"),
    (lambda t: t.replace("new_coords", "x").replace("scale_x_y = 1.05", "scale_x_y = 1.05\nnew_coords=1", 1),
     r"new_coords=1 .* not supported"),
    (lambda t: t.replace("num=6", "num=7", 1), r"num=7, but anchors= lists 6 anchors"),
    (lambda t: t.replace("mask = 3,4,5", "mask = 3,4,6", 1), r"mask=3,4,6 points past the 6 anchors"),
    (lambda t: t.replace("classes=3", "classes=4", 1), r"the two \[yolo\] layers differ in classes \(4 and 3\)"),
    (lambda t: t.replace("scale_x_y = 1.05", "scale_x_y = 1.1", 1), r"differ in scale_x_y"),
    (lambda t: t.replace("mask = 0,1,2", "mask = 0,1", 1), r"masks do not fit yolov4-tiny"),
    (lambda t: t.replace("width=416", "width=400"), r"width x height 400x416 .* multiples of 32"),
    (lambda t: t.replace("channels=3", "channels=1"), r"channels=1; yolov4-tiny takes 3-channel"),
    (lambda t: t.replace("size=3", "size=three", 1), r"\[convolutional\] at line 20: size=three is not an integer"),
    (lambda t: t.replace("[net]", "[convolutional]", 1), r"starts with a \[net\] section"),
    (lambda t: t.replace("[route]", "[route", 1), r"'\[route' is not a \[section\] header"),
    (lambda t: t.replace("stride=2", "stride 2", 1), r"'stride 2' is not key=value"),
    (lambda t: t.replace("[yolo]", "[region]"), r"0 \[yolo\] layers"),
])
def test_other_networks_and_bad_files_are_refused_naming_the_line(tmp_path, change, message):
    path = _write(tmp_path, change(_custom_text()))
    with pytest.raises(ValueError, match=message) as info:
        read_darknet_cfg(path)
    assert str(path) in str(info.value)


def test_missing_cfg(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such Darknet .cfg"):
        read_darknet_cfg(tmp_path / "none.cfg")
    with pytest.raises(ValueError, match="is a folder; give the .cfg file"):
        read_darknet_cfg(tmp_path)


@pytest.mark.parametrize("weights_name, cfg_name", [
    ("obj.weights", "obj.cfg"), ("obj_best.weights", "obj.cfg"), ("obj_last.weights", "obj.cfg"),
    ("obj_4000.weights", "obj.cfg"), ("obj_best.weights", "obj_best.cfg"), ("yolov4-tiny.weights", None),
])
def test_cfg_found_beside_by_darknets_names(tmp_path, weights_name, cfg_name):
    for name in ("obj.cfg", "obj_best.cfg") if cfg_name == "obj_best.cfg" else ("obj.cfg",):
        (tmp_path / name).write_text("[net]\n")
    found = darknet_cfg_beside(tmp_path / weights_name)
    assert found == (tmp_path / cfg_name if cfg_name else None)


@pytest.fixture()
def custom_weights(tmp_path):
    """A 3-class model with custom anchors, masks, scale_x_y 1.1 and 320 px, as Darknet's training leaves it:
    obj.cfg, obj.names and backup/obj_best.weights."""
    model = _custom_model()
    write_darknet_cfg(model, tmp_path / "obj.cfg", width=320, height=320, scale_x_y=1.1)
    (tmp_path / "obj.names").write_text("cat\ndog\nbird\n")
    (tmp_path / "backup").mkdir()
    save_darknet_weights(model, tmp_path / "backup" / "obj_best.weights")
    return model, tmp_path


def test_weights_load_with_their_cfg(custom_weights):
    model, folder = custom_weights
    loaded, meta = load_model(folder / "backup" / "obj_best.weights", folder / "obj.names", cfg=folder / "obj.cfg")
    assert loaded.anchors == CUSTOM_ANCHORS and loaded.anchor_masks == CUSTOM_MASKS
    assert meta["scale_x_y"] == 1.1 and meta["img_size"] == 320 and meta["names"] == ["cat", "dog", "bird"]
    assert (meta["preprocess"], meta["nms"]) == ({"resize": "stretch"}, "darknet")  # the cfg's: stretch, greedynms
    x = torch.rand(1, 3, 320, 320)
    with torch.no_grad():
        for ours, theirs in zip(loaded(x), model(x)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_cfg_and_names_beside_the_weights_are_found(custom_weights):
    _, folder = custom_weights
    for name in ("obj.cfg", "obj.names"):
        (folder / name).rename(folder / "backup" / name)
    loaded, meta = load_model(folder / "backup" / "obj_best.weights")  # no class list needed: obj.names
    assert loaded.anchor_masks == CUSTOM_MASKS and meta["names"] == ["cat", "dog", "bird"]
    assert meta["img_size"] == 320


def test_without_a_cfg_the_official_anchors_are_used_and_said(tmp_path, caplog):
    save_darknet_weights(_custom_model(), tmp_path / "plain.weights")
    loaded, meta = load_model(tmp_path / "plain.weights", num_classes=3)
    assert loaded.anchor_masks == [(3, 4, 5), (1, 2, 3)] and meta["scale_x_y"] == 1.05 and meta["img_size"] == 416
    assert "no .cfg found for these weights (looked beside them and in ../cfg/ for plain.cfg)" in caplog.text
    assert (meta["preprocess"], meta["nms"]) == ({"resize": "stretch"}, "darknet")  # as yolov4-tiny.cfg runs
    legacy = {k: v for k, v in meta.items() if k not in ("preprocess", "nms")}  # converted before they were kept
    assert (meta_resize(legacy), meta_nms(legacy)) == ("stretch", "darknet")
    # a cfg without nms_kind, converted before it was told apart (meta version 1); since, "iou" is ours, as chosen
    assert meta_nms(dict(meta, nms="iou", version=1)) == "darknet-iou"
    assert meta_nms(dict(meta, nms="iou")) == "iou" and meta["version"] == 2
    ours = dict(legacy, source="yolo_attn")
    assert (meta_resize(ours), meta_nms(ours)) == ("letterbox", "iou")


def test_darknets_folder_layout_and_a_non_square_input(tmp_path, caplog):
    """darknet/backup/obj_best.weights with darknet/cfg/obj.cfg (608x320) and darknet/data/obj.names."""
    model = _custom_model()
    (tmp_path / "cfg").mkdir()
    (tmp_path / "backup").mkdir()
    write_darknet_cfg(model, tmp_path / "cfg" / "obj.cfg", width=608, height=320)
    save_darknet_weights(model, tmp_path / "backup" / "obj_best.weights")
    assert darknet_cfg_beside(tmp_path / "backup" / "obj_best.weights") == tmp_path / "cfg" / "obj.cfg"
    loaded, meta = load_model(tmp_path / "backup" / "obj_best.weights", num_classes=3)
    assert loaded.anchor_masks == CUSTOM_MASKS and meta["img_size"] == 608
    # runs at the cfg's own 608x320, stretched as Darknet runs it
    assert meta["input_shape"] == [320, 608] and meta_input_shape(meta) == (320, 608)
    assert meta["preprocess"] == {"resize": "stretch"}
    assert meta_input_shape({"img_size": 320}) == (320, 320)


def test_a_cfg_named_with_more_dots_and_darknets_data_file(tmp_path, monkeypatch):
    """Darknet's guide: `darknet detector test data/obj.data cfg/yolo-obj.v2.cfg backup/yolo-obj_best.weights`
    (saves are named after the cfg up to its first dot); the .data file's names= is relative to darknet/."""
    model = _custom_model()
    for folder in ("cfg", "backup", "data"):
        (tmp_path / folder).mkdir()
    write_darknet_cfg(model, tmp_path / "cfg" / "yolo-obj.v2.cfg", width=320, height=320)
    weights = tmp_path / "backup" / "yolo-obj_best.weights"
    save_darknet_weights(model, weights)
    (tmp_path / "data" / "obj.names").write_text("cat\ndog\nbird\n")
    data = tmp_path / "data" / "obj.data"
    data.write_text("classes= 3\n# a comment\ntrain  = data/train.txt\nnames = data/obj.names\nnames = x\n"
                    "backup = backup/\n")
    assert darknet_cfg_beside(weights) == tmp_path / "cfg" / "yolo-obj.v2.cfg"
    monkeypatch.chdir(tmp_path / "backup")  # not darknet/: found from the .data file's folder
    loaded, meta = load_model(weights, classes=data)
    assert meta["names"] == ["cat", "dog", "bird"] and meta["img_size"] == 320 and loaded.anchors == CUSTOM_ANCHORS

    data.write_text("names = data/missing.names\n")
    with pytest.raises(FileNotFoundError, match=r"obj.data: names=data/missing.names, which is not at "):
        load_model(weights, classes=data)
    data.write_text("classes = 3\n")
    with pytest.raises(ValueError, match="obj.data: no names= line"):
        load_model(weights, classes=data)
    write_darknet_cfg(model, tmp_path / "cfg" / "yolo-obj.v3.cfg")
    with pytest.raises(ValueError, match=r"yolo-obj.v2.cfg and .*yolo-obj.v3.cfg could each be its .cfg .*--cfg"):
        darknet_cfg_beside(weights)
    write_darknet_cfg(model, tmp_path / "backup" / "yolo-obj.v4.cfg")  # beside the weights: taken first
    assert darknet_cfg_beside(weights) == tmp_path / "backup" / "yolo-obj.v4.cfg"
    # weights Darknet's training did not name (no _best/_last/_N) take no cfg of another name
    save_darknet_weights(model, tmp_path / "backup" / "yolo-obj.weights")
    assert darknet_cfg_beside(tmp_path / "backup" / "yolo-obj.weights") is None


def test_names_files(custom_weights, tmp_path):
    _, folder = custom_weights
    weights = folder / "backup" / "obj_best.weights"
    (folder / "obj.names").write_text("cat\ndog\n")
    with pytest.raises(ValueError, match=re.escape(f"classes=3, but 2 class names {folder / 'obj.names'} (found "
                                                   f"beside) lists")):
        load_model(weights, cfg=folder / "obj.cfg")
    (folder / "obj.names").write_bytes("chat\nchien\noiseau\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'obj.names'}: not UTF-8 text")):
        load_model(weights, cfg=folder / "obj.cfg")
    (folder / "obj.names").unlink()
    (weights.parent / "obj.names").write_text("a\nb\n")  # no cfg: found beside the weights, with 2 names
    with pytest.raises(ValueError, match=re.escape(f"3-class model, but {weights.parent / 'obj.names'} (found beside) "
                                                   f"lists 2:")):
        load_model(weights)
    (weights.parent / "obj.names").write_text("a\nb\nc\n")  # beside the weights, by the name of the model
    assert load_model(weights, cfg=folder / "obj.cfg")[1]["names"] == ["a", "b", "c"]
    weights.with_suffix(".names").write_text("x\ny\nz\n")  # the weights' own name comes first
    assert load_model(weights, cfg=folder / "obj.cfg")[1]["names"] == ["x", "y", "z"]


def test_cfg_class_count_must_match_the_names(custom_weights):
    _, folder = custom_weights
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'obj.cfg'}: classes=3, but 2 class names")):
        load_model(folder / "backup" / "obj_best.weights", ["a", "b"], cfg=folder / "obj.cfg")


def test_cfg_of_another_class_count_than_the_weights(custom_weights):
    model, folder = custom_weights
    write_darknet_cfg(build_model(0, 5, CUSTOM_ANCHORS, CUSTOM_MASKS), folder / "five.cfg")
    # the 5 agree with the cfg: it is the cfg that is not the weights' (it blamed the class count)
    with pytest.raises(ValueError, match=re.escape(f"holds a 3-class model, but {folder / 'five.cfg'} says "
                                                   "classes=5: give the .cfg these weights were trained with")):
        load_model(folder / "backup" / "obj_best.weights", num_classes=5, cfg=folder / "five.cfg")


def test_cfg_goes_only_with_darknet_weights(custom_weights, tmp_path):
    _, folder = custom_weights
    (tmp_path / "x.pt").write_bytes(b"not read")
    with pytest.raises(ValueError, match="a Darknet .cfg goes with Darknet .weights"):
        load_model(tmp_path / "x.pt", cfg=folder / "obj.cfg")
