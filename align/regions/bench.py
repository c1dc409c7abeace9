"""How fast is the offline region recipe here? (``dvsa bench features``)

    res = bench_features(FeaturesBenchConfig(images="../shared/datasets/flickr8k/images", n=200, total=7000))
    print(format_features_report(res))

Encodes a sample of `n` images with `RegionConfig` defaults (selective search + EfficientNet-Lite0), stage by
stage (decode, proposals, CNN), then end to end through `extract_features` (DataLoader workers, resumable store;
by default one worker beside the CNN in the main process, then two workers that each run the CNN), and reports
images/s with the time extrapolated to `total` images. Wall time is what you wait on *this* machine now; CPU
time (all threads) is reported too, because on a shared machine the wall clock mostly measures the other
tenants: ``projected`` = CPU time / cores, what an otherwise idle machine of this size would take. The CNN floor
is the backbone's FLOPs at the matrix-multiply rate measured in the same run. Optional: `recall` specs
("synthetic:ROOT", "coco:ROOT") measure box recall at IoU 0.5 against annotated objects; `probe` (a synthetic
root) fits linear colour and shape probes on region features of ground-truth boxes.

`bench_features` returns a dict whose "rows" are the table's rows (one dict per stage / end-to-end run);
`format_features_report` prints it as ``dvsa bench features`` does.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from dvsa.align.regions import extract_features
from dvsa.align.regions.backbones import build_backbone
from dvsa.align.regions.config import RegionConfig
from dvsa.align.regions.encoder import RegionEncoder, net_scale, prepare
from dvsa.align.regions.extract import resolve_workers
from dvsa.align.regions.images import load_rgb
from dvsa.align.regions.proposals import selective_search
from dvsa.data.catalog import load_dataset
from dvsa.data.records import ImageRecord
from dvsa.data.synthetic import COLOUR_WORDS
from torch import nn
from torchvision.ops import box_iou

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class FeaturesBenchConfig:
    """What ``dvsa bench features`` measures (its flags override these)."""

    images: str = ""  # image folder (may be empty / missing with `recall` or `probe`)
    n: int = 200  # sample size
    total: int = 7000  # extrapolate to this many images
    batch_size: int = 16
    workers: str = "1:main,2:workers"  # end-to-end runs: N (workers) or N:main / N:workers (where the CNN runs)
    threads: int = 0  # torch threads in the main process (0: torch's default)
    overrides: dict = field(default_factory=dict)  # RegionConfig overrides
    recall: list[str] = field(default_factory=list)  # DATASET:ROOT specs: measure box recall
    recall_n: int = 100
    probe: str | None = None  # SYNTHETIC_ROOT: linear colour/shape probes
    skip_stages: bool = False
    matmul_n: int = 2048  # matrix side for the GFLOP/s measurement


class NoImagesError(FileNotFoundError):
    """The image folder has no images (and there is no recall / probe to run instead)."""


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


class ChildrenCPU:
    """CPU seconds of finished child processes (DataLoader workers) since the previous `since_last` (or since
    this was made): process_time() does not count them."""

    def __init__(self):
        self.last = self._now()

    @staticmethod
    def _now() -> float:
        r = os.times()
        return r.children_user + r.children_system

    def since_last(self) -> float:
        now = self._now()
        before, self.last = self.last, now
        return now - before


def matmul_gflops(n: int = 2048, reps: int = 5) -> tuple[float, float]:
    """float32 GFLOP/s of an n x n matmul with torch's current threads, best of `reps`: (per wall second, per
    CPU second of one core). On a shared machine the second is the one that says what a core can do."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    wall = cpu = float("inf")
    for _ in range(reps):
        with Clock() as c:
            a @ b
        wall, cpu = min(wall, c.wall), min(cpu, c.cpu)
    return 2 * n**3 / wall / 1e9, 2 * n**3 / cpu / 1e9


def backbone_gflops(backbone, size: int) -> float:
    """GFLOPs (2 x multiply-adds) of convolutions and linear layers for one size x size image (feature map only)."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            total[0] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total[0] += 2 * out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in backbone.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        backbone.fmap(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total[0] / 1e9


def _row(name: str, wall: float, cpu: float, n: int, total: int, cores: int) -> dict:
    """A table row: per-image wall / CPU ms, images/s, minutes for `total` images (wall, projected idle)."""
    return {"stage": name, "wall_ms": 1000 * wall / n, "cpu_ms": 1000 * cpu / n,
            "images_per_s": n / wall if wall > 0 else float("inf"),
            "wall_min_total": wall / n * total / 60, "proj_min_total": cpu / n * total / cores / 60}


def stage_rows(paths: list[str], cfg: RegionConfig, total: int, cores: int) -> list[dict]:
    """Rows of the stages one at a time: decode, selective search, proposals, CNN, and their sum."""
    n = len(paths)
    enc = RegionEncoder(cfg)
    with Clock() as dec:
        images = [load_rgb(p) for p in paths]
    with Clock() as ss:
        for im in images:
            selective_search(np.asarray(im), cfg)
    with Clock() as prep:
        items = [prepare(im, cfg) for im in images]
    as_proposed = [dict(it) for it in items]  # encode_batch replaces an item's "proposals" with the moved boxes
    enc.encode_batch(items[: min(2, n)])  # warm-up
    with Clock() as cnn:
        for s in range(0, n, cfg.batch_size):
            enc.encode_batch(items[s : s + cfg.batch_size])
    props = np.mean([len(it["proposals"]) for it in items])
    return [
        _row("decode (PIL -> RGB)", dec.wall, dec.cpu, n, total, cores),
        _row(f"selective search ({props:.0f} props)", ss.wall, ss.cpu, n, total, cores),
        _row("proposals (resize + SS + filter)", prep.wall, prep.cpu, n, total, cores),
        _row(f"CNN + scoring + pool (b={cfg.batch_size})", cnn.wall, cnn.cpu, n, total, cores),
        _row("sum of stages", dec.wall + prep.wall + cnn.wall, dec.cpu + prep.cpu + cnn.cpu, n, total, cores),
    ] + head_rows(enc, as_proposed, total, cores)


def head_rows(enc: RegionEncoder, items: list[dict], total: int, cores: int) -> list[dict]:
    """The box head alone, one pass over every proposal of the sample on its images' feature maps: the earlier
    path (every cell pooled with its own weight map, the MLP's input concatenated: `BoxHead.outputs_concat`)
    and the default (`BoxHead.outputs`). No rows without a box head."""
    head, s = enc.box_head, float(enc.cfg.image_size)
    if head is None:
        return []
    rows, n = [], len(items)
    with torch.inference_mode():
        maps = []
        for i in range(0, n, enc.cfg.batch_size):
            batch = items[i : i + enc.cfg.batch_size]
            fmap, mid = enc.backbone.fmaps(enc._to_input(torch.stack([it["net"] for it in batch])))
            boxes = [torch.from_numpy(it["proposals"] * net_scale(it["size"], s)) for it in batch]
            maps.append((fmap.float(), mid if head.cfg.mid_dim else None, boxes))
        props = np.mean([len(b) for _, _, bs in maps for b in bs])
        for name, fn in (("old: per-cell pooling", head.outputs_concat), ("new: separable pooling", head.outputs)):
            with Clock() as t:
                for fmap, mid, boxes in maps:
                    fn(fmap, boxes, s, mid)
            rows.append(_row(f"box head, {props:.0f} boxes, {name}", t.wall, t.cpu, n, total, cores))
    return rows


def end_to_end_row(paths: list[str], cfg: RegionConfig, spec: str, total: int, cores: int,
                   children: ChildrenCPU) -> dict:
    """One `extract_features` run; spec "N" (N workers, the CNN where cfg.cnn_place says) or "N:main" /
    "N:workers" (the CNN in the main process / in each worker)."""
    n, _, place = spec.partition(":")
    records = [ImageRecord(id=Path(p).stem, path=p) for p in paths]
    c = type(cfg)(**{**cfg.__dict__, "workers": int(n), "cnn_place": place or cfg.cnn_place, "progress": False})
    workers, in_workers = resolve_workers(c, cores)
    with tempfile.TemporaryDirectory() as d:
        with Clock() as t:
            extract_features(records, Path(d) / "store", c)
        cpu = t.cpu + children.since_last()  # worker processes' CPU time is not in process_time()
    where = "CNN in each" if in_workers else "CNN in main"
    return _row(f"extract_features, {workers} workers, {where}", t.wall, cpu, len(paths), total, cores)


def box_recall(spec: str, n: int, cfg: RegionConfig) -> dict:
    """Recall at IoU 0.5 of annotated objects by the proposals and by the kept boxes (rows 1..) on the first `n`
    annotated images of "DATASET:ROOT"."""
    name, root = spec.split(":", 1)
    records = [r for r in load_dataset(name, root) if r.regions][:n]
    enc = RegionEncoder(cfg)
    hp, hk, hk_big, n_big, total, props = 0, 0, 0, 0, 0, 0
    for r in records:
        im = load_rgb(r.path)
        gt = torch.tensor([g.box for g in r.regions], dtype=torch.float32)
        it = prepare(im, cfg)
        boxes = enc.encode_batch([it])[0][0][1:]
        big = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) >= 0.01 * im.size[0] * im.size[1]
        for b, acc in ((it["proposals"], "p"), (boxes, "k")):
            hit = (box_iou(gt, torch.from_numpy(b)).max(1).values >= 0.5) if len(b) else torch.zeros(len(gt), dtype=bool)
            if acc == "p":
                hp += int(hit.sum())
            else:
                hk += int(hit.sum())
                hk_big += int(hit[big].sum())
        n_big += int(big.sum())
        total += len(gt)
        props += len(it["proposals"])
    return {"dataset": name, "images": len(records), "objects": total, "big_objects": n_big,
            "proposals": hp / total, "proposals_per_image": props / len(records), "max_boxes": cfg.max_boxes,
            "kept": hk / total, "kept_big": hk_big / max(n_big, 1)}


def format_recall(r: dict) -> str:
    return (f"recall@0.5 on {r['dataset']} ({r['images']} images, {r['objects']} objects, {r['big_objects']} with "
            f"area >= 1% of the image): proposals {r['proposals']:.3f} ({r['proposals_per_image']:.0f}/image), "
            f"kept top-{r['max_boxes']} {r['kept']:.3f} (objects >= 1%: {r['kept_big']:.3f})")


def probe(root: str, cfg: RegionConfig, n: int = 200) -> dict:
    """Do region features encode colour and shape? Linear probes (logistic regression) on the synthetic scenes'
    ground-truth boxes: trained on the objects of the train split, accuracy on the objects of the val split."""
    records = load_dataset("synthetic", root)
    enc = RegionEncoder(type(cfg)(**{**cfg.__dict__, "backend": "given"}))
    data = {"train": ([], [], []), "val": ([], [], [])}
    for split in data:
        for r in [r for r in records if r.split == split][:n]:
            boxes = np.array([g.box for g in r.regions], np.float32)
            _, feats, _ = enc.encode_batch([prepare(load_rgb(r.path), enc.cfg, boxes)])[0]
            for g, f in zip(r.regions, feats[1:]):
                colour = next(w for w in (g.text or "").split() if w in COLOUR_WORDS)
                data[split][0].append(f)
                data[split][1].append(colour)
                data[split][2].append(g.label)
    out = {"backbone": cfg.backbone, "pooling": cfg.pooling, "train_objects": len(data["train"][0]),
           "val_objects": len(data["val"][0])}
    for k, what in ((1, "colour"), (2, "shape")):
        classes = sorted(set(data["train"][k]))
        xtr = torch.tensor(np.stack(data["train"][0]))
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        ytr = torch.tensor([classes.index(c) for c in data["train"][k]])
        keep = [i for i, c in enumerate(data["val"][k]) if c in classes]
        xva = torch.tensor(np.stack([data["val"][0][i] for i in keep]))
        yva = torch.tensor([classes.index(data["val"][k][i]) for i in keep])
        lin = torch.nn.Linear(xtr.shape[1], len(classes))
        opt = torch.optim.LBFGS(lin.parameters(), max_iter=200)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(lin((xtr - mu) / sd), ytr) + 1e-3 * lin.weight.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            acc = float((lin((xva - mu) / sd).argmax(1) == yva).float().mean())
        chance = float(np.bincount(ytr.numpy()).max() / len(ytr))
        out[what] = {"accuracy": acc, "classes": len(classes), "majority": chance}
    return out


def format_probe(p: dict) -> str:
    parts = [f"{what}: {100 * p[what]['accuracy']:.1f}% ({p[what]['classes']} classes, majority "
             f"{100 * p[what]['majority']:.1f}%)" for what in ("colour", "shape")]
    return (f"linear probe on ground-truth boxes ({p['backbone']}, {p['pooling']}; {p['train_objects']} train / "
            f"{p['val_objects']} val objects): " + ", ".join(parts))


def image_paths(folder: str) -> list[str]:
    """The .jpg / .jpeg / .png files of `folder`, sorted (none if it does not exist)."""
    return sorted(str(q) for q in Path(folder).glob("*") if q.suffix.lower() in IMAGE_SUFFIXES)


def bench_features(cfg: FeaturesBenchConfig) -> dict:
    """Run the benchmark. NoImagesError when `cfg.images` has no images and there is no recall / probe.

    Returns {"machine": {...}, "matmul": {...}, "backbone": {...}, "images", "sample", "total", "cores",
    "rows": [table rows: {"stage", "wall_ms", "cpu_ms", "images_per_s", "wall_min_total", "proj_min_total"}],
    "load_after", "skip_stages", "recall": [box_recall dicts], "probe": probe dict or None}."""
    paths = image_paths(cfg.images)
    if not paths and not (cfg.recall or cfg.probe):
        raise NoImagesError(f"no images in {cfg.images}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rcfg = RegionConfig(**{"batch_size": cfg.batch_size, "progress": False, **cfg.overrides})
    cores = os.cpu_count() or 1
    load = os.getloadavg()
    wall_gf, core_gf = matmul_gflops(cfg.matmul_n)
    gflops = core_gf * cores  # the whole machine, idle
    net = build_backbone(rcfg.backbone, pretrained=False)
    bb_gf = backbone_gflops(net, rcfg.image_size)
    crops_gf = rcfg.max_boxes * backbone_gflops(net, rcfg.warp_size) if rcfg.pooling == "warp" else 0.0
    score_gf = 2 * 100 * net.dim * 1000 / 1e9  # the ImageNet head on ~100 proposals
    res = {"machine": {"cores": cores, "torch_threads": torch.get_num_threads(), "loadavg": load[0]},
           "matmul": {"n": cfg.matmul_n, "wall_gflops": wall_gf, "core_gflops": core_gf, "idle_gflops": gflops},
           "backbone": {"name": rcfg.backbone, "image_size": rcfg.image_size, "gflop": bb_gf, "crops_gflop": crops_gf,
                        "max_boxes": rcfg.max_boxes, "warp_size": rcfg.warp_size, "scoring_gflop": score_gf,
                        "recipe_gflop": bb_gf + crops_gf + score_gf},
           "images": cfg.images, "total": cfg.total, "cores": cores, "sample": 0, "rows": [], "load_after": None,
           "skip_stages": cfg.skip_stages, "recall": [], "probe": None}
    rng = np.random.default_rng(0)
    sample = [paths[i] for i in sorted(rng.choice(len(paths), min(cfg.n, len(paths)), replace=False))] if paths else []
    if sample:
        res["sample"] = len(sample)
        rows = [] if cfg.skip_stages else stage_rows(sample, rcfg, cfg.total, cores)
        children = ChildrenCPU()
        for spec in [x.strip() for x in cfg.workers.split(",") if x.strip()]:
            rows.append(end_to_end_row(sample, rcfg, spec, cfg.total, cores, children))
        res["rows"] = rows
        res["load_after"] = os.getloadavg()[0]
    res["recall"] = [box_recall(spec, cfg.recall_n, rcfg) for spec in cfg.recall]
    if cfg.probe:
        res["probe"] = probe(cfg.probe, rcfg)
    return res


def format_features_table(rows: list[dict], skip_stages: bool = False) -> str:
    """The markdown table of `bench_features`' rows."""
    if skip_stages:
        head = ["| stage | wall ms/img | cpu ms/img | images/s | wall min/total | proj min/total |",
                "|---|---|---|---|---|---|"]
    else:
        head = ["| stage                                          | wall ms/img | cpu ms/img | images/s | wall min/total "
                "| proj min/total |", "|---|---|---|---|---|---|"]
    return "\n".join(head + [f"| {r['stage']:<46} | {r['wall_ms']:9.1f} | {r['cpu_ms']:9.1f} | "
                             f"{r['images_per_s']:9.1f} | {r['wall_min_total']:9.1f} | {r['proj_min_total']:9.1f} |"
                             for r in rows])


def format_features_report(res: dict) -> str:
    """Everything ``dvsa bench features`` prints: the machine and floor lines, the table, recall and probe."""
    m, mm, bb = res["machine"], res["matmul"], res["backbone"]
    cores, gflops, recipe_gf, total = m["cores"], mm["idle_gflops"], bb["recipe_gflop"], res["total"]
    lines = [
        f"machine: {cores} cores, torch threads {m['torch_threads']}, load average {m['loadavg']:.1f} "
        f"(other processes compete for the CPU when this is above ~{cores})",
        f"matmul {mm['n']}^3: {mm['wall_gflops']:.0f} GFLOP/s of wall time now, {mm['core_gflops']:.0f} GFLOP/s per "
        f"CPU-second of one core -> {gflops:.0f} GFLOP/s for {cores} idle cores",
        f"backbone {bb['name']}: {bb['gflop']:.2f} GFLOP for the whole image at {bb['image_size']}px"
        + (f" + {bb['crops_gflop']:.2f} for {bb['max_boxes']} boxes warped to {bb['warp_size']}px"
           if bb["crops_gflop"] else "")
        + f" + {bb['scoring_gflop']:.2f} scoring ~100 proposals = {recipe_gf:.2f} GFLOP/image",
        f"CNN floor at {gflops:.0f} GFLOP/s: {1000 * recipe_gf / gflops:.1f} ms/image = "
        f"{gflops / recipe_gf:.0f} images/s ({total * recipe_gf / gflops / 60:.1f} min for {total}); "
        "depthwise convolutions run far below the matmul rate, see the CNN row",
    ]
    if res["sample"]:
        lines += [f"\n{res['sample']} images from {res['images']}; minutes extrapolated to {total} images; "
                  f"proj = CPU time / {cores} cores (an idle machine)\n",
                  format_features_table(res["rows"], res["skip_stages"]),
                  f"\nload average after: {res['load_after']:.1f}"]
    lines += [format_recall(r) for r in res["recall"]]
    if res["probe"]:
        lines.append(format_probe(res["probe"]))
    return "\n".join(lines)
