import os

import numpy as np
import pytest
import torch
from dvsa.data.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from dvsa.data.errors import CheckpointError
from dvsa.data.text import Vocabulary


def _payload(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"kind": "align", "config": {"hidden": 8, "name": "x", "sizes": [1, 2]},
            "vocab": Vocabulary(["dog", "cat"]).to_dict(), "model": model.state_dict(),
            "optimizer": opt.state_dict(), "epoch": 3, "step": 17, "rng": torch.get_rng_state()}


def test_round_trip_weights_only(tmp_path):
    p = _payload()
    save_checkpoint(tmp_path / "sub" / "ck.pt", p)
    ck = load_checkpoint(tmp_path / "sub" / "ck.pt", kind="align")
    assert ck["format_version"] == FORMAT_VERSION and ck["epoch"] == 3 and ck["config"] == p["config"]
    assert Vocabulary.from_dict(ck["vocab"]).itos == Vocabulary.from_dict(p["vocab"]).itos
    for k, v in p["model"].items():
        torch.testing.assert_close(ck["model"][k], v)
    torch.testing.assert_close(ck["rng"], p["rng"])
    assert ck["optimizer"]["state"][0]["momentum_buffer"].shape == (2, 3)
    assert os.listdir(tmp_path / "sub") == ["ck.pt"]  # no temporary file left


def test_wrong_kind_and_foreign_files(tmp_path):
    save_checkpoint(tmp_path / "a.pt", {"kind": "generate", "model": {}})
    with pytest.raises(ValueError, match="a 'generate' checkpoint, expected 'align'"):
        load_checkpoint(tmp_path / "a.pt", kind="align")
    torch.save({"model": {}}, tmp_path / "plain.pt")  # a torch file, but not ours
    with pytest.raises(ValueError, match="plain.pt: not a dvsa checkpoint \\(no format_version"):
        load_checkpoint(tmp_path / "plain.pt")
    torch.save({"format_version": FORMAT_VERSION + 1, "kind": "align"}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match=f"future.pt: format version {FORMAT_VERSION + 1}, this dvsa reads "
                                         f"{FORMAT_VERSION}"):
        load_checkpoint(tmp_path / "future.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="junk.pt: not a readable dvsa checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt: not a readable dvsa checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="none.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="none.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")


class _Pickled:  # a class instance: torch.load(weights_only=True) refuses it
    pass


def test_pickled_objects_are_refused_on_load(tmp_path):
    torch.save({"format_version": FORMAT_VERSION, "kind": "align", "obj": _Pickled()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a readable dvsa checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


class _Boom:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_failing_save_leaves_old_file_intact(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _payload(0))
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {**_payload(1), "bad": _Boom()})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ck.pt"]
    torch.testing.assert_close(load_checkpoint(path)["model"]["weight"], _payload(0)["model"]["weight"])


@pytest.mark.parametrize("bad", [np.float64(0.5), np.zeros(2), _Pickled()])
def test_unloadable_payload_is_refused_at_save(tmp_path, bad):
    """A value that weights_only loading refuses must not replace a good checkpoint (it would be lost)."""
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _payload(0))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="ck.pt: the payload cannot be loaded back with weights_only=True"):
        save_checkpoint(path, {**_payload(1), "metric": bad})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ck.pt"]


def test_hollow_and_malformed_checkpoints(tmp_path):
    save_checkpoint(tmp_path / "hollow.pt", {"kind": "align", "vocab": {}})
    with pytest.raises(CheckpointError, match=r"hollow.pt: hollow checkpoint: missing keys \['model', 'config'\]"):
        load_checkpoint(tmp_path / "hollow.pt", kind="align", required=("model", "config", "vocab"))
    save_checkpoint(tmp_path / "bad.pt", {"kind": "align", "config": [1, 2], "model": {}})
    with pytest.raises(CheckpointError, match="bad.pt: malformed checkpoint: 'config' is a list"):
        load_checkpoint(tmp_path / "bad.pt", kind="align")
    save_checkpoint(tmp_path / "g.pt", {"kind": "align", "model": {}})
    with pytest.raises(CheckpointError, match="g.pt: an 'align' checkpoint, expected 'generate'"):
        load_checkpoint(tmp_path / "g.pt", kind="generate")
