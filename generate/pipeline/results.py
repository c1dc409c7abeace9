"""results.json: the headline numbers of a pipeline run in the paper's units (recalls in %, caption metrics x100)."""
from __future__ import annotations

from dvsa.generate.pipeline.run import Run


def assemble_results(run: Run) -> dict:
    """results.json's content from the stages' results in `run` (module doc)."""
    cfg, R = run.cfg, run.results
    try:
        n_eval = len(run.usable(run.eval))
    except FileNotFoundError:
        n_eval = len(run.eval)
    out: dict = {"dataset": cfg.dataset, "eval_split": cfg.eval_split, "n_eval_images": n_eval,
                 "n_train_images": len(run.train)}
    if run.data_report is not None:
        out["data"] = run.data_report.summary()
    if "metrics" in R.get("retrieval", {}):
        ret = R["retrieval"]
        out["retrieval"] = {**ret["metrics"], "distinct_scores": ret.get("distinct_scores")}
        bank = ret.get("bank") or {}
        out["retrieval"]["bank"] = {"images": bank.get("images", 0), "beta": bank.get("beta")}
        if "plain" in ret:  # the metrics above are bank-corrected; these are the model's own eq. 8 ranking
            out["retrieval"]["plain"] = ret["plain"]
    beams = R.get("captions", {}).get("beams")
    if beams:
        key = str(cfg.report_beam) if str(cfg.report_beam) in beams else sorted(beams, key=int)[-1]
        out["captioning"] = {"beam": int(key), **beams[key]}
        out["captioning_beams"] = beams
        out["captioning_vocabulary"] = R["captions"].get("vocabulary", {}).get(key)
    att = R.get("captions", {}).get("attention", {}).get("beams")
    if att:  # the region-attention generator beside the full-frame one (PipelineConfig.attention)
        out["captioning_attention_beams"] = att
    snip = R.get("snippets", {})
    if "beta" in snip:
        out["alignment"] = {"beta": snip["beta"], "mean_snippet_len": snip["mean_snippet_len"],
                            "n_snippets": snip.get("n_snippets"), "target_len": snip.get("target_len"),
                            "length_hist": snip.get("length_hist"),
                            "whole_image_fraction": snip.get("whole_image_fraction")}
        if "metrics" in R.get("align_eval", {}):  # on the eval split; snippet lengths there get their own names
            ev = dict(R["align_eval"]["metrics"])
            for k in ("mean_snippet_len", "mean_snippet_len_argmax"):
                if k in ev:
                    ev[k.replace("mean_snippet_len", "eval_mean_snippet_len")] = ev.pop(k)
            out["alignment"].update(ev)
            out["alignment"]["box_weight"] = R["align_eval"].get("box_weight", 0.0)
            plain = R["align_eval"].get("metrics_without_box_score")
            if plain:  # the aligner alone beside it
                out["alignment"]["without_box_score"] = {k: plain[k] for k in (
                    "beta", "word_accuracy", "word_accuracy_argmax", "phrase_accuracy") if k in plain}
    if "grounding" in R.get("align_eval", {}):  # IoU / pointing accuracy beside the box baselines (align.ground)
        out["grounding"] = R["align_eval"]["grounding"]
    if "metrics" in R.get("region_captions", {}):
        out["region_captioning"] = R["region_captions"]["metrics"]
    if "metrics" in R.get("dense", {}):
        out["dense"] = R["dense"]["metrics"]
    out["stages"] = {name: ("skipped: " + res["skipped"]) if "skipped" in res else "done"
                     for name, res in R.items()}
    out["timings_s"] = {k: round(v, 2) for k, v in run.timings.items()}
    if run.overlap:  # stages that ran beside the main line: the total counts only the time it waited for them
        out["timings_s"]["overlapped"] = round(sum(run.overlap.values()), 2)
    out["timings_s"]["total"] = round(sum(run.timings.values()) - sum(run.overlap.values()), 2)
    out["config"] = run.resolved_config()
    return out
