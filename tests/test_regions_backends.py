"""Backbones and box backends: offline weights by position (+ ImageNet sanity), BatchNorm folding, every backbone,
R-CNN warping against PIL crops, Faster R-CNN (untrained), detectron2 (skipped without it), given-box files."""
import copy
import json

import numpy as np
import pytest
import torch
from dvsa.align.regions import RegionConfig, RegionEncoder
from dvsa.align.regions.backbones import (
    build_backbone,
    efficientnet_lite_weights_path,
    fuse_conv_bn,
)
from dvsa.align.regions.proposals import load_given_boxes
from PIL import Image
from regions_fakes import _one_thread  # noqa: F401 (autouse fixture)


def _scene(w=120, h=90):
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 2, yy * 2, (xx + yy)], -1).clip(0, 255).astype(np.uint8)
    a[10:50, 15:60] = (230, 40, 40)
    a[50:85, 70:115] = (40, 60, 220)
    return Image.fromarray(a)


@pytest.mark.parametrize("name,tensors", [("efficientnet_lite0", 296), ("efficientnet_lite1", 386),
                                          ("efficientnet_lite2", 386)])
def test_offline_weights_are_an_exact_copy_by_position(name, tensors):
    file_values = list(torch.load(efficientnet_lite_weights_path(name), map_location="cpu", weights_only=True).values())
    net = build_backbone(name, pretrained=True, fuse=False).net
    own = list(net.state_dict().values())
    assert len(own) == len(file_values) == tensors
    assert all(torch.equal(a, b) for a, b in zip(own, file_values))


def test_imagenet_sanity_on_coco_crops(shared_datasets):
    """The pretrained classifier names COCO objects: an elephant crop -> an elephant class, a pizza -> pizza."""
    ann = json.loads((shared_datasets / "coco-mini/annotations/instances_train2017.json").read_text())
    cats = {c["id"]: c["name"] for c in ann["categories"]}
    ids = {i["file_name"]: i["id"] for i in ann["images"]}
    for backbone in ("efficientnet_lite0", "efficientnet_lite2"):
        _names_coco_crops(shared_datasets, ann, cats, ids, build_backbone(backbone))


def _names_coco_crops(shared_datasets, ann, cats, ids, bb):
    for name, cat, want in [("000000054718.jpg", "elephant", {101, 385, 386}), ("000000121647.jpg", "pizza", {963})]:
        a = max((a for a in ann["annotations"] if a["image_id"] == ids[name] and cats[a["category_id"]] == cat),
                key=lambda a: a["area"])
        x, y, w, h = a["bbox"]
        im = Image.open(shared_datasets / "coco-mini/train2017" / name).convert("RGB")
        crop = np.asarray(im.crop((x, y, x + w, y + h)).resize((224, 224), Image.BILINEAR), np.float32) / 255
        t = (torch.from_numpy(crop).permute(2, 0, 1)[None] - 0.498) / 0.502
        with torch.inference_mode():
            p = bb.classify(bb(t)).softmax(1)[0]
        assert int(p.argmax()) in want and float(p.max()) > 0.3, (name, p.topk(3))


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2", "resnet50"])
def test_batchnorm_folding_keeps_outputs(name):
    torch.manual_seed(0)
    plain = build_backbone(name, pretrained=False, fuse=False)
    for m in plain.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    fused = fuse_conv_bn(copy.deepcopy(plain))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        a, b = plain.fmap(x), fused.fmap(x)
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * a.abs().max().item())


@pytest.mark.parametrize("backbone,dim,pooling", [("resnet50", 2048, "roialign"), ("resnet50", 2048, "warp"),
                                                  ("vgg16", 4096, "roialign")])
def test_every_backbone_and_pooling(backbone, dim, pooling):
    torch.manual_seed(0)
    cfg = RegionConfig(backbone=backbone, pooling=pooling, pretrained=False, image_size=64, warp_size=64,
                       ss_size=48, max_boxes=3)
    boxes, regions, image = RegionEncoder(cfg).encode(_scene())
    assert regions.shape == (len(boxes), dim) and image.shape == (dim,) and np.isfinite(regions).all()
    assert 1 < len(boxes) <= 4


def test_warp_matches_pil_crops():
    """R-CNN pooling: each box's feature is the CNN's feature of that crop warped to warp_size (twin: PIL)."""
    enc = RegionEncoder(RegionConfig(pooling="warp", warp_size=96, image_size=96, max_boxes=2))
    yy, xx = np.mgrid[0:90, 0:120]
    texture = np.stack([np.sin(xx / 3.0), np.cos(yy / 4.0), np.sin((xx + yy) / 5.0)], -1)
    image = Image.fromarray((np.asarray(_scene(), np.float32) * 0.6 + 50 * (texture + 1)).clip(0, 255).astype(np.uint8))
    given = np.array([[12, 8, 62, 52], [68, 47, 117, 88]], np.float32)
    _, regions, _ = enc.encode(image, boxes=given)
    bb = enc.backbone
    twins = []
    for x1, y1, x2, y2 in given:
        crop = np.asarray(image.crop((x1, y1, x2, y2)).resize((96, 96), Image.BILINEAR), np.float32) / 255
        t = ((torch.from_numpy(crop).permute(2, 0, 1)[None] - 0.498) / 0.502).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            twins.append(bb(t)[0].numpy())
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    for k in range(2):
        assert cos(regions[k + 1], twins[k]) > 0.95
        assert cos(regions[k + 1], twins[k]) > cos(regions[k + 1], twins[1 - k]) + 0.05


def test_frcnn_backend_untrained():
    torch.manual_seed(0)
    cfg = RegionConfig(backend="frcnn", frcnn_model="fasterrcnn_resnet50_fpn", frcnn_pretrained=False,
                       frcnn_min_score=0.0, frcnn_min_size=96, pretrained=False,
                       image_size=64, max_boxes=5, min_box_px=1, min_box_frac=0.0)
    boxes, regions, image = RegionEncoder(cfg).encode(_scene())
    assert 1 <= len(boxes) <= 6 and regions.shape == (len(boxes), 1280)
    assert (boxes[:, [0, 2]] <= 120).all() and (boxes[:, [1, 3]] <= 90).all()


def test_detectron2_backend_or_clear_message():
    cfg = RegionConfig(backend="detectron2", pretrained=False, image_size=64)
    try:
        import detectron2  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="needs detectron2"):
            RegionEncoder(cfg).encode(_scene())
        pytest.skip("detectron2 is not installed: the clear message is checked, the adapter is not")
    boxes, regions, _ = RegionEncoder(cfg).encode(_scene())
    assert regions.shape == (len(boxes), 1280)


def test_given_box_files(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps({"a": [[1, 2, 3, 4]], "b": []}))
    got = load_given_boxes(tmp_path / "b.json")
    assert got["a"].tolist() == [[1, 2, 3, 4]] and got["b"].shape == (0, 4)
    coco = {"images": [{"id": 7}, {"id": 8}], "annotations": [
        {"image_id": 7, "bbox": [10, 20, 30, 40]}, {"image_id": 7, "bbox": [0, 0, 5, 5], "iscrowd": 1}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    got = load_given_boxes(tmp_path / "c.json")
    assert got["7"].tolist() == [[10, 20, 40, 60]] and got["8"].shape == (0, 4)
    (tmp_path / "bad.json").write_text(json.dumps({"a": [[1, 2, 3]]}))
    with pytest.raises(ValueError, match="bad.json"):
        load_given_boxes(tmp_path / "bad.json")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    cpu = RegionEncoder(RegionConfig(pretrained=True, image_size=96, max_boxes=4))
    gpu = RegionEncoder(RegionConfig(pretrained=True, image_size=96, max_boxes=4, device="cuda"))
    amp = RegionEncoder(RegionConfig(pretrained=True, image_size=96, max_boxes=4, device="cuda", amp=True))
    given = np.array([[15, 10, 60, 50], [70, 50, 115, 85]], np.float32)
    a, b, c = (e.encode(_scene(), boxes=given) for e in (cpu, gpu, amp))
    np.testing.assert_allclose(b[1], a[1], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(c[1], a[1], rtol=5e-2, atol=5e-2)
