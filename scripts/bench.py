"""``dvsa bench NAME [args...]``: benchmarks that print a table. ``dvsa bench`` lists them."""
from dvsa.scripts._dispatch import dispatch

TABLE = {
    "features": ("dvsa.scripts.bench_features", "region proposals + CNN features: images/s per backend and batch size"),
    "align": ("dvsa.scripts.bench_align", "image-sentence scoring and MRF: batched vs one-by-one, pairs/s"),
    "decode": ("dvsa.scripts.bench_decode", "caption decoding: greedy, beam, batched vs single, images/s"),
}


def main(argv: list[str] | None = None) -> int:
    return dispatch("bench", TABLE, argv)
