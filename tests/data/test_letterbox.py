"""Darknet's stretch resize (detector test without -letter_box) and the box mapping of both resize modes."""
import numpy as np
import pytest

from yolo_attn.data.letterbox import letterbox, letterbox_boxes, stretch, unletterbox_boxes


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


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_boxes_map_there_and_back(mode):
    image = np.zeros((90, 200, 3), np.uint8)
    _, info = letterbox(image, (128, 160)) if mode == "letterbox" else stretch(image, (128, 160))
    boxes = np.array([[10.0, 5.0, 50.0, 80.0], [0.0, 0.0, 200.0, 90.0]], np.float32)
    inside = letterbox_boxes(boxes, info)
    if mode == "stretch":  # x by 160 / 200, y by 128 / 90
        np.testing.assert_allclose(inside[0], [8.0, 5.0 * 128 / 90, 40.0, 80.0 * 128 / 90], rtol=1e-6)
    np.testing.assert_allclose(unletterbox_boxes(inside, info), boxes, atol=1e-4)
