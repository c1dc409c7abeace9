"""The caching Runner: runs the stages of `generate.pipeline.stages` in order with the done-file protocol.

Every stage writes its outputs under OUT and, last, ``OUT/<stage>.done.json`` (atomic) holding its fingerprint
(the config it depends on, chained through the stages it reads), its result and its time. A stage whose done
file matches is skipped. A stage without one is run again, and resumes from whatever it left behind (the feature
store's committed parts, the trainers' checkpoints); a stage whose config changed has its outputs removed first
(the feature store is kept and extended unless its recipe changed). ``OUT/results.json`` and ``OUT/config.json``
(the resolved config of every stage) are rewritten at the end, then ``OUT/report.html``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from dvsa.data.io import atomic_write_json, check_writable, json_default
from dvsa.generate.pipeline import stages as stage_table
from dvsa.generate.pipeline.config import ConfigError, PipelineConfig
from dvsa.generate.pipeline.report import write_report
from dvsa.generate.pipeline.results import assemble_results
from dvsa.generate.pipeline.run import Run


def fingerprint(obj: Any) -> str:
    """A short hash of a JSON-able object (keys sorted)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=json_default).encode()).hexdigest()[:16]


def read_json(path: Path) -> Any | None:
    """The JSON in `path`, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class StageError(RuntimeError):
    """A stage failed; the stages before it stay cached, so the same command resumes after the fix."""

    def __init__(self, stage: str, error: Exception):
        super().__init__(f"stage {stage!r} failed: {type(error).__name__}: {error}")
        self.stage = stage


class Runner:
    """Runs `generate.pipeline.stages` in order with the done-file protocol described in the module doc."""

    def __init__(self, cfg: PipelineConfig, log=print):
        self.cfg = cfg
        self.out = check_writable(Path(cfg.out), "dir")  # the run folder: fail before any stage runs
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.run = Run(cfg, self.out, log)
        self.fingerprints: dict[str, str] = {}
        self.ran: list[str] = []  # stages that did work in this call (a finished run resumes with none)

    def stage_config(self, stage) -> dict:
        c = self.cfg
        base = {"dataset": c.dataset, "root": str(Path(c.root).resolve()), "limit": c.limit, "seed": c.seed,
                "holdout_val": c.holdout_val if c.eval_split == "val" else None}
        own = {k: getattr(c, k) for k in stage.keys}
        return {"data": base, "own": own, "deps": {d: self.fingerprints.get(d) for d in stage.deps}}

    def run_stage(self, stage) -> None:
        run, done_path = self.run, self.out / f"{stage.name}.done.json"
        config = self.stage_config(stage)
        fp = fingerprint(config)
        self.fingerprints[stage.name] = fp
        if stage.name in self.cfg.skip:
            run.results[stage.name] = {"skipped": "by --config skip"}
            self.log(f"[{stage.name}] skipped (by request)")
            return
        if any(run.results.get(d, {}).get("skipped") for d in stage.deps):
            run.results[stage.name] = {"skipped": "an input stage was skipped"}
            self.log(f"[{stage.name}] skipped (an input stage was skipped)")
            return
        reason = stage.applies(run) if stage.applies else None
        if reason:
            run.results[stage.name] = {"skipped": reason}
            self.log(f"[{stage.name}] not applicable: {reason}")
            return
        done = read_json(done_path)
        if done and done.get("fingerprint") == fp:
            run.results[stage.name] = done["result"]
            run.timings[stage.name] = done["seconds"]
            self.log(f"[{stage.name}] cached ({done['seconds']:.1f} s when it ran)")
            return
        started_path = self.out / f"{stage.name}.started.json"
        started = read_json(started_path)
        if (done and done.get("fingerprint") != fp) or (started and started.get("fingerprint") != fp):
            self.log(f"[{stage.name}] config changed" + (": removing its old outputs" if stage.outputs else ""))
            for rel in stage.outputs:
                p = self.out / rel
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            done_path.unlink(missing_ok=True)
        elif started:
            self.log(f"[{stage.name}] resuming an interrupted run")
        atomic_write_json(started_path, {"fingerprint": fp, "config": config})
        self.log(f"[{stage.name}] running")
        t0 = time.perf_counter()
        try:
            result = stage.fn(run) or {}
        except (KeyboardInterrupt, SystemExit, ConfigError):  # a bad override is the user's, not the stage's
            raise
        except Exception as e:
            raise StageError(stage.name, e) from e
        seconds = time.perf_counter() - t0
        atomic_write_json(done_path, {"stage": stage.name, "fingerprint": fp, "config": config,
                                      "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                      "result": result})
        started_path.unlink(missing_ok=True)
        run.results[stage.name] = result
        run.timings[stage.name] = seconds
        self.ran.append(stage.name)
        self.log(f"[{stage.name}] done in {seconds:.1f} s")

    def __call__(self) -> dict:
        t0 = time.perf_counter()
        self.run.load_records()
        self.run.timings["load"] = time.perf_counter() - t0
        atomic_write_json(self.out / "eval_images.json", {r.id: self.run.image_path(r) for r in self.run.eval})
        try:
            for stage in stage_table._stages():  # looked up here, so that tests can put stand-in stages in
                self.run_stage(stage)
        finally:
            self.run.close()
        results = assemble_results(self.run)
        atomic_write_json(self.out / "config.json", self.run.resolved_config())
        atomic_write_json(self.out / "results.json", results)
        report = self.out / "report.html"
        if "report" not in self.cfg.skip:
            write_report(self.out, results, report)
        results["_ran"] = list(self.ran)
        return results


def run_pipeline(cfg: PipelineConfig, log=print) -> dict:
    """Run (or resume) every stage; returns results.json's content plus ``_ran`` (stages that did work)."""
    return Runner(cfg, log)()
