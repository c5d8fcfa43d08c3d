"""Darknet's stretch resize (detector test without -letter_box), its letterbox (letter_box=1) and the box mapping
of every resize mode."""
import cv2
import numpy as np
import pytest

from yolo_attn.data.letterbox import (PAD_VALUE, darknet_letterbox, fit_to_input, letterbox, letterbox_boxes,
                                      letterbox_into, stretch, unletterbox_boxes)
from yolo_attn.inference.fastproc import letterbox_batch


def darknet_resize_image(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's image.c resize_image, loop for loop: a horizontal pass into `part`, then a vertical one, with
    scales (old - 1) / (new - 1), i.e. bilinear with the corner pixels aligned. ``im`` is (H, W, C) float."""
    im_h, im_w, channels = im.shape
    part = np.zeros((im_h, w, channels), np.float32)
    w_scale = np.float32(im_w - 1) / np.float32(w - 1)
    h_scale = np.float32(im_h - 1) / np.float32(h - 1)
    for r in range(im_h):
        for c in range(w):
            if c == w - 1 or im_w == 1:
                part[r, c] = im[r, im_w - 1]
            else:
                sx = np.float32(c) * w_scale
                ix = int(sx)
                dx = sx - ix
                part[r, c] = (1 - dx) * im[r, ix] + dx * im[r, ix + 1]
    resized = np.zeros((h, w, channels), np.float32)
    for r in range(h):
        sy = np.float32(r) * h_scale
        iy = int(sy)
        dy = sy - iy
        resized[r] = (1 - dy) * part[iy]
        if r == h - 1 or im_h == 1:
            continue
        resized[r] += dy * part[iy + 1]
    return resized


@pytest.mark.parametrize("src, dst", [((37, 53), (64, 96)), ((120, 90), (32, 64)), ((16, 16), (64, 32))])
def test_stretch_is_darknets_resize_image(src, dst):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    out, info = stretch(image, dst)
    assert out.shape == (*dst, 3) and out.dtype == np.uint8
    expected = darknet_resize_image(image.astype(np.float32), dst[1], dst[0])
    assert np.abs(out.astype(np.float32) - expected).max() <= 0.5 + 1e-3  # uint8 rounding only
    assert info.scales == pytest.approx((dst[1] / src[1], dst[0] / src[0])) and (info.pad_x, info.pad_y) == (0, 0)
    assert stretch(out, dst)[0] is out  # already the input size: untouched


def darknet_letterbox_image(im: np.ndarray, w: int, h: int) -> np.ndarray:
    """Darknet's image.c letterbox_image: int sizes (C's integer division), resize_image, a 0.5 canvas, embedded
    at the integer half of the margins. ``im`` (H, W, C) float in 0..255; returns the same scale."""
    im_h, im_w, channels = im.shape
    if np.float32(w) / np.float32(im_w) < np.float32(h) / np.float32(im_h):
        new_w, new_h = w, (im_h * w) // im_w
    else:
        new_h, new_w = h, (im_w * h) // im_h
    boxed = np.full((h, w, channels), 0.5 * 255, np.float32)
    dx, dy = (w - new_w) // 2, (h - new_h) // 2
    boxed[dy : dy + new_h, dx : dx + new_w] = darknet_resize_image(im, new_w, new_h)
    return boxed


def darknet_correct_yolo_boxes(xywh: np.ndarray, im_w: int, im_h: int, netw: int, neth: int) -> np.ndarray:
    """yolo_layer.c correct_yolo_boxes with letter=1 on (N, 4) centre boxes in network pixels; returns image
    pixels (Darknet keeps them relative, then multiplies by the image's size to draw)."""
    if np.float32(netw) / np.float32(im_w) < np.float32(neth) / np.float32(im_h):
        new_w, new_h = netw, (im_h * netw) // im_w
    else:
        new_h, new_w = neth, (im_w * neth) // im_h
    x, y, bw, bh = (xywh / [netw, neth, netw, neth]).T
    x = (x - (netw - new_w) / 2.0 / netw) / (new_w / netw)
    y = (y - (neth - new_h) / 2.0 / neth) / (new_h / neth)
    bw, bh = bw * netw / new_w, bh * neth / new_h
    return np.stack([x * im_w, y * im_h, bw * im_w, bh * im_h], 1)


@pytest.mark.parametrize("src, dst", [((37, 53), (64, 64)), ((90, 200), (128, 160)), ((61, 16), (64, 96)),
                                      ((100, 100), (64, 64)), ((9, 97), (32, 32)), ((45, 64), (64, 64))])
def test_darknet_letterbox_is_darknets_letterbox_image(src, dst):
    """Sizes truncated as C does, Darknet's resize, pasted at the integer half margin; boxes come back as
    correct_yolo_boxes maps them (the unrounded half margin: odd margins keep Darknet's half pixel)."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*src, 3), dtype=np.uint8)
    out, info = darknet_letterbox(image, dst)
    assert fit_to_input(image, dst, "darknet-letterbox")[0].tobytes() == out.tobytes()
    expected = darknet_letterbox_image(image.astype(np.float32), dst[1], dst[0])
    assert out.shape == (*dst, 3) and out.dtype == np.uint8
    pad = expected == 0.5 * 255
    assert (out[pad] == PAD_VALUE).all()  # 128: Darknet's 0.5 to the nearest uint8 level above
    assert np.abs(out.astype(np.float32) - expected)[~pad].max() <= 0.5 + 1e-3  # uint8 rounding only
    net_boxes = np.array([[20.0, 30.0, 12.0, 8.0], [dst[1] / 2, dst[0] / 2, dst[1] / 3, dst[0] / 5]])
    xyxy = np.concatenate([net_boxes[:, :2] - net_boxes[:, 2:] / 2, net_boxes[:, :2] + net_boxes[:, 2:] / 2], 1)
    got = unletterbox_boxes(xyxy.astype(np.float32), info)
    want = darknet_correct_yolo_boxes(net_boxes, src[1], src[0], dst[1], dst[0])
    want = np.concatenate([want[:, :2] - want[:, 2:] / 2, want[:, :2] + want[:, 2:] / 2], 1)
    np.testing.assert_allclose(got, want.clip(0, [src[1], src[0]] * 2), atol=1e-3)


def test_darknet_letterbox_differs_from_ours_where_darknet_rounds_otherwise():
    """61x16 into 64x96: Darknet's width is 16 * 64 // 61 = 16 (ours rounds 16.8 to 17 and pads 39 on the left,
    Darknet 80 / 2 = 40); a 37x53 image into 64x64 is 44 tall (ours 45), pasted at row 10, mapped back from 10."""
    image = np.full((61, 16, 3), 200, np.uint8)
    out, info = darknet_letterbox(image, (64, 96))
    ours, _ = letterbox(image, (64, 96))
    assert (out[:, 40] == 200).all() and (out[:, 39] == PAD_VALUE).all() and (out[:, 56] == PAD_VALUE).all()
    assert (ours[:, 39] == 200).all()
    assert (info.pad_x, info.pad_y, info.scales) == (40.0, 0.0, (1.0, 64 / 61))
    _, info = darknet_letterbox(np.zeros((37, 53, 3), np.uint8), 64)
    assert (info.pad_x, info.pad_y, info.scales) == (0.0, 10.0, (64 / 53, 44 / 37))


@pytest.mark.parametrize("mode", ["letterbox", "stretch", "darknet-letterbox"])
def test_boxes_map_there_and_back(mode):
    image = np.zeros((90, 200, 3), np.uint8)
    _, info = fit_to_input(image, (128, 160), mode)
    boxes = np.array([[10.0, 5.0, 50.0, 80.0], [0.0, 0.0, 200.0, 90.0]], np.float32)
    inside = letterbox_boxes(boxes, info)
    if mode == "stretch":  # x by 160 / 200, y by 128 / 90
        np.testing.assert_allclose(inside[0], [8.0, 5.0 * 128 / 90, 40.0, 80.0 * 128 / 90], rtol=1e-6)
    np.testing.assert_allclose(unletterbox_boxes(inside, info), boxes, atol=1e-4)


def _letterbox_in_three_arrays(image, out_h, out_w, pad, interpolation):
    """The letterbox as it was written before letterbox_into: resize, then paste into a padded canvas."""
    h, w = image.shape[:2]
    scale = min(out_h / h, out_w / w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation) if (new_w, new_h) != (w, h) else image
    resized = resized.reshape(new_h, new_w, -1)
    canvas = np.full((out_h, out_w, resized.shape[2]), pad, image.dtype)
    x, y = (out_w - new_w) // 2, (out_h - new_h) // 2
    canvas[y : y + new_h, x : x + new_w] = resized
    return canvas, (scale, float(x), float(y))


@pytest.mark.parametrize("shape", [(72, 128, 3), (128, 72, 3), (64, 64, 3), (30, 50, 3), (600, 200, 3), (7, 9, 4),
                                   (45, 80), (80, 45, 1), (64, 96, 3, "f")])
@pytest.mark.parametrize("interpolation", [cv2.INTER_LINEAR, cv2.INTER_AREA])
def test_letterbox_into_writes_what_three_arrays_held(shape, interpolation):
    """Resized straight into the canvas (a band of whole rows: OpenCV writes there) or, where the image is
    narrower than the canvas, through a copy: the same pixels either way, flipped BGR -> RGB when asked."""
    rng = np.random.default_rng(sum(s for s in shape if isinstance(s, int)))
    dims = tuple(s for s in shape if isinstance(s, int))
    image = rng.integers(0, 256, dims, dtype=np.uint8)
    if shape[-1] == "f":
        image = image.astype(np.float32) / 255
    for out_h, out_w in ((64, 64), (64, 96), (96, 64)):
        want, (scale, x, y) = _letterbox_in_three_arrays(image, out_h, out_w, 114, interpolation)
        got, info = letterbox(image, (out_h, out_w), 114, interpolation)
        np.testing.assert_array_equal(got, want)
        assert (info.scale, info.pad_x, info.pad_y, info.orig_shape) == (scale, x, y, dims[:2])
        canvas = np.full((out_h, out_w, want.shape[2]), 7, image.dtype)  # stale contents: all overwritten
        assert letterbox_into(canvas, image, 114, interpolation) == info
        np.testing.assert_array_equal(canvas, want)
        if want.shape[2] == 3:
            letterbox_into(canvas, image, 114, interpolation, bgr_to_rgb=True)
            np.testing.assert_array_equal(canvas, want[:, :, ::-1])


def test_letterbox_batch_fills_each_slot():
    rng = np.random.default_rng(0)
    shapes = ((72, 128, 3), (128, 72, 3), (40, 40), (64, 64, 3), (72, 128, 4), (128, 72, 4), (64, 64, 4))
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    flips = (True, False, False, True, True, True, True)
    batch, infos = letterbox_batch(images, (64, 64), 114, cv2.INTER_LINEAR, bgr=list(flips))
    for image, got, info, flip in zip(images, batch, infos, flips):
        want, (scale, x, y) = _letterbox_in_three_arrays(image, 64, 64, 114, cv2.INTER_LINEAR)
        if flip:  # BGR, or BGRA whose alpha goes
            want = cv2.cvtColor(want, cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(got, np.broadcast_to(want, (64, 64, 3)))  # grey fills the three channels
        assert (info.scale, info.pad_x, info.pad_y) == (scale, x, y)


def test_a_wide_image_is_resized_and_flipped_in_place(monkeypatch):
    """No intermediate array for a frame as wide as the canvas (a 16:9 video frame into a square input)."""
    canvas = np.zeros((64, 64, 3), np.uint8)
    written = []
    for name in ("resize", "cvtColor"):
        real = getattr(cv2, name)
        monkeypatch.setattr(cv2, name, lambda *a, _real=real, **k: written.append(
            np.shares_memory(result := _real(*a, **k), canvas)) or result)
    letterbox_into(canvas, np.zeros((72, 128, 3), np.uint8), bgr_to_rgb=True)
    assert written == [True, True]
    written.clear()
    letterbox_into(canvas, np.zeros((128, 72, 3), np.uint8), bgr_to_rgb=True)  # a column band: via copies
    assert written == [False, False]
