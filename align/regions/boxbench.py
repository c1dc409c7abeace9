"""Do the kept boxes hold the objects? (``dvsa bench boxes``): recall by object size, recipe beside recipe.

    res = bench_boxes(BoxesBenchConfig(data=["coco:../shared/datasets/coco-mini",
                                             "flickr8k:../shared/datasets/flickr8k:val"]))
    print(format_boxes_report(res))

For every dataset spec ``NAME:ROOT[:SPLIT]`` (SPLIT a record split such as ``val`` (Flickr8k dev) or ``train``,
or ``heldout``: the last `held_out` annotated train photos, where the region recipe's choices are made) and every
configuration (``old``: the recipe before issue 16, `PREVIOUS_RECIPE`; ``new``: `RegionConfig` defaults; plus
any ``NAME=key=value,key=value`` given), the first `n` annotated images are encoded one at a time
(`encoder.prepare` + `RegionEncoder.encode_batch`, one process), and the annotated objects reached at IoU >=
`iou` are counted (`recall.BoxRecall`) by the candidates (every proposal scored, before the cut) and by the kept
boxes (max_boxes + the whole image), per size class, with images/s of that encoding. Each `targets` entry
(dataset, size class, kept recall) is reported as met or not.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from dvsa.data.catalog import load_dataset
from dvsa.data.errors import ConfigError
from dvsa.data.overrides import coerce, split_item
from dvsa.data.records import ImageRecord

from .config import PREVIOUS_RECIPE, RegionConfig
from .encoder import RegionEncoder, prepare
from .fit_boxhead import held_out_records
from .images import load_rgb
from .recall import CLASSES, BoxRecall, image_objects

# issue 16: kept boxes (19 + the whole image) at IoU 0.5 on coco-mini and Flickr8k dev (Entities boxes)
TARGETS = (("coco", ">=32²", 0.60), ("coco", "large", 0.85), ("flickr8k", "all", 0.65))


@dataclass
class BoxesBenchConfig:
    """What ``dvsa bench boxes`` measures (its flags override these)."""

    data: list[str] = field(default_factory=list)  # NAME:ROOT[:SPLIT] specs (SPLIT "heldout": the train tail)
    n: int = 200  # annotated images per dataset (the first n in reader order)
    held_out: int = 500  # size of the held-out train tail (as in fit_boxhead.FitConfig)
    iou: float = 0.5
    configs: list[str] = field(default_factory=list)  # extra NAME:key=value,key=value configurations
    base: dict = field(default_factory=dict)  # overrides applied to every configuration (e.g. pretrained=False)
    targets: tuple = TARGETS  # (dataset name, size class, minimum kept recall)


def parse_config(spec: str) -> tuple[str, dict]:
    """``NAME:key=value,key=value`` -> (NAME, {key: value}), each value checked against its RegionConfig field
    as ``--set`` checks it (`data.overrides.coerce`; ConfigError when it is no field or of the wrong type)."""
    name, sep, rest = spec.partition(":")
    if not sep or not name:
        raise ConfigError(f"--variant {spec!r}: expected NAME:key=value,key=value")
    return name, {k: coerce(RegionConfig, k, v, f"{name}:")
                  for k, v in (split_item(item) for item in rest.split(",") if item)}


def configurations(cfg: BoxesBenchConfig) -> list[tuple[str, RegionConfig]]:
    """(name, RegionConfig) of old, new and the extra configurations, run-time fields set for one process."""
    run = {"progress": False, "workers": 0, "batch_size": 1, **cfg.base}
    named = [("old", PREVIOUS_RECIPE), ("new", {})] + [parse_config(s) for s in cfg.configs]
    return [(name, RegionConfig(**{**run, **over})) for name, over in named]


def dataset_records(spec: str, n: int, held_out: int) -> tuple[str, str, list[ImageRecord]]:
    """(dataset name, split label, the first n annotated records) of ``NAME:ROOT[:SPLIT]``."""
    name, _, rest = spec.partition(":")
    root, split = rest, ""
    if rest.rsplit(":", 1)[-1] in ("heldout", "train", "val", "test", "restval") and ":" in rest:
        root, split = rest.rsplit(":", 1)
    records = load_dataset(name, root)
    if split == "heldout":
        records = held_out_records(records, held_out)[1]
    elif split:
        records = [r for r in records if r.split == split]
    return name, split or "all", [r for r in records if r.regions][:n]


def measure(records: list[ImageRecord], rcfg: RegionConfig, iou: float, encoder: RegionEncoder | None = None) -> dict:
    """Recall by size of one configuration on `records`: {"recall": BoxRecall.result(), "images",
    "candidates_per_image", "kept_per_image", "images_per_s"}."""
    enc = encoder or RegionEncoder(rcfg)
    rec, cands, kept, seconds = BoxRecall(iou), 0, 0, 0.0
    for r in records:
        image = load_rgb(r.path)
        gt, areas = image_objects(r)
        start = time.perf_counter()
        it = prepare(image, rcfg)
        boxes = enc.encode_batch([it])[0][0]  # [R, 4], row 0 = the whole image
        seconds += time.perf_counter() - start
        rec.add(gt, areas, it["proposals"], boxes)
        cands, kept = cands + len(it["proposals"]), kept + len(boxes)
    n = max(len(records), 1)
    return {"recall": rec.result(), "images": len(records), "candidates_per_image": cands / n,
            "kept_per_image": kept / n, "images_per_s": len(records) / seconds if seconds > 0 else float("inf")}


def bench_boxes(cfg: BoxesBenchConfig) -> dict:
    """{"rows": [{"dataset", "split", "config", **measure()}], "targets": [{"dataset", "config", "class",
    "goal", "kept", "met"}], "configs": {name: recipe}}."""
    configs = configurations(cfg)
    encoders = {name: RegionEncoder(c) for name, c in configs}
    rows = []
    for spec in cfg.data:
        name, split, records = dataset_records(spec, cfg.n, cfg.held_out)
        for cname, rcfg in configs:
            rows.append({"dataset": name, "split": split, "config": cname,
                         **measure(records, rcfg, cfg.iou, encoders[cname])})
    targets = []
    for row in rows:
        for ds, cls, goal in cfg.targets:
            got = row["recall"][cls]["kept"]
            if row["dataset"] == ds and got is not None:
                targets.append({"dataset": ds, "split": row["split"], "config": row["config"], "class": cls,
                                "goal": goal, "kept": got, "met": bool(got >= goal)})
    return {"rows": rows, "targets": targets, "iou": cfg.iou,
            "configs": {name: c.recipe() for name, c in configs}}


def _pct(x) -> str:
    return "  -  " if x is None else f"{100 * x:5.1f}"


def format_boxes_report(res: dict) -> str:
    """The table ``dvsa bench boxes`` prints: per dataset and configuration, recall (%) of the candidates /
    the kept boxes by size class, objects per class, boxes per image and images/s; then the targets."""
    head = ("| dataset | split | config | images | cand/img | kept/img | "
            + " | ".join(f"{c} cand / kept" for c in CLASSES) + " | images/s |")
    lines = [f"box recall at IoU >= {res['iou']:g} (% of annotated objects; cand = every proposal scored, kept = "
             "the boxes the store holds, whole image included)", "", head,
             "|" + "---|" * (7 + len(CLASSES))]
    for r in res["rows"]:
        rec = r["recall"]
        cells = " | ".join(f"{_pct(rec[c]['candidates'])} / {_pct(rec[c]['kept'])} (n {rec[c]['n']})" for c in CLASSES)
        lines.append(f"| {r['dataset']} | {r['split']} | {r['config']} | {r['images']} | "
                     f"{r['candidates_per_image']:.0f} | {r['kept_per_image']:.1f} | {cells} | {r['images_per_s']:.2f} |")
    if res["targets"]:
        lines += ["", "targets (kept boxes):"]
        lines += [f"  {t['dataset']} {t['split']} {t['config']}: {t['class']} {100 * t['kept']:.1f}% "
                  f"(goal >= {100 * t['goal']:.0f}%) {'met' if t['met'] else 'NOT met'}" for t in res["targets"]]
    lines += ["", "configurations:"] + [f"  {k}: {v}" for k, v in res["configs"].items()]
    return "\n".join(lines)
