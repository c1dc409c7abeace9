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
from dvsa.data.errors import CheckpointError
from dvsa.data.io import atomic_write_bytes

FORMAT_VERSION = 1


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """A checkpoint path with no file (a `CheckpointError`, and a FileNotFoundError for older callers)."""

    def __str__(self) -> str:  # OSError would print its args as a tuple
        return str(self.args[0]) if self.args else ""


def _article(word: str) -> str:
    return "an" if str(word)[:1].lower() in "aeiou" else "a"


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


def read_weights_only(path: str | os.PathLike, map_location="cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)``, else `CheckpointNotFound` ("<what> not found", or a folder) or
    `CheckpointError` ("not a readable dvsa <what> (...)": a truncated or foreign file, or pickled objects
    that weights_only refuses), each naming `path` on one line."""
    path = Path(path)
    if not path.is_file():
        why = f"is a folder, not a {what} file" if path.is_dir() else f"{what} not found"
        raise CheckpointNotFound(f"{path}: {why}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable dvsa {what} ({type(e).__name__}: {first})") from e


def load_checkpoint(path: str | os.PathLike, kind: str | None = None, required: tuple[str, ...] | list = (),
                    map_location="cpu") -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True) and validate it, else raise `CheckpointError` naming `path`:
    the file exists ("checkpoint not found"), loads ("not a readable dvsa checkpoint (...)"), is a dict of the
    current `FORMAT_VERSION` ("format version X, this dvsa reads Y"), of `kind` when given ("an 'align'
    checkpoint, expected 'generate'"), holds every key of `required` ("hollow checkpoint: missing keys [...]"),
    and its "config" and "vocab", where present, are dicts."""
    path = Path(path)
    ck = read_weights_only(path, map_location)
    if not isinstance(ck, dict) or "format_version" not in ck:
        raise CheckpointError(f"{path}: not a dvsa checkpoint (no format_version; this dvsa reads format "
                              f"version {FORMAT_VERSION})")
    if ck["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {ck['format_version']}, this dvsa reads {FORMAT_VERSION}")
    if kind is not None and ck.get("kind") != kind:
        got = ck.get("kind")
        raise CheckpointError(f"{path}: {_article(got)} {got!r} checkpoint, expected {kind!r}")
    missing = [k for k in required if k not in ck]
    if missing:
        raise CheckpointError(f"{path}: hollow checkpoint: missing keys {missing}")
    for key in ("config", "vocab"):
        if key in ck and not isinstance(ck[key], dict):
            raise CheckpointError(f"{path}: malformed checkpoint: {key!r} is a {type(ck[key]).__name__}, "
                                  f"not a dict")
    return ck


def config_from(path: str | os.PathLike, build, data: Any, what: str = "config"):
    """`build(data)` (a config or vocabulary from a checkpoint), any error a `CheckpointError` naming `path`."""
    try:
        return build(data)
    except Exception as e:  # an unknown field, a bad value: a checkpoint of another dvsa version
        raise CheckpointError(f"{path}: the {what} inside does not fit this dvsa ({type(e).__name__}: {e})") from e


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
