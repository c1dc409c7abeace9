"""dvsa bench align and dvsa bench train on tiny sizes: run, print a table, write consistent JSON."""
import json

import pytest
from dvsa.scripts import bench_align


def test_bench_align_tiny(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert bench_align.main(["--n-images", "6", "--sentences", "30", "--regions", "4", "--embed", "16",
                             "--feat-dim", "8", "--train-steps", "1", "--batch", "5", "--loop-images", "2",
                             "--threads", "1", "--matmul-size", "128", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    sc = res["scoring"]
    assert res["matmul_gflops"] > 0 and sc["seconds"] > 0
    assert sc["gflop"] * 1e9 == 2 * 6 * 4 * sc["words"] * 16
    assert abs(sc["ratio_to_floor"] - sc["seconds"] / sc["floor_seconds"]) < 1e-9
    assert res["train"]["pairs_per_s"] > 0
    assert "ratio to floor" in capsys.readouterr().out


def test_bench_train_tiny(tmp_path, capsys, monkeypatch):
    """dvsa bench train on tiny sizes: old, new and bf16 rows per alignment size and per generator (bf16 forced
    here: it is shown only on CPUs with native bf16), each with its FLOP floor: the new path's FLOPs, at the
    float32 matmul rate for the old and new paths and at the bf16 rate for the bf16 path."""
    from dvsa.data import training
    from dvsa.scripts import bench, bench_train

    monkeypatch.setattr(training, "cpu_has_bf16", lambda: True)
    out = tmp_path / "t.json"
    assert bench_train.main(["--steps", "1", "--warmup", "1", "--n-images", "6", "--regions", "4", "--embed", "16", "--hidden", "8",
                             "--feat-dim", "8", "--paper-feat-dim", "12", "--batch", "5", "--vocab", "50",
                             "--threads", "1", "--matmul-size", "128", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert [r["path"] for r in rows] == ["old", "new", "bf16"] * 6  # paper, default, pipeline, demo, 2 generators
    assert res["machine"]["retain_freed_memory"] is training.retain_freed_memory()
    for r in rows:
        assert r["seconds"] > 0 and r["gflop"] > 0 and r["floor_seconds"] > 0
        assert abs(r["pairs_per_s"] - 5 / r["seconds"]) < 1e-6 * r["pairs_per_s"]
        assert abs(r["ratio_to_floor"] - r["seconds"] / r["floor_seconds"]) < 1e-9
    for old, new, bf16 in zip(rows[0::3], rows[1::3], rows[2::3]):
        assert old["step"] == new["step"] == bf16["step"] and old["floor_seconds"] == new["floor_seconds"]
        # alignment: the dense backward of eq. 8 does more products; generators: the output layer at padding
        assert old["gflop"] > new["gflop"] and res["matmul_gflops_bf16"] > 0
        ratio = res["matmul_gflops"] / res["matmul_gflops_bf16"]
        assert abs(bf16["floor_seconds"] - new["floor_seconds"] * ratio) < 1e-9 * new["floor_seconds"] * ratio
        for r in (new, bf16):
            assert abs(r["speedup"] - old["seconds"] / r["seconds"]) < 1e-9
    text = capsys.readouterr().out
    assert "x floor" in text and "alignment demo" in text and "alignment pipeline" in text
    assert "generator region+image" in text
    assert "train" in bench.TABLE


def test_bench_train_rejects_an_unknown_size():
    from dvsa.scripts import bench_train

    with pytest.raises(SystemExit) as e:
        bench_train.main(["--shapes", "nope"])
    assert e.value.code == 2
