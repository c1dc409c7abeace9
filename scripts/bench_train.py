"""``dvsa bench train``: training steps per second on this machine, each beside its FLOP floor.

    dvsa bench train                            # alignment at the paper's, default, pipeline and demo sizes
    dvsa bench train --steps 3 --shapes default --no-generators --out bench.json

The alignment step (batches of 100 pairs, 20 regions, ~12 words) runs on the old path (every batch collated
from the store, eq. 8's gradient through every region) and the new one (`train_alignment`'s: batches indexed
from tensors collated once, the gradient to each word's best region only), steps interleaved, at four sizes:
"paper" (AlignConfig's model, D = 4096 as VGG fc7), "default" (AlignConfig's model, D = 1280 as
EfficientNet-Lite0), "pipeline" (the Flickr8k pipeline's AlignConfig, `PipelineConfig.align`, D = 1280) and "demo"
(the demo's AlignConfig, `DemoConfig.align`, D = 1280). Then the generators'
step (GenConfig's model, full frame and region+image, random features and sentences: the model step alone,
without its collation), old (the output layer at every padded position) and new (at the real targets only).
Old paths draw their dropout masks with `torch.nn.Dropout`, new ones with `dvsa.data.dropout.Dropout`. On a CPU
that computes bf16 natively each step also has a "bf16" row: the new path with the forward under bf16 autocast
(`cpu_amp`). Times are medians, with the allocator keeping freed memory as the trainers have it
(`dvsa.data.training.retain_freed_memory`; `--default-allocator` runs without it). The floor is the step's
matrix-product FLOPs at the matmul rate measured in the same run; the paths compare within one run (a shared
machine's load changes). The measuring code is `dvsa.align.bench_train`,
the generators' step `dvsa.generate.bench_train`.
"""
from __future__ import annotations

import sys
from dataclasses import fields, replace

from dvsa.align.bench_train import TrainBenchConfig, bench_train, format_train_table
from dvsa.data.io import atomic_write_json
from dvsa.generate.bench_train import SHAPES, alignment_shapes, generator_steps
from dvsa.generate.model import GenConfig
from dvsa.scripts._args import nonneg_int, parser, positive_int

def main(argv: list[str] | None = None) -> int:
    d = TrainBenchConfig()
    p = parser("dvsa bench train", __doc__)
    p.add_argument("--steps", type=positive_int, default=d.steps, help="timed steps per path (their median is kept)")
    p.add_argument("--warmup", type=nonneg_int, default=d.warmup,
                   help="untimed steps per path first (the first pass over the batches faults in their memory)")
    p.add_argument("--batch", type=positive_int, default=d.batch, help="pairs per step")
    p.add_argument("--regions", type=positive_int, default=d.regions)
    p.add_argument("--words", type=positive_int, default=d.words, help="mean words per sentence")
    p.add_argument("--vocab", type=positive_int, default=d.vocab)
    p.add_argument("--n-images", dest="images", type=positive_int, default=d.images,
                   help="images of the random store (5 sentences each)")
    p.add_argument("--matmul-size", type=positive_int, default=d.matmul_size,
                   help="n of the n x n matmul that measures GFLOP/s")
    p.add_argument("--threads", type=nonneg_int, default=d.threads, help="torch threads (0 = torch's default)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"alignment sizes, comma-separated, of {SHAPES}")
    p.add_argument("--feat-dim", type=positive_int, default=d.feat_dim,
                   help="D of the default and demo sizes and of the generators")
    p.add_argument("--paper-feat-dim", type=positive_int, default=d.paper_feat_dim, help="D of the paper size")
    p.add_argument("--embed", type=positive_int, default=None,
                   help="H of every alignment size and the generators' hidden and embedding size (tiny runs)")
    p.add_argument("--hidden", type=positive_int, default=None, help="K (BRNN) of every alignment size")
    p.add_argument("--no-generators", action="store_true", help="skip the generators' step")
    p.add_argument("--default-allocator", dest="retain_memory", action="store_false",
                   help="leave the C library's allocator at its default instead of keeping freed memory as the "
                        "trainers do (the whole run: the setting is process-wide)")
    p.add_argument("--out", default=None, help="results JSON")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.shapes.split(",") if n.strip()]
    bad = sorted(set(names) - set(SHAPES))
    if bad:
        p.error(f"--shapes: unknown {bad}; choose from {SHAPES}")

    cfg = TrainBenchConfig(**{f.name: getattr(args, f.name) for f in fields(TrainBenchConfig)})
    size = {k: v for k, v in (("embed_dim", args.embed), ("hidden_dim", args.hidden)) if v is not None}
    shapes = {name: (replace(acfg, **size), feat_dim) for name, (acfg, feat_dim) in alignment_shapes(cfg, names).items()}
    others = {}
    if not args.no_generators:
        for inp in ("image", "region+image"):
            gcfg = GenConfig(input=inp)
            if args.embed:
                gcfg = replace(gcfg, hidden=args.embed, embed=args.embed)
            others[f"generator {inp} (GenConfig: {gcfg.cell}, hidden {gcfg.hidden}, B={cfg.batch}, D={cfg.feat_dim}, "
                   f"V={cfg.vocab})"] = generator_steps(cfg, gcfg, cfg.feat_dim)
    res = bench_train(cfg, shapes, others)
    print(format_train_table(res))
    if args.out:
        atomic_write_json(args.out, res, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
