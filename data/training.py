"""The training toolkit shared by the aligner (`dvsa.align.train`) and the generators (`dvsa.generate.train`).

- devices and processes: `setup_device` (resolve "auto" / "cuda" to this rank's device, join the torchrun group
  with the backend of that device, set the CUDA device; on the CPU `retain_freed_memory`), `wrap_ddp`, `main_only`;
- optimisation: `make_optimizer` (sgd / adam / rmsprop), `scheduled_lr` + `set_lr` (step and cosine schedules;
  the generators' cosine clamps the epoch at `epochs`, the aligner's does not: `clamp`), `clip_gradients`;
- mixed precision: `amp_enabled` and `autocast` (bf16 on CUDA; on the CPU only when asked, `cpu`, and where it
  computes bf16 natively: `cpu_has_bf16`). Only the networks' forward belongs inside it:
  the callers cast its outputs to float32 (`.float()`) before any reduction (score sums, losses, metrics);
- numerics: `check_finite` (the loss of a step is a finite number, else FloatingPointError);
- threads: `lend_threads` / `reclaim_threads` / `end_lending` (the pipeline lends half the CPU threads to a stage
  running beside the main line, `generate.pipeline.beside`; the trainers take them back between steps once it
  has ended);
- resume: `check_resumable` (a run continues only with the same settings, apart from `changeable` fields),
  `training_state` / `restore_training_state` (model, optimizer, epoch, step and RNG in a checkpoint payload);
- run files: `write_config` / `write_history` (config.json, history.json, and history.json drawn as curves.png by
  `dvsa.data.curves`), atomic through `dvsa.data.io`.
"""
from __future__ import annotations

import ctypes
import functools
import math
import os
import warnings
from pathlib import Path
from typing import Callable, Iterable

import torch
from dvsa.data.checkpoint import rng_state, set_rng_state
from dvsa.data.curves import plot_history
from dvsa.data.distributed import (
    init_process_group,
    is_distributed,
    is_main,
    resolve_device,
)
from dvsa.data.io import atomic_write_json

__all__ = [
    "amp_enabled", "autocast", "check_finite", "check_resumable", "clip_gradients", "cpu_has_bf16", "end_lending",
    "lend_threads", "main_only", "make_optimizer", "reclaim_threads", "restore_training_state", "retain_freed_memory",
    "scheduled_lr", "set_lr", "setup_device", "training_state", "wrap_ddp", "write_config", "write_history",
]


# ---------------------------------------------------------------- threads lent to a process beside this one
_lent: list[tuple[Callable[[], bool], int]] = []  # (has the borrower ended?, this process's threads after it)


def lend_threads(threads: int, ended: Callable[[], bool], restore: int) -> None:
    """Run torch on `threads` threads until `ended()` is true, then on `restore` (`reclaim_threads` checks).
    torch's thread count belongs to the thread that sets it, so the main thread takes it back itself."""
    _lent[:] = [(ended, restore)]
    torch.set_num_threads(threads)


def reclaim_threads() -> None:
    """Between training steps: once the borrower of `lend_threads` has ended, set the threads back (cheap)."""
    if _lent and _lent[0][0]():
        torch.set_num_threads(_lent.pop()[1])


def end_lending(restore: int) -> None:
    """Forget any lending (the borrower was waited for) and run torch on `restore` threads."""
    _lent.clear()
    torch.set_num_threads(restore)


# ---------------------------------------------------------------- devices and processes
def setup_device(name: str | torch.device | None = "auto") -> torch.device:
    """The run's device (`dvsa.data.distributed.resolve_device`), with the process group joined when launched
    by torchrun (nccl for CUDA, gloo otherwise), on CUDA the current device set to it, and on the CPU the
    allocator told to keep freed memory (`retain_freed_memory`)."""
    device = resolve_device(name)
    init_process_group(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:
        retain_freed_memory()
    return device


# glibc's mallopt parameters (malloc.h) and the values `retain_freed_memory` sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
RETAIN_TRIM_BYTES, RETAIN_MMAP_BYTES = 256 << 20, 64 << 20


@functools.cache
def retain_freed_memory() -> bool:
    """Have glibc's malloc serve blocks up to 64 MB from its heap and keep up to 256 MB of freed memory there,
    instead of mapping each large block afresh and returning it on free (its default); True if it took effect.

    A training step on the CPU allocates and frees the same tensors of a few MB every step (dropout masks,
    activations, their gradients); with the default each one comes back as fresh pages that the kernel must
    fault in and zero, on every step. Kept in the heap, they are reused: the aligner's bf16 step at the pipeline's
    size went from 205.5 ms (``dvsa bench train --shapes pipeline --default-allocator``) to 152.1 ms (the same
    without the flag; 2 threads, docs/experiments.md). This is what PyTorch's CPU tuning guide gets from jemalloc
    or tcmalloc, done with the C library already loaded. A no-op (False) where the C library has no mallopt
    (macOS, musl)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the symbols already loaded, the C library's among them
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, RETAIN_TRIM_BYTES)) and bool(mallopt(M_MMAP_THRESHOLD, RETAIN_MMAP_BYTES))


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """`model` under DistributedDataParallel when a process group is up (device_ids = [its GPU] on CUDA), else
    `model` itself."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def main_only(log: Callable) -> Callable:
    """`log` on the main process, a no-op on the others."""
    return log if is_main() else (lambda *a, **k: None)


# ---------------------------------------------------------------- optimisation
def make_optimizer(name: str, params: Iterable, *, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                   alpha: float = 0.99, fused: bool = True) -> torch.optim.Optimizer:
    """"sgd" (with `momentum`), "adam" or "rmsprop" (smoothing `alpha`) over `params` (tensors), all with
    `weight_decay`. fused: Adam and SGD update every parameter in one fused kernel when all are floating tensors
    on the CPU or CUDA (the same updates within float rounding; the aligner's Adam step on the CPU takes 1.1 ms
    instead of 4.3); False = torch's default per-parameter loop."""
    params = list(params)
    fuse = fused and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=alpha, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fuse or None)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fuse or None)
    raise ValueError(f"optimizer must be sgd, adam or rmsprop, got {name!r}")


def scheduled_lr(base: float, schedule: str, epoch: int, epochs: int, step: int = 1, gamma: float = 1.0,
                 clamp: bool = False) -> float:
    """The learning rate of 0-based `epoch`, a pure function of its arguments (resuming needs no state).

    "step": base * gamma ** (epoch // step); "cosine": base * (1 + cos(pi * e / epochs)) / 2 with e = epoch, or
    min(epoch, epochs) when `clamp` (so epochs past the end stay at 0 instead of rising again); else base."""
    if schedule == "step":
        return base * gamma ** (epoch // max(1, step))
    if schedule == "cosine":
        e = min(epoch, epochs) if clamp else epoch
        return base * 0.5 * (1 + math.cos(math.pi * e / max(1, epochs)))
    return base


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def clip_gradients(params: Iterable[torch.nn.Parameter], clip: float, mode: str = "value") -> None:
    """Clip every gradient entry at +-clip ("value") or the total gradient norm at clip ("norm"); 0 = off."""
    if clip > 0:
        if mode == "value":
            torch.nn.utils.clip_grad_value_(params, clip)
        else:
            torch.nn.utils.clip_grad_norm_(params, clip)


# ---------------------------------------------------------------- mixed precision and numerics
@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (the avx512_bf16 or amx_bf16 flag of /proc/cpuinfo; False where
    there is no such file): elsewhere bf16 matrix products are emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def amp_enabled(amp: bool, device: torch.device, cpu: bool = False) -> bool:
    """bf16 autocast: on CUDA with `amp`; on the CPU with `amp` and `cpu` where `cpu_has_bf16` (else plain fp32)."""
    if not amp:
        return False
    return device.type == "cuda" or (device.type == "cpu" and bool(cpu) and cpu_has_bf16())


def autocast(device: torch.device, amp: bool, cpu: bool = False):
    """The bf16 autocast context of a forward pass (disabled unless `amp_enabled`)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp_enabled(amp, device, cpu))


def check_finite(value: float, epoch: int, step: int) -> float:
    """`value` (a step's loss) when finite; FloatingPointError naming the 0-based `epoch` + 1 and the step."""
    if not math.isfinite(value):
        raise FloatingPointError(f"epoch {epoch + 1} step {step}: the loss is {value}; lower the learning rate")
    return value


# ---------------------------------------------------------------- resume
def check_resumable(old: dict, new: dict, changeable: Iterable[str], path: str | os.PathLike) -> None:
    """ValueError unless the checkpoint's config `old` equals `new` in every field outside `changeable`."""
    changeable = set(changeable)
    diff = sorted(k for k in new if k not in changeable and old.get(k) != new[k])
    if diff:
        raise ValueError(f"{path}: cannot resume with a different config, trained with other settings "
                         f"({', '.join(diff)}); use another --out or the same settings")


def training_state(model: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int, step: int) -> dict:
    """The part of a checkpoint payload that resumes training: {"model" (CPU tensors), "optimizer", "epoch"
    (epochs done), "step", "rng"} (`dvsa.data.checkpoint.rng_state`, taken now)."""
    return {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "epoch": epoch,
        "step": step,
        "rng": rng_state(),
    }


def restore_training_state(ck: dict, model: torch.nn.Module, opt: torch.optim.Optimizer) -> tuple[int, int]:
    """Load what `training_state` saved into `model` and `opt`, restore the RNG; returns (epoch, step)."""
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    set_rng_state(ck["rng"])
    return int(ck["epoch"]), int(ck["step"])


# ---------------------------------------------------------------- run files
def write_config(out_dir: str | os.PathLike, config: dict) -> Path:
    return atomic_write_json(Path(out_dir) / "config.json", config, indent=2)


def write_history(out_dir: str | os.PathLike, history: list, title: str | None = None) -> Path:
    """history.json, and its curves drawn as curves.png beside it (`dvsa.data.curves.plot_history`, titled
    `title`, default the folder's name). A picture that cannot be drawn is a warning, never a failed run."""
    out = atomic_write_json(Path(out_dir) / "history.json", history, indent=2)
    try:
        plot_history(history, Path(out_dir) / "curves.png", Path(out_dir).name if title is None else title)
    except Exception as e:  # the curves are a view of history.json: training goes on without them
        warnings.warn(f"{Path(out_dir) / 'curves.png'}: training curves not drawn ({type(e).__name__}: {e})",
                      RuntimeWarning, stacklevel=2)
    return out
