import os

import pytest
from dvsa.data.catalog import load_dataset
from dvsa.data.readers.common import DataWarning
from dvsa.data.records import DataError
from fixtures.formats import make_image


def test_folder_scan_sizes_and_ids(tmp_path):
    make_image(tmp_path / "b.png", size=(9, 4))
    make_image(tmp_path / "a.jpg", size=(3, 5))
    make_image(tmp_path / "sub" / "c.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    recs = load_dataset("folder", tmp_path)
    assert [(r.id, r.width, r.height, r.split) for r in recs] == [("a", 3, 5, "none"), ("b", 9, 4, "none")]
    assert all(r.sentences == [] and r.regions == [] for r in recs)
    assert recs[0].path == os.path.abspath(tmp_path / "a.jpg")
    recs = load_dataset("folder", tmp_path, recursive=True)
    assert [r.id for r in recs] == ["a", "b", "sub/c"]


def test_folder_file_and_list_roots(tmp_path):
    a = make_image(tmp_path / "x" / "a.jpg")
    b = make_image(tmp_path / "y" / "a.png")
    assert [r.id for r in load_dataset("folder", a)] == ["a"]
    assert [r.id for r in load_dataset("folder", [b, a])] == ["a.png", "a.jpg"]  # same stem: keep extensions
    with pytest.raises(DataError, match="nope.jpg: image file not found"):
        load_dataset("folder", [a, tmp_path / "nope.jpg"])


def test_folder_corrupt_image_reported_and_skipped(tmp_path):
    make_image(tmp_path / "good.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"this is not a jpeg")
    with pytest.warns(DataWarning, match=r"bad.jpg: unreadable image skipped"):
        recs = load_dataset("folder", tmp_path)
    assert [r.id for r in recs] == ["good"]


def test_folder_empty_or_missing(tmp_path):
    with pytest.raises(DataError, match="no image files"):
        load_dataset("folder", tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset("folder", tmp_path / "missing")
