"""Atomic file writes: the one way every dvsa writer puts a file on disk.

A file is written to a temporary name in the same folder, flushed and fsynced, renamed over the target with
`os.replace` (atomic on POSIX and Windows), and then the folder itself is fsynced so the rename survives a crash.
A reader therefore sees either the old file or the new one, never half of one; a failure leaves the old file
(if any) in place and no temporary file behind.

    atomic_write_text(path, text)
    atomic_write_json(path, obj)              # numbers from numpy / tensors, Paths and dataclasses are converted
    with atomic_open(path, "w") as f: ...      # streamed writes (JSON Lines), committed only on success
    atomic_save_npy(path, array)
    commit_dir(tmp_dir, final_dir)             # a folder written in full under a temporary name
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder so that a rename inside it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on a clean exit it is fsynced and renamed to `path`,
    on an exception it is removed and `path` is left as it was. `mode` is "w" or "wb"."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def json_default(o: Any) -> Any:
    """`json.dumps(default=...)` for what dvsa writes: numpy / torch numbers and arrays, Paths, dataclasses."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1, **kw) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, default=json_default, **kw) + "\n")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    with atomic_open(path, "wb") as f:
        np.save(f, array)
    return Path(path)


def atomic_write_with(path: str | os.PathLike, write: Callable[[IO], None], mode: str = "wb") -> Path:
    """`write(f)` into the atomic temporary file (for writers that take a file object: torch.save, Image.save)."""
    with atomic_open(path, mode) as f:
        write(f)
    return Path(path)


def commit_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename a fully written folder `tmp` to `final` (same parent) and fsync the parent."""
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)
