"""The pipeline's stages: what each reads and writes and what config it depends on.

A stage is a function ``fn(run) -> dict`` (its result, JSON-able, stored in ``<stage>.done.json``) plus:
`keys` (the PipelineConfig fields its output depends on), `deps` (stages whose outputs it reads), `outputs`
(paths under the run folder it owns, removed when its config changes) and `applies` (returns a reason when the
data cannot support it, e.g. no ground-truth regions). The stage bodies live in `generate.pipeline.align_stages`
(stage 1) and `generate.pipeline.generate_stages` (stage 2).

features -> align_train -> retrieval -> box_score -> snippets -> gen_full -> gen_region -> gen_attention ->
captions -> region_captions -> align_eval -> dense, then results.json and report.html. gen_attention trains only
when `PipelineConfig.attention` (else it records that it did not; skipping it by name skips captions too).
gen_full reads only the features: with `PipelineConfig.parallel` it trains in a second process beside
align_train and the stages after it (`generate.pipeline.beside`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from dvsa.generate.pipeline import align_stages as A
from dvsa.generate.pipeline import generate_stages as G
from dvsa.generate.pipeline.run import Run, has_phrases, has_region_text  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline (module doc)."""

    name: str
    fn: Callable[[Run], dict]
    keys: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    applies: Callable[[Run], str | None] | None = None
    doc: str = field(default="", compare=False)
    beside: bool = False  # may run in a second process beside the main line (`generate.pipeline.beside`)


STAGES: list[Stage] = [
    Stage("features", A.features, ("region", "eval_split"), (), (),
          doc="regions and CNN features of the train and eval images"),
    Stage("align_train", A.align_train, ("align", "word_vectors"), ("features",), ("align",),
          doc="stage-1 alignment model (BRNN + region projection, max-margin)"),
    Stage("retrieval", A.retrieval, ("retrieval_protocol", "eval_split", "hubness"), ("align_train",),
          ("retrieval_examples.json",), doc="image-sentence ranking on the eval split (1K protocol)"),
    Stage("box_score", A.box_score, ("box_score", "box_weights", "snippets"), ("align_train",),
          ("box_score.pt",), doc="learned box score (whole object or not) and its weight in the MRF"),
    Stage("snippets", A.snippets, ("snippets",), ("align_train", "box_score"),
          ("snippets.jsonl", "snippets"), doc="MRF snippets of the train split"),
    Stage("gen_full", G.gen_full, ("gen",), ("features",), ("gen_full",),
          doc="multimodal RNN on (whole image, sentence)", beside=True),
    Stage("gen_region", G.gen_region, ("gen_region",), ("features", "snippets"), ("gen_region",),
          doc="multimodal RNN on (region, snippet)"),
    Stage("gen_attention", G.gen_attention, ("attention", "gen_attention"), ("features",), ("gen_attention",),
          doc="region-attention LSTM on (region set, sentence), when attention=true"),
    Stage("captions", G.captions, ("beams", "max_len", "eval_split"), ("gen_full", "gen_attention"), ("captions",),
          doc="full-frame captions of the eval split and their scores (and the attention generator's)"),
    Stage("region_captions", G.region_captions, ("max_len", "report_beam", "eval_split"),
          ("gen_full", "gen_region"),
          ("region_captions.json",), applies=has_region_text,
          doc="region model vs full-frame model on ground-truth region descriptions"),
    Stage("align_eval", A.align_eval, ("show_images", "eval_split"), ("align_train", "box_score", "snippets"),
          ("align_eval",), doc="alignment pictures; word-to-region accuracy, MRF vs argmax, where the data "
                               "has phrase boxes"),
    Stage("dense", G.dense, ("dense", "dense_images", "dense_eval_images", "eval_split"),
          ("gen_region", "box_score"),
          ("dense",), doc="dense captions of a sample (and DenseCap mAP where regions have text)"),
]


def _stages() -> list[Stage]:
    """The stages the Runner runs, in order: `STAGES` (tests put stand-ins in by replacing this function)."""
    return list(STAGES)


def stage_names() -> list[str]:
    """The names of `STAGES`, in order."""
    return [s.name for s in STAGES]
