"""Stage-2 bodies of the pipeline: generator training (full image, region snippets), caption evaluation at each
beam size, region captions against ground-truth region descriptions, dense captions and DenseCap mAP.

Each ``fn(run) -> dict`` writes its outputs under ``run.out`` and returns a JSON-able result.
"""
from __future__ import annotations

import json
from dataclasses import asdict

import torch

from scripts.pipeline_align import _dataclass_with, _plain


def _x100(metrics: dict) -> dict:
    """pycocoevalcap's 0..1 values -> the paper's tables (x100), rounded for reading."""
    return {k: round(100.0 * float(v), 2) for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------ training
def _train(run, name: str, overrides: dict, snippets_path=None) -> dict:
    from generate.model import GenConfig
    from generate.train import train_generator

    cfg = _dataclass_with(GenConfig, overrides, seed=run.cfg.seed)
    out = run.out / name
    out.mkdir(parents=True, exist_ok=True)
    summary = train_generator(run.usable(run.train), run.store(), out, cfg, snippets=snippets_path,
                              device=run.cfg.device, log=run.log)
    return {"config": asdict(cfg), "checkpoint": str(out / "model.pt"), "train": _plain(summary)}


def gen_full(run) -> dict:
    """The multimodal RNN on (whole image, sentence) pairs of the train split."""
    return _train(run, "gen_full", run.cfg.gen)


def gen_region(run) -> dict:
    """The same model trained on the MRF's (region, snippet) pairs."""
    return _train(run, "gen_region", run.cfg.gen_region, snippets_path=run.results["snippets"]["path"])


def load_generator(run, name: str):
    from generate.train import load_generator as load

    model, vocab, cfg, ck = load(run.out / name / "model.pt")
    return model.eval(), vocab, cfg


# ------------------------------------------------------------------------------------------ decoding
@torch.inference_mode()
def caption_rows(model, vocab, cfg, store, items, beam: int, max_len: int, batch: int = 64) -> list[str]:
    """Best beam caption for each (image_id, region rows) item; the input vector is built as the model was
    trained (cfg.input: "image" | "region" | "region+image")."""
    from generate.decode import beam_search
    from generate.inputs import input_features

    out: list[str] = []
    for i in range(0, len(items), batch):
        feats = torch.cat([torch.as_tensor(input_features(store, iid, rows, cfg.input)) for iid, rows in
                           items[i : i + batch]])  # [n, Din]
        beams = beam_search(model, feats.float(), beam_size=beam, max_len=max_len)
        out += [" ".join(vocab.decode(b[0][0])) for b in beams]
    return out


def captions(run) -> dict:
    """Full-frame captions of the eval split at every configured beam size, scored against its sentences."""
    from generate.metrics import caption_metrics

    model, vocab, cfg = load_generator(run, "gen_full")
    records = run.usable(run.eval)
    gts = {r.id: [s.raw for s in r.sentences] for r in records}
    out = run.out / "captions"
    out.mkdir(parents=True, exist_ok=True)
    beams = {}
    for beam in run.cfg.beams:
        caps = caption_rows(model, vocab, cfg, run.store(), [(r.id, [0]) for r in records], int(beam),
                            run.cfg.max_len)
        res = {r.id: c for r, c in zip(records, caps)}
        (out / f"beam{beam}.json").write_text(json.dumps(res, indent=0))
        beams[str(beam)] = _x100(caption_metrics(gts, res))
        run.log(f"  beam {beam}: " + ", ".join(f"{k} {v:.1f}" for k, v in beams[str(beam)].items()))
    return {"beams": beams}


def region_captions(run) -> dict:
    """Region model vs full-frame model on the ground-truth regions of the eval split, each scored against the
    region's own description (the paper's region-level table). Beam `report_beam`."""
    from data.features import FeatureStore
    from generate.metrics import caption_metrics

    gt_store = FeatureStore(run.out / "features_gt")
    items, refs = [], {}
    for rec in run.eval:
        if rec.id not in gt_store:
            continue
        boxes, _ = gt_store.regions(rec.id)
        for k, reg in enumerate(rec.regions):
            if reg.text and k + 1 < len(boxes):
                key = f"{rec.id}/{k}"
                items.append((rec.id, k + 1, key))
                refs[key] = [reg.text]
    metrics, examples = {}, {}
    for name, tag in (("gen_region", "region"), ("gen_full", "full_frame")):
        model, vocab, cfg = load_generator(run, name)
        rows = [(iid, [row]) for iid, row, _ in items]
        caps = caption_rows(model, vocab, cfg, gt_store, rows, run.cfg.report_beam, run.cfg.max_len)
        res = {key: c for (_, _, key), c in zip(items, caps)}
        metrics[tag] = _x100(caption_metrics(refs, res))
        examples[tag] = dict(list(res.items())[:50])
    examples["reference"] = {k: refs[k][0] for k in list(refs)[:50]}
    (run.out / "region_captions.json").write_text(json.dumps(examples, indent=0))
    return {"metrics": {**metrics, "n_regions": len(items), "beam": run.cfg.report_beam}}


# ------------------------------------------------------------------------------------------ dense captions
def dense(run) -> dict:
    """Dense captions (every detected region, region model) for a sample of eval images; DenseCap mAP where the
    eval regions carry descriptions."""
    from generate.dense import dense_captions

    model, vocab, cfg = load_generator(run, "gen_region")
    records = run.usable(run.eval)
    out = run.out / "dense"
    out.mkdir(parents=True, exist_ok=True)
    sample = {r.id: dense_captions(model, vocab, cfg, run.store(), r.id, beam=run.cfg.report_beam,
                                   max_len=run.cfg.max_len) for r in records[: run.cfg.dense_images]}
    (out / "captions.json").write_text(json.dumps(_plain(sample), indent=0))
    result: dict = {"n_images": len(sample)}
    if any(g.text for r in records for g in r.regions):
        from generate.densecap_eval import densecap_map

        evald = [r for r in records if any(g.text for g in r.regions)][: run.cfg.dense_eval_images]
        preds = {r.id: sample.get(r.id) or dense_captions(model, vocab, cfg, run.store(), r.id,
                                                           beam=run.cfg.report_beam, max_len=run.cfg.max_len)
                 for r in evald}
        result["metrics"] = {"map": float(densecap_map(preds, evald)), "n_images": len(evald)}
    return result
