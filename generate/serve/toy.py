"""A tiny run folder built in seconds on the CPU, for the tests, the README example and `dvsa bench serve`:

    run = build_toy_run("tmp/runs/demo")        # RUN/align/model.pt, RUN/gen_full/model.pt, RUN/gen_region/model.pt,
                                                 # RUN/features/, RUN/results.json (alignment beta)
    toy_photo("tmp/photo.jpg", "red", "square")  # a photo of the kind the toy was trained on

Photos: one coloured square or circle (3 colours x 2 shapes) on a light background, at a few positions and
sizes; captions name them ("a red square on a white background"). Regions: the real region encoder (R-CNN
recipe: selective search + EfficientNet-Lite0) with UNTRAINED weights (nothing is downloaded) at small sizes,
so the run's feature meta rebuilds exactly that encoder for new images. Alignment and generator train for a
few epochs: captions are words of the toy's vocabulary, not necessarily right ones.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from dvsa.align.model import AlignConfig
from dvsa.align.regions.config import RegionConfig
from dvsa.align.regions.encoder import RegionEncoder
from dvsa.align.train import train_alignment
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.io import atomic_write_json
from dvsa.data.records import ImageRecord, Sentence
from dvsa.generate.model import GenConfig
from dvsa.generate.train import train_generator
from PIL import Image, ImageDraw

COLOURS = {"red": (215, 35, 35), "green": (40, 170, 60), "blue": (40, 60, 210)}
SHAPES = ("square", "circle")
SIDE = 64


def toy_region_config() -> RegionConfig:
    """The small R-CNN recipe of the toy (untrained CNN: no download)."""
    return RegionConfig(backend="rcnn", pretrained=False, max_boxes=3, ss_size=64, max_proposals=40,
                        image_size=64, warp_size=32, max_side=128, device="cpu", workers=0, progress=False)


def toy_image(colour: str, shape: str, k: int = 0) -> Image.Image:
    """One toy photo (SIDE x SIDE): the shape in the colour, its position and size varied by k."""
    im = Image.new("RGB", (SIDE, SIDE), (235, 235, 225))
    d = ImageDraw.Draw(im)
    size = 22 + 6 * (k % 3)
    x0, y0 = 4 + (k * 13) % (SIDE - size - 8), 4 + (k * 7) % (SIDE - size - 8)
    box = [x0, y0, x0 + size, y0 + size]
    (d.rectangle if shape == "square" else d.ellipse)(box, fill=COLOURS[colour])
    return im


def toy_photo(path, colour: str = "red", shape: str = "square", k: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    toy_image(colour, shape, k).save(path)
    return path


def toy_sentences(colour: str, shape: str) -> list[list[str]]:
    return [["a", colour, shape], ["a", colour, shape, "on", "a", "white", "background"],
            ["the", shape, "is", colour]]


def build_toy_run(out, n_per_kind: int = 4, align_epochs: int = 8, gen_epochs: int = 25, log=lambda *a: None) -> Path:
    """Write a tiny run folder at `out` (module doc); returns its path. Rebuilt from scratch when incomplete."""
    run = Path(out)
    if (run / "gen_region" / "model.pt").is_file() and (run / "results.json").is_file():
        return run
    if run.exists():
        shutil.rmtree(run)
    (run / "photos").mkdir(parents=True)
    enc = RegionEncoder.from_config(toy_region_config())
    records, sid = [], 0
    with FeatureStoreWriter(run / "features", enc.meta, part_size=64) as w:
        for colour in COLOURS:
            for shape in SHAPES:
                for k in range(n_per_kind):
                    image_id = f"{colour}_{shape}_{k}"
                    im = toy_image(colour, shape, k)
                    im.save(run / "photos" / f"{image_id}.png")
                    boxes, feats, whole = enc.encode(im)
                    w.add(image_id, boxes, feats, whole, im.size)
                    sents = []
                    for toks in toy_sentences(colour, shape):
                        sents.append(Sentence(sid, " ".join(toks), toks))
                        sid += 1
                    records.append(ImageRecord(image_id, f"photos/{image_id}.png", SIDE, SIDE, "train", sents))
    store = FeatureStore(run / "features")
    acfg = AlignConfig(embed_dim=32, hidden_dim=24, word_dim=16, dropout=0.0, min_count=1, batch_size=12,
                       epochs=align_epochs, lr=0.003, lr_schedule="none", weight_decay=1e-5, patience=0)
    train_alignment(records, store, run / "align", acfg, device="cpu", progress=False, log=log)
    gcfg = GenConfig(hidden=32, embed=16, min_count=1, batch_size=12, lr=0.01, dropout=0.0, patience=0,
                     val_images=0, epochs=gen_epochs, beam=2, max_len=10)
    train_generator(gcfg, store, records, run / "gen_full", progress=False, log=log)
    shutil.copytree(run / "gen_full", run / "gen_region")  # the toy's region model is its full-frame model
    atomic_write_json(run / "results.json", {"dataset": "toy", "alignment": {"beta": 0.5}})
    return run
