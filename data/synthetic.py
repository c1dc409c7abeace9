"""Synthetic scenes: seeded pictures of 1-4 coloured shapes with five sentences each and exact ground truth.

The whole system runs on them anywhere, with known answers: which object every phrase names, each object's
box, and a canonical description per object for dense captioning.

    from dvsa.data.synthetic import write_synthetic
    write_synthetic("runs/synth", n_train=400, n_val=50, n_test=50, size=192, seed=0)

writes ``images/<id>.png`` (RGB, size x size), ``dataset_synthetic.json`` (Karpathy split format) and
``groundtruth.json`` (per image id: background, objects with boxes ``[x1, y1, x2, y2]`` in pixels (x2, y2
exclusive: the object's pixels are columns x1..x2-1), shape, colour, size word, mentioned flag and description;
unmentioned distractor blobs; per sentence the phrase spans ``[start, end)`` over ``data.text.tokenize(raw)``
tokens with the object id they name; region descriptions). Read it back with
``data.catalog.load_dataset("synthetic", out_dir)``.

Every image draws from its own random stream, seeded by (seed, split, index): the same seed gives
byte-identical JSON and identical pixels, and changing the number of training images leaves val and test as they
were. Objects are at least 30 px at the default 192 px (sizes scale with `size`); they may overlap a little but
at least 80% of each object's pixels stay visible, and no two objects share both shape and colour.
"""
from __future__ import annotations

import colorsys
import functools
import json
import multiprocessing
import os
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
from dvsa.data.io import atomic_write_json
from dvsa.data.progress import progress as progress_bar
from PIL import Image, ImageDraw

from .synthetic_text import (
    BACKGROUND_WORDS,
    COLOUR_WORDS,
    CONTENT_WORDS,
    SHAPE_WORDS,
    ObjectView,
    SentenceParse,
    content_word_targets,
    describe,
    region_description,
    uncovered_content_words,
)

__all__ = ["SynthConfig", "Scene", "SceneObject", "make_scene", "iter_scenes", "write_synthetic",
           "content_word_targets", "uncovered_content_words", "CONTENT_WORDS", "PALETTE", "SHAPES"]

DATASET_JSON = "dataset_synthetic.json"
GROUNDTRUTH_JSON = "groundtruth.json"
IMAGE_DIR = "images"
FORMAT_VERSION = 1

SHAPES = tuple(SHAPE_WORDS)
# clearly distinct saturated colours (backgrounds are desaturated, distractor blobs grey)
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 80, 215),
    "yellow": (245, 215, 30),
    "orange": (250, 135, 25),
    "purple": (135, 55, 185),
    "pink": (245, 120, 190),
    "black": (25, 25, 25),
}
assert set(PALETTE) == set(COLOUR_WORDS)
BACKGROUNDS = tuple(BACKGROUND_WORDS)
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: anti-aliased edges


@dataclass
class SynthConfig:
    """Everything that decides the synthetic dataset (the only home of its defaults)."""

    n_train: int = 400  # images per split
    n_val: int = 50
    n_test: int = 50
    size: int = 192  # image width = height, px; object sizes scale with it (33-42 px small, 56-72 px large at 192)
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 4
    sentences_per_image: int = 5
    p_large: float = 0.45  # chance an object is large rather than small
    p_blobs: float = 0.35  # chance a scene has 1-3 small grey distractor blobs (never mentioned)
    p_unmentioned: float = 0.2  # chance a scene of >= 2 objects has one object no sentence mentions
    min_visible: float = 0.8  # fraction of an object's pixels that must stay uncovered
    max_box_overlap: float = 0.25  # intersection / area of the smaller box, between two objects

    def __post_init__(self) -> None:
        if min(self.n_train, self.n_val, self.n_test) < 0:
            raise ValueError("split sizes must be >= 0")
        if self.size < 64:
            raise ValueError(f"size must be >= 64 px, got {self.size}")
        if not 1 <= self.min_objects <= self.max_objects <= 4:
            raise ValueError("need 1 <= min_objects <= max_objects <= 4")


@dataclass
class SceneObject:
    id: int
    shape: str
    colour: str
    size: str  # "small" | "large"
    box: list[int]  # [x1, y1, x2, y2] px, x2/y2 exclusive
    rgb: list[int]
    mentioned: bool = True

    def view(self) -> ObjectView:
        return ObjectView(self.id, self.shape, self.colour, self.size, [float(v) for v in self.box])


@dataclass
class Scene:
    """One scene: `pixels` uint8 [H, W, 3] RGB (None when laid out but not rendered)."""

    width: int
    height: int
    background: dict
    objects: list[SceneObject]
    distractors: list[dict]
    pixels: np.ndarray | None = field(repr=False)


# --- drawing ------------------------------------------------------------------------------------------------

def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _fit(points: np.ndarray, side: float, inset: float) -> list[tuple[float, float]]:
    """Scale and centre points (keeping aspect) to span [inset, side - inset] along their larger extent."""
    lo, hi = points.min(0), points.max(0)
    scale = (side - 2 * inset) / (hi - lo).max()
    centred = (points - (lo + hi) / 2) * scale + side / 2
    return [tuple(p) for p in centred.tolist()]


def _polygon(shape: str, angle: float) -> np.ndarray:
    if shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    elif shape == "triangle":
        a = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        pts = np.stack([np.cos(a), -np.sin(a)], 1)
    elif shape == "star":
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
        pts = np.stack([r * np.cos(a), -r * np.sin(a)], 1)
    elif shape == "cross":
        t = 0.36
        pts = np.array([[-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t], [t, 1], [-t, 1], [-t, t], [-1, t],
                        [-1, -t], [-t, -t]], float)
    else:
        raise ValueError(f"not a polygon shape: {shape}")
    return _rotate(pts, angle)


def _shape_alpha(shape: str, extent: int, angle: float) -> np.ndarray:
    """Coverage in 0..1, float32 [extent, extent], of a shape filling an extent x extent square."""
    side = extent * _SUPERSAMPLE
    im = Image.new("L", (side, side), 0)
    d = ImageDraw.Draw(im)
    inset = _SUPERSAMPLE / 2
    if shape in ("circle", "ring", "blob"):
        d.ellipse([inset, inset, side - inset, side - inset], fill=255)
        if shape == "ring":
            r = 0.27 * side
            d.ellipse([side / 2 - r, side / 2 - r, side / 2 + r, side / 2 + r], fill=0)
    else:
        d.polygon(_fit(_polygon(shape, angle), side, inset), fill=255)
    small = im.resize((extent, extent), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def _muted(rng: np.random.Generator, value: float) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.03, 0.2), value)
    return np.array([r, g, b], np.float32) * 255


def _background(rng: np.random.Generator) -> dict:
    """Draw a background: {"kind", "word", "colours": [[r, g, b], [r, g, b]], "params": {...}}."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    v = rng.uniform(0.62, 0.86)
    a = _muted(rng, v)
    b = a if kind == "plain" else _muted(rng, float(np.clip(v + rng.choice([-1, 1]) * rng.uniform(0.07, 0.16),
                                                              0.5, 0.95)))
    params: dict = {}
    if kind == "gradient":
        params["angle"] = float(rng.uniform(0, 2 * np.pi))
    elif kind == "striped":
        params["period"] = float(rng.uniform(0.06, 0.14))  # fraction of the image side
        params["angle"] = float(rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4]))
    elif kind == "checkered":
        params["cell"] = float(rng.uniform(0.06, 0.15))
    elif kind == "noisy":  # smooth low-frequency noise: a 6 x 6 grid upsampled
        params["grid"] = (rng.random((6, 6)) * 255).astype(np.uint8).tolist()
    return {"kind": kind, "word": BACKGROUND_WORDS[kind], "colours": [[int(round(float(c))) for c in a],
                                                                       [int(round(float(c))) for c in b]],
            "params": params}


def _paint_background(bg: dict, n: int) -> np.ndarray:
    """float32 [n, n, 3] in 0..255 for a background description from `_background`."""
    kind, p = bg["kind"], bg["params"]
    a, b = (np.array(c, np.float32) for c in bg["colours"])
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    if kind == "plain":
        t = np.zeros((n, n), np.float32)
    elif kind == "gradient":
        q = xx * np.cos(p["angle"]) + yy * np.sin(p["angle"])
        t = (q - q.min()) / (q.max() - q.min())
    elif kind == "striped":
        q = xx * np.cos(p["angle"]) + yy * np.sin(p["angle"])
        t = (np.floor(q / (p["period"] * n / 2)) % 2).astype(np.float32)
    elif kind == "checkered":
        cell = p["cell"] * n
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    else:
        g = np.array(p["grid"], np.uint8)
        t = np.asarray(Image.fromarray(g).resize((n, n), Image.BICUBIC), np.float32) / 255.0
    return a * (1 - t[..., None]) + b * t[..., None]


def _overlap(a: list[int], b: list[int]) -> float:
    """Intersection area / area of the smaller box."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / small


def _tight(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def make_scene(cfg: SynthConfig, split: str, index: int, render: bool = True
               ) -> tuple[Scene, np.random.Generator]:
    """Lay out (and, if `render`, paint) scene `index` of `split`.

    Returns the scene (``pixels`` None when not rendered) and the scene's text random stream for
    `scene_sentences`. Layout, pixel noise and text draw from three independent streams of the seed
    (seed, split, index), so the layout and sentences do not depend on whether pixels were painted.
    """
    layout_ss, noise_ss, text_ss = np.random.SeedSequence([cfg.seed, SPLIT_CODES[split], index]).spawn(3)
    rng = np.random.default_rng(layout_ss)
    n = cfg.size
    scale = n / 192
    bg = _background(rng)

    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    owner = np.full((n, n), -1, np.int16)  # which object's pixel is on top
    objects: list[SceneObject] = []
    placed: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (x0, y0, alpha, mask) per object
    visible: list[int] = []
    area: list[int] = []
    used = set()
    for _ in range(n_obj):
        while True:
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            colour = list(PALETTE)[int(rng.integers(len(PALETTE)))]
            if (shape, colour) not in used:
                break
        size = "large" if rng.random() < cfg.p_large else "small"
        lo, hi = (56, 72) if size == "large" else (33, 42)
        extent = int(round(rng.uniform(lo, hi) * scale))
        angle = 0.0 if shape in ("circle", "ring") else float(rng.uniform(-0.3, 0.3))
        alpha = _shape_alpha(shape, extent, angle)
        mask = alpha > 0.5
        tx1, ty1, tx2, ty2 = _tight(mask)
        k = len(objects)
        for _try in range(60):
            x0 = int(rng.integers(1, n - extent))
            y0 = int(rng.integers(1, n - extent))
            box = [x0 + tx1, y0 + ty1, x0 + tx2, y0 + ty2]
            if any(_overlap(box, o.box) > cfg.max_box_overlap for o in objects):
                continue
            under = owner[y0:y0 + extent, x0:x0 + extent][mask]
            lost = np.bincount(under[under >= 0], minlength=k) if k else np.zeros(0, int)
            if all(visible[j] - lost[j] >= cfg.min_visible * area[j] for j in range(k)):
                break
        else:
            continue  # no room for this object: the scene has one fewer
        used.add((shape, colour))
        for j in range(k):
            visible[j] -= int(lost[j])
        owner[y0:y0 + extent, x0:x0 + extent][mask] = k
        visible.append(int(mask.sum()))
        area.append(int(mask.sum()))
        rgb = np.clip(np.array(PALETTE[colour]) + rng.integers(-10, 11, 3), 0, 255)
        objects.append(SceneObject(k, shape, colour, size, box, [int(c) for c in rgb]))
        placed.append((x0, y0, alpha, mask))

    if len(objects) >= 2 and rng.random() < cfg.p_unmentioned:
        objects[int(rng.integers(len(objects)))].mentioned = False

    blobs: list[tuple[int, int, np.ndarray, list[int]]] = []
    distractors: list[dict] = []
    if rng.random() < cfg.p_blobs:
        for _ in range(int(rng.integers(1, 4))):
            extent = int(round(rng.uniform(8, 15) * scale))
            alpha = _shape_alpha("blob", extent, 0.0)
            tx1, ty1, tx2, ty2 = _tight(alpha > 0.5)
            grey = int(rng.integers(80, 150))
            for _try in range(30):
                x0 = int(rng.integers(1, n - extent))
                y0 = int(rng.integers(1, n - extent))
                box = [x0 + tx1, y0 + ty1, x0 + tx2, y0 + ty2]
                pad = [box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2]
                if all(_overlap(pad, o.box) == 0 for o in objects) and \
                        all(_overlap(pad, d["box"]) == 0 for d in distractors):
                    distractors.append({"kind": "blob", "box": box, "rgb": [grey] * 3})
                    blobs.append((x0, y0, alpha, [grey] * 3))
                    break

    pixels = None
    if render:
        canvas = _paint_background(bg, n)
        for (x0, y0, alpha, _), o in zip(placed, objects):
            _composite(canvas, x0, y0, alpha, o.rgb)
        for x0, y0, alpha, rgb in blobs:
            _composite(canvas, x0, y0, alpha, rgb)
        noise = np.random.default_rng(noise_ss)
        canvas += noise.normal(0.0, noise.uniform(2.0, 6.0), canvas.shape).astype(np.float32)
        pixels = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Scene(n, n, bg, objects, distractors, pixels), np.random.default_rng(text_ss)


def _composite(canvas: np.ndarray, x0: int, y0: int, alpha: np.ndarray, rgb) -> None:
    h, w = alpha.shape
    a = alpha[..., None]
    patch = canvas[y0:y0 + h, x0:x0 + w]
    patch *= 1 - a
    patch += a * np.asarray(rgb, np.float32)


# --- dataset ------------------------------------------------------------------------------------------------

def scene_sentences(cfg: SynthConfig, scene: Scene, rng: np.random.Generator) -> list[SentenceParse]:
    mentioned = [o.view() for o in scene.objects if o.mentioned]
    return describe(mentioned, scene.width, scene.height, scene.background["kind"], rng,
                    n_sentences=cfg.sentences_per_image, n_total=len(scene.objects))


def iter_scenes(cfg: SynthConfig, render: bool = True):
    """Yield ``(image_id, split, scene, sentences)`` for every image, train then val then test."""
    for split, i in _scene_tasks(cfg):
        scene, rng = make_scene(cfg, split, i, render)
        yield _image_id(split, i), split, scene, scene_sentences(cfg, scene, rng)


# fewer scenes than this are written in this process: a pool's start costs more than they take
POOL_MIN_SCENES = 64


def _image_id(split: str, index: int) -> str:
    return f"{split}_{index:05d}"


def _scene_tasks(cfg: SynthConfig) -> list[tuple[str, int]]:
    """(split, index) of every image, train then val then test."""
    return [(split, i) for split, count in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test))
            for i in range(count)]


def _write_scene(cfg: SynthConfig, image_dir: Path, task: tuple[str, int]):
    """Lay out, render and save one image as ``image_dir/<id>.png``; returns (image id, split, the scene without
    its pixels, its sentences). PNG is lossless at every level: level 1 writes the same pixels in half the time
    of the default 6."""
    split, i = task
    scene, rng = make_scene(cfg, split, i)
    image_id = _image_id(split, i)
    Image.fromarray(scene.pixels, "RGB").save(image_dir / f"{image_id}.png", compress_level=1)
    return image_id, split, replace(scene, pixels=None), scene_sentences(cfg, scene, rng)


def _written_scenes(cfg: SynthConfig, image_dir: Path, workers: int):
    """Yield `_write_scene`'s result for every image in `_scene_tasks` order, from `workers` forked processes
    (every image draws from its own seeded stream, so the files are the same whoever writes them); in this
    process when workers <= 1, for a small set, or where fork is not the safe default (Linux only)."""
    tasks, write = _scene_tasks(cfg), functools.partial(_write_scene, cfg, image_dir)  # picklable for the pool
    if workers <= 1 or len(tasks) < POOL_MIN_SCENES or not sys.platform.startswith("linux"):
        yield from map(write, tasks)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(write, tasks, chunksize=16)


def _dump(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=None, separators=(",", ":"), ensure_ascii=True)


def _is_complete(out: Path, cfg: SynthConfig) -> bool:
    gt = out / GROUNDTRUTH_JSON
    if not gt.is_file() or not (out / DATASET_JSON).is_file():
        return False
    try:
        have = json.loads(gt.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if have.get("config") != asdict(cfg) or have.get("format") != FORMAT_VERSION:
        return False
    return all((out / IMAGE_DIR / f"{i}.png").is_file() for i in have.get("images", {}))


def write_synthetic(out_dir: str | os.PathLike, cfg: SynthConfig | None = None, *, force: bool = False,
                    progress: bool = True, workers: int = -1, **overrides) -> Path:
    """Write the dataset of `cfg` (fields overridable by keyword: ``n_train=10, size=128``) into `out_dir`.

    A folder already holding the complete dataset of the same config is left as it is unless `force`; the
    ground-truth file is written last (atomically), so an interrupted run is redone. `workers`: processes that
    render and save the images (-1: one per CPU core; the files are the same for any number). Returns `out_dir`.
    """
    cfg = cfg or SynthConfig()
    if overrides:
        unknown = set(overrides) - {f.name for f in fields(SynthConfig)}
        if unknown:
            raise TypeError(f"unknown SynthConfig field(s): {sorted(unknown)}")
        cfg = SynthConfig(**{**asdict(cfg), **overrides})
    out = Path(out_dir)
    if not force and _is_complete(out, cfg):
        return out
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    gt_path = out / GROUNDTRUTH_JSON
    if gt_path.exists():
        gt_path.unlink()

    images, gt_images = [], {}
    total = cfg.n_train + cfg.n_val + cfg.n_test
    workers = (os.cpu_count() or 1) if workers < 0 else workers
    scenes = progress_bar(_written_scenes(cfg, out / IMAGE_DIR, workers), total=total, desc="synth", unit="img",
                          enabled=progress)
    sentid = 0
    for imgid, (image_id, split, scene, sents) in enumerate(scenes):
        sentids = list(range(sentid, sentid + len(sents)))
        sentid += len(sents)
        images.append({
            "filename": f"{image_id}.png",
            "filepath": IMAGE_DIR,
            "imgid": imgid,
            "split": split,
            "sentids": sentids,
            "sentences": [{"raw": s.raw, "tokens": s.tokens, "imgid": imgid, "sentid": sid}
                          for s, sid in zip(sents, sentids)],
        })
        views = [o.view() for o in scene.objects]
        gt_images[image_id] = {
            "imgid": imgid,
            "split": split,
            "width": scene.width,
            "height": scene.height,
            "background": scene.background,
            "objects": [dict(asdict(o), description=region_description(v)) for o, v in zip(scene.objects, views)],
            "distractors": scene.distractors,
            "sentences": [{"sentid": sid, "phrases": [
                {"start": a, "end": b, "object": obj, "text": " ".join(s.tokens[a:b])} for a, b, obj in s.phrases]}
                for s, sid in zip(sents, sentids)],
            "regions": [{"object": o.id, "box": o.box, "text": region_description(v)}
                        for o, v in zip(scene.objects, views)],
        }
    for stale in (out / IMAGE_DIR).glob("*_[0-9][0-9][0-9][0-9][0-9].png"):  # left by a larger earlier config
        if stale.stem not in gt_images and stale.stem.split("_")[0] in SPLIT_CODES:
            stale.unlink()
    _dump(out / DATASET_JSON, {"dataset": "synthetic", "images": images})
    _dump(gt_path, {
        "dataset": "synthetic",
        "format": FORMAT_VERSION,
        "config": asdict(cfg),
        "content_words": sorted(CONTENT_WORDS),
        "shapes": {k: list(v) for k, v in SHAPE_WORDS.items()},
        "colours": {k: list(v) for k, v in PALETTE.items()},
        "images": gt_images,
    })
    return out
