import torch

from yoloq.models.loss import DetectionLoss, complete_iou
from yoloq.models.registry import architecture_config
from yoloq.models.yolo import Model


def tiny_detector(nc: int = 4) -> Model:
    cfg = architecture_config("yolov7-tiny")
    cfg["nc"], cfg["width_multiple"] = nc, 0.25
    return Model(cfg)


TARGETS = torch.tensor([[0, 1, 0.50, 0.50, 0.30, 0.20],
                        [0, 3, 0.20, 0.70, 0.06, 0.08],
                        [1, 0, 0.75, 0.25, 0.50, 0.40]])


def test_loss_decreases_on_a_tiny_batch():
    torch.manual_seed(0)
    model = tiny_detector().train()
    loss_fn = DetectionLoss(model, img_size=96)
    images = torch.rand(2, 3, 96, 96)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        loss, parts = loss_fn(model(images), TARGETS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert parts.shape == (3,) and torch.isfinite(parts).all()
    assert losses[-1] < 0.75 * losses[0]


def test_image_without_objects_is_safe():
    model = tiny_detector().train()
    loss_fn = DetectionLoss(model, img_size=96)
    loss, parts = loss_fn(model(torch.rand(1, 3, 96, 96)), torch.zeros(0, 6))
    loss.backward()
    assert parts[0] == 0 and parts[2] == 0 and parts[1] > 0  # objectness only
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_every_target_is_matched_to_some_cell():
    model = tiny_detector().train()
    loss_fn = DetectionLoss(model, img_size=96)
    levels = model(torch.rand(2, 3, 96, 96))
    matched = set()
    for i, level in enumerate(levels):
        match = loss_fn._match(level, TARGETS, i)
        if match is not None:
            b, _, gj, gi, box, classes = match
            matched.update(zip(b.tolist(), classes.tolist()))
            ny, nx = level.shape[2:4]
            assert (gj >= 0).all() and (gj < ny).all() and (gi >= 0).all() and (gi < nx).all()
            assert (box[:, :2] > -0.5).all() and (box[:, :2] < 1.5).all()  # centre near its cell
    assert matched == {(0, 1), (0, 3), (1, 0)}


def test_complete_iou_of_identical_and_disjoint_boxes():
    a = torch.tensor([[5.0, 5.0, 2.0, 4.0]])
    assert torch.allclose(complete_iou(a, a), torch.ones(1), atol=1e-5)
    far = torch.tensor([[50.0, 50.0, 2.0, 4.0]])
    assert complete_iou(a, far).item() < 0
