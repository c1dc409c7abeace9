"""``dvsa retrieve --index INDEX "a sentence"``: the best photos of an index built by `dvsa index`.

    dvsa retrieve --index runs/mine_index "a dog runs on the beach" --k 10 --html top.html --out top.json

FAISS candidates reranked exactly with eq. 8 (`dvsa.align.index`), less each photo's bank correction when the
index was built from a run whose retrieval stage chose one (`align.hubness`). Prints a table; --html writes a
page of the photos, --out the JSON.
"""
from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path

from dvsa.align.index import Index
from dvsa.data.io import atomic_write_json, atomic_write_text
from dvsa.scripts._args import add_device_arg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dvsa retrieve --index", description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="index folder (dvsa index --out)")
    p.add_argument("sentence", nargs="+", help="the query sentence")
    p.add_argument("--k", type=int, default=10, help="how many photos (10)")
    p.add_argument("--candidates", type=int, default=None, help="FAISS candidates reranked (default max(100, 10 k))")
    p.add_argument("--html", default=None, help="write an HTML page of the results")
    p.add_argument("--out", default=None, help="results JSON")
    add_device_arg(p)
    args = p.parse_args(argv)
    sentence = " ".join(args.sentence)
    idx = Index.load(args.index, device=args.device)
    results = idx.search(sentence, args.k, args.candidates)
    hub = idx.hubness
    how = f"eq. 8 less the bank correction (beta {hub['beta']:g}, {hub['sentences']} sentences)" if hub else "eq. 8"
    print(f"sentence: {sentence!r} ({len(idx)} photos, {idx.vectors.backend} candidates, {how})")
    print(f"{'rank':>4}  {'score':>9}  photo")
    for r in results:
        print(f"{r['rank']:>4}  {r['score']:>9.3f}  {r['path'] or r['image_id']}")
    if args.out:
        atomic_write_json(args.out, {"query": sentence, "index": str(args.index), "results": results})
    if args.html:
        page = Path(args.html)
        cells = "".join(
            f'<figure><img src="{html.escape(_rel(r["path"], page))}" alt=""><figcaption>{r["rank"]}. '
            f'{html.escape(Path(r["image_id"]).name)} ({r["score"]:.2f})</figcaption></figure>' for r in results)
        atomic_write_text(page, f"<!doctype html><meta charset='utf-8'><title>{html.escape(sentence)}</title>"
                          "<style>figure{display:inline-block;margin:6px;font:13px sans-serif}"
                          "img{width:200px;height:200px;object-fit:cover}</style>"
                          f"<h2>{html.escape(sentence)}</h2>{cells}")
    return 0


def _rel(path, page: Path) -> str:
    if not path:
        return ""
    return Path(os.path.relpath(Path(path).resolve(), page.resolve().parent)).as_posix()


if __name__ == "__main__":
    sys.exit(main())
