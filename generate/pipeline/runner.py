"""The caching Runner: runs the stages of `generate.pipeline.stages` in order with the done-file protocol.

Every stage writes its outputs under OUT and, last, ``OUT/<stage>.done.json`` (atomic) holding its fingerprint
(the config it depends on, chained through the stages it reads), its result and its time. A stage whose done
file matches is skipped. A stage without one is run again, and resumes from whatever it left behind (the feature
store's committed parts, the trainers' checkpoints); a stage whose config changed has its outputs removed first
(the feature store is kept and extended unless its recipe changed). ``OUT/results.json`` and ``OUT/config.json``
(the resolved config of every stage) are rewritten at the end, then ``OUT/report.html``. Stages marked
``beside`` run in a second process next to the main line where `generate.pipeline.beside` allows it.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from dvsa.data import training
from dvsa.data.errors import DvsaError
from dvsa.data.io import atomic_write_json, check_writable, json_default
from dvsa.generate.pipeline import stages as stage_table
from dvsa.generate.pipeline.beside import Beside, can_run_beside, thread_split
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
        self.beside: dict[str, Beside] = {}  # stages running in their own process now
        self.joined: set[str] = set()  # stages that ran beside in this call and are done
        self.threads = torch.get_num_threads()  # the main line's torch threads when nothing runs beside

    def stage_config(self, stage) -> dict:
        c = self.cfg
        base = {"dataset": c.dataset, "root": str(Path(c.root).resolve()), "limit": c.limit, "seed": c.seed,
                "holdout_val": c.holdout_val if c.eval_split == "val" else None}
        own = {k: getattr(c, k) for k in stage.keys}
        return {"data": base, "own": own, "deps": {d: self.fingerprints.get(d) for d in stage.deps}}

    def skip_reason(self, stage) -> tuple[str, str] | None:
        """(result reason, log line) when `stage` is not to run: skipped by request, an input stage skipped, or
        not applicable to the data; else None."""
        if stage.name in self.cfg.skip:
            return "by --config skip", "skipped (by request)"
        if any(self.run.results.get(d, {}).get("skipped") for d in stage.deps):
            return "an input stage was skipped", "skipped (an input stage was skipped)"
        reason = stage.applies(self.run) if stage.applies else None
        return (reason, f"not applicable: {reason}") if reason else None

    def stage_state(self, stage) -> tuple[dict, str, dict | None]:
        """(`stage`'s config, its fingerprint, its done file or None), its inputs' fingerprints being known; the
        fingerprint is recorded for the stages that read this one."""
        config = self.stage_config(stage)
        fp = self.fingerprints[stage.name] = fingerprint(config)
        return config, fp, read_json(self.out / f"{stage.name}.done.json")

    def cached(self, stage) -> dict | None:
        """`stage`'s done file when it matches the stage's fingerprint now."""
        _, fp, done = self.stage_state(stage)
        return done if done and done.get("fingerprint") == fp else None

    def run_stage(self, stage) -> None:
        run, done_path = self.run, self.out / f"{stage.name}.done.json"
        config, fp, done = self.stage_state(stage)
        skip = self.skip_reason(stage)
        if skip:
            run.results[stage.name] = {"skipped": skip[0]}
            self.log(f"[{stage.name}] {skip[1]}")
            return
        if done and done.get("fingerprint") == fp:
            run.results[stage.name] = done["result"]
            run.timings[stage.name] = done["seconds"]
            if "waited" in done:  # it ran beside the main line, which waited this long for it
                run.overlap[stage.name] = max(0.0, done["seconds"] - done["waited"])
            if stage.name not in self.joined:
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
        stages = stage_table._stages()  # looked up here, so that tests can put stand-in stages in
        try:
            for i, stage in enumerate(stages):
                self.start_beside(stages[i:])
                for name in (stage.name, *stage.deps):
                    if name in self.beside:
                        self.join_beside(name)
                self.run_stage(stage)
            for name in list(self.beside):
                self.join_beside(name)
        finally:
            for other in self.beside.values():
                other.stop()
            self.run.close()
        results = assemble_results(self.run)
        atomic_write_json(self.out / "config.json", self.run.resolved_config())
        atomic_write_json(self.out / "results.json", results)
        report = self.out / "report.html"
        if "report" not in self.cfg.skip:
            write_report(self.out, results, report)
        results["_ran"] = list(self.ran)
        return results

    # ------------------------------------------------------------------ stages beside the main line
    def start_beside(self, pending) -> None:
        """Start the first `beside` stage of `pending` whose input stages are done and that has work to do, in its
        own process (`generate.pipeline.beside`), unless one runs already; the main line keeps the other half of
        the threads."""
        if not can_run_beside(self.cfg) or self.beside:  # one at a time: the threads split in two
            return
        for stage in pending:
            if (not stage.beside or stage.name in self.run.results or stage.name in self.joined
                    or not all(d in self.run.results for d in stage.deps)
                    or self.skip_reason(stage) or self.cached(stage)):
                continue
            main, beside = thread_split(self.threads)
            self.log(f"[{stage.name}] running beside the main line ({beside} of {self.threads} threads)")
            child = self.beside[stage.name] = Beside(self.cfg, stage.name, beside).start()
            training.lend_threads(main, lambda: not child.alive(), self.threads)
            return

    def join_beside(self, name: str) -> None:
        """Wait for stage `name` running beside; its done file then holds its result (and how long the wait
        was). Raises StageError when its process failed."""
        t0 = time.perf_counter()
        code = self.beside.pop(name).join()
        waited = time.perf_counter() - t0
        training.end_lending(self.threads)  # it was the only one (`start_beside`)
        done_path = self.out / f"{name}.done.json"
        done = read_json(done_path)
        if code != 0 or not done:
            raise StageError(name, DvsaError(f"its process exited with code {code} (its error is above)"))
        atomic_write_json(done_path, {**done, "waited": waited})
        self.joined.add(name)
        self.ran.append(name)
        self.log(f"[{name}] done beside the main line in {done['seconds']:.1f} s (waited {waited:.1f} s for it)")

    def run_alone(self, name: str) -> None:
        """Run stage `name` whose input stages are done (they are read from their done files): the body of a
        process beside the main line. A failure is printed as one line (its cause's traceback first unless it
        is a DvsaError) and exits with code 1."""
        self.run.load_records()
        stages = {s.name: s for s in stage_table._stages()}
        target, needed = stages[name], set()
        todo = list(target.deps)
        while todo:
            d = todo.pop()
            if d not in needed:
                needed.add(d)
                todo.extend(stages[d].deps)
        try:
            for stage in stages.values():
                if stage.name in needed:
                    if not self.cached(stage):
                        raise StageError(name, DvsaError(f"its input stage {stage.name!r} is not done"))
                    self.run_stage(stage)
            self.run_stage(target)
        except StageError as e:
            if not isinstance(e.__cause__, DvsaError):
                traceback.print_exception(e.__cause__, file=sys.stderr)
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        finally:
            self.run.close()


def run_pipeline(cfg: PipelineConfig, log=print) -> dict:
    """Run (or resume) every stage; returns results.json's content plus ``_ran`` (stages that did work)."""
    return Runner(cfg, log)()
