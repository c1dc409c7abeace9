"""Dense captioning: every region of an image gets a caption from the region generator, with a score.

    results = dense_captions(model, vocab, gen_cfg, encoder_or_store, images, DenseConfig(beam=3, top=10))

Boxes come from the stage-1 region encoder (`align.regions.encoder.RegionEncoder.encode(pil)`: row 0 is the
whole image, detections follow) or, for images already featurised, from a `data.features.FeatureStore`. Each
region's generator input is built as the model was trained (`GenConfig.input`, see `region_inputs`); each
region's caption is the best beam of `generate.decode.decode` (beam search).

Score of a caption: its mean log-probability per generated word, END included,
``logprob / (len(tokens) + 1)`` (natural log, <= 0; higher = the model is surer of what it says). The encoder
does not expose detection confidences for every backend; given a learned box score (`align.boxscore`, fitted
on annotated boxes of the same feature recipe) as `box_scorer`, each region's score also gets
``box_weight * log sigmoid(box score)``, the log-probability that the region is a whole object (weight 1: the
product of the two probabilities). Regions are sorted by the score, near-duplicates removed by greedy NMS
(`nms_iou`, DenseCap's final NMS at 0.3) and the best `top` kept. The whole-image row 0 is left out unless
`whole_image` (it is not a region; an image with no detection keeps it so that every image gets at least one
caption).

Result per image (JSON-able)::

    {"image_id": str, "path": str | None, "width": int, "height": int,
     "regions": [{"box": [x1, y1, x2, y2] (pixels), "caption": str, "score": float, "logprob": float,
                  "row": int (row of the image's regions; 0 = whole image),
                  "box_score": float (the box scorer's logit; only with a box scorer)}, ...]}   best score first

Dimensions: R regions of an image (row 0 = whole image), D feature size, Din generator input size.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from dvsa.align.regions.images import ImageError, load_rgb
from dvsa.data.errors import UsageError
from dvsa.data.progress import progress as progress_bar
from dvsa.data.records import ImageRecord
from dvsa.generate import consensus
from dvsa.generate.decode import beam_search, decode
from dvsa.generate.densecap_eval import box_iou
from dvsa.generate.inputs import FULL_FRAME_INPUTS, region_inputs  # noqa: F401  (re-exported: their old home)


@dataclass
class DenseConfig:
    """Defaults of dense captioning (CLI flags override; None = the generator config's value)."""

    beam: int = 3  # beam size per region
    max_len: int | None = None  # most decoding steps; None = GenConfig.max_len
    length_norm: float | None = None  # beam ranking exponent; None = GenConfig.length_norm
    top: int = 10  # regions kept per image, best score first; 0 = all
    nms_iou: float | None = 0.3  # drop a region overlapping a better-scored kept one by IoU > this (DenseCap's
    #                               final NMS, 0.3); None = keep all (the encoder may fill its free slots with
    #                               near-duplicate boxes)
    whole_image: bool = False  # also caption row 0 (the whole image) as a region
    box_weight: float = 1.0  # with a box scorer: score += box_weight * log sigmoid(box score); 0 = captions only
    full_frame_input: str = "crop"  # a full-frame ("image") model sees each region as an image: "crop" = the
    #                                 region's own feature (the paper's full-frame baseline on regions);
    #                                 "image" = the whole image's feature for every region
    batch: int = 256  # regions per beam-search call

    def __post_init__(self):
        if self.full_frame_input not in FULL_FRAME_INPUTS:
            raise ValueError(f"full_frame_input must be one of {FULL_FRAME_INPUTS}, got {self.full_frame_input!r}")
        if self.beam < 1:
            raise ValueError(f"beam must be >= 1, got {self.beam}")


def caption_inputs(model, vocab, feats: np.ndarray, beam: int, max_len: int, length_norm: float = 0.0,
                   batch: int = 256, progress: bool = False, bank=None) -> list[tuple[str, float, int]]:
    """Best caption of every input row: feats float [N, Din] -> N (caption text, logprob, n_tokens).

    beam 1 is greedy decoding (exactly: beam search with one beam); logprob includes END when the caption ended.
    Decoded by `generate.decode.decode`. `progress`: a bar over the rows (`dvsa.data.progress`). With a
    `generate.consensus.CaptionBank` the best is the consensus choice among the beam's captions
    (`consensus.reranks` says when).
    """
    device = next(model.parameters()).device
    out = []
    bar = progress_bar(total=len(feats), desc="captions", unit="caption", enabled=progress)
    for s in range(0, len(feats), batch):
        x = torch.as_tensor(np.asarray(feats[s : s + batch], np.float32), device=device)
        if bank is not None and consensus.reranks(bank, model.cfg, beam):  # no bank: any decoder model, cfg or not
            cands = beam_search(model, x, beam, max_len, length_norm, model.cfg.min_len)
            hyps = [h[i] for h, i in zip(cands, consensus.pick(bank, vocab, x.cpu().numpy(), cands, model.cfg))]
        else:
            hyps = decode(model, x, "beam", beam, max_len, length_norm)
        out += [(" ".join(vocab.decode(toks)), float(lp), len(toks)) for toks, lp in hyps]
        bar.update(len(x))
    bar.close()
    return out


def nms(boxes, iou: float) -> list[int]:
    """Greedy non-maximum suppression of boxes [n, 4] already sorted best first: indices of the kept boxes
    (a box is dropped when its IoU with a kept, better box is > iou)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    over = box_iou(b, b) > iou  # [n, n]
    keep: list[int] = []
    for i in range(len(b)):
        if not any(over[i, j] for j in keep):
            keep.append(i)
    return keep


def resolve_config(dense_cfg: DenseConfig | None, gen_cfg, **overrides) -> DenseConfig:
    """DenseConfig with `overrides` applied and None fields taken from the generator's config."""
    c = dense_cfg or DenseConfig()
    if overrides:
        names = {f.name for f in fields(DenseConfig)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown DenseConfig field(s) {sorted(unknown)}")
        c = replace(c, **overrides)
    return replace(
        c,
        max_len=c.max_len if c.max_len is not None else int(gen_cfg.max_len),
        length_norm=c.length_norm if c.length_norm is not None else float(gen_cfg.length_norm),
    )


def _regions_of(source, item, root: str | None):
    """(image_id, path, (w, h), boxes [R, 4], regions [R, D], image [D]) of one item, from a store or an encoder."""
    if hasattr(source, "image_feature"):  # a FeatureStore: items are image ids or records
        image_id = item.id if isinstance(item, ImageRecord) else str(item)
        path = item.path if isinstance(item, ImageRecord) else None
        boxes, feats = source.regions(image_id)
        return image_id, path, source.image_size(image_id), boxes, feats, source.image_feature(image_id)
    if isinstance(item, ImageRecord):
        image_id, path = item.id, item.path
        if root and not os.path.isabs(path):
            path = os.path.join(root, path)
    else:
        path = str(item)
        image_id = Path(path).stem
    pil = load_rgb(path)
    boxes, feats, image = source.encode(pil)
    return image_id, path, pil.size, boxes, feats, image


def dense_captions(model, vocab, gen_cfg, source, images, dense_cfg: DenseConfig | None = None, *,
                   root: str | None = None, failed: list | None = None, log=None, box_scorer=None,
                   progress: bool = True, **overrides):
    """Dense captions of images.

    model, vocab, gen_cfg: a generator (`generate.train.load_generator`); source: a `RegionEncoder` (images are
    file paths or ImageRecords, decoded and encoded here) or a `FeatureStore` (images are image ids or
    ImageRecords in it). `overrides` set DenseConfig fields (beam=, top=, max_len= ...). An image that cannot be
    read is reported (to `log`, default stderr, and appended to `failed` as {"image_id", "path", "reason"})
    and skipped. `box_scorer`: an `align.boxscore.BoxScorer` whose score joins the caption's (module doc).
    `progress`: a progress bar over the images (`dvsa.data.progress`; none for a single image).
    Returns a list of per-image results (module doc); a single image (not a list) gives one result.
    """
    if getattr(gen_cfg, "arch", "mrnn") == "attention":
        raise UsageError("dense captions need a generator of single region vectors (a region or full-frame "
                         "generator); this is an attention generator, which captions whole images (dvsa caption)")
    cfg = resolve_config(dense_cfg, gen_cfg, **overrides)
    single = isinstance(images, (str, os.PathLike)) or not isinstance(images, Iterable)
    items = [images] if single else list(images)
    say = log or (lambda m: print(m, file=sys.stderr))
    results = []
    for item in progress_bar(items, total=len(items), desc="dense captions", unit="img",
                             enabled=progress and not single):
        try:
            image_id, path, (w, h), boxes, feats, image = _regions_of(source, item, root)
        except (ImageError, KeyError) as e:
            reason = getattr(e, "reason", None) or (e.args[0] if e.args else str(e))
            where = getattr(e, "path", None) or str(getattr(item, "path", item))
            say(f"skipped {where}: {reason}")
            if failed is not None:
                failed.append({"image_id": str(getattr(item, "id", Path(str(item)).stem)), "path": where,
                               "reason": str(reason)})
            continue
        rows = list(range(len(boxes))) if cfg.whole_image or len(boxes) == 1 else list(range(1, len(boxes)))
        x = region_inputs(feats[rows], image, gen_cfg.input, cfg.full_frame_input)  # [n, Din]
        caps = caption_inputs(model, vocab, x, cfg.beam, cfg.max_len, cfg.length_norm, cfg.batch)
        regions = [
            {"box": [float(v) for v in boxes[r]], "caption": c, "score": lp / (n + 1), "logprob": lp, "row": int(r)}
            for r, (c, lp, n) in zip(rows, caps)
        ]
        if box_scorer is not None:
            with torch.no_grad():
                z = box_scorer(torch.tensor(np.asarray(feats, np.float32)),
                               torch.tensor(np.asarray(boxes, np.float32))).double()  # [R]
            for d in regions:
                d["box_score"] = float(z[d["row"]])
                d["score"] += cfg.box_weight * float(torch.nn.functional.logsigmoid(z[d["row"]]))
        regions.sort(key=lambda d: -d["score"])
        if cfg.nms_iou is not None:
            regions = [regions[i] for i in nms([d["box"] for d in regions], cfg.nms_iou)]
        if cfg.top:
            regions = regions[: cfg.top]
        results.append({"image_id": str(image_id), "path": None if path is None else str(path), "width": int(w),
                        "height": int(h), "regions": regions})
    if single:
        return results[0] if results else None
    return results


def image_files(inputs: Sequence[str]) -> list[Path]:
    """Image paths from a mix of files and folders (a folder gives its image files, sorted, not recursive)."""
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
    out = []
    for p in map(Path, inputs):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in exts)
        else:
            out.append(p)  # a missing or unreadable file is reported when it is decoded
    return out
