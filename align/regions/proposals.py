"""Where boxes come from: selective search, torchvision Faster R-CNN, detectron2, or given boxes.

Every box here is float32 ``[x1, y1, x2, y2]`` in pixels of the ORIGINAL image (x2 > x1, y2 > y1). Glossary:
P proposals of one image, K kept boxes (K <= max_boxes).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision.models.detection as det
from dvsa.data.records import DataError, ImageRecord
from torchvision.ops import box_iou, nms

from .boxhead import has_head
from .config import RegionConfig

NMS_TOP = 1000  # select_boxes runs NMS on the best NMS_TOP boxes first (an exact shortcut, not a setting)


# ----------------------------------------------------------------------------------------------- box utilities
def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """[P,4] -> [P,4] clipped to the image."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    return b


def min_side(cfg: RegionConfig, width: int, height: int) -> float:
    """Smallest accepted box side in pixels."""
    return max(cfg.min_box_px, cfg.min_box_frac * min(width, height))


def filter_boxes(boxes: np.ndarray, cfg: RegionConfig, width: int, height: int) -> np.ndarray:
    """Indices [P'] of boxes that are big enough and not a near-copy of the whole image."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    m = min_side(cfg, width, height)
    ok = ((b[:, 2] - b[:, 0]) >= m) & ((b[:, 3] - b[:, 1]) >= m)
    if len(b):
        whole = torch.tensor([[0.0, 0.0, width, height]])
        ok &= box_iou(torch.from_numpy(b), whole)[:, 0].numpy() <= cfg.max_whole_iou
    return np.flatnonzero(ok)


def select_boxes(boxes: np.ndarray, scores: np.ndarray, cfg: RegionConfig) -> np.ndarray:
    """Indices [K] into `boxes`: class-agnostic NMS at cfg.nms_iou, best first, at most cfg.max_boxes.

    Ties in score are broken by the box coordinates, so the result does not depend on the proposal order.
    """
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    s = np.asarray(scores, np.float64).reshape(-1)
    if len(b) == 0 or cfg.max_boxes == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], -s))  # score desc, then coordinates
    # torchvision's nms keeps a stable order for equal scores only by accident; give it strictly ranked scores
    rank = np.empty(len(b), np.float32)
    rank[order] = np.arange(len(b), 0, -1, dtype=np.float32)
    # greedy NMS keeps a box only for higher-ranked kept boxes, so the best `top` boxes alone give the same first
    # max_boxes whenever they hold that many (thousands of grid boxes: ~10x faster); otherwise all of them
    top = order[:NMS_TOP]
    keep = top[nms(torch.from_numpy(b[top]), torch.from_numpy(rank[top]), cfg.nms_iou).numpy()][: cfg.max_boxes]
    if len(keep) < cfg.max_boxes and len(top) < len(b):
        keep = nms(torch.from_numpy(b), torch.from_numpy(rank), cfg.nms_iou).numpy()[: cfg.max_boxes]
    if len(keep) < cfg.max_boxes:  # free slots: the best suppressed boxes (recall over purity)
        suppressed = np.setdiff1d(order, keep, assume_unique=True)
        suppressed = suppressed[np.argsort(-rank[suppressed], kind="stable")]
        keep = np.concatenate([keep, suppressed[: cfg.max_boxes - len(keep)]])
    return keep.astype(np.int64)


# ---------------------------------------------------------------------------------------- selective search
def selective_search(rgb: np.ndarray, cfg: RegionConfig) -> np.ndarray:
    """Selective search (OpenCV ximgproc) on a copy scaled to longer side cfg.ss_size.

    rgb: uint8 [H, W, 3]. Returns float32 [P, 4] boxes in pixels of `rgb`, de-duplicated and sorted by
    coordinates (OpenCV ranks proposals with a random number generator; the set is what matters here).
    """
    # OpenCV's own thread pool stays off: a process whose pool has run cannot safely fork DataLoader workers
    # (they deadlock), and parallelism here comes from the workers anyway.
    cv2.setNumThreads(1)
    h, w = rgb.shape[:2]
    s = cfg.ss_size / max(h, w)
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.resize(np.ascontiguousarray(rgb[:, :, ::-1]), (sw, sh), interpolation=interp)
    cv2.setRNGSeed(0)
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(small)
    if cfg.ss_mode == "fast":
        ss.switchToSelectiveSearchFast()
    else:
        ss.switchToSingleStrategy()
    rects = ss.process()  # [P, 4] x, y, w, h in the small image
    if len(rects) == 0:
        return np.zeros((0, 4), np.float32)
    rects = np.unique(np.asarray(rects, np.int64).reshape(-1, 4), axis=0)
    fx, fy = w / sw, h / sh
    boxes = np.stack(
        [rects[:, 0] * fx, rects[:, 1] * fy, (rects[:, 0] + rects[:, 2]) * fx, (rects[:, 1] + rects[:, 3]) * fy], 1
    ).astype(np.float32)
    return clip_boxes(boxes, w, h)


def grid_boxes(levels: int, min_frac: float, step: float, max_ratio: float) -> np.ndarray:
    """A fixed set of boxes in image fractions (0..1), float32 [G, 4]: every pair of a width and a height from
    `levels` sides spaced geometrically from `min_frac` to 1 (pairs with aspect ratio > `max_ratio` left out),
    each slid over the image in steps of `step` x its side (the last position touching the far edge).
    levels 0 = none. Coordinates are exact fractions, so the set does not depend on the image."""
    if levels <= 0:
        return np.zeros((0, 4), np.float32)
    sides = np.geomspace(min_frac, 1.0, levels) if levels > 1 else np.ones(1)
    out = []
    for sw in sides:
        for sh in sides:
            if max(sw / sh, sh / sw) > max_ratio + 1e-9:
                continue
            xs = np.linspace(0.0, 1.0 - sw, max(1, int(np.ceil((1.0 - sw) / (sw * step) - 1e-9)) + 1))
            ys = np.linspace(0.0, 1.0 - sh, max(1, int(np.ceil((1.0 - sh) / (sh * step) - 1e-9)) + 1))
            x, y = np.meshgrid(xs, ys)  # [ny, nx]
            out.append(np.stack([x.ravel(), y.ravel(), x.ravel() + sw, y.ravel() + sh], 1))
    return np.concatenate(out).astype(np.float32)


def grid_in_use(cfg: RegionConfig) -> bool:
    """True when the grid is part of the candidates: grid_levels > 0 and a learned head scores them (the
    package's, or the file of cfg.box_head)."""
    return cfg.grid_levels > 0 and cfg.objectness == "learned" and has_head(cfg.backbone, cfg.pretrained, cfg.box_head)


def rcnn_proposals(rgb: np.ndarray, cfg: RegionConfig, grid: bool | None = None) -> np.ndarray:
    """Candidates of the rcnn backend, float32 [P, 4]: selective-search boxes that pass the size filter (at
    most cfg.max_proposals of them), then the fixed grid of cfg.grid_levels (`grid_boxes`) that passes it too.

    The grid (thousands of boxes) is added only when the learned box head scores them (`grid_in_use`): the
    ImageNet head's entropy would cost one 1000-class product per box and ranks plain grid boxes poorly.
    `grid` True / False forces it on / off (fitting the head: `fit_boxhead`)."""
    h, w = rgb.shape[:2]
    boxes = selective_search(rgb, cfg)
    boxes = boxes[filter_boxes(boxes, cfg, w, h)]
    if len(boxes) > cfg.max_proposals:  # keep the larger ones: small fragments are the least object-like
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes = boxes[np.sort(np.argsort(-area, kind="stable")[: cfg.max_proposals])]
    use = grid_in_use(cfg) if grid is None else grid
    grid = grid_boxes(cfg.grid_levels if use else 0, cfg.grid_min_frac, cfg.grid_step,
                      cfg.grid_max_ratio)
    if len(grid):
        grid = clip_boxes(grid * np.array([w, h, w, h], np.float32), w, h)
        boxes = np.concatenate([boxes, grid[filter_boxes(grid, cfg, w, h)]])
    return boxes


# ----------------------------------------------------------------------------------------------- given boxes
def given_boxes_of(record: ImageRecord) -> np.ndarray:
    """A record's annotated regions as float32 [P, 4]."""
    return np.asarray([r.box for r in record.regions], np.float32).reshape(-1, 4)


def load_given_boxes(path: str | Path) -> dict[str, np.ndarray]:
    """Boxes per image id from a JSON file: ``{image_id: [[x1, y1, x2, y2], ...]}``, or a COCO instances file
    (``{"images": ..., "annotations": [{"image_id", "bbox": [x, y, w, h]}]}``, crowd boxes skipped)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(str(path), f"cannot read boxes JSON: {e}") from None
    out: dict[str, list] = {}
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        for image in data["images"]:
            out.setdefault(str(image["id"]), [])
        for n, a in enumerate(data["annotations"]):
            if a.get("iscrowd", 0):
                continue
            try:
                x, y, w, h = (float(v) for v in a["bbox"])
            except (KeyError, TypeError, ValueError):
                raise DataError(str(path), f"annotation #{n} has no valid bbox [x, y, w, h]") from None
            out.setdefault(str(a["image_id"]), []).append([x, y, x + w, y + h])
    elif isinstance(data, dict):
        for k, v in data.items():
            arr = np.asarray(v, np.float32)
            if arr.size and (arr.ndim != 2 or arr.shape[1] != 4):
                raise DataError(str(path), f"image {k!r}: boxes must be a list of [x1, y1, x2, y2]")
            out[str(k)] = arr.reshape(-1, 4).tolist()
    else:
        raise DataError(str(path), "expected {image_id: [[x1, y1, x2, y2], ...]} or a COCO instances file")
    return {k: np.asarray(v, np.float32).reshape(-1, 4) for k, v in out.items()}


def prepare_given(boxes: np.ndarray, cfg: RegionConfig, width: int, height: int) -> np.ndarray:
    """Given boxes clipped to the image, degenerate ones (< 1 px) dropped, given order kept, at most max_boxes."""
    b = clip_boxes(boxes, width, height)
    b = b[((b[:, 2] - b[:, 0]) >= 1) & ((b[:, 3] - b[:, 1]) >= 1)]
    return b[: cfg.max_boxes]


# --------------------------------------------------------------------------------------------- detectors
class FasterRCNNProposer:
    """torchvision Faster R-CNN (COCO) as a box source: boxes with scores, class-agnostic."""

    def __init__(self, cfg: RegionConfig, device: torch.device):
        builders = {
            "fasterrcnn_resnet50_fpn": (det.fasterrcnn_resnet50_fpn, det.FasterRCNN_ResNet50_FPN_Weights),
            "fasterrcnn_resnet50_fpn_v2": (det.fasterrcnn_resnet50_fpn_v2, det.FasterRCNN_ResNet50_FPN_V2_Weights),
        }
        if cfg.frcnn_model not in builders:
            raise ValueError(f"unknown frcnn_model {cfg.frcnn_model!r}; choose one of {', '.join(builders)}")
        builder, weights = builders[cfg.frcnn_model]
        if cfg.frcnn_pretrained:
            try:
                model = builder(weights=weights.DEFAULT, min_size=cfg.frcnn_min_size)
            except Exception as e:
                raise RuntimeError(
                    f"{cfg.frcnn_model}: torchvision could not download or find its COCO weights "
                    f"({type(e).__name__}: {e}). Put them in {torch.hub.get_dir()}/checkpoints, use backend rcnn "
                    "(offline), or frcnn_pretrained=False for an untrained detector"
                ) from e
        else:
            model = builder(weights=None, weights_backbone=None, min_size=cfg.frcnn_min_size)
        model.roi_heads.score_thresh = cfg.frcnn_min_score
        self.model = model.eval().to(device)
        self.device = device

    @torch.inference_mode()
    def __call__(self, images: list[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        """images: float [3, H, W] in 0..1 -> per image (boxes [P, 4] in those pixels, scores [P])."""
        out = self.model([im.to(self.device) for im in images])
        return [(o["boxes"].float().cpu().numpy(), o["scores"].float().cpu().numpy()) for o in out]


class Detectron2Proposer:
    """detectron2 `DefaultPredictor` as a box source (optional: needs `import detectron2`)."""

    def __init__(self, cfg: RegionConfig, device: torch.device):
        try:  # optional, built from source by those who want it: imported only when asked for
            from detectron2 import model_zoo
            from detectron2.config import get_cfg
            from detectron2.engine import DefaultPredictor
        except ImportError as e:
            raise RuntimeError(
                "backend detectron2 needs detectron2 (build it from source: "
                "https://detectron2.readthedocs.io/en/latest/tutorials/install.html); "
                "use backend rcnn (offline) or frcnn instead"
            ) from e
        c = get_cfg()
        c.merge_from_file(model_zoo.get_config_file(cfg.detectron2_config))
        c.MODEL.WEIGHTS = cfg.detectron2_weights or model_zoo.get_checkpoint_url(cfg.detectron2_config)
        c.MODEL.DEVICE = str(device)
        c.MODEL.ROI_HEADS.SCORE_THRESH_TEST = cfg.frcnn_min_score
        self.predictor = DefaultPredictor(c)

    def __call__(self, images: list[torch.Tensor]) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for im in images:  # DefaultPredictor takes one BGR uint8 HWC array
            bgr = (im.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).flip(-1).cpu().numpy()
            inst = self.predictor(bgr)["instances"].to("cpu")
            out.append((inst.pred_boxes.tensor.numpy().astype(np.float32), inst.scores.numpy().astype(np.float32)))
        return out
