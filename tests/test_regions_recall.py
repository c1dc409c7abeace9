"""Box recall by size on hand-made boxes, the box-quality head (batched vs one box, file, backbone tie), the
candidate grid, and ``dvsa bench boxes`` on tiny synthetic scenes."""
import numpy as np
import pytest
import torch
from dvsa.align.regions import RegionConfig, RegionEncoder
from dvsa.align.regions.boxhead import (
    BoxHead,
    BoxHeadConfig,
    BoxHeadMismatch,
    decode_deltas,
    encode_deltas,
    load_box_head,
    save_box_head,
)
from dvsa.align.regions.config import LATE_FIELDS
from dvsa.align.regions.encoder import prepare
from dvsa.align.regions.fit_boxhead import FitConfig, train_head
from dvsa.align.regions.proposals import filter_boxes, grid_boxes, select_boxes
from dvsa.align.regions.recall import BoxRecall, image_objects, reached
from dvsa.data.records import ImageRecord, Region
from PIL import Image
from regions_fakes import _one_thread  # noqa: F401 (autouse fixture)


# ------------------------------------------------------------------------------------------------- recall
def test_reached_counts_iou_of_exactly_one_half():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    assert reached(gt, np.array([[0, 0, 10, 20]], np.float32)).tolist() == [True]  # IoU 100/200 = 0.5
    assert reached(gt, np.array([[0, 0, 10, 21]], np.float32)).tolist() == [False]  # 100/210
    assert reached(gt, np.zeros((0, 4), np.float32)).tolist() == [False]


def test_recall_by_size_on_hand_made_boxes():
    # one small (20x20), one medium (50x50), two large (100x100, 200x200) objects
    gt = np.array([[0, 0, 20, 20], [100, 100, 150, 150], [0, 200, 100, 300], [300, 0, 500, 200]], np.float32)
    areas = np.array([400, 2500, 10000, 40000], np.float64)
    cands = np.array([[0, 0, 20, 20], [100, 100, 150, 150], [0, 200, 100, 300], [0, 0, 1, 1]], np.float32)
    kept = np.array([[0, 0, 500, 300], [100, 100, 150, 150], [0, 200, 100, 300]], np.float32)
    rec = BoxRecall()
    rec.add(gt, areas, cands, kept)
    r = rec.result()
    assert {c: r[c]["n"] for c in r} == {"all": 4, "small": 1, "medium": 1, "large": 2, ">=32²": 3}
    assert r["all"]["candidates"] == 0.75 and r["all"]["kept"] == 0.5
    assert r["small"]["candidates"] == 1.0 and r["small"]["kept"] == 0.0
    assert r["large"]["candidates"] == 0.5 and r["large"]["kept"] == 0.5
    assert r[">=32²"]["kept"] == pytest.approx(2 / 3)


def test_image_objects_counts_a_repeated_box_once_by_its_source_area():
    rec = ImageRecord(id="a", path="a.jpg", regions=[Region(box=[0, 0, 10, 10], source_area=5000.0),
                                                     Region(box=[0, 0, 10, 10], source_area=5000.0),
                                                     Region(box=[5, 5, 20, 30])])
    boxes, areas = image_objects(rec)
    assert boxes.shape == (2, 4) and areas.tolist() == [5000.0, 15 * 25]


# ---------------------------------------------------------------------------------------------------- grid
def test_grid_boxes_cover_the_image_in_fractions():
    g = grid_boxes(3, 0.25, 0.5, 2.0)
    assert g.dtype == np.float32 and (g >= 0).all() and (g <= 1 + 1e-6).all()
    w, h = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    assert (np.maximum(w / h, h / w) <= 2 + 1e-6).all()
    assert np.isclose(g, [0, 0, 1, 1]).all(1).sum() == 1  # the whole image once
    # sides 0.25, 0.5, 1; 0.25 x 0.25 slides in steps of 0.125: 7 x 7 positions
    assert (np.isclose(w, 0.25) & np.isclose(h, 0.25)).sum() == 49
    assert grid_boxes(0, 0.25, 0.5, 2.0).shape == (0, 4)


def test_late_fields_rebuild_old_stores_as_they_were_made():
    old = {k: v for k, v in RegionConfig(**LATE_FIELDS).recipe().items()}
    assert not set(LATE_FIELDS) & set(old)  # an old store's recipe lacks them ...
    rebuilt = RegionConfig.from_dict(old)
    assert all(getattr(rebuilt, k) == v for k, v in LATE_FIELDS.items())  # ... and rebuilds with their old values


# ---------------------------------------------------------------------------------------------------- head
def _head(in_dim=16, seed=0, regress=False):
    torch.manual_seed(seed)
    head = BoxHead(BoxHeadConfig(in_dim=in_dim, proj=4, hidden=8, context=2.0, regress=regress), stride=32)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.5)
    return head.eval()


def _boxes(k, side, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g) * side * 0.7
    return torch.cat([xy, torch.minimum(xy + 8 + torch.rand(k, 2, generator=g) * side * 0.5,
                                         torch.tensor(float(side)))], 1)


@pytest.mark.parametrize("mid_dim,regress", [(0, False), (5, False), (5, True)])
def test_head_batched_scores_equal_the_one_box_twin(mid_dim, regress):
    torch.manual_seed(0)
    head = BoxHead(BoxHeadConfig(in_dim=16, proj=4, hidden=8, bins=3, mid_dim=mid_dim, regress=regress), stride=32)
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.5)
    fmap, mid = torch.rand(2, 16, 7, 7) * 6, (torch.rand(2, 5, 14, 14) * 6 if mid_dim else None)
    fmap, mid = torch.cat([fmap, fmap[:1]]), (None if mid is None else torch.cat([mid, mid[:1]]))
    boxes = [_boxes(9, 224, 1), _boxes(5, 224, 2), _boxes(0, 224, 3)]  # the third image has no boxes
    with torch.no_grad():
        fast = head.logits(fmap, boxes, 224.0, mid)
        slow = [head.score_slow(fmap[i], b, 224.0, None if mid is None else mid[i])
                for i, bs in enumerate(boxes) for b in bs]
    assert fast.shape == (14,)
    np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        every = head.outputs(fmap, boxes, 224.0, mid)
        every_slow = torch.stack([head.outputs_slow(fmap[i], b, 224.0, None if mid is None else mid[i])
                                  for i, bs in enumerate(boxes) for b in bs])
        every_concat = head.outputs_concat(fmap, boxes, 224.0, mid)
    assert every.shape == (14, 5 if regress else 1)
    np.testing.assert_allclose(every.numpy(), every_slow.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(every_concat.numpy(), every_slow.numpy(), rtol=1e-4, atol=1e-4)
    if mid_dim:
        with pytest.raises(ValueError, match="pass mid"):
            head.logits(fmap, boxes, 224.0)


def test_offsets_decode_what_they_encode():
    p, g = _boxes(50, 224, 4), _boxes(50, 224, 5)
    d = encode_deltas(p, g)
    torch.testing.assert_close(decode_deltas(p, d), g, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(decode_deltas(p, torch.zeros(50, 4)), p)
    # by hand: a 10 x 20 box whose object is shifted right by 5 px and twice as tall
    one = encode_deltas(torch.tensor([[0.0, 0, 10, 20]]), torch.tensor([[5.0, -10, 15, 30]]))
    torch.testing.assert_close(one, torch.tensor([[0.5 / 0.1, 0.0, 0.0, float(np.log(2)) / 0.2]]))


def test_refine_moves_boxes_step_after_step_by_the_predicted_offsets():
    head = _head(seed=2, regress=True)
    fmap, boxes = torch.rand(2, 16, 7, 7) * 4, [_boxes(7, 224, 6), _boxes(3, 224, 7)]
    with torch.no_grad():
        logits, moved = head.refine(fmap, boxes, 224.0, steps=2)
        b = torch.cat(boxes)
        once = decode_deltas(b, head.outputs(fmap, boxes, 224.0)[:, 1:]).clamp(0, 224)
        out2 = head.outputs(fmap, list(torch.split(once, [7, 3])), 224.0)
        twice = decode_deltas(once, out2[:, 1:]).clamp(0, 224)
        torch.testing.assert_close(torch.cat(moved), twice)
        torch.testing.assert_close(logits, out2[:, 0])  # the logits of the boxes the last step moved
        l0, same = head.refine(fmap, boxes, 224.0, steps=0)
        torch.testing.assert_close(l0, head.logits(fmap, boxes, 224.0))
        assert all(torch.equal(a, c) for a, c in zip(same, boxes))
        _, kept = _head(seed=2).refine(fmap, boxes, 224.0, steps=2)  # a head without regression moves nothing
        assert all(torch.equal(a, c) for a, c in zip(kept, boxes))
        # only the 3 best-scored boxes of each image move (the second image has just 3: all of them)
        lt, mt = head.refine(fmap, boxes, 224.0, steps=2, top=3)
        first = head.logits(fmap, boxes, 224.0)
        best = set(first[:7].topk(3).indices.tolist()) | {7, 8, 9}
        for i in range(10):
            row = torch.cat(mt)[i]
            if i in best:
                torch.testing.assert_close(row, twice[i])
                torch.testing.assert_close(lt[i], out2[i, 0])
            else:
                assert torch.equal(row, b[i]) and torch.equal(lt[i], first[i])


def test_lite0_fmaps_is_fmap_and_the_stride_16_map():
    from dvsa.align.regions.backbones import build_backbone

    torch.manual_seed(0)
    bb = build_backbone("efficientnet_lite0", pretrained=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fmap, mid = bb.fmaps(x)
        torch.testing.assert_close(fmap, bb.fmap(x))
    assert mid.shape == (1, bb.mid_dim, 4, 4)


def test_head_file_round_trip_and_backbone_tie(tmp_path):
    head = _head()
    path = save_box_head(head, tmp_path / "h.pt", "efficientnet_lite0", "w0", {"images": 3})
    back = load_box_head(path, "efficientnet_lite0", "w0")
    fmap, boxes = torch.rand(1, 16, 7, 7), [_boxes(6, 224, 3)]
    with torch.no_grad():
        assert torch.equal(head.logits(fmap, boxes, 224.0), back.logits(fmap, boxes, 224.0))
    with pytest.raises(BoxHeadMismatch, match="fitted on efficientnet_lite0"):
        load_box_head(path, "resnet50", "w0")
    with pytest.raises(BoxHeadMismatch):
        load_box_head(path, "efficientnet_lite0", "other weights")
    torch.save({"format": "something else"}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a box head"):
        load_box_head(tmp_path / "x.pt", "efficientnet_lite0", "w0")


def test_train_head_is_deterministic_and_learns_a_separable_target():
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(6):
        fmap = torch.rand(16, 7, 7, generator=g)
        boxes = _boxes(40, 224, 10 + i)
        target = (boxes[:, 2] - boxes[:, 0] > 60).float()  # wide boxes are "objects"
        samples.append({"fmap": fmap.half(), "boxes": boxes.numpy(), "target": target.numpy()})
    fit = FitConfig(epochs=30, batch_images=3, lr=3e-2)
    cfg = BoxHeadConfig(in_dim=16, proj=4, hidden=8)
    a, b = train_head(samples, 224.0, 32, fit, cfg, log=lambda *_: None), train_head(samples, 224.0, 32, fit, cfg, log=lambda *_: None)
    with torch.no_grad():
        la = a.logits(torch.stack([s["fmap"].float() for s in samples]), [torch.from_numpy(s["boxes"]) for s in samples], 224.0)
        lb = b.logits(torch.stack([s["fmap"].float() for s in samples]), [torch.from_numpy(s["boxes"]) for s in samples], 224.0)
    assert torch.equal(la, lb)
    t = torch.from_numpy(np.concatenate([s["target"] for s in samples]))
    assert ((la > 0).float() == t).float().mean() > 0.9


def test_train_head_learns_the_offsets_to_the_object():
    g = torch.Generator().manual_seed(1)
    samples = []
    for i in range(6):
        boxes = _boxes(40, 224, 20 + i)
        w = boxes[:, 2] - boxes[:, 0]
        gt = boxes + torch.stack([0.2 * w, 0 * w, 0.2 * w, 0 * w], 1)  # every object a fifth of a width right
        samples.append({"fmap": torch.rand(16, 7, 7, generator=g).half(), "boxes": boxes.numpy(),
                        "target": np.full(40, 0.6, np.float32), "gt": gt.numpy()})
    fit = FitConfig(epochs=40, batch_images=3, lr=3e-2, regress=True)
    head = train_head(samples, 224.0, 32, fit, BoxHeadConfig(in_dim=16, proj=4, hidden=8, regress=True),
                      log=lambda *_: None)
    with torch.no_grad():
        out = head.outputs(torch.stack([s["fmap"].float() for s in samples]),
                           [torch.from_numpy(s["boxes"]) for s in samples], 224.0)
    np.testing.assert_allclose(out[:, 1].numpy(), 0.2 / 0.1, atol=0.3)  # x offset 0.2 w, in DELTA_STD units
    np.testing.assert_allclose(out[:, 2:].numpy(), 0.0, atol=0.3)


def _scene(w=96, h=80):
    a = np.full((h, w, 3), 120, np.uint8)
    a[10:40, 12:50] = (220, 30, 30)
    a[45:75, 55:90] = (30, 30, 220)
    return Image.fromarray(a)


def test_encoder_ranks_proposals_by_the_given_head():
    cfg = RegionConfig(pretrained=False, image_size=64, warp_size=48, ss_size=64, max_boxes=4, grid_levels=3,
                       grid_min_frac=0.3, objectness="learned")
    torch.manual_seed(0)
    enc = RegionEncoder(cfg)
    head = _head(in_dim=enc.dim)
    learned = RegionEncoder(cfg, backbone=enc.backbone, box_head=head)
    assert enc.box_head is None and learned.meta["box_head"] == "given" and "box_head" not in enc.meta
    it = prepare(_scene(), cfg)
    boxes = learned.encode_batch([it])[0][0]
    with torch.inference_mode():
        x = learned._to_input(it["net"][None])
        net = torch.from_numpy(it["proposals"] * np.array([64 / 96, 64 / 80, 64 / 96, 64 / 80], np.float32))
        scores = head.logits(learned.backbone.fmap(x).float(), [net], 64.0).numpy()
    np.testing.assert_array_equal(boxes[1:], it["proposals"][select_boxes(it["proposals"], scores, cfg)])


def test_encoder_ranks_the_boxes_a_regressing_head_moved():
    cfg = RegionConfig(pretrained=False, image_size=64, warp_size=48, ss_size=64, max_boxes=4, grid_levels=3,
                       grid_min_frac=0.3, objectness="learned", box_refine=2)
    torch.manual_seed(0)
    enc = RegionEncoder(cfg)
    head = _head(in_dim=enc.dim, seed=4, regress=True)
    with torch.no_grad():
        head.mlp[-1].weight[1:] *= 0.02  # small moves: every box shifts, few leave the scene
        head.mlp[-1].bias[1:] = torch.tensor([0.3, -0.3, -0.2, 0.1])
    learned = RegionEncoder(cfg, backbone=enc.backbone, box_head=head)
    it = prepare(_scene(), cfg)
    proposed = it["proposals"].copy()
    boxes = learned.encode_batch([it])[0][0]
    f = np.array([64 / 96, 64 / 80, 64 / 96, 64 / 80], np.float32)
    with torch.inference_mode():
        fmap = learned.backbone.fmap(learned._to_input(it["net"][None])).float()
        logits, moved = head.refine(fmap, [torch.from_numpy(proposed * f)], 64.0, steps=2, top=cfg.box_refine_top)
    moved = (moved[0].numpy() / f).astype(np.float32)
    ok = filter_boxes(moved, cfg, 96, 80)
    np.testing.assert_array_equal(it["proposals"], moved[ok])  # the candidates the item reports are the moved ones
    expect = moved[ok][select_boxes(moved[ok], logits.numpy()[ok], cfg)]
    np.testing.assert_allclose(boxes[1:], expect, atol=1e-4)
    assert len(boxes) > 1 and not np.isin(boxes[1:, 0], proposed[:, 0]).all()
    still = RegionEncoder(RegionConfig(**{**cfg.__dict__, "box_refine": 0}), backbone=enc.backbone, box_head=head)
    it0 = prepare(_scene(), still.cfg)
    np.testing.assert_array_equal(it0["proposals"], proposed)
    still.encode_batch([it0])
    np.testing.assert_array_equal(it0["proposals"], proposed)  # no step: the proposals as they were


def test_a_head_file_in_the_config_ranks_like_the_given_head_and_names_itself_in_the_meta(tmp_path):
    from dvsa.align.regions.boxhead import BACKBONE_WEIGHTS, file_id
    from dvsa.data.errors import CheckpointError

    cfg = RegionConfig(pretrained=False, image_size=64, warp_size=48, ss_size=64, max_boxes=4, grid_levels=3,
                       grid_min_frac=0.3, objectness="learned")
    torch.manual_seed(0)
    enc = RegionEncoder(cfg)
    head = _head(in_dim=enc.dim, seed=3)
    path = save_box_head(head, tmp_path / "mine.pt", "efficientnet_lite0", BACKBONE_WEIGHTS["efficientnet_lite0"], {})
    by_file = RegionEncoder(RegionConfig(**{**cfg.__dict__, "box_head": str(path)}), backbone=enc.backbone)
    given = RegionEncoder(cfg, backbone=enc.backbone, box_head=head)
    it = prepare(_scene(), by_file.cfg)
    assert len(it["proposals"]) > len(prepare(_scene(), cfg)["proposals"])  # a head file brings the grid in
    np.testing.assert_array_equal(by_file.encode_batch([it])[0][0], given.encode_batch([it])[0][0])
    assert by_file.meta["box_head"] == file_id(path) and file_id(path).startswith("mine.pt sha256:")
    assert "box_head" not in RegionConfig().recipe()  # the package's head: old stores' recipes still match
    with pytest.raises(FileNotFoundError, match="box head not found"):
        RegionEncoder(RegionConfig(**{**cfg.__dict__, "box_head": str(tmp_path / "none.pt")}), backbone=enc.backbone)
    (tmp_path / "junk.pt").write_text("not a head")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable dvsa box head"):
        RegionEncoder(RegionConfig(**{**cfg.__dict__, "box_head": str(tmp_path / "junk.pt")}), backbone=enc.backbone)


# ---------------------------------------------------------------------------------------------------- bench
def test_bench_boxes_runs_on_tiny_synthetic_scenes(tmp_path, capsys):
    from dvsa.data.synthetic import write_synthetic
    from dvsa.scripts.bench_boxes import main

    root = write_synthetic(tmp_path / "synth", n_train=3, n_val=1, n_test=0, size=64)
    argv = ["--data", f"synthetic:{root}:train", "--n-images", "2", "--variant", "tiny:max_boxes=2,ss_mode=single",
            "--set", "region.pretrained=false", "--set", "region.image_size=64", "--set", "region.ss_size=48"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for name in ("old", "new", "tiny"):
        assert f"| synthetic | train | {name} | 2 |" in out
    assert ">=32² cand / kept" in out and "images/s" in out


def test_the_shipped_head_belongs_to_efficientnet_lite0():
    from dvsa.align.regions.boxhead import (
        BACKBONE_WEIGHTS,
        shipped_box_head,
        shipped_head_path,
    )

    path = shipped_head_path("efficientnet_lite0")
    head = load_box_head(path, "efficientnet_lite0", BACKBONE_WEIGHTS["efficientnet_lite0"])
    assert head.cfg.in_dim == 1280 and head.cfg.mid_dim == 112 and head.cfg.regress  # it moves boxes too
    with pytest.raises(BoxHeadMismatch):
        load_box_head(path, "resnet50", BACKBONE_WEIGHTS["efficientnet_lite0"])
    assert shipped_box_head("resnet50", True) is None  # no head: the encoder scores by entropy
    assert shipped_box_head("efficientnet_lite0", False) is None  # untrained weights: the same
    fit = torch.load(path, weights_only=True)["fit"]
    assert fit["split"] == "train" and len(fit["images"]) == fit["fit"]["images"]
