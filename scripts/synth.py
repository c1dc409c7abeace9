"""``dvsa synth --out DIR [--train N --val N --test N --size PX --seed S]``: write the synthetic scenes.
Any other `data.synthetic.SynthConfig` field: ``--set synthetic.FIELD=VALUE``.

Writes DIR/images/*.png, DIR/dataset_synthetic.json (Karpathy format) and DIR/groundtruth.json (boxes, phrase
spans, region descriptions; the resolved config is stored in it). ``--preview N`` also writes DIR/preview.png,
a contact sheet of the first N images with their object boxes (white: never mentioned) and first sentence.
"""
from __future__ import annotations

import json
import sys
import time
from collections import Counter
from dataclasses import fields

from dvsa.data.overrides import build_config
from dvsa.data.synthetic import DATASET_JSON, SynthConfig, write_synthetic
from dvsa.data.synthetic_preview import contact_sheet
from dvsa.scripts._args import add_set_arg, nonneg_int, parser

_FLAGS = {"n_train": "--train", "n_val": "--val", "n_test": "--test", "size": "--size", "seed": "--seed",
          "max_objects": "--max-objects"}


def main(argv: list[str] | None = None) -> int:
    defaults = SynthConfig()
    p = parser("dvsa synth", __doc__)
    p.add_argument("--out", required=True, help="output folder")
    for name, flag in _FLAGS.items():
        p.add_argument(flag, dest=name, type=int if name == "seed" else nonneg_int, default=getattr(defaults, name),
                       help=f"default {getattr(defaults, name)}")
    add_set_arg(p, {"synthetic": SynthConfig}, "synthetic.p_large=0.5")
    p.add_argument("--force", action="store_true", help="rewrite even if DIR already holds this dataset")
    p.add_argument("--preview", type=nonneg_int, default=0, metavar="N", help="write DIR/preview.png of N images")
    args = p.parse_args(argv)
    known = {f.name for f in fields(SynthConfig)}
    cfg = build_config(SynthConfig, {k: v for k, v in vars(args).items() if k in known}, args.set["synthetic"])
    t0 = time.perf_counter()
    out = write_synthetic(args.out, cfg, force=args.force, progress=not args.quiet)
    ds = json.loads((out / DATASET_JSON).read_text(encoding="utf-8"))
    splits = Counter(e["split"] for e in ds["images"])
    words = Counter(t for e in ds["images"] if e["split"] == "train" for s in e["sentences"] for t in s["tokens"])
    print(f"{out}: {len(ds['images'])} images ({', '.join(f'{k} {v}' for k, v in splits.items())}), "
          f"{sum(len(e['sentences']) for e in ds['images'])} sentences, {len(words)} distinct train words "
          f"({sum(n >= 5 for n in words.values())} seen >= 5 times), {time.perf_counter() - t0:.1f} s")
    if args.preview:
        print(f"preview: {contact_sheet(out, args.preview, out / 'preview.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
