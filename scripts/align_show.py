"""``dvsa align show``: alignment pictures (PNG per image + index.html) and an image-search page.

    dvsa align show --checkpoint runs/align/model.pt --store runs/features --dataset synthetic \\
        --root runs/synth --split test --n-images 12 --beta-from runs/snippets.summary.json --out runs/show

writes ``OUT/<image id>.png`` (image with coloured boxes, sentences below with coloured snippets and scores),
``OUT/index.html`` (the same, inline) and, with ``--query TEXT`` (repeatable) or ``--query-sentences N``
(the first sentence of N images of the split, whose own image is marked), ``OUT/retrieval.html``: each
query's top images and its words -> boxes in each. The pages are self-contained HTML (`align.show.write_show`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from dvsa.align.show import UnknownImageIds, write_show
from dvsa.data.errors import UsageError
from dvsa.scripts._args import (
    add_beta_args,
    add_model_args,
    nonneg_int,
    open_inputs,
    parser,
    positive_int,
    resolve_beta,
)


def main(argv: list[str] | None = None) -> int:
    p = parser("dvsa align show", __doc__)
    add_model_args(p, "test")
    add_beta_args(p)
    p.add_argument("--n-images", type=positive_int, default=12, help="pictures of the first N images of the split")
    p.add_argument("--ids", default=None, help="comma-separated image ids to draw instead of the first N")
    p.add_argument("--sentences", type=positive_int, default=5, help="sentences drawn per image")
    p.add_argument("--query", action="append", default=[], help="a search sentence (repeatable)")
    p.add_argument("--query-sentences", type=nonneg_int, default=0,
                   help="use the first sentence of N images as queries (0: none)")
    p.add_argument("--top", type=positive_int, default=5, help="images per query on the retrieval page")
    p.add_argument("--width", type=positive_int, default=448, help="picture width in pixels")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)

    model, vocab, store, records, all_records = open_inputs(args)
    beta, how = resolve_beta(args, model, vocab, store, all_records)
    print(f"beta {beta:.4g} ({how})")
    try:
        res = write_show(model, vocab, store, records, all_records, beta, args.out,
                         ids=args.ids.split(",") if args.ids else None, images=args.n_images,
                         sentences=args.sentences, queries=args.query, query_sentences=args.query_sentences,
                         top=args.top, width=args.width, root=args.root, device=args.device,
                         info={"beta_source": how, "checkpoint": args.checkpoint, "store": args.store,
                               "dataset": args.dataset, "split": args.split})
    except UnknownImageIds as e:  # --ids names images the split lacks: a usage fault
        raise UsageError(f"--ids: {e}") from e
    print(f"{len(res['chosen'])} pictures -> {Path(args.out)}/ ; page {res['page']}")
    if res["retrieval"]:
        print(f"{len(res['queries'])} queries against {len(records)} images -> {res['retrieval']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
