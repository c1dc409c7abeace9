"""dvsa caption: features computed from the images by the checkpoint's encoder, corrupt images skipped."""
import json

import dvsa.scripts.caption as caption_cli
import numpy as np
import torch
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.records import ImageRecord, Sentence
from dvsa.generate.model import GenConfig
from dvsa.generate.train import train_generator
from PIL import Image
from test_generate_train import COLORS, SHAPES, D, caption, make_toy, small

torch.set_num_threads(1)
RGB = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


class ColourEncoder:
    """Stands in for RegionEncoder: the toy feature of an image whose colour names the object and whose width
    (wide = circle, tall = square) names the shape."""

    def encode(self, pil, boxes=None):
        assert boxes is not None and len(boxes) == 0  # full-frame captioning encodes the whole image only
        rgb = np.asarray(pil, np.float32).reshape(-1, 3).mean(0)
        f = np.zeros(D, np.float32)
        f[int(np.argmax(rgb))] = 1.0
        f[3 + int(pil.height > pil.width)] = 1.0
        w, h = pil.size
        return np.array([[0, 0, w, h]], np.float32), f[None], f


def test_caption_command_on_a_trained_toy(tmp_path, monkeypatch, capsys):
    recs, store, _ = make_toy(tmp_path)
    ckpt = train_generator(small(), store, recs, tmp_path / "run", progress=False, log=lambda *a: None)
    monkeypatch.setattr(caption_cli, "make_encoder", lambda meta, device: ColourEncoder())
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    want = {}
    for c, colour in enumerate(COLORS):
        for s, shape in enumerate(SHAPES):
            size = (40, 20) if s == 0 else (20, 40)
            Image.new("RGB", size, RGB[colour]).save(imgs / f"{colour}_{shape}.png")
            want[f"{colour}_{shape}"] = " ".join(caption(c, s))
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "caps.json"
    assert caption_cli.main(["--checkpoint", str(ckpt), "--images", str(imgs), "--out", str(out), "--beam", "3"]) == 0
    res = json.loads(out.read_text())
    got = {c["image_id"]: c["caption"] for c in res["captions"]}
    assert got == want
    assert [f["path"].endswith("broken.jpg") for f in res["failed"]] == [True]
    printed = capsys.readouterr()
    assert "red_circle.png\ta red circle on the grass" in printed.out and "broken.jpg" in printed.err


def test_caption_command_with_the_real_encoder(tmp_path):
    """The encoder is rebuilt from the checkpoint's feature meta (untrained backbone weights: no downloads)."""
    from dvsa.align.regions.config import RegionConfig
    from dvsa.align.regions.encoder import RegionEncoder

    enc = RegionEncoder.from_config(RegionConfig(backend="given", pretrained=False, device="cpu", progress=False))
    rng = np.random.default_rng(0)
    w = FeatureStoreWriter(tmp_path / "store", enc.meta)
    recs = []
    for i in range(4):
        f = rng.random((1, enc.dim), dtype=np.float32)
        w.add(str(i), [[0, 0, 8, 8]], f, f[0], (8, 8))
        recs.append(ImageRecord(str(i), f"{i}.png", split="train", sentences=[Sentence(i, "a b", ["a", "b"])]))
    w.close()
    ckpt = train_generator(GenConfig(epochs=0, min_count=1, hidden=16, embed=8, input="region+image", beam=2),
                           FeatureStore(tmp_path / "store"), recs, tmp_path / "run", progress=False,
                           log=lambda *a: None)
    Image.new("RGB", (30, 20), (10, 200, 90)).save(tmp_path / "x.png")
    Image.new("L", (17, 33), 128).save(tmp_path / "y.png")
    out = tmp_path / "caps.json"
    rc = caption_cli.main(["--checkpoint", str(ckpt), "--images", str(tmp_path / "x.png"), str(tmp_path / "y.png"),
                           str(tmp_path / "missing.png"), "--out", str(out), "--max-len", "4", "--quiet"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [c["image_id"] for c in res["captions"]] == ["x", "y"] and res["beam"] == 2
    assert len(res["failed"]) == 1 and "missing.png" in res["failed"][0]["path"]


def test_caption_command_refuses_a_store_it_cannot_rebuild(tmp_path, capsys):
    recs, store, _ = make_toy(tmp_path, n=10)
    ckpt = train_generator(small(epochs=0), store, recs, tmp_path / "run", progress=False, log=lambda *a: None)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    rc = caption_cli.main(["--checkpoint", str(ckpt), "--images", str(tmp_path / "a.png"), "--out",
                           str(tmp_path / "c.json")])
    assert rc == 2 and "cannot be rebuilt" in capsys.readouterr().err
