"""dvsa features (main(argv)) and the bottom-up TSV import."""
import base64
import csv
import json

import numpy as np
import pytest
from dvsa.align.regions import RegionEncoder
from dvsa.align.regions.bottomup import import_bottomup
from dvsa.data.features import FeatureStore
from dvsa.scripts import cli
from dvsa.scripts.features import main
from regions_fakes import _one_thread  # noqa: F401 (autouse fixture)


def _tsv(path, n_images=3, n_boxes=36, dim=2048, seed=0):
    rng = np.random.default_rng(seed)
    truth = {}
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        for i in range(n_images):
            xy = rng.uniform(0, 200, (n_boxes, 2))
            boxes = np.concatenate([xy, xy + rng.uniform(10, 100, (n_boxes, 2))], 1).astype(np.float32)
            feats = rng.random((n_boxes, dim), dtype=np.float32)
            image_id = 1000 + i
            truth[str(image_id)] = (boxes, feats)
            w.writerow([image_id, 640, 480, n_boxes, base64.b64encode(boxes.tobytes()).decode(),
                        base64.b64encode(feats.tobytes()).decode()])
    return truth


def test_bottomup_import_full_size_rows(tmp_path):
    truth = _tsv(tmp_path / "bu.tsv")  # 36 x 2048 float32 per line: beyond csv's default field limit
    store = import_bottomup(tmp_path / "bu.tsv", tmp_path / "store", progress=False)
    assert len(store) == 3 and store.dim == 2048 and store.meta["producer"] == "bottomup"
    for image_id, (boxes, feats) in truth.items():
        b, r = store.regions(image_id)
        np.testing.assert_array_equal(b[0], [0, 0, 640, 480])
        np.testing.assert_array_equal(b[1:], boxes)
        np.testing.assert_array_equal(r[1:], feats)
        np.testing.assert_allclose(r[0], feats.mean(0), rtol=1e-6)
        np.testing.assert_allclose(store.image_feature(image_id), feats.mean(0), rtol=1e-6)
        assert store.image_size(image_id) == (640, 480)
    with pytest.raises(ValueError, match="bottomup"):
        RegionEncoder.from_meta(store.meta)


def test_bottomup_cli_resume_and_bad_line(tmp_path, capsys):
    _tsv(tmp_path / "a.tsv", n_images=2, dim=8)
    assert main(["--import-bottomup", str(tmp_path / "a.tsv"), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert main(["--import-bottomup", str(tmp_path / "a.tsv"), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    assert "imported 0 images" in capsys.readouterr().err
    with open(tmp_path / "a.tsv", "a") as f:
        f.write("77\t10\t10\t2\tnot-base64!\tAAAA\n")
    assert cli.main(["features", "--import-bottomup", str(tmp_path / "a.tsv"), "--out", str(tmp_path / "t"),
                     "--quiet"]) == 1  # bad data: exit 1
    assert "a.tsv:3" in capsys.readouterr().err


def test_features_cli_on_synthetic(tmp_path, capsys):
    from dvsa.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path / "synth", n_train=3, n_val=1, n_test=0, size=64)
    out = tmp_path / "feats"
    common = ["--dataset", "synthetic", "--root", str(root), "--no-pretrained", "--quiet", "--batch-size", "2",
              "--set", "region.image_size=64", "--set", "region.ss_size=48", "--set", "region.warp_size=48"]
    assert main([*common, "--out", str(out), "--split", "train", "--limit", "2", "--max-boxes", "3", "--fp16"]) == 0
    store = FeatureStore(out)
    assert len(store) == 2 and store.meta["dtype"] == "float16" and store.meta["region_config"]["max_boxes"] == 3
    assert json.loads((out / "region_config.json").read_text())["image_size"] == 64
    assert all(len(store.regions(i)[0]) <= 4 for i in store.ids)
    # the same store with other settings is refused with a clear message
    assert cli.main(["features", *common, "--out", str(out), "--max-boxes", "5"]) == 2
    assert "other settings" in capsys.readouterr().err
    # given boxes from a JSON file
    ids = [i for i in store.ids]
    (tmp_path / "boxes.json").write_text(json.dumps({ids[0]: [[1, 2, 30, 40], [5, 5, 60, 60]]}))
    out2 = tmp_path / "given"
    assert main([*common, "--out", str(out2), "--split", "train", "--boxes", str(tmp_path / "boxes.json")]) == 0
    st2 = FeatureStore(out2)
    np.testing.assert_allclose(st2.regions(ids[0])[0][1:], [[1, 2, 30, 40], [5, 5, 60, 60]])
    assert all(len(st2.regions(i)[0]) == 1 for i in st2.ids if i != ids[0])
    assert cli.main(["features", "--out", str(out2)]) == 2


def test_bench_features_main(tmp_path, capsys):
    from dvsa.scripts.bench_features import main as bench
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), np.uint8)).save(tmp_path / f"{i}.jpg")
    assert bench(["--images", str(tmp_path), "--n-images", "2", "--total", "10", "--workers", "0,2:workers",
                  "--matmul-n", "128", "--set", "region.pretrained=false", "--set", "region.image_size=64",
                  "--set", "region.warp_size=32"]) == 0
    out = capsys.readouterr().out
    assert "GFLOP/s" in out and "| selective search" in out and "| extract_features, 0 workers, CNN in main" in out
    assert "| extract_features, 2 workers, CNN in each" in out
