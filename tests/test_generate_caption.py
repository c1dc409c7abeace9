"""dvsa caption: features computed from the images by the checkpoint's encoder, corrupt images skipped."""
import json

import dvsa.scripts.caption as caption_cli
import numpy as np
import pytest
import torch
from dvsa.data.errors import UsageError
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


def _toy_checkpoint(tmp_path, monkeypatch):
    """(checkpoint of a generator trained on the toy, an empty image folder); `dvsa caption` encodes with
    ColourEncoder."""
    recs, store, _ = make_toy(tmp_path)
    ckpt = train_generator(small(), store, recs, tmp_path / "run", progress=False, log=lambda *a: None)
    monkeypatch.setattr(caption_cli, "make_encoder", lambda meta, device: ColourEncoder())
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    return ckpt, imgs


def test_caption_command_on_a_trained_toy(tmp_path, monkeypatch, capsys):
    ckpt, imgs = _toy_checkpoint(tmp_path, monkeypatch)
    want = {}
    for c, colour in enumerate(COLORS):
        for s, shape in enumerate(SHAPES):
            size = (40, 20) if s == 0 else (20, 40)
            Image.new("RGB", size, RGB[colour]).save(imgs / f"{colour}_{shape}.png")
            want[f"{colour}_{shape}"] = " ".join(caption(c, s))
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path / "caps.json"
    assert caption_cli.main(["--checkpoint", str(ckpt), "--images", str(imgs), "--out", str(out), "--beam", "3"]) == 0
    res = json.loads(out.read_text())  # COCO results: a list of {image_id, caption}, nothing else by default
    got = {c["image_id"]: c["caption"] for c in res}
    assert got == want and all(set(c) == {"image_id", "caption"} for c in res)
    printed = capsys.readouterr()
    assert "red_circle.png\ta red circle on the grass" in printed.out and "broken.jpg" in printed.err


def test_caption_command_prior_weight_changes_the_decoding_distribution(tmp_path, monkeypatch):
    ckpt, imgs = _toy_checkpoint(tmp_path, monkeypatch)
    Image.new("RGB", (40, 20), RGB["red"]).save(imgs / "red_circle.png")
    got = {}
    for w in ("0", "0.5"):
        out = tmp_path / f"caps{w}.json"
        assert caption_cli.main(["--checkpoint", str(ckpt), "--images", str(imgs), "--out", str(out), "--extras",
                                 "--prior-weight", w, "--quiet"]) == 0
        got[w] = json.loads(out.read_text())[0]
    assert got["0"]["caption"] == got["0.5"]["caption"] == " ".join(caption(0, 0))  # the toy is unambiguous
    assert abs(got["0"]["logprob"] - got["0.5"]["logprob"]) > 1e-3  # ... under another distribution
    with pytest.raises(UsageError, match=r"--prior-weight must be in \[0, 1\)"):
        caption_cli.main(["--checkpoint", str(ckpt), "--images", str(imgs), "--out", str(tmp_path / "x.json"),
                          "--prior-weight", "1.5"])


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
    assert [c["image_id"] for c in res] == ["x", "y"]


def test_caption_command_refuses_a_store_it_cannot_rebuild(tmp_path, capsys):
    recs, store, _ = make_toy(tmp_path, n=10)
    ckpt = train_generator(small(epochs=0), store, recs, tmp_path / "run", progress=False, log=lambda *a: None)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    from dvsa.scripts.cli import main as dvsa

    rc = dvsa(["caption", "--checkpoint", str(ckpt), "--images", str(tmp_path / "a.png"), "--out",
               str(tmp_path / "c.json")])
    assert rc == 1 and "cannot be rebuilt" in capsys.readouterr().err  # a checkpoint fault: exit 1


def _coco_eval(coco, res_file, monkeypatch):
    """pycocoevalcap's own COCOEvalCap over `res_file`; SPICE (which downloads Stanford CoreNLP) is left out, and
    without Java the PTB tokenizer and METEOR too (a Python tokenizer stands in)."""
    import pycocoevalcap.eval as cocoeval
    from dvsa.generate.metrics import find_java, simple_ptb_tokenize

    class Skipped:
        def __init__(self, name):
            self.name = name

        def method(self):
            return self.name

        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

    monkeypatch.setattr(cocoeval, "Spice", lambda: Skipped("SPICE"))
    if find_java() is None:
        class PythonTokenizer:
            def tokenize(self, caps):
                return {k: [simple_ptb_tokenize(c["caption"]) for c in v] for k, v in caps.items()}

        monkeypatch.setattr(cocoeval, "PTBTokenizer", PythonTokenizer)
        monkeypatch.setattr(cocoeval, "Meteor", lambda: Skipped("METEOR"))
    ev = cocoeval.COCOEvalCap(coco, coco.loadRes(str(res_file)))
    ev.evaluate()
    return ev.eval


def test_caption_output_is_read_by_pycocotools_and_pycocoevalcap(tmp_path, monkeypatch, capsys):
    """COCO-named images get their COCO integer ids; the file loads with COCO.loadRes (with and without
    --extras) and COCOEvalCap scores it against a COCO annotation file of the same images."""
    from pycocotools.coco import COCO

    recs, store, _ = make_toy(tmp_path)
    ckpt = train_generator(small(), store, recs, tmp_path / "run", progress=False, log=lambda *a: None)
    monkeypatch.setattr(caption_cli, "make_encoder", lambda meta, device: ColourEncoder())
    imgs = tmp_path / "coco"
    imgs.mkdir()
    images, anns = [], []
    for c, colour in enumerate(COLORS):
        for s, shape in enumerate(SHAPES):
            iid = 391895 + 10 * c + s
            name = f"COCO_val2014_{iid:012d}.jpg" if s == 0 else f"{iid:012d}.jpg"  # 2014 and 2017 names
            size = (40, 20) if s == 0 else (20, 40)
            Image.new("RGB", size, RGB[colour]).save(imgs / name, quality=95)
            images.append({"id": iid, "file_name": name, "width": size[0], "height": size[1]})
            for k, ref in enumerate([" ".join(caption(c, s)), f"a {colour} {shape}"]):
                anns.append({"id": len(anns) + 1, "image_id": iid, "caption": ref})
    ann_file = tmp_path / "captions_val.json"
    ann_file.write_text(json.dumps({"info": {}, "licenses": [], "type": "captions", "images": images,
                                    "annotations": anns}))
    coco = COCO(str(ann_file))
    out = tmp_path / "caps.json"
    assert caption_cli.main(["--checkpoint", str(ckpt), "--images", str(imgs), "--out", str(out), "--beam", "3",
                             "--quiet"]) == 0
    res = json.loads(out.read_text())
    assert sorted(r["image_id"] for r in res) == sorted(i["id"] for i in images)
    assert all(set(r) == {"image_id", "caption"} and isinstance(r["image_id"], int) for r in res)
    loaded = coco.loadRes(str(out))
    assert sorted(loaded.getImgIds()) == sorted(i["id"] for i in images)
    scores = _coco_eval(coco, out, monkeypatch)
    assert scores["Bleu_4"] > 0.9 and scores["ROUGE_L"] > 0.9 and scores["CIDEr"] > 1.0  # captions = references
    # --extras: per-image keys added to each entry; still COCO results
    assert caption_cli.main(["--checkpoint", str(ckpt), "--images", str(imgs), "--out", str(out), "--beam", "3",
                             "--quiet", "--extras"]) == 0
    extra = json.loads(out.read_text())
    assert [(r["image_id"], r["caption"]) for r in extra] == [(r["image_id"], r["caption"]) for r in res]
    for r in extra:
        # "consensus": the candidate chosen by the caption bank beside the checkpoint (generate.consensus)
        assert set(r) == {"image_id", "caption", "file_name", "path", "logprob", "score", "candidates", "consensus"}
        assert r["candidates"][0] == {"caption": r["caption"], "logprob": r["logprob"]}
        assert 1 <= len(r["candidates"]) <= 3 and r["logprob"] <= r["score"] <= 0
    assert len(coco.loadRes(str(out)).getImgIds()) == len(images)
