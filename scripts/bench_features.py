"""``dvsa bench features`` (or ``python -m dvsa.scripts.bench_features``): how fast is the offline region recipe here?

    python -m dvsa.scripts.bench_features --images ../shared/datasets/flickr8k/images --n 200 --total 7000

Encodes a sample of `--n` images with `RegionConfig` defaults (selective search + EfficientNet-Lite0), stage by
stage (decode, proposals, CNN), then end to end through `extract_features` (DataLoader workers, resumable store;
by default one worker beside the CNN in the main process, then two workers that each run the CNN),
and prints images/s with the time extrapolated to `--total` images. Wall time is what you wait on *this* machine
now; CPU time (all threads) is reported too, because on a shared machine the wall clock mostly measures the
other tenants: ``projected`` = CPU time / cores, what an otherwise idle machine of this size would take.
The CNN floor is the backbone's FLOPs at the matrix-multiply rate measured in the same run.
Optional: ``--recall synthetic:ROOT`` (or coco:ROOT) measures box recall at IoU 0.5 against annotated objects;
``--probe SYNTHETIC_ROOT`` fits linear colour and shape probes on region features of ground-truth boxes.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from dvsa.align.regions import extract_features
from dvsa.align.regions.backbones import build_backbone
from dvsa.align.regions.config import RegionConfig
from dvsa.align.regions.encoder import RegionEncoder, prepare
from dvsa.align.regions.extract import resolve_workers
from dvsa.align.regions.images import load_rgb
from dvsa.align.regions.proposals import selective_search
from dvsa.align.regions.set_fields import parse_set
from dvsa.data.catalog import load_dataset
from dvsa.data.records import ImageRecord
from dvsa.data.synthetic import COLOUR_WORDS
from torch import nn
from torchvision.ops import box_iou

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


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


def _row(name, wall, cpu, n, total, cores):
    ips = n / wall if wall > 0 else float("inf")
    proj = cpu / n * total / cores
    return f"| {name:<42} | {1000 * wall / n:9.1f} | {1000 * cpu / n:9.1f} | {ips:9.1f} | {wall / n * total / 60:9.1f} | {proj / 60:9.1f} |"


def stage_table(paths: list[str], cfg, total: int, cores: int) -> list[str]:
    n = len(paths)
    enc = RegionEncoder(cfg)
    with Clock() as dec:
        images = [load_rgb(p) for p in paths]
    with Clock() as ss:
        for im in images:
            selective_search(np.asarray(im), cfg)
    with Clock() as prep:
        items = [prepare(im, cfg) for im in images]
    enc.encode_batch(items[: min(2, n)])  # warm-up
    with Clock() as cnn:
        for s in range(0, n, cfg.batch_size):
            enc.encode_batch(items[s : s + cfg.batch_size])
    props = np.mean([len(it["proposals"]) for it in items])
    head = ["| stage                                      | wall ms/img | cpu ms/img | images/s | wall min/total | proj min/total |",
            "|---|---|---|---|---|---|"]
    rows = [
        _row("decode (PIL -> RGB)", dec.wall, dec.cpu, n, total, cores),
        _row(f"selective search ({props:.0f} props)", ss.wall, ss.cpu, n, total, cores),
        _row("proposals (resize + SS + filter)", prep.wall, prep.cpu, n, total, cores),
        _row(f"CNN + scoring + pool (b={cfg.batch_size})", cnn.wall, cnn.cpu, n, total, cores),
        _row("sum of stages", dec.wall + prep.wall + cnn.wall, dec.cpu + prep.cpu + cnn.cpu, n, total, cores),
    ]
    return head + rows


def end_to_end(paths: list[str], cfg, spec: str, total: int, cores: int) -> str:
    """One `extract_features` run; spec "N" (N workers, the CNN where cfg.cnn_place says) or "N:main" /
    "N:workers" (the CNN in the main process / in each worker)."""
    n, _, place = spec.partition(":")
    records = [ImageRecord(id=Path(p).stem, path=p) for p in paths]
    c = type(cfg)(**{**cfg.__dict__, "workers": int(n), "cnn_place": place or cfg.cnn_place, "progress": False})
    workers, in_workers = resolve_workers(c, cores)
    with tempfile.TemporaryDirectory() as d:
        with Clock() as t:
            extract_features(records, Path(d) / "store", c)
        # CPU time of worker processes is not in process_time(): add the children's
        cpu = t.cpu + _children_cpu_since(t)
    where = "CNN in each" if in_workers else "CNN in main"
    return _row(f"extract_features, {workers} workers, {where}", t.wall, cpu, len(paths), total, cores)


_CHILD0 = None


def _children_cpu_since(_clock) -> float:
    """CPU seconds of finished child processes since the last call (DataLoader workers)."""
    global _CHILD0
    r = os.times()
    now = r.children_user + r.children_system
    before, _CHILD0 = (_CHILD0 if _CHILD0 is not None else 0.0), now
    return now - before


def recall(spec: str, n: int, cfg) -> str:
    """Recall at IoU 0.5 of annotated objects by the proposals and by the kept boxes (rows 1..)."""
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
    return (f"recall@0.5 on {name} ({len(records)} images, {total} objects, {n_big} with area >= 1% of the image): "
            f"proposals {hp / total:.3f} ({props / len(records):.0f}/image), kept top-{cfg.max_boxes} {hk / total:.3f}"
            f" (objects >= 1%: {hk_big / max(n_big, 1):.3f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="dvsa bench features", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", default=str(REPO.parent / "shared/datasets/flickr8k/images"), help="image folder")
    p.add_argument("--n", type=int, default=200, help="sample size")
    p.add_argument("--total", type=int, default=7000, help="extrapolate to this many images")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", default="1:main,2:workers",
                   help="end-to-end runs, comma-separated: N (workers) or N:main / N:workers (where the CNN runs)")
    p.add_argument("--threads", type=int, default=0, help="torch threads in the main process (0: torch's default)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="RegionConfig overrides")
    p.add_argument("--recall", action="append", default=[], metavar="DATASET:ROOT", help="measure box recall")
    p.add_argument("--recall-n", type=int, default=100)
    p.add_argument("--probe", metavar="SYNTHETIC_ROOT", help="linear colour/shape probes on synthetic scenes")
    p.add_argument("--skip-stages", action="store_true")
    p.add_argument("--matmul-n", type=int, default=2048, help="matrix side for the GFLOP/s measurement")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)


    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = RegionConfig(**{"batch_size": args.batch_size, "progress": False, **parse_set(args.set)})
    cores = os.cpu_count() or 1
    load = os.getloadavg()
    wall_gf, core_gf = matmul_gflops(args.matmul_n)
    gflops = core_gf * cores  # the whole machine, idle
    net = build_backbone(cfg.backbone, pretrained=False)
    bb_gf = backbone_gflops(net, cfg.image_size)
    crops_gf = cfg.max_boxes * backbone_gflops(net, cfg.warp_size) if cfg.pooling == "warp" else 0.0
    score_gf = 2 * 100 * net.dim * 1000 / 1e9  # the ImageNet head on ~100 proposals
    print(f"machine: {cores} cores, torch threads {torch.get_num_threads()}, load average {load[0]:.1f} "
          f"(other processes compete for the CPU when this is above ~{cores})")
    print(f"matmul {args.matmul_n}^3: {wall_gf:.0f} GFLOP/s of wall time now, {core_gf:.0f} GFLOP/s per CPU-second of one "
          f"core -> {gflops:.0f} GFLOP/s for {cores} idle cores")
    recipe_gf = bb_gf + crops_gf + score_gf
    print(f"backbone {cfg.backbone}: {bb_gf:.2f} GFLOP for the whole image at {cfg.image_size}px"
          + (f" + {crops_gf:.2f} for {cfg.max_boxes} boxes warped to {cfg.warp_size}px" if crops_gf else "")
          + f" + {score_gf:.2f} scoring ~100 proposals = {recipe_gf:.2f} GFLOP/image")
    print(f"CNN floor at {gflops:.0f} GFLOP/s: {1000 * recipe_gf / gflops:.1f} ms/image = "
          f"{gflops / recipe_gf:.0f} images/s ({args.total * recipe_gf / gflops / 60:.1f} min for {args.total}); "
          "depthwise convolutions run far below the matmul rate, see the CNN row")
    paths = sorted(str(q) for q in Path(args.images).glob("*") if q.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths and not (args.recall or args.probe):
        print(f"dvsa bench features: no images in {args.images}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    sample = [paths[i] for i in sorted(rng.choice(len(paths), min(args.n, len(paths)), replace=False))] if paths else []
    if sample:
        print(f"\n{len(sample)} images from {args.images}; minutes extrapolated to {args.total} images; "
              f"proj = CPU time / {cores} cores (an idle machine)\n")
        lines = [] if args.skip_stages else stage_table(sample, cfg, args.total, cores)
        if not lines:
            lines = ["| stage | wall ms/img | cpu ms/img | images/s | wall min/total | proj min/total |", "|---|---|---|---|---|---|"]
        _children_cpu_since(None)
        for spec in [x.strip() for x in args.workers.split(",") if x.strip()]:
            lines.append(end_to_end(sample, cfg, spec, args.total, cores))
        print("\n".join(lines))
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    for spec in args.recall:
        print(recall(spec, args.recall_n, cfg))
    if args.probe:
        print(probe(args.probe, cfg))
    return 0



def probe(root: str, cfg, n: int = 200) -> str:
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
    out = []
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
        out.append(f"{what}: {100 * acc:.1f}% ({len(classes)} classes, majority {100 * chance:.1f}%)")
    return (f"linear probe on ground-truth boxes ({cfg.backbone}, {cfg.pooling}; {len(data['train'][0])} train / "
            f"{len(data['val'][0])} val objects): " + ", ".join(out))


if __name__ == "__main__":
    sys.exit(main())
