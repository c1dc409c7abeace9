"""``dvsa bench features`` (or ``python -m dvsa.scripts.bench_features``): how fast is the offline region recipe here?

    python -m dvsa.scripts.bench_features --images ../shared/datasets/flickr8k/images --n-images 200 --total 7000

Encodes a sample of `--n-images` images with `RegionConfig` defaults (selective search + EfficientNet-Lite0), stage by
stage (decode, proposals, CNN), then end to end through `extract_features` (DataLoader workers, resumable store;
by default one worker beside the CNN in the main process, then two workers that each run the CNN),
and prints images/s with the time extrapolated to `--total` images. Wall time is what you wait on *this* machine
now; CPU time (all threads) is reported too, because on a shared machine the wall clock mostly measures the
other tenants: ``projected`` = CPU time / cores, what an otherwise idle machine of this size would take.
The CNN floor is the backbone's FLOPs at the matrix-multiply rate measured in the same run.
Optional: ``--recall synthetic:ROOT`` (or coco:ROOT) measures box recall at IoU 0.5 against annotated objects;
``--probe SYNTHETIC_ROOT`` fits linear colour and shape probes on region features of ground-truth boxes.
The measuring code is `dvsa.align.regions.bench`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from dvsa.align.regions.bench import (
    FeaturesBenchConfig,
    NoImagesError,
    bench_features,
    format_features_report,
)
from dvsa.align.regions.config import RegionConfig
from dvsa.data.errors import UsageError
from dvsa.scripts._args import add_set_arg, nonneg_int, parser, positive_int

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    d = FeaturesBenchConfig()
    p = parser("dvsa bench features", __doc__)
    p.add_argument("--images", default=str(REPO.parent / "shared/datasets/flickr8k/images"), help="image folder")
    p.add_argument("--n-images", dest="n", type=nonneg_int, default=d.n, help="sample size (0: only --recall/--probe)")
    p.add_argument("--total", type=positive_int, default=d.total, help="extrapolate to this many images")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--workers", default=d.workers,
                   help="end-to-end runs, comma-separated: N (workers) or N:main / N:workers (where the CNN runs)")
    p.add_argument("--threads", type=nonneg_int, default=d.threads,
                   help="torch threads in the main process (0: torch's default)")
    add_set_arg(p, {"region": RegionConfig}, "region.ss_mode=fast")
    p.add_argument("--recall", action="append", default=[], metavar="DATASET:ROOT", help="measure box recall")
    p.add_argument("--recall-n", type=positive_int, default=d.recall_n)
    p.add_argument("--probe", metavar="SYNTHETIC_ROOT", help="linear colour/shape probes on synthetic scenes")
    p.add_argument("--skip-stages", action="store_true")
    p.add_argument("--matmul-n", type=positive_int, default=d.matmul_n, help="matrix side for the GFLOP/s measurement")
    args = p.parse_args(argv)

    cfg = FeaturesBenchConfig(images=args.images, n=args.n, total=args.total, batch_size=args.batch_size,
                              workers=args.workers, threads=args.threads, overrides=args.set["region"],
                              recall=args.recall, recall_n=args.recall_n, probe=args.probe,
                              skip_stages=args.skip_stages, matmul_n=args.matmul_n)
    try:
        res = bench_features(cfg)
    except NoImagesError as e:
        raise UsageError(f"--images: {e}") from e
    print(format_features_report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
