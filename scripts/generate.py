"""``dvsa generate``: stage 2 commands."""
from dvsa.scripts._dispatch import dispatch

TABLE = {
    "train": ("dvsa.scripts.generate_train", "train the multimodal RNN on full images or region snippets"),
    "eval": ("dvsa.scripts.generate_eval", "caption a split and score it (BLEU, METEOR, ROUGE-L, CIDEr)"),
}


def main(argv=None):
    return dispatch("generate", TABLE, argv)
