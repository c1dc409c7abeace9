"""Evaluating a generator: full-frame captions of a split, and region captions against region references.

    res, skipped = caption_split(model, vocab, gen_cfg, store, records, beam=7)
    metrics = caption_metrics(references_of(records), res)
    out = region_caption_metrics(model, vocab, gen_cfg, records, store, beam=1)

Region-level evaluation (the paper's comparison of a region model with the full-frame model on the same boxes):
every described ground-truth region (records' `regions` with `text`) is captioned, and the caption is scored
against that region's description. Where the region's feature comes from (`boxes`):

* ``"match"`` (default): the feature-store region with the highest IoU with the ground-truth box (row 0, the
  whole image, included). Needs only the store; the IoU of every match is reported (`mean_iou`, `min_iou`), and
  regions whose best IoU is below `min_iou` are left out and counted (`n_unmatched`).
* ``"encode"``: the box itself is featurised with the store's encoder
  (`RegionEncoder.from_meta(store.meta).encode(image, boxes=...)`): exact boxes, but the images must be readable
  and the CNN runs again.

Alternatively `snippet_references` turns a snippets file (stage 1's MRF output, JSON lines) into references of
the store's region rows, for datasets without region descriptions.

How a full-frame ("image") model sees a region: `DenseConfig.full_frame_input` ("crop": the region's own
feature, as if the region were an image; see `generate.dense.region_inputs`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from dvsa.align.regions.encoder import RegionEncoder
from dvsa.align.regions.images import ImageError, load_rgb
from dvsa.data.progress import progress as progress_bar
from dvsa.data.records import DataError
from dvsa.generate.consensus import bank_for
from dvsa.generate.decode import decode
from dvsa.generate.dense import caption_inputs
from dvsa.generate.densecap_eval import box_iou
from dvsa.generate.inputs import (
    FULL_FRAME_INPUTS,
    full_frame_features,
    region_inputs,
    region_sets,
)
from dvsa.generate.metrics import (
    caption_metrics,
    format_metrics,
    format_vocabulary,
    vocabulary_use,
    references_of,
    write_coco_results,
)

REGION_BOXES = ("match", "encode")


@dataclass
class CaptionEvalConfig:
    """Defaults of `dvsa generate eval` (None = the generator config's value)."""

    split: str = "test"
    beams: tuple[int, ...] | None = None  # beam sizes to evaluate full frames with; None = (GenConfig.beam,)
    max_len: int | None = None  # None = GenConfig.max_len
    length_norm: float | None = None  # None = GenConfig.length_norm
    region_beam: int | None = None  # beam size for region captions; None = the first of `beams`
    region_boxes: str = "match"  # "match" store regions by IoU | "encode" the ground-truth boxes
    min_iou: float = 0.0  # "match": leave out ground-truth regions whose best store region has a lower IoU
    full_frame_input: str = "crop"  # how a full-frame model sees a region (generate.dense.region_inputs)
    batch: int = 256  # inputs per decoding call
    use_java: bool | None = None  # None = Java when available (METEOR, PTB); False = never

    def resolve(self, gen_cfg) -> CaptionEvalConfig:
        """A copy with the None fields taken from the generator's config (region_beam: the first beam)."""
        c = dataclasses.replace(self, beams=self.beams or (int(gen_cfg.beam),),
                                max_len=self.max_len or gen_cfg.max_len,
                                length_norm=gen_cfg.length_norm if self.length_norm is None else self.length_norm)
        c.region_beam = c.region_beam or c.beams[0]
        return c

    def __post_init__(self):
        if self.region_boxes not in REGION_BOXES:
            raise ValueError(f"region_boxes must be one of {REGION_BOXES}, got {self.region_boxes!r}")
        if self.full_frame_input not in FULL_FRAME_INPUTS:
            raise ValueError(f"full_frame_input must be one of {FULL_FRAME_INPUTS}, got {self.full_frame_input!r}")


def caption_split(model, vocab, gen_cfg, store, records, beam: int, max_len: int | None = None,
                  length_norm: float | None = None, batch: int = 256,
                  progress: bool = True, bank=None) -> tuple[dict[str, str], list[str]]:
    """Full-frame captions of records in the store: ({image_id: caption}, [ids not in the store]), with a
    progress bar (`dvsa.data.progress`) unless not `progress`. The attention generator (input "regions")
    attends over each image's store regions (`caption_sets`). With a `generate.consensus.CaptionBank` (and
    `gen_cfg.consensus_k` > 0, beam > 1) the beam's captions are re-ranked by it (`dense.caption_inputs`)."""
    ids = [r.id for r in records if r.id in store]
    skipped = [r.id for r in records if r.id not in store]
    max_len = max_len or gen_cfg.max_len
    length_norm = gen_cfg.length_norm if length_norm is None else length_norm
    if gen_cfg.input == "regions":
        if not ids:
            return {}, skipped
        feats, mask = region_sets(store, ids)  # [N, R, D], [N, R]
        caps = caption_sets(model, vocab, feats, mask, beam, max_len, length_norm, batch, progress=progress)
        return {i: c for i, (c, _, _) in zip(ids, caps)}, skipped
    feats = full_frame_features(store, ids, gen_cfg.input)  # [N, Din]
    caps = caption_inputs(model, vocab, feats, beam, max_len, length_norm, batch, progress=progress, bank=bank)
    return {i: c for i, (c, _, _) in zip(ids, caps)}, skipped


def caption_sets(model, vocab, feats: np.ndarray, mask: np.ndarray, beam: int, max_len: int,
                 length_norm: float = 0.0, batch: int = 256, progress: bool = False) -> list[tuple[str, float, int]]:
    """`dense.caption_inputs` for region sets: feats float [N, R, D], mask bool [N, R] -> N (caption text,
    logprob, n_tokens), decoded by `generate.decode.decode` (beam 1 = greedy)."""
    device = next(model.parameters()).device
    out = []
    bar = progress_bar(total=len(feats), desc="captions", unit="caption", enabled=progress)
    for s in range(0, len(feats), batch):
        x = torch.as_tensor(np.asarray(feats[s : s + batch], np.float32), device=device)
        m = torch.as_tensor(np.asarray(mask[s : s + batch], bool), device=device)
        hyps = decode(model, x, "beam", beam, max_len, length_norm, mask=m)
        out += [(" ".join(vocab.decode(toks)), float(lp), len(toks)) for toks, lp in hyps]
        bar.update(len(x))
    bar.close()
    return out


def _image_path(rec, root: str | None) -> str:
    return rec.path if os.path.isabs(rec.path) or not root else os.path.join(root, rec.path)


def region_items(records, store, boxes: str = "match", encoder=None, root: str | None = None,
                 min_iou: float = 0.0) -> dict:
    """Ground-truth described regions with their features.

    Returns {"keys": ["<image_id>#<k>"], "refs": {key: [text]}, "regions" float32 [n, D], "images" float32 [n, D]
    (the whole image of each), "ious" (match only), "n_unmatched", "skipped": [{"image_id", "reason"}]};
    k indexes the record's `regions`.
    """
    keys, refs, regs, imgs, ious, skipped, unmatched = [], {}, [], [], [], [], 0
    for rec in records:
        gt = [(k, g) for k, g in enumerate(rec.regions) if g.text]
        if not gt:
            continue
        gt_boxes = np.array([g.box for _, g in gt], np.float32).reshape(-1, 4)
        if boxes == "match":
            if rec.id not in store:
                skipped.append({"image_id": rec.id, "reason": "not in the feature store"})
                continue
            sboxes, sfeats = store.regions(rec.id)
            image = store.image_feature(rec.id)
            iou = box_iou(gt_boxes, sboxes)  # [G, R]
            rows, best = iou.argmax(1), iou.max(1)
            for (k, g), row, b in zip(gt, rows, best):
                if b < min_iou:
                    unmatched += 1
                    continue
                keys.append(f"{rec.id}#{k}")
                refs[keys[-1]] = [g.text]
                regs.append(sfeats[row])
                imgs.append(image)
                ious.append(float(b))
        else:
            try:
                pil = load_rgb(_image_path(rec, root))
            except ImageError as e:
                skipped.append({"image_id": rec.id, "reason": str(e)})
                continue
            per = max(1, int(encoder.cfg.max_boxes)) if hasattr(encoder, "cfg") else len(gt_boxes)
            for s in range(0, len(gt), per):  # the encoder keeps at most max_boxes given boxes per call
                chunk = gt[s : s + per]
                eb, ef, image = encoder.encode(pil, boxes=gt_boxes[s : s + per])
                if len(eb) != len(chunk) + 1:  # a degenerate (< 1 px) box was dropped: match rows back by IoU
                    iou = box_iou(gt_boxes[s : s + per], eb[1:])
                    rows = [1 + int(i) if iou.shape[1] and iou[n, i] > 0.5 else None
                            for n, i in enumerate(iou.argmax(1) if iou.shape[1] else np.zeros(len(chunk), int))]
                else:
                    rows = list(range(1, len(chunk) + 1))
                for (k, g), row in zip(chunk, rows):
                    if row is None:
                        unmatched += 1
                        continue
                    keys.append(f"{rec.id}#{k}")
                    refs[keys[-1]] = [g.text]
                    regs.append(ef[row])
                    imgs.append(image)
    d = store.dim if store is not None else getattr(encoder, "dim", 0)
    return {"keys": keys, "refs": refs, "regions": np.array(regs, np.float32).reshape(-1, d),
            "images": np.array(imgs, np.float32).reshape(-1, d), "ious": ious, "n_unmatched": unmatched,
            "skipped": skipped}


def snippet_references(snippets_path: str | os.PathLike, store, image_ids: Sequence[str] | None = None) -> dict:
    """Region items from a snippets file: every (image, region row) with its snippets' texts as references.

    Same layout as `region_items` (keys "<image_id>@<row>"); snippets of images outside `image_ids` (when
    given) or outside the store are left out.
    """
    want = None if image_ids is None else set(image_ids)
    groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    with open(snippets_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                s = json.loads(line)
                key = (str(s["image_id"]), int(s["region"]))
                text = str(s["text"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DataError(str(snippets_path), f"bad snippet line ({type(e).__name__}: {e})", n) from None
            if (want is None or key[0] in want) and key[0] in store:
                groups[key].append(text)
    keys, refs, regs, imgs = [], {}, [], []
    for (image_id, row), texts in groups.items():
        _, feats = store.regions(image_id)
        if not 0 <= row < len(feats):
            raise DataError(str(snippets_path), f"image {image_id}: region row {row} not in the store "
                                                f"({len(feats)} regions)")
        keys.append(f"{image_id}@{row}")
        refs[keys[-1]] = texts
        regs.append(feats[row])
        imgs.append(store.image_feature(image_id))
    d = store.dim
    return {"keys": keys, "refs": refs, "regions": np.array(regs, np.float32).reshape(-1, d),
            "images": np.array(imgs, np.float32).reshape(-1, d), "ious": [], "n_unmatched": 0, "skipped": []}


def score_region_items(model, vocab, gen_cfg, items: dict, beam: int = 1, max_len: int | None = None,
                       length_norm: float | None = None, full_frame_input: str = "crop", batch: int = 256,
                       use_java: bool | None = None) -> dict:
    """Caption region items (`region_items` / `snippet_references`) and score them against their references.

    Returns {"metrics": caption_metrics(...), "n_regions", "captions": {key: caption}, "metric_info"}.
    """
    if not items["keys"]:
        raise ValueError("no regions to evaluate (no described region matched a store region or was encoded)")
    res = caption_region_items(model, vocab, gen_cfg, items, beam, max_len, length_norm, full_frame_input, batch)
    info: dict = {}
    metrics = caption_metrics(items["refs"], res, use_java=use_java, info=info)
    return {"metrics": metrics, "n_regions": len(res), "captions": res, "metric_info": info}


def _inputs(items: dict, mode: str, full_frame_input: str) -> np.ndarray:
    """Generator inputs float32 [n, Din] of region items, each region with its own image's feature
    (`generate.inputs.region_inputs`, row by row)."""
    return region_inputs(items["regions"], items["images"], mode, full_frame_input)


def caption_region_items(model, vocab, gen_cfg, items: dict, beam: int = 1, max_len: int | None = None,
                         length_norm: float | None = None, full_frame_input: str = "crop",
                         batch: int = 256) -> dict[str, str]:
    """{key: caption} of region items (`region_items` / `snippet_references`): each region with its own image's
    feature as the generator was trained (`generate.inputs.region_inputs`; a full-frame model sees the crop
    when full_frame_input="crop"). None max_len / length_norm = the generator's."""
    x = _inputs(items, gen_cfg.input, full_frame_input)  # [n, Din]
    caps = caption_inputs(model, vocab, x, beam, max_len or gen_cfg.max_len,
                          gen_cfg.length_norm if length_norm is None else length_norm, batch)
    return {k: c for k, (c, _, _) in zip(items["keys"], caps)}


def region_caption_metrics(model, vocab, gen_cfg, records, store, *, boxes: str = "match", encoder=None,
                           root: str | None = None, beam: int = 1, max_len: int | None = None,
                           length_norm: float | None = None, full_frame_input: str = "crop", min_iou: float = 0.0,
                           batch: int = 256, use_java: bool | None = None) -> dict:
    """Region-level caption metrics of a generator on the described ground-truth regions of `records`.

    boxes "match" uses the best-IoU store region per ground-truth box, "encode" featurises the box with
    `encoder` (default: rebuilt from `store.meta`); see the module doc. Returns {"metrics", "n_regions",
    "boxes", "mean_iou" / "min_iou" (match), "n_unmatched", "skipped", "input", "full_frame_input", "beam",
    "captions", "metric_info"}.
    """
    if boxes not in REGION_BOXES:
        raise ValueError(f"boxes must be one of {REGION_BOXES}, got {boxes!r}")
    if boxes == "encode" and encoder is None:
        encoder = RegionEncoder.from_meta(store.meta, progress=False)
    items = region_items(records, store, boxes, encoder, root, min_iou)
    out = score_region_items(model, vocab, gen_cfg, items, beam, max_len, length_norm, full_frame_input, batch,
                             use_java)
    out.update({"boxes": boxes, "n_unmatched": items["n_unmatched"], "skipped": items["skipped"],
                "input": gen_cfg.input, "full_frame_input": full_frame_input if gen_cfg.input == "image" else None,
                "beam": beam})
    if boxes == "match":
        out["mean_iou"] = float(np.mean(items["ious"])) if items["ious"] else None
        out["min_iou"] = float(np.min(items["ious"])) if items["ious"] else None
    return out


def evaluate_generator(model, vocab, gen_cfg, records, store, cfg: CaptionEvalConfig, out_path: str | os.PathLike, *,
                       full_frame: bool = True, regions: bool = False, snippets: str | None = None,
                       root: str | None = None, checkpoint: str = "", dataset: str = "", log=print) -> dict:
    """``dvsa generate eval``: full-frame captions of `records` at each of `cfg.beams` (unless not `full_frame`),
    the described ground-truth regions (`regions`, see `region_caption_metrics`) and the store regions named by a
    snippets file (`snippets`), each scored against its references. `cfg` is resolved against the generator's
    config (`CaptionEvalConfig.resolve`). The captions go in COCO results format next to `out_path`
    (``<stem>.beam<K>.captions.json``, ``.regions.``, ``.snippets.``); returns the metrics document (the caller
    writes it to `out_path`). Each part's one-line summary goes to `log`. Raises ValueError naming the part that
    could not run."""
    cfg = cfg.resolve(gen_cfg)
    if store.dim != model.feat_dim:
        raise ValueError(f"{store.path}: features of size {store.dim}, the generator wants {model.feat_dim}")
    out_path = Path(out_path)
    out = {"checkpoint": str(checkpoint), "dataset": dataset, "split": cfg.split, "generator_input": gen_cfg.input,
           "config": dataclasses.asdict(cfg), "n_images": len(records)}
    if full_frame:
        gts = references_of(records)
        out["full_frame"] = {}
        bank = bank_for(checkpoint, gen_cfg, model.input_dim) if checkpoint else None
        out["consensus_k"] = gen_cfg.consensus_k if bank is not None else 0
        for beam in cfg.beams:
            res, skipped = caption_split(model, vocab, gen_cfg, store, [r for r in records if r.id in gts], beam,
                                         cfg.max_len, cfg.length_norm, cfg.batch, bank=bank)
            if not res:
                raise ValueError(f"no image of split {cfg.split!r} is in {store.path}")
            info: dict = {}
            m = caption_metrics({k: gts[k] for k in res}, res, use_java=cfg.use_java, info=info)
            cap_path = write_coco_results(out_path.with_name(f"{out_path.stem}.beam{beam}.captions.json"), res)
            voc = vocabulary_use(res)
            out["full_frame"][f"beam{beam}"] = {"metrics": m, "n_images": len(res), "not_in_store": len(skipped),
                                                "captions": str(cap_path), "metric_info": info, "vocabulary": voc}
            log(f"full frame, beam {beam} ({len(res)} images): {format_metrics(m)}")
            log(f"  {format_vocabulary(voc)}")
    if regions:
        try:
            r = region_caption_metrics(model, vocab, gen_cfg, records, store, boxes=cfg.region_boxes, root=root,
                                       beam=cfg.region_beam, max_len=cfg.max_len, length_norm=cfg.length_norm,
                                       full_frame_input=cfg.full_frame_input, min_iou=cfg.min_iou,
                                       batch=cfg.batch, use_java=cfg.use_java)
        except ValueError as e:
            raise ValueError(f"regions: {e}") from e
        caps = r.pop("captions")
        r["captions"] = str(write_coco_results(out_path.with_name(f"{out_path.stem}.regions.captions.json"), caps))
        out["regions"] = {"source": "ground-truth region descriptions", **r}
        iou = f", mean IoU of matched store regions {r['mean_iou']:.2f}" if r.get("mean_iou") is not None else ""
        log(f"regions ({r['n_regions']}, boxes: {r['boxes']}{iou}), beam {r['beam']}: {format_metrics(r['metrics'])}")
    if snippets:
        try:
            items = snippet_references(snippets, store, [rec.id for rec in records])
            s = score_region_items(model, vocab, gen_cfg, items, cfg.region_beam, cfg.max_len, cfg.length_norm,
                                   cfg.full_frame_input, cfg.batch, cfg.use_java)
        except (DataError, ValueError, OSError) as e:
            raise ValueError(f"snippets: {e}") from e
        caps = s.pop("captions")
        s["captions"] = str(write_coco_results(out_path.with_name(f"{out_path.stem}.snippets.captions.json"), caps))
        out["snippets"] = {"source": str(snippets), "boxes": "store rows named by the snippets",
                           "beam": cfg.region_beam, **s}
        log(f"snippet regions ({s['n_regions']}), beam {cfg.region_beam}: {format_metrics(s['metrics'])}")
    return out


def metrics_rows(out: dict) -> dict[str, dict]:
    """{row name: metrics} of an `evaluate_generator` document, for `generate.metrics.format_table`."""
    table = {f"full frame, beam {k[4:]}": v["metrics"] for k, v in out.get("full_frame", {}).items()}
    if "regions" in out:
        table[f"regions ({out['regions']['boxes']}), beam {out['regions']['beam']}"] = out["regions"]["metrics"]
    if "snippets" in out:
        table[f"snippet regions, beam {out['snippets']['beam']}"] = out["snippets"]["metrics"]
    return table
