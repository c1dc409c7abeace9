"""``dvsa generate train``: train the multimodal RNN on full images, or on region snippets.

    dvsa generate train --store runs/features --dataset flickr8k --root ../shared/datasets/flickr8k --out runs/gen
    dvsa generate train --store runs/features --dataset synthetic --root runs/synth \
        --snippets runs/snippets.jsonl --input region+image --out runs/gen_regions

Every `generate.model.GenConfig` field is a flag (``--hidden 256 --cell lstm --no-amp``); ``--config FILE``
reads a JSON dict of fields first. The train split trains and the val split validates (CIDEr, early stopping).
Writes OUT/model.pt (best), OUT/last.pt (resume: run the same command again), OUT/config.json, OUT/history.json.
Several GPUs: ``torchrun --nproc_per_node N -m dvsa.scripts.generate_train ...``.
"""
from __future__ import annotations

import argparse
import sys

from dvsa.data.catalog import load_dataset
from dvsa.data.features import FeatureStore
from dvsa.data.records import DataError
from dvsa.generate.model import CELLS, IMAGE_AT, INPUTS, GenConfig
from dvsa.generate.train import train_generator
from dvsa.scripts._config import add_config_flags, config_from_args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dvsa generate train", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="feature store folder (dvsa features)")
    p.add_argument("--dataset", required=True, help="dataset name in data.catalog (flickr8k, synthetic, ...)")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--snippets", default=None,
                   help="train on these region snippets (JSON lines of dvsa align snippets)")
    p.add_argument("--out", required=True, help="output folder (resumes from OUT/last.pt)")
    p.add_argument("--config", default=None, help="JSON file of GenConfig fields")
    p.add_argument("--no-resume", action="store_true", help="start again even if OUT/last.pt exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_flags(p, GenConfig, choices={
        "cell": CELLS, "input": INPUTS, "image_at": IMAGE_AT, "clip_mode": ("value", "norm"),
        "schedule": ("none", "step", "cosine"), "optimizer": ("rmsprop", "adam", "sgd")})
    args = p.parse_args(argv)

    try:
        cfg = config_from_args(args, GenConfig)
        records = load_dataset(args.dataset, args.root)
        store = FeatureStore(args.store)
        data = args.snippets if args.snippets else records
        path = train_generator(cfg, store, data, args.out, records=records, resume=not args.no_resume,
                               progress=not args.no_progress)
    except (DataError, FileNotFoundError, ValueError) as e:
        print(f"dvsa generate train: {e}", file=sys.stderr)
        return 1
    print(f"model: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
