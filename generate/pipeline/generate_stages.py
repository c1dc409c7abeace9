"""Stage-2 bodies of the pipeline: generator training (full image, region snippets), caption evaluation at each
beam size, region captions against ground-truth region descriptions, dense captions and DenseCap mAP.

Each ``fn(run) -> dict`` writes its outputs under ``run.out`` and returns a JSON-able result.
"""
from __future__ import annotations

import json
from dataclasses import asdict

from dvsa.align.boxscore import load_box_scorer
from dvsa.align.regions import RegionEncoder
from dvsa.data.io import atomic_write_json
from dvsa.generate.caption_eval import caption_region_items, caption_split, region_items
from dvsa.generate.consensus import bank_for
from dvsa.generate.dense import DenseConfig, dense_captions, resolve_config
from dvsa.generate.densecap_eval import densecap_evaluate
from dvsa.generate.formats import write_densecap_results
from dvsa.generate.metrics import caption_metrics, format_vocabulary, references_of, vocabulary_use
from dvsa.generate.model import GenConfig
from dvsa.generate.pipeline.config import dataclass_with, plain
from dvsa.generate.train import load_generator as load_generator_checkpoint
from dvsa.generate.train import train_generator


def _x100(metrics: dict) -> dict:
    """pycocoevalcap's 0..1 values -> the paper's tables (x100); a metric that could not run stays None."""
    return {k: (None if v is None else round(100.0 * float(v), 2)) for k, v in metrics.items()}


# ------------------------------------------------------------------------------------------ training
def _train(run, name: str, overrides: dict, data) -> dict:
    cfg = dataclass_with(GenConfig, overrides, seed=run.cfg.seed, device=run.cfg.device)
    out = run.out / name
    records = run.usable(run.train) + run.usable(run.val)
    path = train_generator(cfg, run.store(), records if data is None else data, out,
                           records=None if data is None else records, progress=run.progress, log=run.log)
    history = json.loads((out / "history.json").read_text()) if (out / "history.json").is_file() else []
    return {"config": asdict(cfg), "checkpoint": str(path), "epochs": len(history),
            "last": history[-1] if history else None,
            "best_val_cider": max((h["val_cider"] for h in history if "val_cider" in h), default=None)}


def gen_full(run) -> dict:
    """The multimodal RNN on (whole image, sentence) pairs of the train split (validation CIDEr on `run.val`)."""
    return _train(run, "gen_full", run.cfg.gen, None)


def gen_region(run) -> dict:
    """The same model trained on the MRF's (region, snippet) pairs of the train split."""
    return _train(run, "gen_region", run.cfg.gen_region, run.results["snippets"]["path"])


def gen_attention(run) -> dict:
    """The region-attention LSTM (`generate.attention`) on (region set, sentence) pairs of the train split, when
    `PipelineConfig.attention`; else nothing is trained (the result says so, and captions leaves it out)."""
    if not run.cfg.attention:
        return {"trained": False, "reason": "PipelineConfig.attention is false"}
    return {"trained": True, **_train(run, "gen_attention", run.cfg.gen_attention, None)}


def load_generator(run, name: str):
    """(model in eval mode, vocab, cfg) of the run's generator `name` (gen_full | gen_region | gen_attention)."""
    model, vocab, cfg, _ = load_generator_checkpoint(run.out / name / "model.pt",
                                                     device="cuda" if run.cfg.device == "cuda" else "cpu")
    return model.eval(), vocab, cfg


# ------------------------------------------------------------------------------------------ evaluation
def captions(run) -> dict:
    """Full-frame captions of the eval split at every configured beam size, scored against its sentences; the
    attention generator's too (result "attention", files ``captions/attention_beam<K>.json``) when gen_attention
    trained one."""
    records = run.usable(run.eval)
    gts = references_of(records)
    out = run.out / "captions"
    out.mkdir(parents=True, exist_ok=True)
    vocab_use: dict = {}
    info: dict = {}
    result = {"beams": _score_beams(run, "gen_full", records, gts, out, "", vocab_use, info), "n_images": len(records),
              "vocabulary": vocab_use, **info}
    if run.results.get("gen_attention", {}).get("trained"):
        att_use: dict = {}
        result["attention"] = {"beams": _score_beams(run, "gen_attention", records, gts, out, "attention_", att_use),
                               "vocabulary": att_use}
    return result


def _score_beams(run, name: str, records, gts: dict, out, prefix: str, vocab_use: dict | None = None,
                 info: dict | None = None) -> dict:
    """{beam: metrics x100} of generator `name` on `records`; the captions go to ``out/<prefix>beam<K>.json``,
    `vocab_use` (when given) gets {beam: `generate.metrics.vocabulary_use` of them} and `info` {"consensus_k"}.
    A full-frame generator's beams are re-ranked by the caption bank beside it (`generate.consensus`)."""
    model, vocab, cfg = load_generator(run, name)
    bank = bank_for(run.out / name / "model.pt", cfg, model.input_dim)
    if info is not None:  # the k of the consensus re-ranking of its beams (0: none, or no bank)
        info["consensus_k"] = cfg.consensus_k if bank is not None else 0
    beams = {}
    for beam in run.cfg.beams:
        res, _ = caption_split(model, vocab, cfg, run.store(), records, int(beam), run.cfg.max_len, bank=bank)
        atomic_write_json(out / f"{prefix}beam{beam}.json", res, indent=0)
        beams[str(beam)] = _x100(caption_metrics(gts, res, meteor=run.meteor()))
        run.log(f"  {name}, beam {beam}: " + ", ".join(f"{k} {v}" for k, v in beams[str(beam)].items()))
        if vocab_use is not None:
            vocab_use[str(beam)] = vocabulary_use(res)
            run.log(f"  {name}, beam {beam}: {format_vocabulary(vocab_use[str(beam)])}")
    return beams


def region_captions(run) -> dict:
    """The paper's region-level comparison: every described ground-truth region of the eval split is featurised
    with the store's own encoder (its exact box), then captioned by the region model and by the full-frame model
    (which sees the region's own feature as if it were an image), each scored against the region's description.
    Beam `report_beam`."""
    store = run.store()
    encoder = RegionEncoder.from_meta(store.meta, device=run.cfg.device, progress=False)
    items = region_items(run.usable(run.eval), store, "encode", encoder, run.cfg.root)
    if not items["keys"]:
        raise ValueError("no described ground-truth region could be featurised")
    metrics, examples = {}, {}
    for name, tag in (("gen_region", "region"), ("gen_full", "full_frame")):
        model, vocab, cfg = load_generator(run, name)
        # the input each model was trained on: region (+ its image) for the region model, the crop for the other
        res = caption_region_items(model, vocab, cfg, items, run.cfg.report_beam, run.cfg.max_len, cfg.length_norm,
                                   full_frame_input="crop")
        metrics[tag] = _x100(caption_metrics(items["refs"], res, meteor=run.meteor()))
        examples[tag] = dict(list(res.items())[:50])
    examples["reference"] = {k: items["refs"][k][0] for k in list(items["refs"])[:50]}
    atomic_write_json(run.out / "region_captions.json", examples, indent=0)
    return {"metrics": {**metrics, "n_regions": len(items["keys"]), "n_unmatched": items["n_unmatched"],
                        "beam": run.cfg.report_beam}}


def dense(run) -> dict:
    """Dense captions (the region model on every detected region, ranked with the box score where `box_score`
    fitted one) of the eval images; the first `dense_images` are kept for the report, and DenseCap mAP is
    computed on up to `dense_eval_images` of them where the eval regions carry descriptions."""
    model, vocab, gen_cfg = load_generator(run, "gen_region")
    cfg = dataclass_with(DenseConfig, run.cfg.dense)
    records = run.usable(run.eval)
    described = [r for r in records if any(g.text for g in r.regions)][: run.cfg.dense_eval_images]
    todo = {r.id: r for r in records[: run.cfg.dense_images] + described}
    scorer = None
    if run.results.get("box_score", {}).get("path"):  # the learned box score ranks whole objects first
        scorer = load_box_scorer(run.results["box_score"]["path"])
    results = dense_captions(model, vocab, gen_cfg, run.store(), list(todo.values()), cfg, root=run.cfg.root,
                             log=run.log, box_scorer=scorer)
    by_id = {d["image_id"]: d for d in results}
    for d in by_id.values():  # the report reads the picture from the path
        d["path"] = run.image_path(todo[d["image_id"]])
    out = run.out / "dense"
    out.mkdir(parents=True, exist_ok=True)
    sample = [by_id[r.id] for r in records[: run.cfg.dense_images] if r.id in by_id]
    opt = {"checkpoint": str(run.out / "gen_region" / "model.pt"), **asdict(resolve_config(cfg, gen_cfg)),
           "box_scorer": run.results.get("box_score", {}).get("path"), "source": "feature store",
           "score": "mean log-probability per word (END included) of the region's caption"
                    + (", + box_weight * log sigmoid(box score)" if scorer is not None else "")}
    write_densecap_results(out / "captions.json", plain(sample), opt)  # DenseCap's results.json layout
    result: dict = {"config": asdict(cfg), "n_images": len(sample)}
    if described:
        ev = densecap_evaluate([by_id[r.id] for r in described if r.id in by_id], described, scorer=run.meteor())
        result["metrics"] = {"map": round(100 * ev["map"], 2), "det_map": round(100 * ev["det_map"], 2),
                             "box_score": scorer is not None,
                             "n_images": ev["n_images"], "n_gt": ev["n_gt"], "n_pred": ev["n_pred"],
                             "scorer": ev["scorer"]}
    return result
