"""``dvsa align train``: train the alignment model (stage 1) on a feature store.

    dvsa align train --store runs/features --dataset flickr8k --root ../shared/datasets/flickr8k --out runs/align
    dvsa align train --store runs/features --dataset synthetic --root runs/synth --out runs/align \
        --set align.epochs=20 --set align.optimizer=adam --set align.lr=3e-4 --set align.loss=hardest

Every `align.model.AlignConfig` field is set with ``--set align.FIELD=VALUE`` (``--set align.embed_dim=1000
--set align.amp=false``), checked before any work; ``--config FILE.json`` reads a JSON dict of fields first.
The train split trains (vocabulary built on it), the val split validates (R@K sum, early
stopping). ``--vectors`` gives fixed word vectors: a .npy from ``dvsa vectors`` or a word2vec file.
Writes OUT/model.pt (best), OUT/last.pt (resume: run the same command again), OUT/config.json, OUT/history.json.
Several processes or GPUs: ``torchrun --nproc_per_node N -m dvsa.scripts.align_train ...`` (the global batch is split).
"""
from __future__ import annotations

import dataclasses
import sys

from dvsa.align import distributed as dist
from dvsa.align.loading import load_records, vocab_and_vectors
from dvsa.align.model import AlignConfig
from dvsa.align.train import train_alignment
from dvsa.data.errors import DvsaError
from dvsa.data.features import FeatureStore
from dvsa.data.overrides import build_config, read_config_file
from dvsa.scripts._args import add_device_arg, add_seed_arg, add_set_arg, parser


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa align train", __doc__)
    p.add_argument("--store", required=True, help="feature store folder (dvsa features)")
    p.add_argument("--dataset", required=True, help="dataset name in data.catalog (flickr8k, synthetic, ...)")
    p.add_argument("--root", required=True, help="dataset root")
    p.add_argument("--dataset-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra keyword for the dataset reader (repeatable), e.g. images_dir=...")
    p.add_argument("--out", required=True, help="output folder (resumes from OUT/last.pt)")
    p.add_argument("--config", default=None, metavar="FILE.json", help="JSON file of AlignConfig fields")
    add_set_arg(p, {"align": AlignConfig}, "align.embed_dim=512")
    p.add_argument("--vectors", default=None, help="word vectors: .npy from dvsa vectors, or a word2vec file")
    add_device_arg(p, "auto", help="cpu, cuda or auto (default auto; cuda = cuda:LOCAL_RANK under torchrun)")
    add_seed_arg(p, help="random seed (same as --set align.seed=N; default AlignConfig.seed)")
    p.add_argument("--no-resume", action="store_true", help="start again even if OUT/last.pt exists")
    args = p.parse_args(argv)

    seed = {} if args.seed is None else {"seed": args.seed}
    file_values = read_config_file(args.config, AlignConfig) if args.config else {}
    cfg = build_config(AlignConfig, file_values, args.set["align"], seed)
    device = dist.init_distributed(args.device)
    main_process = dist.is_main()
    try:
        records = load_records(args.dataset, args.root, None, args.dataset_arg)
        store = FeatureStore(args.store)
        vocab = vectors = None
        if args.vectors:
            vocab, vectors = vocab_and_vectors(records, args.vectors, cfg.min_count)
            if vectors.shape[1] != cfg.word_dim:
                print(f"word_dim set to {vectors.shape[1]} by the vectors", file=sys.stderr)
                cfg = dataclasses.replace(cfg, word_dim=int(vectors.shape[1]))
        summary = train_alignment(records, store, args.out, cfg, device=device, vocab=vocab, word_vectors=vectors,
                                  resume=not args.no_resume, progress=not args.quiet)
    except DvsaError:
        raise
    except (ValueError, FloatingPointError) as e:  # resuming with other settings, a diverging loss, ...
        raise DvsaError(str(e)) from e
    finally:
        dist.cleanup()
    if main_process:
        best = summary["best"]
        if best:
            print(f"best epoch {best['epoch']}: val R@K sum {best['rsum']:.1f}")
        print(f"model: {summary['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
