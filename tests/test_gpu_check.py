"""scripts/gpu_check.py on a machine without a GPU: its no-GPU line, and its comparison on CPU-vs-CPU runs."""
import pytest
import torch
from dvsa.scripts import gpu_check


def test_without_cuda_it_says_so_and_succeeds(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert capsys.readouterr().out.strip() == gpu_check.NEEDS_GPU


def test_rel_diff_and_the_table():
    assert gpu_check.rel_diff([2.0, 1.0], [2.0, 1.01]) == pytest.approx(0.01)
    assert gpu_check.rel_diff([1.0], [1.0, 2.0]) == float("inf")
    assert gpu_check.rel_diff([1.0], [float("nan")]) == float("inf")
    row = gpu_check.compare("align", "cuda", True, {"losses": [3.0], "steps": 4}, {"losses": [3.03], "steps": 4}, 2e-2)
    assert row["ok"] and row["rel_diff"] == pytest.approx(0.01)
    assert not gpu_check.compare("align", "cuda", True, {"losses": [3.0], "steps": 4},
                                 {"losses": [3.0], "steps": 5}, 2e-2)["ok"]
    table = gpu_check.format_table([row])
    assert "stage" in table and "rel diff" in table and "yes" in table


@pytest.mark.parametrize("stage", gpu_check.STAGES)
def test_each_stage_trains_on_the_toy_and_cpu_runs_agree(tmp_path, stage):
    """Two CPU runs of a stage from the same seed give the same losses (amp is ignored on the CPU)."""
    torch.set_num_threads(1)
    records = gpu_check.write_toy(tmp_path)
    a = gpu_check.train_stage(stage, tmp_path, records, "cpu", False, tmp_path / "a")
    b = gpu_check.train_stage(stage, tmp_path, records, "cpu", True, tmp_path / "b")
    assert a["steps"] > 0 and len(a["losses"]) == gpu_check.EPOCHS
    row = gpu_check.compare(stage, "cpu", True, a, b, 0.0)
    assert row["ok"] and row["rel_diff"] == 0.0
