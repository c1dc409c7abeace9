"""Stages that run in a second process beside the main line of the pipeline (`PipelineConfig.parallel`).

A stage marked ``beside=True`` (gen_full: it reads only the feature store) starts in its own process as soon
as the stages it reads are done, while the main process goes on with the others (alignment training and what
follows it); the main line waits for it where a stage reads its outputs. On a 2-core CPU each process then
runs torch on one core: the two trainers' steps are small enough that a second thread buys either of them
little (``dvsa bench train --threads 1`` against 2), so side by side they finish sooner than one after the
other. The child runs the stage through the same done-file protocol (`Runner.run_stage`), so a finished stage
is cached, an interrupted one resumes, and its results and time land in its done file as always; it keeps a
note of how long the main line waited for it, so that results.json's total is the pipeline's wall time.

Only on the CPU, with at least 2 cores, in a single process (not under torchrun).
"""
from __future__ import annotations

import multiprocessing
import os

import torch
from dvsa.data.distributed import is_distributed

START_METHOD = "spawn"  # a fresh interpreter: torch's thread pools do not survive fork (tests use fork)


def can_run_beside(cfg) -> bool:
    """Whether `cfg` lets stages run beside the main line here (module doc)."""
    return bool(cfg.parallel) and cfg.device == "cpu" and (os.cpu_count() or 1) >= 2 and not is_distributed()


def thread_split(total: int) -> tuple[int, int]:
    """(main, beside) torch threads out of `total` (>= 1 each)."""
    beside = max(1, total // 2)
    return max(1, total - beside), beside


def _child(cfg, name: str, threads: int) -> None:
    """The second process: run stage `name` (its inputs are already done) with `threads` torch threads."""
    from dvsa.generate.pipeline.runner import Runner  # the runner imports this module

    torch.set_num_threads(threads)
    runner = Runner(cfg, log=lambda msg: print(f"  (beside) {msg}", flush=True))
    runner.run.progress = False  # its bars would cut into the main line's
    try:
        runner.run_alone(name)
    except KeyboardInterrupt:  # Ctrl-C reaches both processes: the main line says it, this one stops quietly
        raise SystemExit(130) from None


class Beside:
    """One stage running in its own process (`start`, then `join`, which returns its exit code)."""

    def __init__(self, cfg, name: str, threads: int):
        self.name = name
        ctx = multiprocessing.get_context(START_METHOD)
        self.process = ctx.Process(target=_child, args=(cfg, name, threads), name=f"dvsa-{name}")

    def start(self) -> "Beside":
        self.process.start()
        return self

    def alive(self) -> bool:
        return self.process.is_alive()

    def join(self) -> int:
        self.process.join()
        return self.process.exitcode

    def stop(self) -> None:
        """End it (the main line failed or was interrupted): what it saved stays, and resumes next time."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()
