"""Two processes (gloo, CPU) on one global batch train exactly as one process does."""
import socket

import pytest
import torch
import torch.multiprocessing as mp
from dvsa.align import distributed as dist
from dvsa.align.model import AlignmentModel
from dvsa.align.train import train_alignment
from dvsa.data.checkpoint import load_checkpoint
from dvsa.data.features import FeatureStore
from test_align_train import make_toy, toy_cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, records, store_path, out, cfg):
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_distributed("cpu")
    try:
        train_alignment(records, FeatureStore(store_path), out, cfg, device="cpu", progress=False, log=lambda *a: None)
    finally:
        dist.cleanup()


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    torch.set_num_threads(1)
    records, _ = make_toy(tmp_path / "store", n_train=12, n_val=4, n_test=0)
    # dropout 0: dropout masks are drawn per process, so they differ once a batch is split across ranks.
    # batch 13 over 2 ranks: shares of 6 and 7 pairs, so the gather of unequal shares is exercised.
    cfg = toy_cfg(epochs=2, dropout=0.0, batch_size=13, lr=0.01)
    train_alignment(records, tmp_path / "store", tmp_path / "one", cfg, progress=False, log=lambda *a: None)
    mp.spawn(_worker, args=(2, _free_port(), records, str(tmp_path / "store"), str(tmp_path / "two"), cfg),
             nprocs=2, join=True)
    a = load_checkpoint(tmp_path / "one" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "last.pt")
    assert a["step"] == b["step"] == 2 * 5  # 60 pairs / 13 = 5 batches per epoch (the last has 8)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], atol=2e-5, rtol=1e-4, msg=k)
    assert abs(a["history"][-1]["loss"] - b["history"][-1]["loss"]) < 1e-4
    # Training moved the weights (the comparison is not between two untouched initialisations).
    torch.manual_seed(cfg.seed)
    init = AlignmentModel(cfg, len(a["vocab"]["itos"]), a["feat_dim"]).state_dict()
    assert (init["word_out.weight"] - b["model"]["word_out.weight"]).abs().max() > 1e-3
