"""The evaluator and run_eval on what the weights bring: Darknet's DIoU NMS judges boxes relative to each image,
a converted Darknet checkpoint with a non-square cfg is evaluated at its own (h, w), and a model whose classes
are the dataset's in another order is scored by name."""
import numpy as np
import pytest
import torch

from yolo_attn.eval import evaluate
from yolo_attn.eval import run as run_module
from yolo_attn.utils.checkpoint import load_checkpoint

from ..models.helpers import convert_darknet, write_wide_darknet
from .eval_fakes import NAMES, FakeDataset, FakeRecord, OracleModel, write_yolo_dataset

IMG = 96


def _close_pair_dataset() -> FakeDataset:
    """A 1000x250 image and a 250x1000 one, each with two boxes of one class overlapping by 70 of their 100 pixels
    across the short side: DIoU 0.408 relative to the image, 0.496 in the (evenly scaled) letterboxed input."""
    wide = np.array([[300.0, 50, 700, 150], [300, 80, 700, 180]], np.float32)
    records = [FakeRecord(None, boxes, np.zeros(2, np.int64), np.zeros(2, bool), f"img{i}", f"/fake/img{i}.jpg", h, w)
               for i, (boxes, h, w) in enumerate([(wide, 250, 1000), (wide[:, [1, 0, 3, 2]], 1000, 250)])]
    return FakeDataset(records, ["thing"])


def _evaluate_close_pairs(nms: str) -> dict:
    ds = _close_pair_dataset()
    predictions = [(a.boxes, a.labels, np.array([0.9, 0.8])) for a in ds.annotations]
    # both images in one batch: each is judged by its own shape
    return evaluate(OracleModel(ds, IMG, predictions), ds, img_size=IMG, batch_size=2, iou_threshold=0.45,
                    metrics=("voc12",), nms=nms, verbose=False)


def test_darknet_nms_judges_boxes_relative_to_each_image():
    """nms="darknet" keeps both boxes of each pair (0.408 < 0.45 relative to the image; judged in the input's
    pixels, 0.496, one would go), and maps them back; IoU NMS (IoU 0.54) keeps one of each pair."""
    ds = _close_pair_dataset()
    out = _evaluate_close_pairs("darknet")
    assert [len(det) for det in out["detections"]] == [2, 2]
    for det, ann in zip(out["detections"], ds.annotations):
        np.testing.assert_allclose(det[:, :4], ann.boxes, atol=0.05)
        np.testing.assert_allclose(det[:, 4], [0.9, 0.8], atol=1e-3)
    assert out["voc12_map50"] == pytest.approx(1.0)
    assert [len(det) for det in _evaluate_close_pairs("iou")["detections"]] == [1, 1]


@pytest.mark.parametrize("source", ["converted checkpoint", "darknet weights"])
def test_run_eval_runs_a_non_square_darknet_model_at_its_own_shape(tmp_path, monkeypatch, source):
    """A cfg of width=192 height=96 is evaluated on 96x192 inputs (meta input_shape), as Darknet's detector map
    runs it, not on squares of either side; from its .weights and from the checkpoint converted from them."""
    config = write_yolo_dataset(tmp_path / "ds", sizes=[(80, 160), (100, 180)])
    weights = write_wide_darknet(tmp_path, NAMES)
    if source == "converted checkpoint":
        weights = convert_darknet(weights)
        assert load_checkpoint(weights)["meta"]["input_shape"] == [96, 192]
    shapes = set()
    real = run_module.evaluate

    def spying(model, *args, **kwargs):
        model.register_forward_pre_hook(lambda module, inputs: shapes.add(tuple(inputs[0].shape[2:])))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(run_module, "evaluate", spying)
    result = run_module.run_eval(weights, config, metric=("voc07",), batch_size=2, device="cpu", workers=0,
                                 project=tmp_path / "runs")
    assert shapes == {(96, 192)}
    assert result["images"] == 2 and not result["skipped"]


def test_run_eval_scores_a_model_whose_classes_are_the_datasets_in_another_order_by_name(tmp_path, monkeypatch,
                                                                                        capsys):
    """A COCO JSON lists its classes by category id, which can order them otherwise than the model's names: the
    model's class channels are put in the dataset's order, so each class is scored as the one of its name."""
    from yolo_attn.models import build_model
    from yolo_attn.utils.checkpoint import make_meta, save_checkpoint

    config = write_yolo_dataset(tmp_path / "ds", num_images=1)  # disc, block
    torch.manual_seed(0)
    model = build_model(0, 2).eval()
    weights = tmp_path / "swapped.pt"
    save_checkpoint({"meta": make_meta(model, NAMES[::-1], img_size=64), "model": model.state_dict()}, weights)
    seen = []
    real = run_module.evaluate
    monkeypatch.setattr(run_module, "evaluate", lambda m, *a, **kw: seen.append(m) or real(m, *a, **kw))
    run_module.run_eval(weights, config, metric=("voc07",), device="cpu", project=tmp_path / "runs")
    assert "each is scored as the dataset's class of its name" in capsys.readouterr().err
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for got, raw in zip(seen[0](x), model(x)):
            got, raw = got.view(1, 3, 7, *got.shape[2:]), raw.view(1, 3, 7, *raw.shape[2:])
            torch.testing.assert_close(got[:, :, :5], raw[:, :, :5])
            torch.testing.assert_close(got[:, :, 5:], raw[:, :, [6, 5]])  # disc is the model's class 1
