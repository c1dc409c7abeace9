"""``dvsa pipeline``: the whole two-stage system, from images and sentences to every result, cached and resumable.

    dvsa pipeline --dataset flickr8k --root ../shared/datasets/flickr8k --out runs/f8k --eval-split dev
    dvsa pipeline --dataset synthetic --root runs/demo/data --out runs/demo --limit 50 --config align.epochs=5

Stages (see `scripts.pipeline_stages.STAGES`): features -> align_train -> retrieval -> box_score -> snippets ->
gen_full -> gen_region -> captions -> region_captions -> align_eval -> dense, then results.json and report.html.
Stages the data cannot support (no described regions, no phrase ground truth) are recorded as not applicable.

Caching: every stage writes its outputs under OUT and, last, ``OUT/<stage>.done.json`` (atomic) holding its
fingerprint (the config it depends on, chained through the stages it reads), its result and its time.
A stage whose done file matches is skipped. A stage without one is run again, and resumes from whatever it
left behind (the feature store's committed parts, the trainers' checkpoints); a stage whose config changed
has its outputs removed first (the feature store is kept and extended unless its recipe changed).
``OUT/results.json`` and ``OUT/config.json`` (the resolved config of every stage) are rewritten at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dvsa.data.io import atomic_write_json, json_default
from dvsa.data.records import DataError


@dataclass
class PipelineConfig:
    """Every default of the pipeline lives here. The stages' own configs (RegionConfig, AlignConfig,
    GenConfig) keep their defaults; the dicts below only hold overrides of their fields."""

    dataset: str = "synthetic"
    root: str = ""
    out: str = "runs/pipeline"
    eval_split: str = "test"  # "dev" maps to "val"
    device: str = "cpu"
    limit: int | None = None  # at most this many images per split (smoke tests); None = all
    seed: int = 0
    region: dict = field(default_factory=dict)  # overrides of align.regions.RegionConfig
    # The stages' own defaults are the paper's recipes. The pipeline overrides a few so that a whole Flickr8k run
    # fits in 90 minutes on a 2-core CPU; measured on Flickr8k (500 held-out train images, R@K sum after epoch 3):
    # SGD 3e-4 (the paper's optimiser) 77, Adam 5e-4 with dropout 0.2 175; word2vec on the train split as the
    # (trained) initial word vectors added 14 to the R@K sum after the first epoch.
    align: dict = field(default_factory=lambda: {"optimizer": "adam", "lr": 5e-4, "dropout": 0.2,
                                                 "score_norm": "words", "train_words": "yes", "epochs": 10,
                                                 "lr_step": 8, "patience": 3})  # overrides of AlignConfig
    # GenConfig, full-image model: about 1.5 min per Flickr8k epoch on 2 cores (0.47 s per batch of 100 on one)
    gen: dict = field(default_factory=lambda: {"epochs": 10, "patience": 3})
    # region (snippet) model: the MRF gives several snippets per sentence, so fewer epochs are as many steps
    gen_region: dict = field(default_factory=lambda: {"input": "region+image", "epochs": 3, "patience": 2})
    snippets: dict = field(default_factory=dict)  # overrides of align.snippets.SnippetConfig (target_len, beta)
    # The learned box score (align.boxscore), fitted on the train split's annotated boxes where it has them, is
    # added to the word-region scores of the snippets and the evaluation with the weight of box_weights (or 0 = not
    # at all) that aligns the validation split's phrases best; () = never. Datasets without boxes (Flickr8k) or
    # without validation phrases skip it.
    box_score: dict = field(default_factory=dict)  # overrides of align.boxscore.BoxScoreConfig
    box_weights: tuple = (0.25, 0.5, 1.0)
    dense: dict = field(default_factory=dict)  # overrides of generate.dense.DenseConfig (beam, top)
    word_vectors: str | None = "train"  # None: learned from random (paper: little change) | "train": word2vec on
    #                                  the train split | a word2vec file (fixed vectors, eq. 2)
    holdout_val: int = 500  # with eval split "val", validation (early stopping) uses this many held-out train
    #                         images instead (at most a tenth of them), so the reported split is never tuned on
    beams: tuple = (1, 7)  # caption evaluation at each of these beam sizes
    report_beam: int = 7  # the beam whose scores go into results["captioning"]
    max_len: int = 20  # longest generated caption (words)
    retrieval_protocol: str = "1k"  # align.retrieval protocols: "1k" (first 1000 images) | "coco1k" | "5k" | "all"
    dense_images: int = 8  # dense captions are drawn for this many eval images
    dense_eval_images: int = 100  # DenseCap mAP on at most this many eval images (where regions have text)
    show_images: int = 6  # alignment pictures and examples in the report
    skip: tuple = ()  # stage names not to run (recorded as skipped)


def _parse_value(text: str, none_word: bool = True) -> Any:
    """JSON when it parses, else the text. ``none`` means None only where `none_word` (pipeline fields such as
    word_vectors=none); in a stage group it stays the string "none", a value of several fields (lr_schedule=none)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if none_word and text.lower() == "none":
            return None
        return text


def apply_overrides(cfg: PipelineConfig, overrides: list[str]) -> PipelineConfig:
    """``key=value`` (PipelineConfig field) or ``group.key=value`` (group in region/align/gen/gen_region).
    Values parse as JSON when they can (``3``, ``0.5``, ``true``, ``[1,7]``), else as strings."""
    names = {f.name for f in dataclasses.fields(cfg)}
    groups = {"region", "align", "snippets", "box_score", "gen", "gen_region", "dense"}
    for item in overrides:
        if "=" not in item:
            raise SystemExit(f"--config: expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        value = _parse_value(text, none_word="." not in key)
        if "." in key:
            group, sub = key.split(".", 1)
            if group not in groups:
                raise SystemExit(f"--config: unknown group {group!r} in {item!r} (groups: {sorted(groups)})")
            getattr(cfg, group)[sub] = value
        elif key in names and key not in groups:
            if key in ("beams", "skip") and isinstance(value, (list, str)):
                value = tuple(value if isinstance(value, list) else value.split(","))
            setattr(cfg, key, value)
        else:
            raise SystemExit(f"--config: unknown key {key!r} (keys: {sorted(names - groups)})")
    return cfg


# ------------------------------------------------------------------------------------------ caching
def fingerprint(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=json_default).encode()).hexdigest()[:16]


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class StageError(RuntimeError):
    """A stage failed; the stages before it stay cached, so the same command resumes after the fix."""

    def __init__(self, stage: str, error: Exception):
        super().__init__(f"stage {stage!r} failed: {type(error).__name__}: {error}")
        self.stage = stage


class Runner:
    """Runs `scripts.pipeline_stages.STAGES` in order with the done-file protocol described above."""

    def __init__(self, cfg: PipelineConfig, log=print):
        from dvsa.scripts.pipeline_stages import Run

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.run = Run(cfg, self.out, log)
        self.fingerprints: dict[str, str] = {}
        self.ran: list[str] = []  # stages that did work in this call (a finished run resumes with none)

    def stage_config(self, stage) -> dict:
        c = self.cfg
        base = {"dataset": c.dataset, "root": str(Path(c.root).resolve()), "limit": c.limit, "seed": c.seed,
                "holdout_val": c.holdout_val if c.eval_split == "val" else None}
        own = {k: getattr(c, k) for k in stage.keys}
        return {"data": base, "own": own, "deps": {d: self.fingerprints.get(d) for d in stage.deps}}

    def run_stage(self, stage) -> None:
        run, done_path = self.run, self.out / f"{stage.name}.done.json"
        config = self.stage_config(stage)
        fp = fingerprint(config)
        self.fingerprints[stage.name] = fp
        if stage.name in self.cfg.skip:
            run.results[stage.name] = {"skipped": "by --config skip"}
            self.log(f"[{stage.name}] skipped (by request)")
            return
        if any(run.results.get(d, {}).get("skipped") for d in stage.deps):
            run.results[stage.name] = {"skipped": "an input stage was skipped"}
            self.log(f"[{stage.name}] skipped (an input stage was skipped)")
            return
        reason = stage.applies(run) if stage.applies else None
        if reason:
            run.results[stage.name] = {"skipped": reason}
            self.log(f"[{stage.name}] not applicable: {reason}")
            return
        done = read_json(done_path)
        if done and done.get("fingerprint") == fp:
            run.results[stage.name] = done["result"]
            run.timings[stage.name] = done["seconds"]
            self.log(f"[{stage.name}] cached ({done['seconds']:.1f} s when it ran)")
            return
        started_path = self.out / f"{stage.name}.started.json"
        started = read_json(started_path)
        if (done and done.get("fingerprint") != fp) or (started and started.get("fingerprint") != fp):
            self.log(f"[{stage.name}] config changed" + (": removing its old outputs" if stage.outputs else ""))
            for rel in stage.outputs:
                p = self.out / rel
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            done_path.unlink(missing_ok=True)
        elif started:
            self.log(f"[{stage.name}] resuming an interrupted run")
        atomic_write_json(started_path, {"fingerprint": fp, "config": config})
        self.log(f"[{stage.name}] running")
        t0 = time.perf_counter()
        try:
            result = stage.fn(run) or {}
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            raise StageError(stage.name, e) from e
        seconds = time.perf_counter() - t0
        atomic_write_json(done_path, {"stage": stage.name, "fingerprint": fp, "config": config,
                                      "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                      "result": result})
        started_path.unlink(missing_ok=True)
        run.results[stage.name] = result
        run.timings[stage.name] = seconds
        self.ran.append(stage.name)
        self.log(f"[{stage.name}] done in {seconds:.1f} s")

    def __call__(self) -> dict:
        from dvsa.scripts.pipeline_stages import STAGES, assemble_results

        t0 = time.perf_counter()
        self.run.load_records()
        self.run.timings["load"] = time.perf_counter() - t0
        atomic_write_json(self.out / "eval_images.json", {r.id: self.run.image_path(r) for r in self.run.eval})
        try:
            for stage in STAGES:
                self.run_stage(stage)
        finally:
            self.run.close()
        results = assemble_results(self.run)
        atomic_write_json(self.out / "config.json", self.run.resolved_config())
        atomic_write_json(self.out / "results.json", results)
        report = self.out / "report.html"
        if "report" not in self.cfg.skip:
            from dvsa.scripts.report import write_report

            write_report(self.out, results, report)
        results["_ran"] = list(self.ran)
        return results


def run_pipeline(cfg: PipelineConfig, log=print) -> dict:
    """Run (or resume) every stage; returns results.json's content plus ``_ran`` (stages that did work)."""
    return Runner(cfg, log)()


def build_parser(prog: str = "dvsa pipeline") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="catalog name (synthetic, flickr8k, karpathy, coco, ...)")
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="run folder: every stage's outputs, results.json, report.html")
    p.add_argument("--eval-split", choices=["dev", "val", "test"], default=PipelineConfig.eval_split)
    p.add_argument("--device", choices=["cpu", "cuda"], default=PipelineConfig.device)
    p.add_argument("--limit", type=int, default=None, help="at most N images per split (smoke tests)")
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides: PipelineConfig fields (retrieval_protocol=all) or group.field with group in "
                        "region, align, snippets, gen, gen_region, dense (align.epochs=10, snippets.target_len=3)")
    return p


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    split = "val" if args.eval_split in ("dev", "val") else "test"
    cfg = PipelineConfig(dataset=args.dataset, root=args.root, out=args.out, eval_split=split,
                         device=args.device, limit=args.limit)
    return apply_overrides(cfg, args.config)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    try:
        results = run_pipeline(cfg)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    except (DataError, FileNotFoundError) as e:  # bad or missing data: the message names the file
        print(f"dvsa pipeline: {e}", file=sys.stderr)
        return 2
    except StageError as e:
        import traceback

        traceback.print_exception(e.__cause__, file=sys.stderr)
        print(f"dvsa pipeline: {e}\nthe stages before it are kept: fix the cause and run the same command again",
              file=sys.stderr)
        return 1
    print(f"results: {Path(cfg.out) / 'results.json'}")
    print(f"report:  {Path(cfg.out) / 'report.html'}")
    r = results.get("retrieval", {})
    if r:
        a, s = r["annotation"], r["search"]
        print(f"retrieval R@1/5/10 annotation {a['r1']:.1f}/{a['r5']:.1f}/{a['r10']:.1f}, "
              f"search {s['r1']:.1f}/{s['r5']:.1f}/{s['r10']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
