"""The pipeline: caching and resuming (with stand-in stages), config overrides, and one small end-to-end run."""
import json
from pathlib import Path

import pytest

from data.records import ImageRecord, Sentence
from scripts import pipeline, pipeline_stages
from scripts.pipeline import PipelineConfig, apply_overrides, run_pipeline
from scripts.pipeline_stages import Stage


# ------------------------------------------------------------------------------------------ stand-in stages
class Calls:
    def __init__(self):
        self.log = []
        self.fail_at = None  # stage name that raises KeyboardInterrupt once (an interruption)


def _fake_stages(calls: Calls):
    def make(name):
        def fn(run):
            calls.log.append(name)
            part = run.out / f"{name}.partial"
            if calls.fail_at == name:
                calls.fail_at = None
                part.write_text("half")  # what an interrupted stage leaves behind
                raise KeyboardInterrupt
            resumed = part.is_file()
            (run.out / f"{name}.out").write_text(str(run.cfg.align))
            return {"value": len(calls.log), "resumed": resumed}
        return fn

    return [Stage("a", make("a"), ("region",), ()), Stage("b", make("b"), ("align",), ("a",), ("b.out",)),
            Stage("c", make("c"), (), ("b",)),
            Stage("d", make("d"), (), ("a",), applies=lambda run: "no ground truth")]


@pytest.fixture
def fake(monkeypatch):
    calls = Calls()
    monkeypatch.setattr(pipeline_stages, "_stages", lambda: _fake_stages(calls))

    def load(self):
        self.train = [ImageRecord("t1", "t1.png", split="train", sentences=[Sentence(0, "a b", ["a", "b"])])]
        self.eval = [ImageRecord("e1", "e1.png", split="test", sentences=[Sentence(1, "a", ["a"])])]

    monkeypatch.setattr(pipeline_stages.Run, "load_records", load)
    return calls


def _cfg(tmp_path, **kw):
    return PipelineConfig(dataset="fake", root=str(tmp_path), out=str(tmp_path / "run"), **kw)


def test_second_run_does_no_work(tmp_path, fake):
    r1 = run_pipeline(_cfg(tmp_path), log=lambda *_: None)
    assert r1["_ran"] == ["a", "b", "c"] and fake.log == ["a", "b", "c"]
    assert r1["stages"]["d"].startswith("skipped") and "no ground truth" in r1["stages"]["d"]
    r2 = run_pipeline(_cfg(tmp_path), log=lambda *_: None)
    assert r2["_ran"] == [] and fake.log == ["a", "b", "c"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(saved["timings_s"]) >= {"a", "b", "c", "total"}
    assert (tmp_path / "run" / "config.json").is_file() and (tmp_path / "run" / "report.html").is_file()


def test_interrupted_stage_resumes_and_earlier_stages_are_kept(tmp_path, fake):
    fake.fail_at = "b"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_cfg(tmp_path), log=lambda *_: None)
    assert not (tmp_path / "run" / "b.done.json").exists()
    r = run_pipeline(_cfg(tmp_path), log=lambda *_: None)
    assert r["_ran"] == ["b", "c"]  # "a" was complete
    done_b = json.loads((tmp_path / "run" / "b.done.json").read_text())
    assert done_b["result"]["resumed"] is True  # the stage found what it had left


def test_config_change_reruns_the_stage_and_what_depends_on_it(tmp_path, fake):
    run_pipeline(_cfg(tmp_path), log=lambda *_: None)
    (tmp_path / "run" / "b.partial").write_text("stale")
    r = run_pipeline(_cfg(tmp_path, align={"epochs": 3}), log=lambda *_: None)
    assert r["_ran"] == ["b", "c"]
    assert (tmp_path / "run" / "b.out").read_text() == str({"epochs": 3})


def test_skip_marks_the_stage_and_its_dependents(tmp_path, fake):
    r = run_pipeline(_cfg(tmp_path, skip=("b",)), log=lambda *_: None)
    assert r["_ran"] == ["a"]
    assert r["stages"]["b"].startswith("skipped") and r["stages"]["c"].startswith("skipped")


def test_overrides_parse_values_and_groups():
    cfg = apply_overrides(PipelineConfig(), ["align.epochs=3", "gen.cell=lstm", "beams=[1,3]", "limit=5",
                                            "snippets.target_len=2.0", "skip=dense,report"])
    assert cfg.align == {"epochs": 3} and cfg.gen == {"cell": "lstm"} and cfg.beams == (1, 3)
    assert cfg.limit == 5 and cfg.snippets == {"target_len": 2.0} and cfg.skip == ("dense", "report")
    with pytest.raises(SystemExit):
        apply_overrides(PipelineConfig(), ["nosuch=1"])
    with pytest.raises(SystemExit):
        apply_overrides(PipelineConfig(), ["nogroup.x=1"])


def test_eval_split_dev_maps_to_val():
    args = pipeline.build_parser().parse_args(["--dataset", "x", "--root", "r", "--out", "o", "--eval-split", "dev"])
    assert pipeline.config_from_args(args).eval_split == "val"
