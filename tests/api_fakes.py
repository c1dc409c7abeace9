"""Shared pieces of the API / web-app / index tests: one tiny toy run folder per test session (built by
`dvsa.generate.serve.toy.build_toy_run` in a few seconds), and a folder holding ``runs/demo`` and ``photo.jpg``."""
import shutil

import pytest
import torch
from dvsa.generate.serve.toy import build_toy_run, toy_photo

_RUN = {}


def toy_run(tmp_path_factory):
    """The session's toy run folder (built once per process)."""
    if "run" not in _RUN:
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _RUN["run"] = build_toy_run(tmp_path_factory.mktemp("toyrun") / "run")
        finally:
            torch.set_num_threads(n)
    return _RUN["run"]


@pytest.fixture
def demo_dir(tmp_path_factory, tmp_path, monkeypatch):
    """A folder with runs/demo (the toy run) and photo.jpg, as the README's example expects; chdir'd into."""
    run = toy_run(tmp_path_factory)
    shutil.copytree(run, tmp_path / "runs" / "demo")
    toy_photo(tmp_path / "photo.jpg", "red", "square")
    monkeypatch.chdir(tmp_path)
    return tmp_path
