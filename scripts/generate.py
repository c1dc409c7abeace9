"""``dvsa generate``: stage 2 commands."""
from scripts._dispatch import dispatch

TABLE = {
    "train": ("scripts.generate_train", "train the multimodal RNN on full images or region snippets"),
    "eval": ("scripts.generate_eval", "caption a split and score it (BLEU, METEOR, ROUGE-L, CIDEr)"),
}


def main(argv=None):
    return dispatch("generate", TABLE, argv)
