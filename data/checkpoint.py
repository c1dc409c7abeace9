"""Atomic, self-contained checkpoints that load with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values (no pickled classes):
``{"format_version": 1, "kind": "align"|"generate", "config": {...}, "vocab": {...}, "model": state_dict, ...}``.
Extra keys (optimizer state, epoch, step, RNG states, metrics) are allowed as long as they are plain values.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from dvsa.data.io import atomic_write_bytes

FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (`dvsa.data.io`) after a check that it loads back with
    weights_only=True (else ValueError, and the old file stays)."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buf)
    try:  # a value weights_only loading refuses (numpy scalar, class instance) must not replace a good file
        torch.load(io.BytesIO(buf.getbuffer()), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: the payload cannot be loaded back with weights_only=True ({e})") from None
    atomic_write_bytes(path, buf.getbuffer())


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True); check its format version and, if given, its kind."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise ValueError(f"{path}: not a readable dvsa checkpoint ({e})") from e
    if not isinstance(ck, dict) or ck.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a dvsa checkpoint of format {FORMAT_VERSION}")
    if kind is not None and ck.get("kind") != kind:
        raise ValueError(f"{path}: a {ck.get('kind')!r} checkpoint, expected {kind!r}")
    return ck


def rng_state() -> dict:
    """torch's RNG states (CPU, and every CUDA device once this process has used CUDA), as tensors: for exact
    resume. A CPU run never touches CUDA here: reading CUDA states would initialise it (seconds, GPU memory, and
    a later fork of this process could no longer use CUDA), and an unused CUDA RNG has nothing to resume."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved. CUDA states only where CUDA is available, and only for the devices this
    machine has (a checkpoint of an 8-GPU run resumes on fewer); torch applies them lazily, so a CPU run still
    does not initialise CUDA."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        for i, s in enumerate(list(state["cuda"])[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, i)
