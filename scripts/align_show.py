"""``dvsa align show``: alignment pictures (PNG per image + index.html) and an image-search page.

    dvsa align show --checkpoint runs/align/model.pt --store runs/features --dataset synthetic \
        --root runs/synth --split test --images 12 --beta-from runs/snippets.summary.json --out runs/show

writes ``OUT/<image id>.png`` (image with coloured boxes, sentences below with coloured snippets and scores),
``OUT/index.html`` (the same, inline) and, with ``--query TEXT`` (repeatable) or ``--query-sentences N``
(the first sentence of N images of the split, whose own image is marked), ``OUT/retrieval.html``: each
query's top images and its words -> boxes in each. The pages are self-contained HTML.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dvsa.align.show import write_alignment_page, write_retrieval_page
from dvsa.scripts._args import add_beta_args, add_model_args, open_inputs, resolve_beta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dvsa align show", description=__doc__.split("\n\n")[0])
    add_model_args(p, "test")
    add_beta_args(p)
    p.add_argument("--images", type=int, default=12, help="pictures of the first N images of the split")
    p.add_argument("--ids", default=None, help="comma-separated image ids to draw instead of the first N")
    p.add_argument("--sentences", type=int, default=5, help="sentences drawn per image")
    p.add_argument("--query", action="append", default=[], help="a search sentence (repeatable)")
    p.add_argument("--query-sentences", type=int, default=0, help="use the first sentence of N images as queries")
    p.add_argument("--top", type=int, default=5, help="images per query on the retrieval page")
    p.add_argument("--width", type=int, default=448, help="picture width in pixels")
    p.add_argument("--out", required=True, help="output folder")
    args = p.parse_args(argv)

    model, vocab, store, records, all_records = open_inputs(args)
    beta, how = resolve_beta(args, model, vocab, store, all_records)
    print(f"beta {beta:.4g} ({how})")
    if args.ids:
        want = args.ids.split(",")
        by_id = {r.id: r for r in all_records}
        missing = [i for i in want if i not in by_id]
        if missing:
            print(f"dvsa align show: unknown image ids {missing}", file=sys.stderr)
            return 2
        chosen = [by_id[i] for i in want]
    else:
        chosen = [r for r in records if r.id in store][: args.images]
    out = Path(args.out)
    page = write_alignment_page(model, vocab, store, chosen, beta, out, root=args.root,
                                sentences_per_image=args.sentences, width=args.width, device=args.device)
    print(f"{len(chosen)} pictures -> {out}/ ; page {page}")
    queries = list(args.query) + [r.sentences[0] for r in records if r.sentences and r.id in store][: args.query_sentences]
    if queries:
        rpage = write_retrieval_page(model, vocab, store, records, queries, beta, out / "retrieval.html", k=args.top,
                                     root=args.root, width=args.width, device=args.device)
        print(f"{len(queries)} queries against {len(records)} images -> {rpage}")
    (out / "show.json").write_text(json.dumps({"beta": beta, "beta_source": how, "checkpoint": args.checkpoint,
                                               "store": args.store, "dataset": args.dataset, "split": args.split,
                                               "images": [r.id for r in chosen], "queries": len(queries)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
