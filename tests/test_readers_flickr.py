import os
import shutil
from collections import Counter

import pytest
from dvsa.data.catalog import load_dataset
from dvsa.data.readers.common import DataWarning
from dvsa.data.records import DataError, select_split
from dvsa.data.text import tokenize
from fixtures.formats import CAPTIONS, make_image, write_flickr8k


def test_flickr8k_fixture(tmp_path):
    root = write_flickr8k(tmp_path / "f8k", sizes={"b": (5, 7)})
    recs = load_dataset("flickr8k", root, check_images=True, read_sizes=True)
    assert [r.id for r in recs] == ["a", "b", "c", "d"]
    assert [r.split for r in recs] == ["train", "train", "train", "val"]
    assert recs[1].path == os.path.abspath(root / "images" / "b.jpg")
    assert (recs[1].width, recs[1].height) == (5, 7)
    assert [s.raw for s in recs[0].sentences] == [f"a {c}" for c in CAPTIONS]
    assert recs[0].sentences[0].tokens == tokenize("a " + CAPTIONS[0]) == ["a", "a", "dog", "runs", "on", "the",
                                                                             "grass"]
    ids = [s.id for r in recs for s in r.sentences]
    assert ids == list(range(20))
    assert len(select_split(recs, "dev")) == 1
    with pytest.raises(DataError, match="split 'test' is empty"):
        select_split(recs, "test")


def test_flickr8k_with_test_split_and_other_image_folder(tmp_path):
    root = write_flickr8k(tmp_path / "f8k", train=("a", "b"), dev=("c",), test=("d", "e"), images="Flicker8k_Dataset")
    recs = load_dataset("flickr8k", root, check_images=True)
    assert Counter(r.split for r in recs) == {"train": 2, "val": 1, "test": 2}
    assert all("Flicker8k_Dataset" in r.path for r in recs)


def test_flickr8k_without_split_files_is_deterministic(tmp_path):
    root = write_flickr8k(tmp_path / "f8k", train=tuple("abcdefghij"), dev=())
    os.remove(root / "Flickr_8k.trainImages.txt")
    a = load_dataset("flickr8k", root)
    b = load_dataset("flickr8k", root)
    assert [(r.id, r.split) for r in a] == [(r.id, r.split) for r in b]
    assert Counter(r.split for r in a) == {"train": 6, "val": 2, "test": 2}


def test_flickr8k_unlisted_and_uncaptioned_images_are_reported(tmp_path):
    root = write_flickr8k(tmp_path / "f8k", train=("a", "b"), dev=("c",))
    (root / "Flickr_8k.trainImages.txt").write_text("a.jpg\nzzz.jpg\n")  # b unlisted, zzz has no captions
    with pytest.warns(DataWarning) as rec:
        recs = load_dataset("flickr8k", root)
    text = " ".join(str(w.message) for w in rec)
    assert "in no split" in text and "no caption" in text and "zzz.jpg" in text
    assert [r.id for r in recs] == ["a", "c"]


def test_flickr8k_malformed_line_names_file_and_line(tmp_path):
    root = write_flickr8k(tmp_path / "f8k")
    token = root / "Flickr8k.token.txt"
    lines = token.read_text().splitlines()
    lines[6] = "b.jpg#1 no tab here"
    token.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        load_dataset("flickr8k", root)
    assert e.value.line == 7 and e.value.path == str(token)
    lines[6] = "b.jpg\tmissing number"
    token.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"Flickr8k.token.txt:7"):
        load_dataset("flickr8k", root)


def test_flickr8k_empty_caption_dropped_with_warning(tmp_path):
    root = write_flickr8k(tmp_path / "f8k")
    token = root / "Flickr8k.token.txt"
    lines = token.read_text().splitlines()
    lines[2] = "a.jpg#2\t . , !"
    token.write_text("\n".join(lines) + "\n")
    with pytest.warns(DataWarning, match=r"Flickr8k.token.txt: line 3: empty caption"):
        recs = load_dataset("flickr8k", root)
    assert len(recs[0].sentences) == 4 and len(recs[1].sentences) == 5
    ids = [s.id for r in recs for s in r.sentences]
    assert len(set(ids)) == len(ids)


def test_flickr8k_missing_images(tmp_path):
    root = write_flickr8k(tmp_path / "f8k")
    os.remove(root / "images" / "c.jpg")
    assert len(load_dataset("flickr8k", root)) == 4  # no check by default
    with pytest.raises(DataError, match=r"1 of 4 image file\(s\) are missing, e.g. .*c\.jpg"):
        load_dataset("flickr8k", root, check_images=True)
    with pytest.warns(DataWarning, match="c.jpg"):
        recs = load_dataset("flickr8k", root, check_images="skip")
    assert [r.id for r in recs] == ["a", "b", "d"]


def test_flickr8k_missing_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("flickr8k", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"Flickr8k.token.txt: file not found"):
        load_dataset("flickr8k", tmp_path / "empty")


def test_flickr30k_token_format_and_default_split(tmp_path):
    root = tmp_path / "f30k"
    names = [str(1000 + k) for k in range(10)]
    lines = [f"{n}.jpg#{j}\t{cap}" for n in names for j, cap in enumerate(CAPTIONS)]
    root.mkdir()
    (root / "results_20130124.token").write_text("\n".join(lines) + "\n")
    for n in names:
        make_image(root / "flickr30k-images" / f"{n}.jpg")
    recs = load_dataset("flickr30k", root, check_images=True)
    assert sorted(r.id for r in recs) == names
    assert Counter(r.split for r in recs) == {"train": 6, "val": 2, "test": 2}
    assert [(r.id, r.split) for r in recs] == [(r.id, r.split) for r in load_dataset("flickr30k", root)]
    assert all(len(r.sentences) == 5 for r in recs)


def test_flickr30k_csv_format_with_karpathy_split(tmp_path):
    import json

    root = tmp_path / "f30k"
    (root / "flickr30k_images").mkdir(parents=True)
    rows = ["image_name| comment_number| comment"]
    rows += [f"{n}.jpg| {j}| {cap}" for n in ("11", "22", "33") for j, cap in enumerate(CAPTIONS)]
    rows[7] = "22.jpg| 1 A dog lost its separator ."  # a known defect of one distribution
    (root / "flickr30k_images" / "results.csv").write_text("\n".join(rows) + "\n")
    js = {"images": [{"filename": "11.jpg", "split": "train"}, {"filename": "22.jpg", "split": "test"},
                     {"filename": "33.jpg", "split": "val"}]}
    (root / "dataset_flickr30k.json").write_text(json.dumps(js))
    recs = {r.id: r for r in load_dataset("flickr30k", root)}
    assert {k: r.split for k, r in recs.items()} == {"11": "train", "22": "test", "33": "val"}
    assert recs["22"].sentences[1].raw == "A dog lost its separator ."
    rows[9] = "33.jpg|oops"
    (root / "flickr30k_images" / "results.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"results.csv:10"):
        load_dataset("flickr30k", root)


@pytest.mark.shared
def test_flickr8k_shared(shared_datasets):
    root = shared_datasets / "flickr8k"
    recs = load_dataset("flickr8k", root)
    assert Counter(r.split for r in recs) == {"train": 6000, "val": 1000}
    assert all(len(r.sentences) == 5 for r in recs)
    ids = [s.id for r in recs for s in r.sentences]
    assert len(set(ids)) == len(ids) == 35000
    assert all(os.path.isfile(r.path) for r in recs[::500])


@pytest.mark.shared
def test_flickr8k_shared_with_test_split_file(shared_datasets, tmp_path):
    """How users hold the dataset: the test split file is there too (here with 3 images of dev as 'test')."""
    src = shared_datasets / "flickr8k"
    root = tmp_path / "f8k"
    (root / "Flicker8k_Dataset").mkdir(parents=True)
    train = (src / "Flickr_8k.trainImages.txt").read_text().split()[:4]
    dev = (src / "Flickr_8k.devImages.txt").read_text().split()[:5]
    for name in train + dev:
        os.symlink(src / "images" / name, root / "Flicker8k_Dataset" / name)
    wanted = set(train + dev)
    lines = [ln for ln in (src / "Flickr8k.token.txt").read_text().splitlines() if ln.split("#")[0] in wanted]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (root / "Flickr_8k.trainImages.txt").write_text("\n".join(train) + "\n")
    (root / "Flickr_8k.devImages.txt").write_text("\n".join(dev[:2]) + "\n")
    (root / "Flickr_8k.testImages.txt").write_text("\n".join(dev[2:]) + "\n")
    recs = load_dataset("flickr8k", root, check_images=True, read_sizes=True)
    assert Counter(r.split for r in recs) == {"train": 4, "val": 2, "test": 3}
    assert all((r.width, r.height) == (224, 224) and len(r.sentences) == 5 for r in recs)
    assert len(select_split(recs, "test")) == 3
    shutil.rmtree(root)


def test_flickr30k_split_files(tmp_path):
    root = tmp_path / "f30k"
    root.mkdir()
    lines = [f"{n}.jpg#{j}\t{cap}" for n in ("5", "6", "7") for j, cap in enumerate(CAPTIONS)]
    (root / "results_20130124.token").write_text("\n".join(lines) + "\n")
    (root / "train.txt").write_text("5\n6\n")
    (root / "test.txt").write_text("7\n8\n")  # 8 has no caption
    with pytest.warns(DataWarning, match=r"1 image\(s\) of the split files have no caption.*8\.jpg"):
        recs = load_dataset("flickr30k", root)
    assert [(r.id, r.split) for r in recs] == [("5", "train"), ("6", "train"), ("7", "test")]
