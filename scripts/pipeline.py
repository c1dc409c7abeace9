"""``dvsa pipeline``: the whole two-stage system, from images and sentences to every result, cached and resumable.

    dvsa pipeline --dataset flickr8k --root ../shared/datasets/flickr8k --out runs/f8k --eval-split dev
    dvsa pipeline --dataset synthetic --root runs/demo/data --out runs/demo --limit 50 --config align.epochs=5

Stages (see `generate.pipeline.stages.STAGES`): features -> align_train -> retrieval -> box_score -> snippets ->
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
import sys
import traceback
from pathlib import Path

from dvsa.data.records import DataError
from dvsa.generate import pipeline
from dvsa.generate.pipeline import ConfigError, PipelineConfig, StageError, run_pipeline


def apply_overrides(cfg: PipelineConfig, overrides: list[str]) -> PipelineConfig:
    """`generate.pipeline.apply_overrides` for a command: a bad item exits 2 with its message on stderr."""
    try:
        return pipeline.apply_overrides(cfg, overrides)
    except ConfigError as e:
        print(f"dvsa: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def build_parser(prog: str = "dvsa pipeline") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="catalog name (synthetic, flickr8k, karpathy, coco, ...)")
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="run folder: every stage's outputs, results.json, report.html")
    p.add_argument("--eval-split", choices=["dev", "val", "test"], default=PipelineConfig.eval_split)
    p.add_argument("--device", choices=["cpu", "cuda"], default=PipelineConfig.device)
    p.add_argument("--limit", type=int, default=PipelineConfig.limit, help="at most N images per split (smoke tests)")
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="overrides: PipelineConfig fields (retrieval_protocol=all) or group.field with group in "
                        "region, align, snippets, gen, gen_region, dense (align.epochs=10, snippets.target_len=3)")
    return p


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    split = "val" if args.eval_split in ("dev", "val") else "test"
    cfg = PipelineConfig(dataset=args.dataset, root=args.root, out=args.out, eval_split=split,
                         device=args.device, limit=args.limit)
    return apply_overrides(cfg, args.config)


def run_or_report(prog: str, fn, *args) -> tuple[int, object]:
    """(exit status, fn(*args)): 130 when interrupted, 2 for bad data or config (one line on stderr), 1 when a
    stage failed (its traceback, then which stage), else 0. Shared by ``dvsa pipeline`` and ``dvsa demo``."""
    try:
        return 0, fn(*args)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130, None
    except (DataError, FileNotFoundError, ConfigError) as e:  # bad or missing data: the message names the file
        print(f"{prog}: {e}", file=sys.stderr)
        return 2, None
    except StageError as e:
        traceback.print_exception(e.__cause__, file=sys.stderr)
        print(f"{prog}: {e}\nthe stages before it are kept: fix the cause and run the same command again",
              file=sys.stderr)
        return 1, None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    code, results = run_or_report("dvsa pipeline", run_pipeline, cfg)
    if code:
        return code
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
