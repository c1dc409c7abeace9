"""The pipeline's stages: what each reads and writes, what config it depends on, and results.json's assembly.

A stage is a function ``fn(run) -> dict`` (its result, JSON-able, stored in ``<stage>.done.json``) plus:
`keys` (the PipelineConfig fields its output depends on), `deps` (stages whose outputs it reads), `outputs`
(paths under the run folder it owns, removed when its config changes) and `applies` (returns a reason when the
data cannot support it, e.g. no ground-truth regions). The stage bodies live in `scripts.pipeline_align`
(stage 1) and `scripts.pipeline_generate` (stage 2).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dvsa.data.records import ImageRecord


class Run:
    """What the stages share: the config, the run folder, the records of the two splits, the results so far."""

    def __init__(self, cfg, out: Path, log=print):
        self.cfg = cfg
        self.out = Path(out)
        self.log = log
        self.results: dict[str, dict] = {}
        self.timings: dict[str, float] = {}
        self.train: list[ImageRecord] = []
        self.val: list[ImageRecord] = []  # validation (early stopping): the val split, or held-out train images
        self.eval: list[ImageRecord] = []
        self._stores: dict[str, object] = {}
        self._meteor = None

    def load_records(self) -> None:
        """train / val / eval records. With eval split "val", validation is a held-out slice of train."""
        import dataclasses

        from dvsa.data.catalog import load_dataset
        from dvsa.data.records import DataError, select_split

        cfg = self.cfg
        records = load_dataset(cfg.dataset, cfg.root)
        lim = (lambda rs: rs[: cfg.limit]) if cfg.limit is not None else (lambda rs: rs)
        self.train = lim(select_split(records, "train"))
        self.eval = lim(select_split(records, cfg.eval_split))
        if cfg.eval_split == "val":
            n = min(cfg.holdout_val, len(self.train) // 10)
            self.val = [dataclasses.replace(r, split="val") for r in self.train[len(self.train) - n :]] if n else []
            self.train = self.train[: len(self.train) - n]
        else:
            try:
                self.val = lim(select_split(records, "val"))
            except DataError:
                self.val = []
        self.log(f"{cfg.dataset}: {len(self.train)} train, {len(self.val)} validation and {len(self.eval)} "
                 f"{cfg.eval_split} images")

    def image_path(self, rec: ImageRecord) -> str:
        """The image file of a record: its path if that exists, else the path under the dataset root."""
        p = Path(rec.path)
        return str(p if p.is_absolute() or p.exists() else Path(self.cfg.root) / p)

    def store(self, name: str = "features"):
        """The feature store under ``out/name`` (opened once per run)."""
        if name not in self._stores:
            from dvsa.data.features import FeatureStore

            self._stores[name] = FeatureStore(self.out / name)
        return self._stores[name]

    def meteor(self):
        """One METEOR scorer (a JVM that takes ~30 s to load its tables) shared by every stage; None without Java
        (caption_metrics then scores without METEOR)."""
        from dvsa.generate.metrics import MeteorScorer, find_java

        if self._meteor is None and find_java() is not None:
            self._meteor = MeteorScorer()
        return self._meteor

    def close(self) -> None:
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None

    def usable(self, records: list[ImageRecord]) -> list[ImageRecord]:
        """The records whose image made it into the feature store (failed images are reported, then left out)."""
        store = self.store()
        return [r for r in records if r.id in store]

    def resolved_config(self) -> dict:
        """The pipeline config plus the resolved config of every stage that ran (defaults filled in)."""
        out = {"pipeline": asdict(self.cfg)}
        for name, res in self.results.items():
            if isinstance(res, dict) and "config" in res:
                out[name] = res["config"]
        return out


@dataclass(frozen=True)
class Stage:
    name: str
    fn: Callable[[Run], dict]
    keys: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    applies: Callable[[Run], str | None] | None = None
    doc: str = field(default="", compare=False)


def has_region_text(run: Run) -> str | None:
    if any(r.text for rec in run.eval for r in rec.regions):
        return None
    return "the eval split has no described ground-truth regions"


def has_phrases(run: Run) -> str | None:
    if any(rec.phrases for rec in run.eval):
        return None
    return "the eval split has no phrase-to-region ground truth"


def _stages() -> list[Stage]:
    from dvsa.scripts import pipeline_align as A
    from dvsa.scripts import pipeline_generate as G

    return [
        Stage("features", A.features, ("region", "eval_split"), (), (),
              doc="regions and CNN features of the train and eval images"),
        Stage("align_train", A.align_train, ("align", "word_vectors"), ("features",), ("align",),
              doc="stage-1 alignment model (BRNN + region projection, max-margin)"),
        Stage("retrieval", A.retrieval, ("retrieval_protocol", "eval_split"), ("align_train",),
              ("retrieval_examples.json",), doc="image-sentence ranking on the eval split (1K protocol)"),
        Stage("box_score", A.box_score, ("box_score", "box_weights", "snippets"), ("align_train",),
              ("box_score.pt",), doc="learned box score (whole object or not) and its weight in the MRF"),
        Stage("snippets", A.snippets, ("snippets",), ("align_train", "box_score"),
              ("snippets.jsonl", "snippets"), doc="MRF snippets of the train split"),
        Stage("gen_full", G.gen_full, ("gen",), ("features",), ("gen_full",),
              doc="multimodal RNN on (whole image, sentence)"),
        Stage("gen_region", G.gen_region, ("gen_region",), ("features", "snippets"), ("gen_region",),
              doc="multimodal RNN on (region, snippet)"),
        Stage("captions", G.captions, ("beams", "max_len", "eval_split"), ("gen_full",), ("captions",),
              doc="full-frame captions of the eval split and their scores"),
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


class _Lazy:
    """STAGES imports the stage bodies (and through them torch) only when first used."""

    def __iter__(self):
        return iter(_stages())

    def names(self) -> list[str]:
        return [s.name for s in _stages()]


STAGES = _Lazy()


def assemble_results(run: Run) -> dict:
    """results.json: the headline numbers in the paper's units (recalls in %, caption metrics x100)."""
    cfg, R = run.cfg, run.results
    try:
        n_eval = len(run.usable(run.eval))
    except FileNotFoundError:
        n_eval = len(run.eval)
    out: dict = {"dataset": cfg.dataset, "eval_split": cfg.eval_split, "n_eval_images": n_eval,
                 "n_train_images": len(run.train)}
    if "metrics" in R.get("retrieval", {}):
        out["retrieval"] = {**R["retrieval"]["metrics"], "distinct_scores": R["retrieval"].get("distinct_scores")}
    beams = R.get("captions", {}).get("beams")
    if beams:
        key = str(cfg.report_beam) if str(cfg.report_beam) in beams else sorted(beams, key=int)[-1]
        out["captioning"] = {"beam": int(key), **beams[key]}
        out["captioning_beams"] = beams
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
    if "metrics" in R.get("region_captions", {}):
        out["region_captioning"] = R["region_captions"]["metrics"]
    if "metrics" in R.get("dense", {}):
        out["dense"] = R["dense"]["metrics"]
    out["stages"] = {name: ("skipped: " + res["skipped"]) if "skipped" in res else "done"
                     for name, res in R.items()}
    out["timings_s"] = {k: round(v, 2) for k, v in run.timings.items()}
    out["timings_s"]["total"] = round(sum(run.timings.values()), 2)
    out["config"] = run.resolved_config()
    return out
