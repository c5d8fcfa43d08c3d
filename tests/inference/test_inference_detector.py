"""Detector: every input kind, boxes mapped back to the original image, class filter, meta-driven
pre-processing, attention and heat-map views, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from yolo_attn.data.letterbox import PAD_VALUE, letterbox, stretch
from yolo_attn.inference.detector import Detections, Detector
from yolo_attn.inference.views import (
    attention_maps,
    channel_weights,
    format_channel_weights,
    mean_attention_map,
    objectness_map,
)
from yolo_attn.models.decode import NMS_KINDS, decode_outputs, postprocess
from yolo_attn.utils.checkpoint import load_model

from .helpers import IMG_SIZE, NAMES, make_checkpoint, write_images


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "cbam.pt", phi=2)


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("images"), 3)


def _same(a: Detections, b: Detections) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    # 1e-5: a batch of three and a single image take different convolution kernels (channels-last), which
    # round differently in the last bits
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_every_input_kind_gives_the_same_detections(ckpt, image_paths):
    det = Detector.load(ckpt)
    path = image_paths[0]
    from_path = det(path)
    bgr = np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1].copy()
    _same(from_path, det(str(path)))
    _same(from_path, det(bgr[:, :, ::-1].copy()))  # RGB is the default for arrays
    _same(from_path, det(bgr, bgr=True))
    _same(from_path, det(Image.open(path)))
    listed = det([path, Image.open(image_paths[1]), bgr[:, :, ::-1].copy()])
    assert isinstance(listed, list) and len(listed) == 3
    _same(from_path, listed[0])
    _same(det(image_paths[1]), listed[1])
    assert from_path.source == str(path)
    # reading an RGB array as BGR swaps the channels: different input, different boxes
    swapped = det(bgr)
    assert len(swapped) != len(from_path) or not np.allclose(swapped.boxes, from_path.boxes)


def test_boxes_are_in_original_pixels_with_names(ckpt, image_paths):
    det = Detector.load(ckpt)
    for path in image_paths:
        result = det(path)
        h, w = result.image_shape
        assert (result.boxes[:, [0, 2]] >= 0).all() and (result.boxes[:, [0, 2]] <= w).all()
        assert (result.boxes[:, [1, 3]] >= 0).all() and (result.boxes[:, [1, 3]] <= h).all()
        assert result.names == [NAMES[i] for i in result.labels]
        assert (np.diff(result.scores) <= 0).all() and (result.scores > 0.25).all()
        assert result.to_records()[0]["name"] == result.names[0]


def _decoded(ckpt, boxed: np.ndarray) -> torch.Tensor:
    """decode_outputs() of the checkpoint's fp32 model on one prepared (H, W, 3) uint8 input."""
    model, meta = load_model(ckpt)
    x = torch.from_numpy(boxed).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        return decode_outputs(model(x), model.level_anchors(), scale_x_y=meta["scale_x_y"])


def test_pipeline_matches_letterbox_decode_nms_by_hand(ckpt, rng):
    """A 64x128 image is scaled by 1 and padded by 32 rows: the detector must undo exactly that."""
    det = Detector.load(ckpt, conf=0.2, precision="fp32", device="cpu")  # as the reference below runs
    image = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    result = det(image)
    boxed, info = letterbox(image, IMG_SIZE)
    assert (info.scale, info.pad_y) == (1.0, 32.0)
    expected = postprocess(_decoded(ckpt, boxed), 0.2, 0.45, 300)[0]
    assert len(expected) == len(result) > 0
    boxes = expected[:, :4].numpy().copy()
    boxes[:, [1, 3]] -= 32
    np.testing.assert_allclose(result.boxes, boxes.clip(0, [128, 64, 128, 64]), atol=1e-3)
    np.testing.assert_array_equal(result.labels, expected[:, 5].long().numpy())


def _darknet_nms_by_hand(ckpt, rng, nms: str, described: str):
    """A detector with Darknet's NMS ``nms`` against the fp32 model's decoded maps of the letterboxed image with
    that NMS over every class above conf: same labels and scores. Returns (detector, image, decoded, expected)."""
    det = Detector.load(ckpt, conf=0.05, precision="fp32", nms=nms, device="cpu")
    assert described in det.describe()
    image = rng.integers(0, 255, (64, 128, 3), dtype=np.uint8)
    result = det(image)
    boxed, info = letterbox(image, IMG_SIZE)
    decoded = _decoded(ckpt, boxed)
    # Darknet's NMS judges boxes relative to the image: x by its 128 px, y by 64
    assert info.image_relative == (1 / 128, 1 / 64)
    expected = postprocess(decoded, 0.05, 0.45, 300, multi_label=True, nms=nms, nms_scales=[info.image_relative])[0]
    assert len(expected) == len(result) > 0
    np.testing.assert_array_equal(result.labels, expected[:, 5].long().numpy())
    np.testing.assert_allclose(result.scores, expected[:, 4].numpy(), atol=1e-5)  # fused, channels-last kernels
    return det, image, decoded, expected


def test_darknet_nms_matches_postprocess_by_hand(ckpt, rng):
    """nms="darknet": every class above conf per box, Darknet's greedy DIoU NMS; it keeps at least what IoU
    NMS over the same (box, class) pairs keeps."""
    det, _, decoded, expected = _darknet_nms_by_hand(ckpt, rng, "darknet", "Darknet's DIoU NMS")
    assert len(expected) > len(postprocess(decoded, 0.05, 0.45, 300, multi_label=True)[0]) > 0
    with pytest.raises(ValueError, match="nms must be one of iou, darknet, darknet-iou, got 'diou'"):
        det.nms = "diou"


def test_darknet_default_nms_keeps_every_class_above_conf(ckpt, rng):
    """nms="darknet-iou" (a Darknet cfg without nms_kind: do_nms_sort): IoU NMS class by class over every class
    above conf per box, so a box may come out under two labels, which "iou" (each box's best class) never does."""
    det, image, decoded, expected = _darknet_nms_by_hand(ckpt, rng, "darknet-iou", "Darknet's IoU NMS")
    assert len(expected[:, :4].unique(dim=0)) < len(expected)  # some box kept under more than one class
    best = postprocess(decoded, 0.05, 0.45, 300)[0]
    assert len(best[:, :4].unique(dim=0)) == len(best)
    det.nms = "iou"
    np.testing.assert_array_equal(det(image).labels, best[:, 5].long().numpy())


def test_stretch_resize_matches_the_stretched_image_by_hand(ckpt, rng):
    """resize="stretch" (Darknet's detector test): a 48x256 image is stretched to the 128x128 input, x by 0.5
    and y by 8/3, the network runs on exactly that, and boxes are scaled back per axis; the video path's rect canvas
    does not apply."""
    det = Detector.load(ckpt, conf=0.2, precision="fp32", resize="stretch", device="cpu")
    assert "stretched to the input" in det.describe()
    image = rng.integers(0, 255, (48, 256, 3), dtype=np.uint8)
    det.rect = True
    result = det(image)
    stretched, info = stretch(image, IMG_SIZE)
    assert info.scales == (0.5, 128 / 48)
    expected = postprocess(_decoded(ckpt, stretched), 0.2, 0.45, 300)[0]
    assert len(expected) == len(result) > 0 and result.input_shape == (IMG_SIZE, IMG_SIZE)
    boxes = expected[:, :4].numpy() / [0.5, 128 / 48, 0.5, 128 / 48]
    np.testing.assert_allclose(result.boxes, boxes.clip(0, [256, 48, 256, 48]), atol=1e-3)
    np.testing.assert_array_equal(result.labels, expected[:, 5].long().numpy())
    letterboxed = Detector.load(ckpt, conf=0.2, precision="fp32", device="cpu")(image)
    assert len(letterboxed) != len(result) or not np.allclose(letterboxed.boxes, result.boxes, atol=1)
    with pytest.raises(ValueError, match="unknown resize 'squash'; use one of letterbox, stretch, darknet-letterbox"):
        det.resize = "squash"


def test_darknet_letterbox_runs_on_darknets_canvas_and_maps_back_as_darknet(ckpt, rng):
    """resize="darknet-letterbox" (letter_box=1): a 45x128 image is pasted at row 41 of the 128x128 input (the
    integer half of the 83 px margin) and its boxes are mapped back from 41.5, as correct_yolo_boxes does; the
    video path's rect canvas does not apply."""
    det = Detector.load(ckpt, conf=0.2, precision="fp32", resize="darknet-letterbox", device="cpu")
    assert "letterboxed as Darknet does" in det.describe()
    image = rng.integers(0, 255, (45, 128, 3), dtype=np.uint8)
    det.rect = True
    result = det(image)
    canvas = np.full((IMG_SIZE, IMG_SIZE, 3), PAD_VALUE, np.uint8)
    canvas[41:86] = image
    expected = postprocess(_decoded(ckpt, canvas), 0.2, 0.45, 300)[0]
    assert len(expected) == len(result) > 0 and result.input_shape == (IMG_SIZE, IMG_SIZE)
    boxes = expected[:, :4].numpy() - [0, 41.5, 0, 41.5]
    np.testing.assert_allclose(result.boxes, boxes.clip(0, [128, 45, 128, 45]), atol=1e-3)
    np.testing.assert_array_equal(result.labels, expected[:, 5].long().numpy())


def test_class_filter_by_index_and_name(ckpt, image_paths):
    det = Detector.load(ckpt, conf=0.1)
    every = det(image_paths[0])
    assert len(set(every.labels.tolist())) > 1
    det.keep_classes = ["dog"]
    assert set(det(image_paths[0]).labels.tolist()) == {1}
    det.keep_classes = [0, "2"]
    assert set(det(image_paths[0]).labels.tolist()) <= {0, 2}
    with pytest.raises(ValueError, match="unknown class 'horse'"):
        det.keep_classes = ["horse"]


def test_checkpoint_preprocess_settings_are_used(tmp_path, rng):
    ckpt = make_checkpoint(tmp_path / "port.pt", phi=0, preprocess={"interpolation": "bicubic", "pad_value": 0},
                           scale_x_y=1.0)
    det = Detector.load(ckpt)
    assert det.pad_value == 0 and det.scale_x_y == 1.0
    batch, _ = det.preprocess([rng.integers(1, 255, (64, 128, 3), dtype=np.uint8)])
    assert batch.shape == (1, 3, IMG_SIZE, IMG_SIZE)
    assert batch[0, :, :32].abs().max() == 0  # the padding rows are the checkpoint's pad value, not grey


def test_img_size_must_be_multiple_of_32(ckpt):
    with pytest.raises(ValueError, match=r"image size 100: .* multiples of 32 \(e.g. 128\)"):
        Detector.load(ckpt, img_size=100)
    with pytest.raises(ValueError, match=r"image size 320x100 \(width x height\): .* \(e.g. 320x128\)"):
        Detector.load(ckpt, img_size=(100, 320))
    assert Detector.load(ckpt, img_size=160).input_shape == (160, 160)


def test_errors_are_clear(ckpt, tmp_path):
    det = Detector.load(ckpt)
    with pytest.raises(FileNotFoundError, match="no such image"):
        det(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="bad.jpg: cannot be decoded"):
        det(tmp_path / "bad.jpg")
    with pytest.raises(ValueError, match="expected an"):
        det(np.zeros((4, 4, 5), np.uint8))
    for missing in (None, tmp_path / "none.pt"):
        with pytest.raises(FileNotFoundError) as err:
            Detector.load(missing)
        assert "tools/train.py" in str(err.value) and "tools/convert.py" in str(err.value)


def test_darknet_weights_with_a_class_list(tmp_path, image_paths):
    from yolo_attn.models import build_model
    from yolo_attn.models.darknet import save_darknet_weights

    path = tmp_path / "tiny.weights"
    save_darknet_weights(build_model(0, 2), path)
    det = Detector.load(path, classes=["a", "b"])
    assert det.names == ["a", "b"] and det.scale_x_y == 1.05
    det(image_paths[0])
    with pytest.raises(ValueError, match="class"):
        Detector.load(path)


# GC's channel context is shown when its block records it (as "context"); not checked here.
@pytest.mark.parametrize("phi, spatial, channel", [(1, False, True), (2, True, True), (4, True, False),
                                                   (5, True, None)])
def test_attention_views(tmp_path, image_paths, phi, spatial, channel):
    det = Detector.load(make_checkpoint(tmp_path / f"phi{phi}.pt", phi=phi))
    result = det.predict([image_paths[0]], keep_gates=True, keep_maps=True)[0]
    assert sorted(result.gates) == ["attn_p4", "attn_p5", "attn_up"]
    maps = attention_maps(result)
    assert bool(maps) == spatial
    if spatial:
        combined = mean_attention_map(result)
        assert combined.shape == result.image_shape
        assert 0.0 <= combined.min() and combined.max() <= 1.0 and combined.std() > 0
    else:
        with pytest.raises(ValueError, match="no spatial gate"):
            mean_attention_map(result)
    weights = channel_weights(result, top=4)
    assert channel is None or bool(weights) == channel
    for pairs in weights.values():
        assert len(pairs) == 4 and abs(pairs[0][1]) >= abs(pairs[-1][1])
    assert len(format_channel_weights(result)) == len(weights)
    heat = objectness_map(result, det.num_anchors)
    assert heat.shape == result.image_shape and 0.0 <= heat.min() <= heat.max() <= 1.0
    # gates are not kept (nor left stale) unless asked
    assert det.predict([image_paths[0]])[0].gates == {}


def test_a_constant_channel_gate_is_named_not_ranked():
    """An SE / CBAM MLP whose hidden units are all off gives sigmoid(0) on every channel: no ranking."""
    flat = np.full((1, 8, 1, 1), 0.5, np.float32)
    varied = np.linspace(0.1, 0.9, 8, dtype=np.float32).reshape(1, 8, 1, 1)
    det = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), [], (8, 8),
                     gates={"attn_p4": {"channel": flat}, "attn_p5": {"channel": varied}})
    lines = format_channel_weights(det, top=2)
    assert lines == ["attn_p4: every channel weighted 0.500 (the channel gate does not vary here)",
                     "attn_p5: top channels 7 (0.900), 6 (0.786)"]


@pytest.mark.parametrize("nms", NMS_KINDS)
def test_one_identity_view_keeps_every_nms_as_it_is(ckpt, image_paths, nms):
    """The augmented path runs the same NMS as the plain one, Darknet's over every class above conf per box and
    judged relative to the image."""
    det = Detector.load(ckpt, conf=0.05, nms=nms)
    plain = det(image_paths)
    det.augment = [(1.0, False)]
    for a, b in zip(det(image_paths), plain):
        _same(a, b)
    if nms != "iou":  # a box under two classes somewhere
        assert any(len(np.unique(d.boxes, axis=0)) < len(d) for d in plain)


def test_test_time_augmentation(ckpt, image_paths):
    det = Detector.load(ckpt)
    plain = det(image_paths)
    det.augment = [(1.0, False)]  # one identity view: the augmented path must give the plain detections
    for a, b in zip(det(image_paths), plain):
        _same(a, b)
        assert a.source == b.source and a.input_shape == b.input_shape

    calls = []
    forward = det.backend._forward
    det.backend._forward = lambda x: calls.append(tuple(x.shape[2:])) or forward(x)
    det.augment = True
    assert det.augment == [(1.0, False), (1.3, True), (0.83, False)]
    augmented = det(image_paths)
    assert calls == [(128, 128), (160, 160), (96, 96)]  # one batch of three images, three views
    assert any(len(a) != len(b) or not np.allclose(a.boxes, b.boxes) for a, b in zip(augmented, plain))
    for d in augmented:
        h, w = d.image_shape
        assert len(d) and (d.boxes >= 0).all() and (d.boxes[:, [0, 2]] <= w).all() and (d.boxes[:, [1, 3]] <= h).all()
        assert (np.diff(d.scores) <= 0).all()
    with pytest.raises(ValueError, match="turn test-time augmentation off"):
        det.predict(image_paths[:1], keep_maps=True)
    det.augment = False
    assert det.augment is None

    det.backend.fixed_shape = (None, 128, 128)  # as a static export reports itself
    with pytest.raises(ValueError, match="exported for a fixed one"):
        det.augment = True


def test_16_bit_pil_images_are_scaled_like_the_same_file_read_by_path(tmp_path):
    """Pillow's convert("RGB") clips 16-bit values at 255 (a white image); a path goes through OpenCV's
    IMREAD_COLOR, which keeps the top 8 bits. A PIL image of the same file must give the same pixels."""
    import cv2

    from yolo_attn.inference.detector import load_image

    gray16 = np.random.default_rng(0).integers(0, 256, (48, 64), dtype=np.uint16) * 257
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), gray16)
    expected, _ = load_image(path)
    assert expected.mean() < 200  # mid-grey noise, not saturated
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # I;16 (or I in older Pillow)
        for image in (im, im.convert("I"), im.convert("F")):
            np.testing.assert_array_equal(load_image(image)[0], expected, err_msg=image.mode)
    unchanged = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # the uint16 array itself
    assert unchanged.dtype == np.uint16
    np.testing.assert_array_equal(load_image(unchanged)[0], expected)
    as_floats = Image.fromarray(gray16.astype(np.float32) / 65535.0, mode="F")  # floats in [0, 1]
    assert np.abs(load_image(as_floats)[0].astype(int) - expected).max() <= 1
    # 8-bit values in a 32-bit mode (convert("I") of an L image, fromarray of int32) are not 16-bit: kept as
    # they are, not divided by 256 into a black image
    gray8 = Image.fromarray((gray16 >> 8).astype(np.uint8))
    for image in (gray8.convert("I"), gray8.convert("F"), Image.fromarray(np.asarray(gray8).astype(np.int32))):
        np.testing.assert_array_equal(load_image(image)[0], load_image(gray8)[0], err_msg=image.mode)


def test_pil_images_are_turned_upright_by_their_exif_orientation(tmp_path):
    from yolo_attn.inference.detector import load_image

    rgb = np.zeros((40, 80, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # a red band on the left, which orientation 6 puts on top
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    from_path, _ = load_image(path)
    with Image.open(path) as im:
        from_pil, _ = load_image(im)
    assert from_path.shape == from_pil.shape == (80, 40, 3)
    assert np.abs(from_pil.astype(int) - from_path).mean() < 3  # two JPEG decoders, the same picture
    assert from_pil[:10, :, 0].mean() > 200 and from_pil[-10:, :, 0].mean() < 50


def test_an_empty_image_is_a_clear_error(ckpt):
    det = Detector.load(ckpt)
    for bgr in (False, True):  # BGR frames take the lean path, straight to letterbox
        with pytest.raises(ValueError, match=r"empty image \(shape \(0, 0, 3\)\)"):
            det(np.zeros((0, 0, 3), np.uint8), bgr=bgr)
    with pytest.raises(ValueError, match=r"shape \(7, 0, 3\)"):
        letterbox(np.zeros((7, 0, 3), np.uint8), 64)


def test_an_unusable_device_is_one_clear_error(ckpt, monkeypatch):
    with pytest.raises(ValueError, match="unknown device 'foo'; use cpu, cuda or cuda:N"):
        Detector.load(ckpt, device="foo")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda': CUDA is not available here.*use --device cpu"):
        Detector.load(ckpt, device="cuda")
