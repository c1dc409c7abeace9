"""Fit the box-quality head (`boxhead.BoxHead`) on annotated boxes of training images, reproducibly.

The shipped head ``weights/boxhead_efficientnet_lite0.pt`` is made by

    python -m dvsa.align.regions.fit_boxhead --root ../shared/datasets/flickr8k --threads 2 \\
        --out align/regions/weights/boxhead_efficientnet_lite0.pt

i.e. `FitConfig` defaults: `images` Flickr8k TRAIN photos drawn with `seed` from the first 5,500 of the train
split (the last 500 are held out for choosing the region recipe: `held_out_records`), their Flickr30k
Entities boxes (the Entities folder beside the Flickr8k root), and the region recipe's candidates
(`RegionConfig` defaults: selective search + the grid, `proposals.rcnn_proposals(grid=True)`). Each candidate's target is its IoU with the best
annotated box of its image; the head is trained with binary cross-entropy on that soft target (its sigmoid
estimates the IoU) and, with `FitConfig.regress`, a smooth-L1 loss on the offsets of that box from the candidate
(`boxhead.encode_deltas`) for the candidates with IoU >= `regress_iou` (Fast R-CNN's box regression); Adam,
fixed seeds and `threads` torch threads, so the same machine, library versions and thread count give the same
file. Dev photos and other datasets are never read here.

Only Lite0's head is shipped; other backbones rank by entropy unless given one fitted for them: ``--backbone
efficientnet_lite2 --out boxhead_lite2.pt`` (26 min on the 2 CPU cores), then ``--set region.backbone=efficientnet_lite2 --set region.box_head=boxhead_lite2.pt``. Lite2 was
tried that way and not kept (docs/experiments.md, "EfficientNet-Lite2 regions").

Glossary: N images, K candidates of one image (at most `per_image` kept for training), C, h, w the feature map.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass

import numpy as np
import torch
from dvsa.data.catalog import load_dataset
from dvsa.data.records import ImageRecord
from torchvision.ops import box_iou

from .backbones import build_backbone
from .boxhead import BACKBONE_WEIGHTS, BoxHead, BoxHeadConfig, encode_deltas, save_box_head
from .config import RegionConfig
from .encoder import net_scale, prepare
from .images import load_rgb
from .proposals import rcnn_proposals


@dataclass
class FitConfig:
    images: int = 5500  # training photos, drawn with `seed` from the train split minus the held-out tail (all of it)
    held_out: int = 500  # the last `held_out` train photos are never used for fitting (they choose the recipe)
    per_image: int = 512  # candidates per image kept for training: those with IoU >= pos_iou (up to half), random rest
    pos_iou: float = 0.3
    regress: bool = True  # also fit the offsets to the overlapped annotated box (BoxHeadConfig.regress)
    regress_iou: float = 0.4  # candidates with IoU >= this with an annotated box learn its offsets
    regress_weight: float = 1.0  # weight of the smooth-L1 offset loss beside the BCE
    hidden: int = 128  # BoxHeadConfig.hidden
    epochs: int = 12
    batch_images: int = 16  # images per optimiser step
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    threads: int = 1  # torch threads (the same machine, versions and thread count give the same file)
    # the candidates the head learns from: selective search + a grid denser than the recipe's (8 sides, steps of
    # 0.4, aspect up to 4), so it sees every kind of box it may be asked to score
    grid_levels: int = 8
    grid_step: float = 0.4
    grid_max_ratio: float = 4.0


def held_out_records(records: list[ImageRecord], held_out: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(fitting pool, held-out tail) of the annotated TRAIN records, in reader order."""
    train = [r for r in records if r.split == "train" and r.regions]
    return train[:-held_out] if held_out else train, train[-held_out:] if held_out else []


def unique_gt(record: ImageRecord) -> np.ndarray:
    """The record's distinct annotated boxes, float32 [G, 4] original pixels."""
    return np.unique(np.asarray([g.box for g in record.regions], np.float32).reshape(-1, 4), axis=0)


@torch.inference_mode()
def image_sample(record: ImageRecord, cfg: RegionConfig, backbone, rng: np.random.Generator,
                 per_image: int, pos_iou: float = 0.3) -> dict:
    """One training image: {"fmap": float16 [C, h, w], "mid": float16 [C', h', w'] (the backbone's finer map,
    when it has one), "boxes": float32 [K, 4] in network-input pixels, "target": float32 [K] max IoU with an
    annotated box, "gt": float32 [K, 4] that box, in network-input pixels}."""
    image = load_rgb(record.path)
    it = prepare(image, RegionConfig(**{**cfg.__dict__, "backend": "given"}))  # the network input only
    x = (it["net"][None].float() / 255 - torch.tensor(backbone.mean).view(1, 3, 1, 1)) / torch.tensor(backbone.std).view(1, 3, 1, 1)
    fmap, mid = backbone.fmaps(x)
    props, gt = rcnn_proposals(np.asarray(image, np.uint8), cfg, grid=True), unique_gt(record)
    iou, which = np.zeros(0, np.float32), np.zeros(0, np.int64)  # each candidate's best IoU and its box
    if len(props):
        best = box_iou(torch.from_numpy(props), torch.from_numpy(gt)).max(1)
        iou, which = best.values.numpy(), best.indices.numpy()
    pos = np.flatnonzero(iou >= pos_iou)
    pos = rng.permutation(pos)[: per_image // 2]
    rest = rng.permutation(np.setdiff1d(np.arange(len(props)), pos))[: per_image - len(pos)]
    keep = np.sort(np.concatenate([pos, rest])).astype(np.int64)
    scale = net_scale(it["size"], cfg.image_size)
    out = {"fmap": fmap[0].half(), "boxes": (props[keep] * scale).astype(np.float32), "target": iou[keep].astype(np.float32),
           "gt": (gt[which[keep]] * scale).astype(np.float32).reshape(-1, 4)}
    if mid is not None:
        out["mid"] = mid[0].half()
    return out


def train_head(samples: list[dict], side: float, stride: int, fit: FitConfig,
               head_cfg: BoxHeadConfig | None = None, log=print) -> BoxHead:
    """Adam on BCE(logit, IoU target) (+ fit.regress_weight x smooth-L1 on the offsets of the candidates with
    IoU >= fit.regress_iou, when fit.regress) over `samples` (from `image_sample`), `fit.epochs` passes."""
    torch.manual_seed(fit.seed)
    first = samples[0]
    head_cfg = head_cfg or BoxHeadConfig(in_dim=int(first["fmap"].shape[0]), hidden=fit.hidden, regress=fit.regress,
                                         mid_dim=int(first["mid"].shape[0]) if "mid" in first else 0)
    head = BoxHead(head_cfg, stride=stride)
    opt = torch.optim.Adam(head.parameters(), lr=fit.lr, weight_decay=fit.weight_decay)
    steps = fit.epochs * int(np.ceil(len(samples) / fit.batch_images))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=fit.lr, total_steps=steps)
    rng = np.random.default_rng(fit.seed)
    for epoch in range(fit.epochs):
        order, total, n = rng.permutation(len(samples)), 0.0, 0
        for i in range(0, len(order), fit.batch_images):
            batch = [samples[j] for j in order[i : i + fit.batch_images]]
            fmap = torch.stack([b["fmap"].float() for b in batch])  # [B, C, h, w]
            mid = torch.stack([b["mid"].float() for b in batch]) if head_cfg.mid_dim else None  # [B, C', h', w']
            boxes = [torch.from_numpy(b["boxes"]) for b in batch]
            target = torch.from_numpy(np.concatenate([b["target"] for b in batch]))
            out = head.outputs(fmap, boxes, side, mid)  # [sum K, 1 or 5]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], target)
            if head_cfg.regress:
                near = target >= fit.regress_iou
                if near.any():
                    gt = torch.from_numpy(np.concatenate([b["gt"] for b in batch]))
                    offsets = encode_deltas(torch.cat(boxes)[near], gt[near])
                    loss = loss + fit.regress_weight * torch.nn.functional.smooth_l1_loss(out[near, 1:], offsets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + float(loss.detach()) * len(target), n + len(target)
        log(f"epoch {epoch + 1}/{fit.epochs}: loss {total / max(n, 1):.4f}")
    return head.eval()


def fit_box_head(records: list[ImageRecord], cfg: RegionConfig, fit: FitConfig, log=print) -> tuple[BoxHead, dict]:
    """The head fitted on `fit.images` photos of the fitting pool of `records` (Flickr8k with Entities);
    returns it with the dict of how (written into its file)."""
    torch.set_num_threads(fit.threads)
    pool, _ = held_out_records(records, fit.held_out)
    rng = np.random.default_rng(fit.seed)
    chosen = [pool[i] for i in np.sort(rng.choice(len(pool), min(fit.images, len(pool)), replace=False))]
    backbone = build_backbone(cfg.backbone, cfg.pretrained)
    samples = []
    for n, r in enumerate(chosen):
        samples.append(image_sample(r, cfg, backbone, rng, fit.per_image, fit.pos_iou))
        if (n + 1) % 100 == 0:
            log(f"candidates of {n + 1}/{len(chosen)} images")
    head = train_head(samples, cfg.image_size, backbone.stride, fit, log=log)
    how = {"fit": asdict(fit), "images": [r.id for r in chosen], "split": "train",
           "region_config": cfg.recipe(), "torch": str(torch.__version__)}
    return head, how


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dvsa.align.regions.fit_boxhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="Flickr8k root (flickr8k-entities beside it)")
    p.add_argument("--out", required=True, help="head file to write")
    p.add_argument("--backbone", choices=sorted(BACKBONE_WEIGHTS), default=RegionConfig.backbone,
                   help="the backbone whose maps the head reads (default %(default)s)")
    d = FitConfig()
    for k, v in asdict(d).items():
        p.add_argument(f"--{k.replace('_', '-')}", dest=k, type=type(v), default=v)
    args = p.parse_args(argv)
    fit = FitConfig(**{k: getattr(args, k) for k in asdict(d)})
    # candidates only (the scorer is what is fitted), on the fitting grid
    cfg = RegionConfig(backbone=args.backbone, objectness="entropy", progress=False, grid_levels=fit.grid_levels,
                       grid_step=fit.grid_step, grid_max_ratio=fit.grid_max_ratio)
    records = load_dataset("flickr8k", args.root)
    if not any(r.regions for r in records):
        raise SystemExit(f"{args.root}: no Entities boxes (flickr8k-entities must be beside the Flickr8k root)")
    head, how = fit_box_head(records, cfg, fit)
    save_box_head(head, args.out, cfg.backbone, BACKBONE_WEIGHTS[cfg.backbone], how)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
