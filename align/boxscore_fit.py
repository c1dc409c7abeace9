"""Fitting the learned box score (`align.boxscore`) on the annotated boxes of a dataset split, as
``dvsa align boxscore`` does: fit, report the tight-box rate on a check split, save the checkpoint."""
from __future__ import annotations

from dvsa.align.boxscore import (
    BoxScoreConfig,
    fit_box_scorer,
    save_box_scorer,
    tight_box_rate,
)
from dvsa.data import catalog
from dvsa.data.features import FeatureStore
from dvsa.data.io import check_writable
from dvsa.data.records import DataError, select_split


def fit_box_score_on_split(store: str, dataset: str, root: str, out: str, cfg: BoxScoreConfig,
                           split: str = "train", check_split: str | None = "val") -> dict:
    """Fit a box scorer on the boxes of `split` (no sentences needed), add ``tight_box_rate_<check_split>`` (how
    often the best-scored region around each annotated object is that object, IoU >= 0.5) when that split has
    records, save the scorer with its stats to `out`; returns the stats."""
    check_writable(out, "file")  # before the fit, not after it
    records = catalog.load_dataset(dataset, root)
    features = FeatureStore(store)
    scorer, stats = fit_box_scorer(features, select_split(records, split), cfg)
    try:
        check = select_split(records, check_split) if check_split else []
    except DataError:
        check = []
    if check:
        stats[f"tight_box_rate_{check_split}"] = tight_box_rate(scorer, features, check, 0.5)
    save_box_scorer(out, scorer, stats)
    return stats
