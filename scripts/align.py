"""``dvsa align``: stage 1 commands."""
from dvsa.scripts._dispatch import dispatch

TABLE = {
    "train": ("dvsa.scripts.align_train", "train the alignment model on a feature store"),
    "eval": ("dvsa.scripts.align_eval", "image-sentence retrieval metrics (R@K, median rank)"),
    "boxscore": ("dvsa.scripts.align_boxscore", "fit a box score (whole object or not) on annotated boxes"),
    "snippets": ("dvsa.scripts.align_snippets", "MRF word-to-region snippets as JSON lines"),
    "evaluate": ("dvsa.scripts.align_evaluate", "word-to-region / phrase grounding accuracy"),
    "ground": ("dvsa.scripts.align_ground", "phrase grounding on photos: IoU / pointing beside box baselines"),
    "show": ("dvsa.scripts.align_show", "alignment pictures (PNG + HTML)"),
    "picture": ("dvsa.scripts.align_picture", "the words of your sentences on the regions of your own photos (PNG)"),
}


def main(argv=None):
    return dispatch("align", TABLE, argv)
