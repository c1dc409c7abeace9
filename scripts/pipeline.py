"""``dvsa pipeline``: the whole two-stage system, from images and sentences to every result, cached and resumable.

    dvsa pipeline --dataset flickr8k --root ../shared/datasets/flickr8k --out runs/f8k --eval-split dev
    dvsa pipeline --dataset synthetic --root runs/demo/data --out runs/demo --limit 50 --set align.epochs=5

Stages (see `generate.pipeline.stages.STAGES`): features -> align_train -> retrieval -> box_score -> snippets ->
gen_full -> gen_region -> captions -> region_captions -> align_eval -> dense, then results.json and report.html.
Stages the data cannot support (no described regions, no phrase ground truth) are recorded as not applicable.
Settings: ``--set KEY=VALUE`` (a PipelineConfig field, or ``pipeline.KEY``) and ``--set STAGE.KEY=VALUE`` (STAGE
one of region, align, snippets, box_score, gen, gen_region, dense: a field of that stage's config dataclass),
every one checked for its name and type before the first stage runs.

Caching: every stage writes its outputs under OUT and, last, ``OUT/<stage>.done.json`` (atomic) holding its
fingerprint (the config it depends on, chained through the stages it reads), its result and its time.
A stage whose done file matches is skipped. A stage without one is run again, and resumes from whatever it
left behind (the feature store's committed parts, the trainers' checkpoints); a stage whose config changed
has its outputs removed first (the feature store is kept and extended unless its recipe changed).
``OUT/results.json`` and ``OUT/config.json`` (the resolved config of every stage) are rewritten at the end.
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

from dvsa.data.errors import DvsaError
from dvsa.generate.pipeline import (
    PipelineConfig,
    StageError,
    apply_overrides,
    run_pipeline,
)
from dvsa.generate.pipeline.config import set_targets
from dvsa.scripts._args import (
    Parser,
    add_device_arg,
    add_seed_arg,
    add_set_arg,
    parser,
    positive_int,
)

SET_EXAMPLE = "align.epochs=16 --set beams=[1,3] --set region.score_pooling=warp"


def build_parser(prog: str = "dvsa pipeline") -> Parser:
    p = parser(prog, __doc__)
    p.add_argument("--dataset", required=True, help="catalog name (synthetic, flickr8k, karpathy, coco, ...)")
    p.add_argument("--root", required=True, help="dataset folder")
    p.add_argument("--out", required=True, help="run folder: every stage's outputs, results.json, report.html")
    p.add_argument("--eval-split", choices=["dev", "val", "test"], default=PipelineConfig.eval_split)
    add_device_arg(p, PipelineConfig.device)
    add_seed_arg(p, PipelineConfig.seed)
    p.add_argument("--limit", type=positive_int, default=PipelineConfig.limit,
                   help="at most N images per split (smoke tests)")
    add_set_arg(p, set_targets(), SET_EXAMPLE + " (PipelineConfig fields need no stage, or 'pipeline.')")
    return p


def config_from_args(args) -> PipelineConfig:
    split = "val" if args.eval_split in ("dev", "val") else "test"
    cfg = PipelineConfig(dataset=args.dataset, root=args.root, out=args.out, eval_split=split,
                         device=args.device, limit=args.limit, seed=args.seed)
    return apply_overrides(cfg, args.set_items)


def run_stages(fn, *args):
    """fn(*args) (`run_pipeline` or `run_demo`); a failed stage becomes one DvsaError line (exit 1) saying the
    stages before it are kept, after the traceback of its cause when that is not a user-facing DvsaError."""
    try:
        return fn(*args)
    except StageError as e:
        if not isinstance(e.__cause__, DvsaError):
            traceback.print_exception(e.__cause__, file=sys.stderr)
        raise DvsaError(f"{e} (the stages before it are kept: fix the cause and run the same command again)") from e


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    results = run_stages(run_pipeline, cfg)
    print(f"results: {Path(cfg.out) / 'results.json'}")
    print(f"report:  {Path(cfg.out) / 'report.html'}")
    r = results.get("retrieval", {})
    if r:
        a, s = r["annotation"], r["search"]
        print(f"retrieval R@1/5/10 annotation {a['r1']:.1f}/{a['r5']:.1f}/{a['r10']:.1f}, "
              f"search {s['r1']:.1f}/{s['r5']:.1f}/{s['r10']:.1f}"
              + (f" (bank-corrected; eq. 8 alone: annotation R@1 {r['plain']['annotation']['r1']:.1f}, search R@1 "
                 f"{r['plain']['search']['r1']:.1f})" if r.get("plain") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
