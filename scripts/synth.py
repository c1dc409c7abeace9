"""``dvsa synth --out DIR [--train N --val N --test N --size PX --seed S]``: write the synthetic scenes.

Writes DIR/images/*.png, DIR/dataset_synthetic.json (Karpathy format) and DIR/groundtruth.json (boxes, phrase
spans, region descriptions; the resolved config is stored in it). ``--preview N`` also writes DIR/preview.png,
a contact sheet of the first N images with their object boxes (white: never mentioned) and first sentence.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import fields

from dvsa.data.synthetic import DATASET_JSON, SynthConfig, write_synthetic
from dvsa.data.synthetic_preview import contact_sheet

_FLAGS = {"n_train": "--train", "n_val": "--val", "n_test": "--test", "size": "--size", "seed": "--seed",
          "max_objects": "--max-objects"}


def main(argv: list[str] | None = None) -> int:
    defaults = SynthConfig()
    p = argparse.ArgumentParser(prog="dvsa synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    for name, flag in _FLAGS.items():
        p.add_argument(flag, dest=name, type=int, default=getattr(defaults, name),
                       help=f"default {getattr(defaults, name)}")
    p.add_argument("--force", action="store_true", help="rewrite even if DIR already holds this dataset")
    p.add_argument("--preview", type=int, default=0, metavar="N", help="write DIR/preview.png of N images")
    args = p.parse_args(argv)
    known = {f.name for f in fields(SynthConfig)}
    try:
        cfg = SynthConfig(**{k: v for k, v in vars(args).items() if k in known})
    except ValueError as e:
        p.error(str(e))
    t0 = time.perf_counter()
    out = write_synthetic(args.out, cfg, force=args.force, progress=sys.stderr.isatty())
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
