"""`RegionEncoder`: an image in, (boxes, region features, whole-image feature) out, the way eq. (1) wants them.

Glossary: B images in a batch, P proposals of one image, K kept boxes (K <= max_boxes), R = K + 1 regions
(row 0 = the whole image), D feature size, S = cfg.image_size (network input side), W x H original image size.

Recipe for backend "rcnn" (offline R-CNN, the default):
1. selective search (OpenCV, fast mode) on a copy of the image whose longer side is cfg.ss_size px, plus a
   fixed grid of boxes (cfg.grid_levels, `proposals.grid_boxes`) when the learned head scores them;
2. one CNN pass on the whole image warped to S x S; every proposal is RoIAligned on the last feature map and
   goes through the network's own head and ImageNet classifier (Fast R-CNN style scoring);
3. objectness: cfg.objectness="learned" (the default) scores each proposal with the package's box-quality head
   of the backbone (`boxhead.BoxHead` on the feature map of step 2: an estimate of the box's IoU with an
   object, fitted on Flickr8k train Entities boxes; a head fitted with box regression first moves every
   proposal onto the object it overlaps, cfg.box_refine steps); backbones without a head, and untrained weights, fall back
   to "entropy": 1 - H(p)/log 1000, the normalised entropy of the ImageNet class distribution p of the box (a
   box the classifier is sure about, whatever the class, looks like one object); "maxprob" (max softmax
   probability) is the other alternative;
4. proposals near-identical to the whole image (IoU > cfg.max_whole_iou) are dropped, the rest sorted by
   objectness, class-agnostic NMS at cfg.nms_iou, the best cfg.max_boxes kept; slots NMS leaves free are
   filled with the best suppressed boxes (recall matters more than purity downstream);
5. region features: pooling "warp" (default, R-CNN) crops each kept box from the image, warps it to
   warp_size x warp_size and runs the CNN on it, features = global pool; pooling "roialign" (Fast R-CNN) reuses
   the pooled features of step 2 (cheaper, but colour and shape are read far less well from them).
Row 0 is always the whole image, box [0, 0, W, H], feature = the global pool of step 2 (= the image feature).
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from dvsa.data.distributed import resolve_device
from PIL import Image
from torchvision.ops import roi_align

from .backbones import LITE_WEIGHTS, Backbone, build_backbone
from .boxhead import (
    BACKBONE_WEIGHTS,
    BoxHead,
    file_id,
    load_box_head,
    shipped_box_head,
    shipped_head_path,
)
from .config import RegionConfig
from .images import to_rgb
from .proposals import (
    Detectron2Proposer,
    FasterRCNNProposer,
    filter_boxes,
    prepare_given,
    rcnn_proposals,
    select_boxes,
)

PRODUCER = "align.regions"
Result = tuple[np.ndarray, np.ndarray, np.ndarray]  # boxes float32 [R,4], regions float32 [R,D], image [D]


def prepare(image: Image.Image, cfg: RegionConfig, boxes: np.ndarray | None = None) -> dict:
    """The CPU half of encoding (no model needed, so it runs in DataLoader workers).

    image: RGB PIL image (W x H). boxes: optional float [P, 4] given boxes in its pixels. Returns a dict with
    ``size`` (W, H); ``net`` uint8 [3, S, S] (the image warped to the network input); ``work`` uint8 [3, h, w]
    (a copy with longer side <= cfg.max_side, for warping boxes and for detectors; None when unused) with
    ``work_scale`` (h/H, w/W); ``proposals`` float32 [P, 4] original pixels (None = a detector finds them);
    ``given`` True when the boxes are to be kept as they are (no scoring).
    """
    if image.mode != "RGB":
        raise ValueError(f"prepare() needs an RGB image, got mode {image.mode}")
    w, h = image.size
    s = cfg.image_size
    net = torch.from_numpy(np.asarray(image.resize((s, s), Image.BILINEAR), np.uint8).copy()).permute(2, 0, 1)
    needs_work = (cfg.pooling == "warp" or (boxes is None and cfg.backend in ("frcnn", "detectron2"))
                  or (boxes is None and cfg.backend == "rcnn" and cfg.score_pooling == "warp"))
    work, work_scale = None, (1.0, 1.0)
    if needs_work:
        f = min(1.0, cfg.max_side / max(w, h))
        ww, wh = max(1, round(w * f)), max(1, round(h * f))
        im = image if (ww, wh) == (w, h) else image.resize((ww, wh), Image.BILINEAR)
        work = torch.from_numpy(np.asarray(im, np.uint8).copy()).permute(2, 0, 1)
        work_scale = (wh / h, ww / w)
    given = boxes is not None or cfg.backend == "given"
    if boxes is not None:
        proposals = prepare_given(np.asarray(boxes, np.float32), cfg, w, h)
    elif cfg.backend == "given":
        proposals = np.zeros((0, 4), np.float32)  # no boxes given: the whole image only
    elif cfg.backend == "rcnn":
        proposals = rcnn_proposals(np.asarray(image, np.uint8), cfg)
    else:
        proposals = None
    return {"size": (w, h), "net": net, "work": work, "work_scale": work_scale, "proposals": proposals, "given": given}


def net_scale(size: tuple[int, int], image_size: int) -> np.ndarray:
    """float32 [4]: the factors that take an image's [x1, y1, x2, y2] from its own pixels (size = (W, H)) to the
    network input's, where the image is warped to image_size x image_size."""
    w, h = size
    return np.array([image_size / w, image_size / h, image_size / w, image_size / h], np.float32)


def objectness(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """[K, C] logits -> [K] score in 0..1: max softmax probability, or 1 - normalised entropy."""
    logp = torch.log_softmax(logits.float(), dim=1)
    if kind == "maxprob":
        return logp.max(dim=1).values.exp()
    ent = -(logp.exp() * logp).sum(dim=1)
    return 1.0 - ent / np.log(logits.shape[1])


class RegionEncoder:
    """Boxes and CNN features for images, per a `RegionConfig`; rebuildable from a feature store's `meta`."""

    def __init__(self, cfg: RegionConfig, backbone: Backbone | None = None, box_head: BoxHead | None = None):
        """`box_head`: a head to score proposals with in place of the package's (tests, experiments); it is
        only used with cfg.objectness "learned"."""
        self.cfg = cfg
        # "cuda" -> this rank's GPU (cuda:LOCAL_RANK); a clear error when there is none
        self.device = resolve_device(cfg.device)
        self.backbone = (backbone or build_backbone(cfg.backbone, cfg.pretrained)).eval().to(self.device)
        if cfg.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        mean = torch.tensor(self.backbone.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.backbone.std).view(1, 3, 1, 1)
        self._mean, self._std = mean.to(self.device), std.to(self.device)
        self._detector = None
        self.box_head, self.box_head_id = None, None
        if cfg.objectness == "learned" and cfg.backend == "rcnn":
            if box_head is not None:
                self.box_head, self.box_head_id = box_head.eval(), "given"
            elif cfg.box_head:
                self.box_head = load_box_head(cfg.box_head, cfg.backbone, BACKBONE_WEIGHTS.get(cfg.backbone, ""))
                self.box_head_id = file_id(cfg.box_head)
            else:
                self.box_head = shipped_box_head(cfg.backbone, cfg.pretrained)
                if self.box_head is None:
                    if cfg.pretrained:  # untrained weights (tests): entropy, silently
                        warnings.warn(f"objectness 'learned': the package has no box head for {cfg.backbone}; "
                                      "scoring proposals by entropy", stacklevel=2)
                else:
                    self.box_head_id = file_id(shipped_head_path(cfg.backbone))
            if self.box_head is not None:
                self.box_head = self.box_head.to(self.device)

    # ------------------------------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: RegionConfig) -> "RegionEncoder":
        return cls(cfg)

    @classmethod
    def from_meta(cls, meta: dict, **overrides) -> "RegionEncoder":
        """The encoder that produced a feature store (its meta.json), e.g. to featurise new images the same way.

        `overrides` set run-time fields (device, batch_size ...) or another box backend for new images (a store
        of given boxes has none for new images: ``backend="rcnn"``).
        """
        if meta.get("producer") != PRODUCER or "region_config" not in meta:
            raise ValueError(
                f"this feature store was made by {meta.get('producer', 'an unknown producer')!r}, not by "
                f"{PRODUCER}; its encoder cannot be rebuilt to featurise new images"
            )
        return cls(RegionConfig.from_dict(meta["region_config"], **overrides))

    @property
    def dim(self) -> int:
        return int(self.backbone.dim)

    @property
    def meta(self) -> dict:
        """JSON dict describing the features (the feature store's meta; also stored in generator checkpoints)."""
        weights = (f"{LITE_WEIGHTS[self.cfg.backbone][2]} (ImageNet-1k, offline package)"
                   if self.cfg.backbone in LITE_WEIGHTS else "torchvision IMAGENET1K_V1")
        head = {"box_head": self.box_head_id} if self.box_head_id else {}  # absent from stores without one
        return {
            **head,
            "producer": PRODUCER,
            "dim": self.dim,
            "dtype": self.cfg.dtype,
            "whole_image_row": 0,
            "box_format": "xyxy pixels of the original image",
            "weights": weights if self.cfg.pretrained else "untrained",
            "region_config": self.cfg.recipe(),
        }

    # -------------------------------------------------------------------------------------------- encoding
    def encode(self, image: Image.Image, boxes=None) -> Result:
        """One RGB PIL image (optionally with given boxes [P, 4] px) -> (boxes float32 [R, 4] (row 0 = whole image),
        regions float32 [R, D], image_feature float32 [D])."""
        return self.encode_batch([prepare(to_rgb(image), self.cfg, boxes)])[0]

    def _autocast(self):
        if self.cfg.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _to_input(self, uint8: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,S,S] (or float 0..255) -> normalised float on the device."""
        x = uint8.to(self.device, non_blocking=True).float() / 255.0
        x = (x - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def _detect(self, items: list[dict]) -> None:
        """Fill proposals + scores of items whose boxes come from a detector (frcnn / detectron2)."""
        todo = [it for it in items if it["proposals"] is None]
        if not todo:
            return
        if self._detector is None:
            cls = FasterRCNNProposer if self.cfg.backend == "frcnn" else Detectron2Proposer
            self._detector = cls(self.cfg, self.device)
        found = self._detector([it["work"].float().div(255.0) for it in todo])
        for it, (boxes, scores) in zip(todo, found):
            sy, sx = it["work_scale"]
            b = boxes / np.array([sx, sy, sx, sy], np.float32)
            w, h = it["size"]
            b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
            b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
            keep = filter_boxes(b, self.cfg, w, h)
            it["proposals"], it["scores"] = b[keep], scores[keep]

    def _warp_features(self, items: list[dict], kept: list[np.ndarray]) -> list[torch.Tensor]:
        """R-CNN: crop every kept box from its image, warp to warp_size^2, run the CNN. -> per image [K_b, D]."""
        if not items:
            return []
        ws = self.cfg.warp_size
        crops = []
        for it, boxes in zip(items, kept):
            if len(boxes) == 0:
                crops.append(torch.zeros(0, 3, ws, ws))
                continue
            sy, sx = it["work_scale"]
            b = torch.from_numpy(boxes * np.array([sx, sy, sx, sy], np.float32))
            img = it["work"].float().unsqueeze(0)  # [1,3,h,w] 0..255
            crops.append(roi_align(img, [b], ws, spatial_scale=1.0, sampling_ratio=2, aligned=True))  # [K,3,ws,ws]
        allc = torch.cat(crops)  # [sum K, 3, ws, ws]
        feats = []
        chunk = self.cfg.crop_batch or (256 if self.device.type == "cuda" else 32)
        for i in range(0, len(allc), chunk):
            with self._autocast():
                feats.append(self.backbone(self._to_input(allc[i : i + chunk])).float().cpu())
        f = torch.cat(feats) if feats else torch.zeros(0, self.dim)
        return list(torch.split(f, [len(k) for k in kept]))

    def _refine(self, items: list[dict], fmap: torch.Tensor, net_boxes: list[torch.Tensor], scales: list[np.ndarray],
                mid: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The box head's logits of the proposals ([sum P_b]) and the proposals in network-input pixels, after
        cfg.box_refine steps of its box regression when it has one (`BoxHead.refine`). `scales`: per item, the
        [4] factors from original to network-input pixels. A moved proposal replaces its item's ``proposals``
        (original pixels) and goes through the size and whole-image filter again; given boxes are never moved."""
        s = float(self.cfg.image_size)
        steps = self.cfg.box_refine if self.box_head.cfg.regress else 0
        logits, moved = self.box_head.refine(fmap, net_boxes, s, mid, steps, self.cfg.box_refine_top)
        if not steps:
            return logits, net_boxes
        per_image = list(torch.split(logits, [len(b) for b in net_boxes]))
        for n, it in enumerate(items):
            if it["given"]:
                moved[n] = net_boxes[n]
                continue
            orig = (moved[n].cpu().numpy() / scales[n]).astype(np.float32)
            ok = filter_boxes(orig, self.cfg, *it["size"])
            it["proposals"] = orig[ok]
            idx = torch.from_numpy(ok).to(moved[n].device)
            moved[n], per_image[n] = moved[n][idx], per_image[n][idx]
        return torch.cat(per_image), moved

    @torch.inference_mode()
    def encode_batch(self, items: list[dict]) -> list[Result]:
        """Items from `prepare` -> one `Result` per item (see `encode`)."""
        if not items:
            return []
        cfg = self.cfg
        s = cfg.image_size
        self._detect(items)
        x = self._to_input(torch.stack([it["net"] for it in items]))  # [B,3,S,S]
        with self._autocast():
            mid = None
            if self.box_head is not None and self.box_head.cfg.mid_dim:
                fmap, mid = self.backbone.fmaps(x)  # [B,C,h,w], [B,C',2h,2w]
            else:
                fmap = self.backbone.fmap(x)  # [B,C,h,w]
            whole = self.backbone.global_feature(fmap).float()  # [B,D]
            # boxes of every image in network-input pixels (anisotropic: the image was warped to S x S)
            scales = [net_scale(it["size"], s) for it in items]
            # float32 even under fp16 autocast: box coordinates in fp16 lose up to half a pixel at S = 512
            net_boxes = [torch.from_numpy(it["proposals"] * f).to(self.device, torch.float32)
                         for it, f in zip(items, scales)]
            # learned objectness: the box head on the feature map, every image's proposals at once, [P_b] each;
            # a head that regresses first moves the proposals onto the objects they overlap (cfg.box_refine steps)
            learned: list[torch.Tensor] = []
            if self.box_head is not None:
                logits, net_boxes = self._refine(items, fmap.float(), net_boxes, scales, mid)
                learned = list(torch.split(logits.float(), [len(b) for b in net_boxes]))
            # every proposal's pooled feature, [P_b, D] each: the regions of pooling "roialign", and the entropy
            # objectness's input (unused with a box head and warped regions)
            per_image: list = [None] * len(items)
            if cfg.pooling != "warp" or self.box_head is None:
                pooled_feats = (
                    self.backbone.region_features(fmap, net_boxes).float()
                    if sum(len(b) for b in net_boxes)
                    else torch.zeros(0, self.dim, device=self.device)
                )  # [sum P, D]
                per_image = list(torch.split(pooled_feats, [len(b) for b in net_boxes]))
            # R-CNN scoring: every proposal of the images that need scores warped through the CNN, [P_b, D] each
            warped: dict[int, torch.Tensor] = {}
            if cfg.score_pooling == "warp" and self.box_head is None:
                todo = [n for n, it in enumerate(items) if not it["given"] and "scores" not in it]
                found = self._warp_features([items[n] for n in todo], [items[n]["proposals"] for n in todo])
                warped = dict(zip(todo, found))
            kept = []
            for n, (it, feats) in enumerate(zip(items, per_image)):
                p = it["proposals"]
                if it["given"]:
                    idx = np.arange(len(p))
                else:
                    if "scores" in it:  # detector scores
                        scores = it["scores"]
                    elif learned:
                        scores = learned[n].cpu().numpy()
                    else:
                        scored = warped[n].to(self.device) if n in warped else feats
                        scores = objectness(self.backbone.classify(scored), cfg.objectness).cpu().numpy()
                    idx = select_boxes(p, scores, cfg)
                kept.append(idx)
        kept_boxes = [it["proposals"][idx].reshape(-1, 4) for it, idx in zip(items, kept)]
        if cfg.pooling == "warp":
            rest = [n for n in range(len(items)) if n not in warped]  # the others warp only their kept boxes
            more = dict(zip(rest, self._warp_features([items[n] for n in rest], [kept_boxes[n] for n in rest])))
            region_feats = [warped[n][torch.from_numpy(kept[n])] if n in warped else more[n] for n in range(len(items))]
        else:
            region_feats = [f[torch.from_numpy(idx).to(f.device)].cpu() for f, idx in zip(per_image, kept)]
        out = []
        whole = whole.cpu()
        for it, b, f, g in zip(items, kept_boxes, region_feats, whole):
            w, h = it["size"]
            boxes = np.concatenate([np.array([[0, 0, w, h]], np.float32), b.astype(np.float32)])
            regions = torch.cat([g[None], f.float()]).numpy().astype(np.float32)
            out.append((boxes, regions, g.numpy().astype(np.float32)))
        return out
