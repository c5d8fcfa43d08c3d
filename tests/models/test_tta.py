"""Test-time augmentation: every view's boxes come back in the input's pixels (scaling and mirroring undone),
views pool before NMS, and bad settings are clear errors."""
import pytest
import torch

from yolo_attn.models import STRIDES, build_model, decode_outputs, postprocess
from yolo_attn.models.tta import DEFAULT_FLIPS, DEFAULT_SCALES, augmented_decode, check_views, view_shape

from .helpers import RectangleFinder


def _rectangle_batch(h: int, w: int, box) -> torch.Tensor:
    x1, y1, x2, y2 = box
    batch = torch.zeros(1, 3, h, w)
    batch[0, 0, y1:y2, x1:x2] = 1.0
    return batch


@pytest.mark.parametrize("shape", [(128, 128), (96, 160)])
def test_each_view_finds_the_rectangle_where_it_is_in_the_input(shape):
    """An off-centre rectangle seen at 1, 1.3 (mirrored) and 0.83 (sizes rounded to multiples of 32): each
    view's box, mapped back, lies on the rectangle within the blur of resizing. A view left mirrored or
    unscaled would be tens of pixels off."""
    box = (18, 22, 58, 70)
    batch = _rectangle_batch(*shape, box)
    model = RectangleFinder()
    for scale, flip in zip(DEFAULT_SCALES, DEFAULT_FLIPS):
        decoded = augmented_decode(model, batch, model.level_anchors(), STRIDES, model.scale_x_y, [scale], [flip])
        found = decoded[0][decoded[0, :, 4] > 0.5]
        assert len(found) == 1, (scale, flip)
        assert found[0, :4].tolist() == pytest.approx(box, abs=2.5), (scale, flip, found[0, :4].tolist())


def test_views_pool_their_rows_and_nms_keeps_one_box():
    box = (18, 22, 58, 70)
    batch = _rectangle_batch(128, 128, box)
    model = RectangleFinder()
    one = decode_outputs(model(batch), model.level_anchors(), STRIDES, model.scale_x_y)
    pooled = augmented_decode(model, batch, model.level_anchors(), STRIDES, model.scale_x_y)
    sizes = [view_shape((128, 128), s) for s in DEFAULT_SCALES]
    rows = sum((h // 32) * (w // 32) * 3 + (h // 16) * (w // 16) * 3 for h, w in sizes)
    assert pooled.shape == (1, rows, one.shape[-1])
    assert int((pooled[0, :, 4] > 0.5).sum()) == 3  # one box from each view ...
    kept = postprocess(pooled, conf_threshold=0.25, iou_threshold=0.45)[0]
    assert len(kept) == 1  # ... merged into one by NMS
    assert kept[0, :4].tolist() == pytest.approx(box, abs=2.5)


def test_the_identity_view_is_plain_decoding():
    torch.manual_seed(0)
    batch = torch.rand(2, 3, 96, 128)
    model = build_model(0, 3).eval()
    with torch.no_grad():
        plain = decode_outputs(model(batch), model.level_anchors())
        single = augmented_decode(model, batch, model.level_anchors(), scales=[1.0], flips=[False])
    torch.testing.assert_close(single, plain)


def test_view_shapes_round_to_the_stride():
    assert view_shape((416, 416), 1.3) == (544, 544)
    assert view_shape((416, 416), 0.83) == (352, 352)
    assert view_shape((256, 416), 0.67) == (160, 288)
    assert view_shape((64, 64), 0.2) == (32, 32)  # never below one stride


@pytest.mark.parametrize("scales, flips, message", [
    ([1.0, 0.8], [False], "2 scales but 1 flips"),
    ([], [], "at least one scale"),
    ([1.0, 0.0], [False, True], "must be in"),
])
def test_bad_views_are_clear_errors(scales, flips, message):
    with pytest.raises(ValueError, match=message):
        check_views(scales, flips)
