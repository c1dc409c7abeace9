"""dvsa bench align on tiny sizes: runs, prints a table, writes consistent JSON."""
import json

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
