"""``dvsa bench NAME [args...]``: benchmarks that print a table. ``dvsa bench`` lists them."""
from dvsa.scripts._dispatch import dispatch

TABLE = {
    "features": ("dvsa.scripts.bench_features", "region proposals + CNN features: images/s per backend and batch size"),
    "boxes": ("dvsa.scripts.bench_boxes", "region boxes: recall of the objects by size, old vs new recipe, images/s"),
    "align": ("dvsa.scripts.bench_align", "image-sentence scoring and MRF: batched vs one-by-one, pairs/s"),
    "decode": ("dvsa.scripts.bench_decode", "caption decoding: greedy, beam, batched vs single, images/s"),
    "serve": ("dvsa.scripts.bench_serve", "web app load test: concurrent clients, p50/p95 latency, peak RSS"),
    "train": ("dvsa.scripts.bench_train", "training steps: alignment old vs new path, generators, pairs/s vs FLOP floor"),
    "index": ("dvsa.scripts.bench_index", "photo search: FAISS + eq. 8 rerank vs exhaustive, 100,000 photos"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("bench", TABLE, argv)
