"""RegionEncoder: shapes and conventions, fast pooling vs RoIAlign, NMS selection, meta round trip."""
import numpy as np
import pytest
import torch
from dvsa.align.regions import RegionConfig, RegionEncoder
from dvsa.align.regions.backbones import box_grid_cells, box_mean_pool, cell_edges
from dvsa.align.regions.boxhead import cells
from dvsa.align.regions.encoder import net_scale
from dvsa.align.regions.proposals import select_boxes
from PIL import Image
from regions_fakes import _one_thread  # noqa: F401 (autouse fixture)
from torchvision.ops import roi_align


def _scene(w=96, h=80, seed=0):
    rng = np.random.default_rng(seed)
    a = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
    a[10:40, 12:50] = (220, 30, 30)
    a[45:75, 55:90] = (30, 30, 220)
    return Image.fromarray(a)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return RegionEncoder(RegionConfig(pretrained=False, image_size=64, warp_size=48, ss_size=64, max_boxes=5))


def test_encode_shapes_and_whole_image_row(encoder):
    boxes, regions, image = encoder.encode(_scene())
    assert boxes.dtype == np.float32 and regions.dtype == np.float32 and image.dtype == np.float32
    assert boxes.shape[1] == 4 and regions.shape == (len(boxes), encoder.dim) and 1 <= len(boxes) <= 6
    np.testing.assert_array_equal(boxes[0], [0, 0, 96, 80])
    np.testing.assert_allclose(regions[0], image)
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert (boxes[:, [0, 2]] <= 96).all() and (boxes[:, [1, 3]] <= 80).all() and (boxes >= 0).all()


def test_given_boxes_kept_in_order(encoder):
    given = np.array([[40, 40, 90, 78], [10, 10, 50, 40]], np.float32)
    boxes, regions, _ = encoder.encode(_scene(), boxes=given)
    np.testing.assert_allclose(boxes[1:], given)
    assert len(regions) == 3


def test_box_mean_pool_is_the_limit_of_roi_align():
    torch.manual_seed(0)
    for h, w, stride in [(7, 7, 32), (5, 9, 16), (1, 1, 32)]:
        fm = torch.randn(2, 6, h, w, dtype=torch.float64)
        size = torch.tensor([w * stride, h * stride], dtype=torch.float64)
        boxes = []
        for _ in range(2):
            xy = torch.rand(15, 2, dtype=torch.float64) * size * 0.8
            b = torch.cat([xy, torch.minimum(xy + torch.rand(15, 2, dtype=torch.float64) * size * 0.5 + 1, size)], 1)
            b[0] = torch.cat([torch.zeros(2, dtype=torch.float64), size])
            boxes.append(b)
        fast = box_mean_pool(fm, boxes, stride)
        slow = roi_align(fm, boxes, 1, spatial_scale=1 / stride, sampling_ratio=128, aligned=True).flatten(1)
        np.testing.assert_allclose(fast.numpy(), slow.numpy(), atol=2e-4)


def test_box_grid_cells_equal_pooling_every_cell():
    """The separable grid pool against box_mean_pool of each cell, on maps of several shapes (one cell, not
    square), boxes reaching past the map's border cells, and an image without boxes."""
    torch.manual_seed(1)
    for h, w, stride, bins in [(7, 7, 32, 3), (5, 9, 16, 2), (1, 1, 32, 3), (14, 14, 16, 1)]:
        fm = torch.randn(3, 6, h, w, dtype=torch.float64)
        size = torch.tensor([w * stride, h * stride], dtype=torch.float64)
        boxes = []
        for n in (12, 0, 7):
            xy = torch.rand(n, 2, dtype=torch.float64) * size * 0.9
            b = torch.cat([xy, torch.minimum(xy + torch.rand(n, 2, dtype=torch.float64) * size * 0.6 + 1, size)], 1)
            if n:
                b[0] = torch.cat([torch.zeros(2, dtype=torch.float64), size])  # the whole map: past the centres
            boxes.append(b)
        fast = torch.cat([box_grid_cells(fm[i], b, stride, bins).transpose(2, 3).reshape(-1, 6)  # cells row-major
                          for i, b in enumerate(boxes)])
        slow = box_mean_pool(fm, [cells(b, bins) for b in boxes], stride)
        assert fast.shape == (19 * bins * bins, 6)
        np.testing.assert_allclose(fast.numpy(), slow.numpy(), rtol=1e-5, atol=1e-5)  # box edges in float32


def _slow_select(boxes, scores, iou_thr, k):
    """Greedy NMS, one box at a time."""
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], *boxes[i]))
    keep = []
    for i in order:
        ok = True
        for j in keep:
            x1, y1 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            x2, y2 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0, x2 - x1) * max(0, y2 - y1)
            a = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
            if inter / (a(boxes[i]) + a(boxes[j]) - inter) > iou_thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep[:k]


def test_select_boxes_matches_greedy_nms():
    rng = np.random.default_rng(1)
    for _ in range(20):
        xy = rng.uniform(0, 80, (30, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (30, 2))], 1).astype(np.float32)
        scores = rng.integers(0, 5, 30).astype(np.float64)  # many ties
        cfg = RegionConfig(nms_iou=0.4, max_boxes=7)
        assert select_boxes(boxes, scores, cfg).tolist() == _slow_select(boxes.tolist(), scores, 0.4, 7)


def test_select_boxes_nms_shortcut_is_exact(monkeypatch):
    import dvsa.align.regions.proposals as proposals

    rng = np.random.default_rng(2)
    for n_top in (5, 12, 40):
        xy = rng.uniform(0, 80, (60, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (60, 2))], 1).astype(np.float32)
        scores = rng.integers(0, 9, 60).astype(np.float64)
        for k in (3, 7, 30):
            cfg = RegionConfig(nms_iou=0.4, max_boxes=k)
            full = select_boxes(boxes, scores, cfg).tolist()
            with monkeypatch.context() as m:
                m.setattr(proposals, "NMS_TOP", n_top)
                assert proposals.select_boxes(boxes, scores, cfg).tolist() == full


def test_meta_round_trip(encoder):
    meta = encoder.meta
    again = RegionEncoder.from_meta(meta)
    assert again.meta == meta and again.dim == encoder.dim == meta["dim"] == 1280
    again.backbone.load_state_dict(encoder.backbone.state_dict())
    a, b = encoder.encode(_scene()), again.encode(_scene())
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5)
    with pytest.raises(ValueError, match="bottomup"):
        RegionEncoder.from_meta({"producer": "bottomup", "dim": 2048})


def test_warp_scoring_matches_one_proposal_at_a_time(encoder):
    """score_pooling="warp": boxes chosen by the CNN on each warped proposal, features reused for the kept ones."""
    from dvsa.align.regions.encoder import objectness, prepare

    cfg = RegionConfig(**{**encoder.cfg.recipe(), "score_pooling": "warp"})
    enc = RegionEncoder(cfg, backbone=encoder.backbone)
    image = _scene(seed=3)
    item = prepare(image, cfg)
    boxes, regions, _ = enc.encode_batch([item])[0]
    props = item["proposals"]
    assert len(props) > cfg.max_boxes  # the selection has something to choose from
    with torch.inference_mode():  # slow twin: one proposal per CNN pass
        one = torch.cat([enc._warp_features([item], [props[i : i + 1]])[0] for i in range(len(props))])
        scores = objectness(enc.backbone.classify(one), cfg.objectness).numpy()
    keep = select_boxes(props, scores, cfg)
    np.testing.assert_allclose(boxes[1:], props[keep])
    np.testing.assert_allclose(regions[1:], one[torch.from_numpy(keep)].numpy(), atol=1e-4)
    # the roialign scorer of the default recipe chooses from the same proposals
    default = encoder.encode_batch([prepare(image, encoder.cfg)])[0][0]
    assert len(default) == len(boxes)


def test_late_recipe_fields_are_left_out_at_their_default():
    assert "score_pooling" not in RegionConfig().recipe()  # stores written before the field still match
    assert RegionConfig(score_pooling="warp").recipe()["score_pooling"] == "warp"
    assert RegionConfig.from_dict(RegionConfig().recipe()).score_pooling == "roialign"
    with pytest.raises(ValueError, match="score_pooling"):
        RegionConfig(score_pooling="crop")


def test_crop_batch_changes_speed_not_features(encoder):
    """crop_batch is a run-time field: one crop per CNN pass gives the features of the default chunking."""
    from dvsa.align.regions.encoder import prepare

    one = RegionEncoder(RegionConfig(**{**encoder.cfg.recipe(), "crop_batch": 1}), backbone=encoder.backbone)
    assert one.meta == encoder.meta  # the store's recipe does not see it
    a = encoder.encode_batch([prepare(_scene(seed=s), encoder.cfg) for s in range(3)])
    b = one.encode_batch([prepare(_scene(seed=s), one.cfg) for s in range(3)])
    for x, y in zip(a, b):
        for u, v in zip(x, y):
            np.testing.assert_allclose(u, v, atol=1e-4)


def test_cell_edges_and_net_scale_by_hand():
    x, y = cell_edges(torch.tensor([[0.0, 0.0, 30.0, 60.0], [10.0, 5.0, 16.0, 8.0]]), 3)
    assert torch.allclose(x, torch.tensor([[0.0, 10.0, 20.0, 30.0], [10.0, 12.0, 14.0, 16.0]]))
    assert torch.allclose(y, torch.tensor([[0.0, 20.0, 40.0, 60.0], [5.0, 6.0, 7.0, 8.0]]))
    # the second box's middle cell, as `cells` lists it (row-major, box after box)
    assert cells(torch.tensor([[10.0, 5.0, 16.0, 8.0]]), 3)[4].tolist() == [12.0, 6.0, 14.0, 7.0]
    scale = net_scale((448, 112), 224)
    assert scale.dtype == np.float32 and scale.tolist() == [0.5, 2.0, 0.5, 2.0]
