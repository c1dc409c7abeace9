"""`Run`: what the pipeline's stages share (config, run folder, records of the splits, results so far), and the
`applies` checks that say when the data cannot support a stage."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path

from dvsa.data.catalog import load_dataset
from dvsa.data.features import FeatureStore
from dvsa.data.readers.report import ReadReport
from dvsa.data.records import DataError, ImageRecord, select_split
from dvsa.generate.metrics import MeteorScorer, find_java


class Run:
    """What the stages share: the config, the run folder, the records of the two splits, the results so far."""

    def __init__(self, cfg, out: Path, log=print):
        self.cfg = cfg
        self.out = Path(out)
        self.log = log
        self.results: dict[str, dict] = {}
        self.timings: dict[str, float] = {}
        self.overlap: dict[str, float] = {}  # seconds of a stage that ran beside the main line while it worked
        self.progress = True  # progress bars (off in a process beside the main line)
        self.train: list[ImageRecord] = []
        self.val: list[ImageRecord] = []  # validation (early stopping): the val split, or held-out train images
        self.eval: list[ImageRecord] = []
        self._stores: dict[str, object] = {}
        self._meteor = None
        self.data_report: ReadReport | None = None  # what the reader dropped or repaired, by reason

    def load_records(self) -> None:
        """train / val / eval records. With eval split "val", validation is a held-out slice of train.
        What the reader dropped or repaired is logged and kept in `data_report` (results.json's "data");
        `PipelineConfig.strict_data` makes the first such record an error."""
        cfg = self.cfg
        self.data_report = ReadReport(cfg.dataset, strict=cfg.strict_data)
        records = load_dataset(cfg.dataset, cfg.root, report=self.data_report)  # logs it ("dvsa.data")
        lim = (lambda rs: rs[: cfg.limit]) if cfg.limit is not None else (lambda rs: rs)
        self.train = lim(select_split(records, "train"))
        self.eval = lim(select_split(records, cfg.eval_split))
        if cfg.eval_split == "val":
            n = min(cfg.holdout_val, len(self.train) // 10)
            self.val = [dataclasses.replace(r, split="val") for r in self.train[len(self.train) - n :]] if n else []
            self.train = self.train[: len(self.train) - n]
        else:
            try:
                self.val = lim(select_split(records, "val"))
            except DataError:
                self.val = []
        self.log(f"{cfg.dataset}: {len(self.train)} train, {len(self.val)} validation and {len(self.eval)} "
                 f"{cfg.eval_split} images")

    def image_path(self, rec: ImageRecord) -> str:
        """The image file of a record: its path if that exists, else the path under the dataset root."""
        p = Path(rec.path)
        return str(p if p.is_absolute() or p.exists() else Path(self.cfg.root) / p)

    def store(self, name: str = "features"):
        """The feature store under ``out/name`` (opened once per run)."""
        if name not in self._stores:
            self._stores[name] = FeatureStore(self.out / name)
        return self._stores[name]

    def meteor(self):
        """One METEOR scorer (a JVM that takes ~30 s to load its tables) shared by every stage; None without Java
        (caption_metrics then scores without METEOR)."""
        if self._meteor is None and find_java() is not None:
            self._meteor = MeteorScorer()
        return self._meteor

    def close(self) -> None:
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None

    def usable(self, records: list[ImageRecord]) -> list[ImageRecord]:
        """The records whose image made it into the feature store (failed images are reported, then left out)."""
        store = self.store()
        return [r for r in records if r.id in store]

    def resolved_config(self) -> dict:
        """The pipeline config plus the resolved config of every stage that ran (defaults filled in)."""
        out = {"pipeline": asdict(self.cfg)}
        for name, res in self.results.items():
            if isinstance(res, dict) and "config" in res:
                out[name] = res["config"]
        return out


def has_region_text(run: Run) -> str | None:
    """None when the eval split has described ground-truth regions, else why a stage needing them cannot run."""
    if any(r.text for rec in run.eval for r in rec.regions):
        return None
    return "the eval split has no described ground-truth regions"


def has_phrases(run: Run) -> str | None:
    """None when the eval split has phrase-to-region ground truth, else why a stage needing it cannot run."""
    if any(rec.phrases for rec in run.eval):
        return None
    return "the eval split has no phrase-to-region ground truth"
