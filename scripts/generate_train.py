"""``dvsa generate train``: train the multimodal RNN on full images, or on region snippets.

    dvsa generate train --store runs/features --dataset flickr8k --root ../shared/datasets/flickr8k --out runs/gen
    dvsa generate train --store runs/features --dataset synthetic --root runs/synth \
        --snippets runs/snippets.jsonl --set gen.input=region+image --out runs/gen_regions
    dvsa generate train --store runs/features --dataset flickr8k --root ../shared/datasets/flickr8k \
        --set gen.arch=attention --set gen.input=regions --out runs/gen_attention      # region attention

Every `generate.model.GenConfig` field is set with ``--set gen.FIELD=VALUE`` (``--set gen.hidden=256 --set
gen.cell=lstm --set gen.amp=false``), checked before any work; ``--config FILE.json`` reads a JSON dict of fields
first (then ``--device``/``--seed``, then ``--set``). The train split trains and the val split validates (CIDEr,
early stopping).
Writes OUT/model.pt (best), OUT/last.pt (resume: run the same command again), OUT/config.json, OUT/history.json.
Several GPUs: ``torchrun --nproc_per_node N -m dvsa.scripts.generate_train ...``.
"""
from __future__ import annotations

import sys

from dvsa.data.catalog import load_dataset
from dvsa.data.errors import DvsaError
from dvsa.data.features import FeatureStore
from dvsa.data.overrides import build_config, read_config_file
from dvsa.generate.model import ARCHS, CELLS, IMAGE_AT, INPUTS, GenConfig
from dvsa.generate.train import train_generator
from dvsa.scripts._args import add_device_arg, add_seed_arg, add_set_arg, parser

CHOICES = {"arch": ARCHS, "cell": CELLS, "input": INPUTS, "image_at": IMAGE_AT, "clip_mode": ("value", "norm"),
           "schedule": ("none", "step", "cosine"), "optimizer": ("rmsprop", "adam", "sgd")}


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa generate train", __doc__)
    p.add_argument("--store", required=True, help="feature store folder (dvsa features)")
    p.add_argument("--dataset", required=True, help="dataset name in data.catalog (flickr8k, synthetic, ...)")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--snippets", default=None,
                   help="train on these region snippets (JSON lines of dvsa align snippets)")
    p.add_argument("--out", required=True, help="output folder (resumes from OUT/last.pt)")
    p.add_argument("--config", default=None, metavar="FILE.json", help="JSON file of GenConfig fields")
    add_set_arg(p, {"gen": GenConfig}, "gen.hidden=256 --set gen.cell=lstm")
    add_device_arg(p, None, help=f"cpu, cuda or auto (default GenConfig.device: {GenConfig.device})")
    add_seed_arg(p, help="random seed (same as --set gen.seed=N; default GenConfig.seed)")
    p.add_argument("--no-resume", action="store_true", help="start again even if OUT/last.pt exists")
    args = p.parse_args(argv)

    file_values = read_config_file(args.config, GenConfig) if args.config else {}
    flags = {k: v for k, v in (("device", args.device), ("seed", args.seed)) if v is not None}
    cfg = build_config(GenConfig, file_values, flags, args.set["gen"], choices=CHOICES)
    records = load_dataset(args.dataset, args.root)
    store = FeatureStore(args.store)
    data = args.snippets if args.snippets else records
    try:
        path = train_generator(cfg, store, data, args.out, records=records, resume=not args.no_resume,
                               progress=not args.quiet)
    except DvsaError:
        raise
    except (ValueError, FloatingPointError) as e:  # resuming with other settings, a diverging loss, ...
        raise DvsaError(str(e)) from e
    print(f"model: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
