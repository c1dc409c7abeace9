"""``dvsa index``: make a photo collection searchable with a run's alignment model.

    dvsa index runs/f8k --images my_photos/ --out runs/mine_index
    dvsa retrieve --index runs/mine_index "a dog runs on the beach"      (or dvsa serve runs/f8k --index ...)

Every photo's regions are encoded once into a feature store under OUT/features (an interrupted run resumes
where it stopped); their region embeddings (in FAISS for candidates at query time) and OUT/index.json follow
(`dvsa.align.index`). Unreadable photos are reported and skipped.
"""
from __future__ import annotations

import sys
import time

from dvsa.align.aligner import Aligner
from dvsa.align.index import Index
from dvsa.generate.dense import image_files
from dvsa.scripts._args import add_device_arg, add_images_arg, parser


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa index", __doc__)
    p.add_argument("run_dir", help="run folder (RUN/align/model.pt) or an alignment checkpoint")
    add_images_arg(p)
    p.add_argument("--out", required=True, help="index folder (created; resumed when it exists)")
    add_device_arg(p)
    args = p.parse_args(argv)
    t0 = time.time()
    aligner = Aligner.load(args.run_dir, device=args.device)
    idx = Index.build(aligner, image_files(args.images), path=args.out,
                      log=lambda m: print(f"dvsa index: {m}", file=sys.stderr))
    print(f"{len(idx)} photos indexed ({len(idx.failed)} skipped, {idx.vectors.backend}), "
          f"{time.time() - t0:.1f} s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
