"""The Python API (dvsa.Captioner, dvsa.Aligner, dvsa.Index) on a toy run, and the README's example as written."""
import re
from pathlib import Path

import dvsa
import numpy as np
import pytest
from api_fakes import demo_dir, toy_run  # noqa: F401 (fixture)
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- dvsa-api-example -->"


def readme_example() -> str:
    text = README.read_text()
    assert MARKER in text, "README.md lost its Python API example marker"
    m = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.DOTALL)
    assert m, "no ```python block after the marker"
    return m.group(1)


def test_readme_example_runs_as_written(demo_dir, capsys):
    code = readme_example()
    assert 'dvsa.Captioner.load("runs/demo")' in code and len(code.strip().splitlines()) <= 8
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "caption" in out and "snippets" in out or "box" in out


def test_api_is_exported():
    for name in ("Captioner", "Aligner", "Index", "DvsaError"):
        assert name in dvsa.__all__ and hasattr(dvsa, name)


def test_captioner_takes_paths_pil_and_arrays(demo_dir):
    cap = dvsa.Captioner.load("runs/demo")
    pil = Image.open("photo.jpg")
    arr = np.asarray(pil.convert("RGB"))
    res = cap.caption(["photo.jpg", pil, arr], beam=2)
    assert len(res) == 3 and all(r["caption"] and r["score"] <= 0 for r in res)
    assert res[0]["caption"] == res[2]["caption"]  # same pixels, same caption
    one = cap.caption("photo.jpg")
    assert isinstance(one, dict) and one["caption"] == res[0]["caption"]
    sampled = cap.caption(["photo.jpg"], temperature=0.8, seed=0)[0]
    assert sampled["caption"] and sampled["method"].startswith("sample")
    dense = cap.dense(["photo.jpg"], top=3)[0]
    assert dense["width"] == 64 and 1 <= len(dense["regions"]) <= 3
    assert all(len(r["box"]) == 4 and r["caption"] for r in dense["regions"])


def test_aligner_snippets_and_scores(demo_dir):
    al = dvsa.Aligner.load("runs/demo")
    assert al.beta == 0.5  # from runs/demo/results.json
    a = al.align("photo.jpg", "a red square on a white background")
    assert a["tokens"][:3] == ["a", "red", "square"]
    assert sum(s["end"] - s["start"] for s in a["snippets"]) == len(a["tokens"])
    assert all(len(s["box"]) == 4 and isinstance(s["score"], float) for s in a["snippets"])
    s = al.score(["photo.jpg", "runs/demo/photos/blue_circle_0.png"], ["a red square", "a blue circle", "x"])
    assert s.shape == (2, 3) and s.dtype == np.float32 and np.isfinite(s).all()


def test_errors_are_dvsa_errors(demo_dir, tmp_path):
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    cap = dvsa.Captioner.load("runs/demo")
    with pytest.raises(dvsa.ImageInputError, match="junk.jpg"):
        cap.caption([tmp_path / "junk.jpg"])
    with pytest.raises(dvsa.ImageInputError, match="shape"):
        cap.caption([np.zeros((4, 4, 7), np.uint8)])
    with pytest.raises(dvsa.CheckpointError, match="no such run folder"):
        dvsa.Captioner.load("runs/nothing")
    with pytest.raises(dvsa.UsageError, match="no words"):
        dvsa.Aligner.load("runs/demo").align("photo.jpg", "!!!")
    cap.max_pixels = 100
    with pytest.raises(dvsa.TooManyPixels):
        cap.caption("photo.jpg")


def test_index_build_save_load_search(demo_dir, tmp_path):
    al = dvsa.Aligner.load("runs/demo")
    photos = sorted(Path("runs/demo/photos").glob("*.png"))
    idx = dvsa.Index.build(al, photos, path=tmp_path / "idx")
    assert len(idx) == len(photos)
    again = dvsa.Index.load(tmp_path / "idx")
    got = again.search("a blue circle", k=5)
    assert [r["rank"] for r in got] == [1, 2, 3, 4, 5]
    exact = idx.search("a blue circle", 5, exhaustive=True)
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in exact])  # (toy photos tie)
    # eq. 8 of the index equals Aligner.score on the same photo
    top = got[0]
    assert top["score"] == pytest.approx(float(al.score([top["path"]], ["a blue circle"])[0, 0]), rel=1e-4, abs=1e-4)


def test_aligner_picture_draws_each_sentence(demo_dir):
    al = dvsa.Aligner.load("runs/demo")
    one = al.picture("photo.jpg", ["a red square"], width=300)
    two = al.picture("photo.jpg", ["a red square", "a white background on a red square"], width=300)
    assert one.mode == "RGB" and one.width == two.width == 300
    assert two.height > one.height > 300  # the photo scaled to 300 px, then the sentences below it
    with pytest.raises(dvsa.DvsaError):
        al.picture("photo.jpg", [])


def test_align_picture_command(demo_dir, capsys):
    from dvsa.scripts.cli import main

    Image.open("photo.jpg").save("second.png")
    Path("broken.jpg").write_bytes(b"not an image")
    assert main(["align", "picture", "--checkpoint", "runs/demo", "--images", "photo.jpg", "--sentence",
                 "a red square", "--out", "fig.png"]) == 0
    assert Image.open("fig.png").width == 448
    assert main(["align", "picture", "--checkpoint", "runs/demo", "--images", "photo.jpg", "second.png",
                 "broken.jpg", "--sentence", "a red square", "--sentence", "a square", "--out", "figs"]) == 0
    assert sorted(p.name for p in Path("figs").iterdir()) == ["photo.png", "second.png"]
    err = capsys.readouterr().err
    assert "skipped: broken.jpg" in err or "broken.jpg" in err
    # several images and one output file: a usage error before any work
    assert main(["align", "picture", "--checkpoint", "runs/demo", "--images", "photo.jpg", "second.png",
                 "--sentence", "x", "--out", "one.png"]) == 2
    assert main(["align", "picture", "--checkpoint", "runs/demo", "--images", "broken.jpg",
                 "--sentence", "x", "--out", "none.png"]) == 1
