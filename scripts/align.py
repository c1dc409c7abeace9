"""``dvsa align``: stage 1 commands."""
from scripts._dispatch import dispatch

TABLE = {
    "train": ("scripts.align_train", "train the alignment model on a feature store"),
    "eval": ("scripts.align_eval", "image-sentence retrieval metrics (R@K, median rank)"),
    "boxscore": ("scripts.align_boxscore", "fit a box score (whole object or not) on annotated boxes"),
    "snippets": ("scripts.align_snippets", "MRF word-to-region snippets as JSON lines"),
    "evaluate": ("scripts.align_evaluate", "word-to-region / phrase grounding accuracy"),
    "show": ("scripts.align_show", "alignment pictures (PNG + HTML)"),
}


def main(argv=None):
    return dispatch("align", TABLE, argv)
