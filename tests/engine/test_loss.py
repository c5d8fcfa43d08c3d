"""Loss and target assignment."""
import pytest
import torch

from yolo_attn.engine.config import load_train_config
from yolo_attn.engine.loss import YoloLoss, bbox_ciou
from yolo_attn.engine.trainer import build_loss
from yolo_attn.models import build_model


def _outputs_for(model, targets, size, loss, shift=0.0):
    """Raw head maps that predict exactly the positives the loss assigns (optionally shifted)."""
    outs = [torch.full((1, model.num_anchors * (5 + model.num_classes), size // s, size // s), -12.0)
            for s in (32, 16)]
    preds = [o.view(1, model.num_anchors, -1, size // s, size // s).permute(0, 1, 3, 4, 2)
             for o, s in zip(outs, (32, 16))]
    t_xywh = torch.cat([(targets[:, 2:4] + targets[:, 4:6]) / 2, targets[:, 4:6] - targets[:, 2:4]], 1)
    assignments = loss._assign_multi(preds, targets, t_xywh) if loss.assigner == "multi" else \
        loss._assign_darknet(preds, targets, t_xywh)
    for level, (p, (b, a, gj, gi, tbox, tcls, _)) in enumerate(zip(preds, assignments)):
        s = loss.scale_x_y
        xy = ((tbox[:, :2] + shift + 0.5 * (s - 1)) / s).clamp(1e-4, 1 - 1e-4)
        p[b, a, gj, gi, 0:2] = torch.logit(xy)
        p[b, a, gj, gi, 2:4] = torch.log(tbox[:, 2:4] * loss.strides[level] / loss.anchors[level][a])
        p[b, a, gj, gi, 4] = 12.0
        p[b, a, gj, gi, 5 + tcls] = 12.0
    return outs


@pytest.mark.parametrize("assigner", ["multi", "darknet"])
def test_perfect_prediction_beats_a_shifted_one(assigner):
    model = build_model(0, 3)
    loss = YoloLoss(model.level_anchors(), 3, assigner)
    targets = torch.tensor([[0, 1, 40.0, 50.0, 120.0, 150.0], [0, 2, 200.0, 60.0, 230.0, 100.0]])
    perfect, _ = loss(_outputs_for(model, targets, 256, loss), targets)
    shifted, parts = loss(_outputs_for(model, targets, 256, loss, shift=0.3), targets)
    assert perfect < shifted
    assert parts["box"] > 0


@pytest.mark.parametrize("assigner", ["multi", "darknet"])
def test_empty_targets_give_a_finite_loss_and_gradients(assigner):
    model = build_model(2, 4)
    loss = YoloLoss(model.level_anchors(), 4, assigner)
    total, parts = loss(model(torch.rand(2, 3, 128, 128)), torch.zeros(0, 6))
    assert torch.isfinite(total)
    assert parts["box"] == 0 and parts["cls"] == 0 and parts["obj"] > 0
    total.backward()
    assert model.head_p4.pred.bias.grad.abs().sum() > 0


def test_multi_assignment_picks_shape_matching_anchors_and_neighbours():
    anchors = [[(81, 82), (135, 169), (344, 319)], [(23, 27), (37, 58), (81, 82)]]
    loss = YoloLoss(anchors, 1, "multi")
    # a 40 x 60 box centred at (76, 76): 2.375 cells at stride 32, 4.75 at stride 16
    targets = torch.tensor([[0, 0, 56.0, 46.0, 96.0, 106.0]])
    preds = [torch.zeros(1, 3, 8, 8, 6), torch.zeros(1, 3, 16, 16, 6)]
    t_xywh = torch.tensor([[76.0, 76.0, 40.0, 60.0]])
    (b5, a5, gj5, gi5, *_), (b4, a4, gj4, gi4, *_) = loss._assign_multi(preds, targets, t_xywh)
    # stride 32: ratios to 81x82 are within 4, to 135x169 (3.4, 2.8) too, to 344x319 not
    assert set(a5.tolist()) == {0, 1}
    # centre cell (2, 2); x and y fractions 0.375 < 0.5 -> left and upper neighbours
    assert {(j, i) for j, i in zip(gj5.tolist(), gi5.tolist())} == {(2, 2), (2, 1), (1, 2)}
    # stride 16: all three anchors fit; fraction 0.75 -> the right and lower neighbours
    assert set(a4.tolist()) == {0, 1, 2}
    assert {(j, i) for j, i in zip(gj4.tolist(), gi4.tolist())} == {(4, 4), (4, 5), (5, 4)}


def test_darknet_assignment_uses_the_single_best_anchor():
    anchors = [[(81, 82), (135, 169), (344, 319)], [(23, 27), (37, 58), (81, 82)]]
    loss = YoloLoss(anchors, 1, "darknet")
    targets = torch.tensor([[0, 0, 100.0, 100.0, 135.0, 160.0]])  # 35 x 60: best anchor 37 x 58
    preds = [torch.zeros(1, 3, 8, 8, 6), torch.zeros(1, 3, 16, 16, 6)]
    t_xywh = torch.tensor([[117.5, 130.0, 35.0, 60.0]])
    (b5, *_), (b4, a4, gj4, gi4, *_) = loss._assign_darknet(preds, targets, t_xywh)
    assert b5.numel() == 0
    assert a4.tolist() == [1] and gi4.tolist() == [7] and gj4.tolist() == [8]


def test_darknet_assignment_gives_no_positive_when_the_best_anchor_is_in_no_mask():
    """Darknet picks a box's best of all six anchors; with the official masks anchor 0 (10x14) is in neither
    head, so a box shaped like it has no positive (was: the best of the five used anchors, 23x27)."""
    model = build_model(0, num_classes=1)
    targets = torch.tensor([[0, 0, 100.0, 100.0, 109.0, 113.0]])  # 9 x 13
    preds = [torch.zeros(1, 3, 8, 8, 6), torch.zeros(1, 3, 16, 16, 6)]
    t_xywh = torch.tensor([[104.5, 106.5, 9.0, 13.0]])
    darknet = YoloLoss(model.level_anchors(), 1, "darknet", all_anchors=model.anchors)
    assert [level[0].numel() for level in darknet._assign_darknet(preds, targets, t_xywh)] == [0, 0]
    heads_only = YoloLoss(model.level_anchors(), 1, "darknet")
    assert [level[0].numel() for level in heads_only._assign_darknet(preds, targets, t_xywh)] == [0, 1]
    assert torch.equal(build_loss(load_train_config(None, {"assigner": "darknet"}), model).all_anchors,
                       darknet.all_anchors)


def test_ciou_is_one_for_identical_boxes_and_penalises_distance():
    box = torch.tensor([[10.0, 10.0, 4.0, 6.0]])
    assert torch.allclose(bbox_ciou(box, box), torch.ones(1), atol=1e-6)
    far = torch.tensor([[30.0, 10.0, 4.0, 6.0]])
    assert bbox_ciou(box, far) < 0


def _objectness_targets(loss, outputs, targets, monkeypatch):
    """The (B, A, H, W) objectness targets the loss builds per head, caught on their way into the BCE."""
    import torch.nn.functional as F

    caught, bce = [], F.binary_cross_entropy_with_logits

    def spy(logits, target, **kw):
        if target.dim() == 4:
            caught.append(target.clone())
        return bce(logits, target, **kw)

    monkeypatch.setattr(F, "binary_cross_entropy_with_logits", spy)
    loss(outputs, targets)
    return caught


def _expected_objectness(loss, outputs, targets):
    """Each assigned cell's target: the largest IoU (CIoU >= 0) of the boxes that claim it with the prediction
    there, from the assignment itself; zero-logit outputs predict (0.5, 0.5, anchor) in every cell."""
    import numpy as np

    preds = [o.view(o.shape[0], 3, -1, o.shape[2], o.shape[3]).permute(0, 1, 3, 4, 2) for o in outputs]
    t_xywh = torch.cat([(targets[:, 2:4] + targets[:, 4:6]) / 2, targets[:, 4:6] - targets[:, 2:4]], 1)
    expected = []
    for level, (p, (b, a, gj, gi, tbox, *_)) in enumerate(zip(preds, loss._assign_multi(preds, targets, t_xywh))):
        pbox = torch.cat([torch.full((len(a), 2), 0.5), loss.anchors[level][a] / loss.strides[level]], 1)
        score = bbox_ciou(pbox, tbox).clamp(0).numpy()
        flat = np.ravel_multi_index((b.numpy(), a.numpy(), gj.numpy(), gi.numpy()), p.shape[:4])
        cells = np.zeros(int(np.prod(p.shape[:4])), np.float32)
        np.maximum.at(cells, flat, score)
        expected.append(torch.from_numpy(cells).view(p.shape[:4]))
    return expected


@pytest.mark.parametrize("first", [0, 1])
def test_two_boxes_in_one_cell_the_better_fitting_sets_objectness(first, monkeypatch):
    model = build_model(0, 2)
    loss = YoloLoss(model.level_anchors(), 2, "multi")
    outputs = [torch.zeros(1, 21, 4, 4), torch.zeros(1, 21, 8, 8)]
    # both centred in stride-16 cell (2, 2); the first fits the zero-logit prediction there better
    boxes = torch.tensor([[0, 0, 20.0, 20.0, 60.0, 60.0], [0, 1, 26.0, 22.0, 42.0, 62.0]])
    alone = [_expected_objectness(loss, outputs, boxes[i:i + 1])[1][0, :, 2, 2] for i in (0, 1)]
    assert ((alone[0] > alone[1]) & (alone[1] > 0)).any()  # an anchor both claim, the first fitting better
    tobj = _objectness_targets(loss, outputs, boxes[[first, 1 - first]], monkeypatch)
    assert torch.allclose(tobj[1][0, :, 2, 2], torch.maximum(*alone))  # whichever box comes first
    for got, want in zip(tobj, _expected_objectness(loss, outputs, boxes)):
        assert torch.allclose(got, want)


def test_objectness_of_crowded_cells_is_the_best_box_whatever_the_threads(monkeypatch):
    """Tens of thousands of positives on a few hundred cells: big enough for PyTorch to split an indexed write
    across threads, where which of several writes to one cell lands last is not defined."""
    model = build_model(0, 2)
    loss = YoloLoss(model.level_anchors(), 2, "multi")
    g = torch.Generator().manual_seed(0)
    n, size = 12000, 256
    xy = torch.rand(n, 2, generator=g) * (size - 70)
    wh = 25 + torch.rand(n, 2, generator=g) * 40
    targets = torch.cat([torch.zeros(n, 1), torch.randint(0, 2, (n, 1), generator=g).float(), xy, xy + wh], 1)
    outputs = [torch.zeros(1, 21, size // 32, size // 32), torch.zeros(1, 21, size // 16, size // 16)]
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))
    try:
        tobj = _objectness_targets(loss, outputs, targets, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    for got, want in zip(tobj, _expected_objectness(loss, outputs, targets)):
        assert torch.equal(got, want)
