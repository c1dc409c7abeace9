"""`extract_features`: records in, a resumable feature store out (batched, multi-process, multi-rank).

Images are decoded and proposed (selective search) in DataLoader worker processes. On the CPU each worker also
runs the CNN on its own batches with one thread (cfg.cnn_place "workers"): images in parallel rather than one
image's convolutions split across threads, which on small tensors mostly wait on each other. Beside a GPU the
CNN runs in the main process on cfg.device ("main"). Results are appended to a `FeatureStoreWriter` in the main
process, which commits atomically every cfg.part_size images: a run killed at any point leaves whole parts only,
and running the same command again skips the images already stored. Images that cannot be read are listed in
failed.jsonl and in a printed report; the rest finishes. The resolved config is written next to the store as
region_config.json.
"""
from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from dvsa.data.distributed import cleanup
from dvsa.data.features import FeatureStore, FeatureStoreWriter, prune_failed
from dvsa.data.io import atomic_write_json, check_writable
from dvsa.data.progress import progress
from dvsa.data.records import ImageRecord
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from . import distributed
from .config import RegionConfig
from .encoder import RegionEncoder, prepare
from .images import ImageError, load_rgb
from .proposals import given_boxes_of


class _Images(Dataset):
    """Decode + prepare one record; returns ("ok", id, path, item) or ("fail", id, path, reason)."""

    def __init__(self, records: list[ImageRecord], cfg: RegionConfig, given: dict[str, np.ndarray] | None):
        self.records, self.cfg, self.given = records, cfg, given

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        try:
            image = load_rgb(r.path, self.cfg.max_pixels)
        except ImageError as e:
            return ("fail", r.id, r.path, e.reason)
        boxes = None
        if self.given is not None:
            boxes = self.given.get(r.id, np.zeros((0, 4), np.float32))
        elif self.cfg.backend == "given":
            boxes = given_boxes_of(r)
        try:
            return ("ok", r.id, r.path, prepare(image, self.cfg, boxes))
        except Exception as e:  # e.g. selective search failing on a degenerate image: report, keep going
            return ("fail", r.id, r.path, f"cannot prepare: {type(e).__name__}: {e}")


def _encode_rows(encoder: RegionEncoder, rows: list[tuple]) -> list[tuple]:
    """Rows of `_Images` -> ("ok", id, path, (size, (boxes, regions, image_feature))) per prepared image, one
    `encode_batch` for all of them; "fail" rows pass through."""
    good = [r for r in rows if r[0] == "ok"]
    results = iter(encoder.encode_batch([r[3] for r in good]))
    return [("ok", r[1], r[2], (r[3]["size"], next(results))) if r[0] == "ok" else r for r in rows]


class _Encoded(_Images):
    """Decode, prepare and encode a batch of records in one process (a DataLoader worker): indices -> rows of
    `_encode_rows`. The worker's copy of the encoder is the main process's, inherited at fork."""

    def __init__(self, records, cfg, given, encoder: RegionEncoder):
        super().__init__(records, cfg, given)
        self.encoder = encoder

    def __getitem__(self, indices):
        return _encode_rows(self.encoder, [super(_Encoded, self).__getitem__(i) for i in indices])


def resolve_workers(cfg: RegionConfig, cores: int) -> tuple[int, bool]:
    """(DataLoader workers, whether they run the CNN) for cfg on a machine with `cores` cores."""
    cpu = torch.device(cfg.device).type == "cpu"
    workers = cfg.workers if cfg.workers >= 0 else (cores if cpu else max(1, cores - 1))
    place = cfg.cnn_place
    if place == "auto":
        place = "workers" if cpu and workers >= 2 else "main"
    if place == "workers" and workers == 0:
        raise ValueError("cnn_place='workers' needs workers >= 1")
    if place == "workers" and not cpu:
        raise ValueError("cnn_place='workers' runs the CNN on the CPU; use cnn_place='main' with a GPU")
    return workers, place == "workers"


def cnn_threads(cores: int, workers: int) -> int:
    """Torch threads for the CNN in the main process (cnn_place "main") beside `workers` DataLoader workers: a
    worker (decode + selective search, about a quarter of the CNN's CPU time per image) leaves most of its core to
    the CNN, so all but workers - 1 cores. Flickr8k on 2 cores, 1 worker: 2 threads 7.4 images/s, 1 thread 6.0;
    2 workers with 2 threads 6.3 (the CNN in each of 2 workers instead: about 10)."""
    return max(1, cores - max(0, workers - 1))


def _worker_init(_, threads: int = 1):
    torch.set_num_threads(threads)
    cv2.setNumThreads(1)


def _collate(batch):
    return batch


def _progress(total: int, enabled: bool, desc: str):
    return progress(total=total, desc=desc, unit="img", enabled=enabled)


def extract_features(
    records: list[ImageRecord],
    out_dir: str | Path,
    cfg: RegionConfig | None = None,
    given_boxes: dict[str, np.ndarray] | None = None,
    encoder: RegionEncoder | None = None,
    retry_failed: bool = True,
) -> FeatureStore:
    """Encode every record's image into the store at `out_dir` (created or resumed); returns the store.

    records: images to encode (records without a readable image are reported, not fatal). given_boxes: optional
    ``{image_id: float [P, 4] px}``; with cfg.backend == "given" and no given_boxes, each record's `regions` are
    used. Under torchrun (WORLD_SIZE > 1) each rank encodes ``records[rank::world]`` into parts tagged
    ``r<rank>``; all ranks return the complete store after a barrier. retry_failed: images listed in
    failed.jsonl by an earlier run are tried again (those read now leave the list: "N of M images that failed
    before were read this time"); False skips them.
    """
    cfg = cfg or RegionConfig()
    out = check_writable(Path(out_dir), "dir")  # before the encoder is built and any image is read
    started = distributed.init_if_needed(cfg.device)
    rank, world = distributed.rank_world()
    if encoder is not None and encoder.cfg.recipe() != cfg.recipe():
        raise ValueError("extract_features: the encoder was built with another recipe than cfg")
    encoder = encoder or RegionEncoder.from_config(cfg)
    writer = FeatureStoreWriter(out, encoder.meta, part_size=cfg.part_size, tag=f"r{rank}" if world > 1 else "0")
    distributed.barrier()  # no rank commits a part before every writer has cleaned up after earlier runs
    if rank == 0:
        atomic_write_json(out / "region_config.json", cfg.__dict__, indent=2)
    mine = distributed.shard(list(records), rank, world)
    failed_before = {d["id"] for d in FeatureStore(out).failed()}
    not_done = [r for r in mine if not writer.done(r.id)]
    todo = [r for r in not_done if retry_failed or r.id not in failed_before]
    skipped = len(mine) - len(not_done)  # already in the store
    retried = sum(r.id in failed_before for r in todo)
    not_retried = len(not_done) - len(todo)
    recovered = 0
    cores = os.cpu_count() or 1
    workers, in_workers = resolve_workers(cfg, cores)
    if in_workers:  # each worker takes whole batches (a list of indices per fetch) and encodes them
        dataset = _Encoded(todo, cfg, given_boxes, encoder)
        batching = {"batch_size": None, "sampler": BatchSampler(SequentialSampler(dataset), cfg.batch_size, False)}
    else:
        dataset, batching = _Images(todo, cfg, given_boxes), {"batch_size": cfg.batch_size}
    loader = DataLoader(
        dataset,
        **batching,
        num_workers=workers,
        collate_fn=_collate,
        worker_init_fn=partial(_worker_init, threads=(cfg.threads or 1) if in_workers else 1) if workers > 0 else None,
        persistent_workers=False,
        # workers are forked (Linux): selective_search keeps OpenCV's thread pool off, since a fork of a process
        # whose pool has run deadlocks in the child
        pin_memory=encoder.device.type == "cuda",
    )
    failures: list[tuple[str, str, str]] = []
    bar = _progress(len(todo), cfg.progress and rank == 0, f"features{f' rank {rank}' if world > 1 else ''}")
    t0 = time.perf_counter()
    n_ok = 0
    old_threads = torch.get_num_threads()
    if encoder.device.type == "cpu" and not in_workers:
        torch.set_num_threads(cfg.threads or cnn_threads(cores, workers))
    try:
        for batch in loader:
            rows = batch if in_workers else _encode_rows(encoder, batch)
            for status, image_id, path, payload in rows:
                if status == "fail":
                    writer.fail(image_id, path, payload)
                    failures.append((image_id, path, payload))
                    continue
                size, (boxes, regions, image_feature) = payload
                writer.add(image_id, boxes, regions, image_feature, size)
                n_ok += 1
                recovered += image_id in failed_before
            bar.update(len(batch))
    finally:
        torch.set_num_threads(old_threads)
        bar.close()
        writer.close()  # commits what is finished, also when interrupted by an exception
    dt = time.perf_counter() - t0
    _report(out, rank, n_ok, skipped, failures, dt, retried, recovered, not_retried)
    distributed.barrier()
    if rank == 0 and failed_before:  # the images read this time leave failed.jsonl (rewritten atomically)
        prune_failed(out)
    distributed.barrier()
    if started:
        cleanup()
    return FeatureStore(out)


def _report(out: Path, rank: int, n_ok: int, skipped: int, failures: list, seconds: float, retried: int = 0,
            recovered: int = 0, not_retried: int = 0) -> None:
    who = f"[rank {rank}] " if distributed.rank_world()[1] > 1 else ""
    rate = n_ok / seconds if seconds > 0 else 0.0
    before = f", {not_retried} failed before (not retried)" if not_retried else ""
    print(
        f"{who}{out}: encoded {n_ok} images in {seconds:.1f} s ({rate:.2f} images/s), "
        f"{skipped} already done{before}, {len(failures)} failed now",
        file=sys.stderr,
    )
    if retried:
        print(f"{who}  {recovered} of {retried} images that failed before were read this time", file=sys.stderr)
    for image_id, path, reason in failures:
        print(f"{who}  skipped {image_id} ({path}): {reason}", file=sys.stderr)
    if failures:
        print(f"{who}  (listed in {out / 'failed.jsonl'})", file=sys.stderr)
